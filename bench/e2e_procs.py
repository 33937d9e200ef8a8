"""The processes ``bench/e2e.py`` starts inside its namespaces (its underscore
subcommands): the kernel baseline's server, the stack's bare listener, and the
Python clients for the connection-rate and held-connection metrics."""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
import threading
import time
from collections import Counter

from e2e_lib import ECHO_PORT, HOLD_PORT, HTTP_PORT, Holder, raise_nofile, wait_stop

# Linux <netinet/in.h>: bind() picks no port, connect() does (per 4-tuple), so
# one source address gives a port per destination instead of one per socket.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def cmd_serve_kernel(args) -> int:
    """The kernel baseline's server: http and echo on kernel sockets."""
    from stack.services import KernelNet, parse_service, start_service

    raise_nofile(65536)
    net = KernelNet()
    services = [start_service(net, parse_service(f"http:{HTTP_PORT}"), address=args.address),
                start_service(net, parse_service(f"echo:{ECHO_PORT}"), address=args.address)]
    print("kernel-server: up", file=sys.stderr, flush=True)
    try:
        wait_stop()
    finally:
        for svc in services:
            svc.close()
    return 0


def cmd_hold_kernel(args) -> int:
    """One of the kernel baseline's bare listeners: a holder on a SO_REUSEPORT
    listener, so that several processes share the connections (one process
    may not have as many fds as there are connections to hold)."""
    raise_nofile(1 << 20)
    listener = socket.create_server((args.address, HOLD_PORT), backlog=4096, reuse_port=True)
    holder = Holder(listener)
    print("hold-kernel: up", file=sys.stderr, flush=True)
    try:
        wait_stop(holder)
    finally:
        holder.close()
    return 0


def cmd_hold_stack(args) -> int:
    """The stack on a TAP with one bare listener that accepts and holds connections."""
    from stack.runtime import Stack
    from stack.tcp.config import TcpConfig

    # The TCP layer's cap on connections (every state) is 16,384 by default.
    config = TcpConfig(max_connections=args.max_connections)
    net = Stack.tap(args.tap, address=args.address, host_address=args.host_address,
                    tcp_config=config)
    holder = Holder(net.create_server(("0.0.0.0", HOLD_PORT), backlog=4096))
    print("stack: up (hold server)", file=sys.stderr, flush=True)
    try:
        wait_stop(holder)
    finally:
        holder.close()
        net.close(grace=0)
    return 0


def cmd_rate_client(args) -> int:
    """Open, request 1 byte, read, close, in a loop; print a JSON summary."""
    request = f"GET /bytes/1 HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()
    linger0 = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    counts = [[0, Counter()] for _ in range(args.threads)]
    start = time.monotonic()
    deadline = start + args.seconds

    def worker(slot):
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection((args.host, args.port), timeout=3)
                try:
                    s.sendall(request)
                    buf = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            raise ConnectionError("closed before the answer")
                        buf += chunk
                        end = buf.find(b"\r\n\r\n")
                        if end >= 0 and len(buf) >= end + 5:
                            break
                    if not buf.startswith(b"HTTP/1.1 200"):
                        raise ConnectionError("not 200")
                    if args.linger0:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                finally:
                    s.close()
                slot[0] += 1
            except OSError as e:
                slot[1][type(e).__name__] += 1

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 10)
    elapsed = time.monotonic() - start
    errors: Counter = Counter()
    for _, e in counts:
        errors.update(e)
    done = sum(c for c, _ in counts)
    print(json.dumps({"completed": done, "seconds": round(elapsed, 3),
                      "per_second": round(done / elapsed, 1), "errors": dict(errors)}), flush=True)
    return 0


class _Connector:
    """Non-blocking connects, at most ``window`` in flight, from the source
    addresses in turn; each one given ``timeout`` seconds to complete."""

    def __init__(self, host: str, port: int, sources: list[str], window: int,
                 timeout: float) -> None:
        self.dest = (host, port)
        self.sources = sources or [""]
        self.window, self.timeout = window, timeout
        self.poller = select.epoll()
        self.pending: dict[int, tuple[socket.socket, float]] = {}
        self.socks: list[socket.socket] = []
        self.errors: Counter = Counter()
        self.attempted = 0

    def _open(self, now: float) -> None:
        src = self.sources[self.attempted % len(self.sources)]
        self.attempted += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            if src:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((src, 0))
            err = s.connect_ex(self.dest)
        except OSError as e:
            self.errors[errno.errorcode.get(e.errno or 0, type(e).__name__)] += 1
            s.close()
            return
        if err not in (0, errno.EINPROGRESS):
            self.errors[errno.errorcode.get(err, str(err))] += 1
            s.close()
            return
        self.pending[s.fileno()] = (s, now)
        self.poller.register(s.fileno(), select.EPOLLOUT)

    def _done(self, fd: int) -> None:
        s, _ = self.pending.pop(fd)
        self.poller.unregister(fd)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.errors[errno.errorcode.get(err, str(err))] += 1
            s.close()
        else:
            self.socks.append(s)

    def run(self, total: int, deadline: float, progress) -> None:
        next_report = time.monotonic() + 5
        while time.monotonic() < deadline and (self.attempted < total or self.pending):
            now = time.monotonic()
            while self.attempted < total and len(self.pending) < self.window:
                self._open(now)
            for fd, _ in self.poller.poll(0.05):
                self._done(fd)
            now = time.monotonic()
            for fd, (s, began) in list(self.pending.items()):
                if now - began > self.timeout:
                    self.pending.pop(fd)
                    self.poller.unregister(fd)
                    s.close()
                    self.errors["timeout"] += 1
            if now >= next_report:
                progress(len(self.socks))
                next_report = now + 5
        for s, _ in self.pending.values():
            s.close()
            self.errors["unfinished at the deadline"] += 1
        self.pending.clear()


def cmd_hold_client(args) -> int:
    """Open up to K connections, hold them, count the open ones; close on a line from stdin."""
    limit = raise_nofile(args.conns + 1024)
    sources = [s for s in args.sources.split(",") if s] if args.sources else []
    start = time.monotonic()
    conn = _Connector(args.host, args.port, sources, args.window, timeout=3.0)

    def progress(n: int) -> None:
        print(f"hold-client: {n} established after {time.monotonic() - start:.1f} s",
              file=sys.stderr, flush=True)

    conn.run(args.conns, start + args.connect_seconds, progress)
    connect_s = time.monotonic() - start
    time.sleep(args.hold)
    # Still open = no data, no EOF, no error after the hold (neither server sends first).
    poller = select.poll()
    for s in conn.socks:
        poller.register(s, select.POLLIN | select.POLLPRI)
    closed = len(poller.poll(0))
    n = len(conn.socks)
    print(json.dumps({"attempted": conn.attempted, "established": n, "open": n - closed,
                      "connect_seconds": round(connect_s, 2),
                      "per_second": round(n / connect_s, 1) if connect_s else None,
                      "sources": len(sources) or 1, "nofile": limit,
                      "errors": dict(conn.errors)}), flush=True)
    sys.stdin.readline()
    for s in conn.socks:
        s.close()
    return 0
