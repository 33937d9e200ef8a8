"""DNS servers for tests.

* :func:`reply`: the bytes of an answer (A, CNAME or PTR records), for
  servers and for feeding a resolver by hand.
* :class:`TinyDns`: a DNS server on a *stack's own* sockets (a UDP socket and
  a TCP listener on port 53, non-blocking), for tests over ``Stack.pair()``.
  Per name it can answer, truncate over UDP (and answer over TCP), stay
  silent, refuse, or send hostile answers first. It works on a manual clock:
  the test calls :meth:`TinyDns.poll` after stepping the stacks (or runs
  :meth:`TinyDns.serve_forever` in a thread on a threaded stack).
* :func:`dnsmasq`: Debian's dnsmasq on the kernel side of a TAP (in the test
  run's private network namespace), answering for the records given; killed
  by its PID afterwards.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field

from stack.wire.dns import (CLASS_IN, QR, RA, RD, TC, TYPE_A, TYPE_CNAME, TYPE_PTR, encode_name,
                            parse_message)

from tests.helpers.tap import stop

DNSMASQ = "/usr/sbin/dnsmasq"


def reply(ident: int, name: str, addrs=(), ttl: int = 300, rcode: int = 0,
          flags: int = QR | RD | RA, cname: str | None = None, qtype: int = TYPE_A,
          ptr: tuple[str, ...] = ()) -> bytes:
    """An answer to ``name``/``qtype``: a CNAME first if given, then A records
    for ``addrs`` or PTR records for ``ptr`` (owned by the CNAME's target)."""
    q = encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    records = b""
    owner = encode_name(name)
    if cname is not None:
        target = encode_name(cname)
        records += owner + struct.pack("!HHIH", TYPE_CNAME, CLASS_IN, ttl, len(target)) + target
        owner = target
    for a in addrs:
        records += owner + struct.pack("!HHIH", TYPE_A, CLASS_IN, ttl, 4) + socket.inet_aton(a)
    for p in ptr:
        data = encode_name(p)
        records += owner + struct.pack("!HHIH", TYPE_PTR, CLASS_IN, ttl, len(data)) + data
    n = len(addrs) + len(ptr) + (cname is not None)
    return struct.pack("!HHHHHH", ident, flags | rcode, 1, n, 0, 0) + q + records


@dataclass
class Zone:
    """What TinyDns says about one name (lower case, no trailing dot)."""

    addrs: tuple[str, ...] = ()
    ttl: int = 300
    mode: str = "answer"   # answer | truncate | silent | servfail | nxdomain | hostile | tcp-silent
    cname: str | None = None
    ptr: tuple[str, ...] = ()


@dataclass
class TinyDns:
    """A DNS server on ``net`` (a Stack), port 53, UDP and TCP."""

    net: object
    zones: dict[str, Zone] = field(default_factory=dict)
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (t, "udp"/"tcp", name)

    def __post_init__(self) -> None:
        self.udp = self.net.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", 53))
        self.udp.setblocking(False)
        self.tcp = self.net.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("0.0.0.0", 53))
        self.tcp.listen(16)
        self.tcp.setblocking(False)
        self.conns: list[list] = []   # [socket, bytearray]
        self._stop = threading.Event()

    def queries(self, via: str | None = None) -> list[str]:
        return [name for _, v, name in self.log if via is None or v == via]

    # ---- serving ----------------------------------------------------------------------

    def answer_for(self, data: bytes, via: str) -> list[bytes]:
        """The messages to send back for one query (several: hostile ones first)."""
        msg = parse_message(data)
        q = msg.questions[0]
        self.log.append((self.net.clock(), via, q.name))
        zone = self.zones.get(q.name)
        if zone is None:
            return [reply(msg.ident, q.name, rcode=3, qtype=q.qtype)]
        if zone.mode == "silent" or (zone.mode == "tcp-silent" and via == "tcp"):
            return []
        if zone.mode == "servfail":
            return [reply(msg.ident, q.name, rcode=2, qtype=q.qtype)]
        if zone.mode == "nxdomain":
            return [reply(msg.ident, q.name, rcode=3, qtype=q.qtype)]
        if zone.mode in ("truncate", "tcp-silent") and via == "udp":
            return [reply(msg.ident, q.name, flags=QR | RD | RA | TC, qtype=q.qtype)]
        good = reply(msg.ident, q.name, zone.addrs, zone.ttl, cname=zone.cname, qtype=q.qtype,
                     ptr=zone.ptr)
        if zone.mode == "hostile":
            return [*hostile_variants(msg.ident, q.name, good), good]
        return [good]

    def poll(self) -> None:
        """Serve what has arrived (non-blocking); nothing once closed."""
        if self._stop.is_set():
            return
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except BlockingIOError:
                break
            for out in self.answer_for(data, "udp"):
                self.udp.sendto(out, peer)
        while True:
            try:
                conn, _ = self.tcp.accept()
            except BlockingIOError:
                break
            conn.setblocking(False)
            self.conns.append([conn, bytearray()])
        for entry in list(self.conns):
            self._serve_tcp(entry)

    def _serve_tcp(self, entry: list) -> None:
        conn, buf = entry
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        buf += chunk
        if len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
            n = struct.unpack_from("!H", buf)[0]
            for out in self.answer_for(bytes(buf[2:2 + n]), "tcp"):
                conn.sendall(struct.pack("!H", len(out)) + out)
            del buf[:2 + n]
        if not chunk:
            self.conns.remove(entry)
            conn.close()

    def serve_forever(self, interval: float = 0.002) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except OSError:
                if not self._stop.is_set():  # closed under our feet: the end
                    raise
            time.sleep(interval)

    def start_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True, name="tinydns")
        t.start()
        return t

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for conn, _ in self.conns:
            conn.close()
        self.udp.close()
        self.tcp.close()


def hostile_variants(ident: int, name: str, good: bytes) -> list[bytes]:
    """Answers a resolver must drop: another ID, another question, cut short,
    a compression loop, counts that lie."""
    loop = bytearray(good[:12]) + b"\xc0\x0c" + good[-(len(good) - 12):][len(encode_name(name)):]
    return [
        reply(ident ^ 0x5A5A, name, ["203.0.113.66"]),          # wrong ID
        reply(ident, "other.test", ["203.0.113.66"]),           # another question
        good[:-3],                                              # cut short
        bytes(loop),                                            # a pointer to itself
        good[:6] + b"\xff\xff" + good[8:],                      # 65535 answers promised
    ]


# ---- dnsmasq on the kernel side -----------------------------------------------------------


def _answers(listen: str, name: str) -> bool:
    """Does a DNS server on ``listen`` answer an A query for ``name`` (from the kernel)?"""
    query = struct.pack("!HHHHHH", 0x1234, RD, 1, 0, 0, 0) + encode_name(name) + \
        struct.pack("!HH", TYPE_A, CLASS_IN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query, (listen, 53))
            return len(s.recv(4096)) >= 12
        except OSError:
            return False


@contextlib.contextmanager
def dnsmasq(listen: str = "192.0.2.1", records: dict[str, str] | None = None,
            cnames: dict[str, str] | None = None, local: tuple[str, ...] = ("test",),
            extra: tuple[str, ...] = (),
            log: str | None = None, ready_timeout: float = 10.0):
    """Run dnsmasq on ``listen`` (an address of the kernel side of a TAP that
    exists already, in the test's own network namespace) answering A (and
    PTR) records for ``records`` and CNAMEs ``cnames`` (alias -> target),
    nothing else: no upstream, no /etc/hosts; other names under the ``local``
    domains are NXDOMAIN (elsewhere REFUSED). Yields the Popen; the process is
    killed by its PID afterwards. ``log``: a file for its query log."""
    records = {"www.example.test": "192.0.2.1"} if records is None else records
    args = [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            f"--listen-address={listen}", "--bind-interfaces", "--pid-file=", "--port=53",
            "--user=root", "--log-queries", f"--log-facility={log or '-'}"]
    args += [f"--host-record={name},{addr}" for name, addr in records.items()]
    args += [f"--cname={alias},{target}" for alias, target in (cnames or {}).items()]
    args += [f"--local=/{domain}/" for domain in local]
    args += list(extra)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        probe = next(iter(records), "www.example.test")
        deadline = time.monotonic() + ready_timeout
        while not _answers(listen, probe):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.poll() is not None else "(still running)"
                raise AssertionError(f"dnsmasq did not come up on {listen}: {err}")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)
