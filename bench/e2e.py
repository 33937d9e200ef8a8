"""End-to-end benchmark: the stack against the Linux kernel, side by side.

Run it through ``scripts/bench`` (which installs what it needs and enters a
private network namespace first), or as root::

    .venv/bin/python bench/e2e.py [--only download,upload,ping,rate,concurrent]
                                  [--profile] [--json OUT]

Every frame stays inside network namespaces this run creates and removes,
even on error or SIGTERM:

* ``stackbench-k1-PID`` and ``stackbench-k2-PID``: the kernel baseline, a
  veth pair 198.51.100.1/24 (server) -- 198.51.100.2/24 (client). The server
  is the project's own services on kernel sockets (``KernelNet``), so both
  sides run the same HTTP and echo code.
* ``stackbench-s-PID``: ``stack up`` on a TAP, 192.0.2.1/24 kernel side (the
  client) and 192.0.2.2/24 the stack (the server).

Metrics (each one a bounded number of transfers or a bounded time):

* download / upload: ``curl`` of ``/bytes/N`` and ``curl -T`` (PUT) of an
  N-byte file, best of 3, at MTU 1500 without offloads and with offloads;
* ping: ``ping -c 200 -i 0.002``, median and p99 of the per-packet times;
* rate: new connections per second, a few client threads each opening a
  connection, sending ``GET /bytes/1``, reading the answer and closing;
* concurrent: K connections opened and held, then counted still open, with
  the server process's RSS growth per connection; once against the echo
  service of ``stack up`` and once against a bare listener that only accepts.

The script is also its own helper: the underscore subcommands (``_serve-kernel``,
``_hold-stack``, ``_rate-client``, ``_hold-client``) are the processes it starts
inside the namespaces.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SELF = str(Path(__file__).resolve())

METRICS = ("download", "upload", "ping", "rate", "concurrent")
NS_PREFIX = "stackbench-"
KERNEL_SERVER, KERNEL_CLIENT = "198.51.100.1", "198.51.100.2"
STACK_HOST, STACK_ADDR = "192.0.2.1", "192.0.2.2"
HTTP_PORT, ECHO_PORT, HOLD_PORT = 80, 7, 9000
MB = 1_000_000

# (key, label, unit, target as (op, value) or None, whether stack/kernel means anything)
ROWS = (
    ("download_mtu1500", "download, MTU 1500", "Mbit/s", (">=", 600), True),
    ("download_offload", "download, offloads", "Mbit/s", (">=", 3000), True),
    ("upload_mtu1500", "upload, MTU 1500", "Mbit/s", (">=", 600), True),
    ("upload_offload", "upload, offloads", "Mbit/s", (">=", 3000), True),
    ("ping_median", "ping RTT median", "us", ("<=", 100), True),
    ("ping_p99", "ping RTT p99", "us", None, True),
    ("ping_median_busy", "ping RTT median, --busy-poll 5000", "us", ("<=", 100), True),
    ("conn_rate", "new connections, http", "conn/s", (">=", 3000), True),
    ("concurrent_echo", "concurrent held, echo service", "conns", None, True),
    ("concurrent_listener", "concurrent held, bare listener", "conns", (">=", 10000), True),
    # The kernel's socket memory is in no process's RSS: its figure is the
    # server process's Python objects only, so no ratio.
    ("rss_listener", "server RSS per held conn", "KiB", None, False),
)


# ---------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def in_ns(ns: str | None) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


def run(cmd: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def link_counters(ns: str, dev: str) -> dict[str, int]:
    """The interface's packet and byte counters, as the kernel counts them."""
    r = run([*in_ns(ns), "ip", "-s", "-j", "link", "show", "dev", dev])
    stats = json.loads(r.stdout)[0]["stats64"]
    return {f"{way}_{what}": stats[way][what] for way in ("rx", "tx")
            for what in ("packets", "bytes")}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def wait_stop() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


class Holder:
    """Accepts connections on ``listener`` in a thread and keeps every one open."""

    def __init__(self, listener) -> None:
        self.listener = listener
        self.held: list = []
        self._stop = threading.Event()
        listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._loop, name="holder", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.held:
            try:
                conn.close()
            except OSError:
                pass
        self.listener.close()


# ---------------------------------------------------------------- helper processes


def cmd_serve_kernel(args) -> int:
    """The kernel baseline's server: http and echo on kernel sockets, plus a holder."""
    from stack.services import KernelNet, parse_service, start_service

    raise_nofile(65536)
    net = KernelNet()
    services = [start_service(net, parse_service(f"http:{HTTP_PORT}"), address=args.address),
                start_service(net, parse_service(f"echo:{ECHO_PORT}"), address=args.address)]
    holder = Holder(socket.create_server((args.address, HOLD_PORT), backlog=4096))
    print("kernel-server: up", file=sys.stderr, flush=True)
    try:
        wait_stop()
    finally:
        holder.close()
        for svc in services:
            svc.close()
    return 0


def cmd_hold_stack(args) -> int:
    """The stack on a TAP with one bare listener that accepts and holds connections."""
    from stack.runtime import Stack

    net = Stack.tap(args.tap, address=args.address, host_address=args.host_address)
    holder = Holder(net.create_server(("0.0.0.0", HOLD_PORT), backlog=4096))
    print("stack: up (hold server)", file=sys.stderr, flush=True)
    try:
        wait_stop()
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


def cmd_hold_client(args) -> int:
    """Open up to K connections, hold them, count the open ones; close on a line from stdin."""
    limit = raise_nofile(args.conns + 256)
    socks: list[socket.socket] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + args.connect_seconds
    share = [args.conns // args.threads + (i < args.conns % args.threads)
             for i in range(args.threads)]

    def worker(n):
        for _ in range(n):
            if time.monotonic() > deadline:
                return
            try:
                s = socket.create_connection((args.host, args.port), timeout=3)
            except OSError as e:
                with lock:
                    errors[type(e).__name__] += 1
                continue
            with lock:
                socks.append(s)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.connect_seconds + 5)
    connect_s = time.monotonic() - start
    time.sleep(args.hold)
    # Still open = no data, no EOF, no error after the hold (neither service sends first).
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLPRI)
    closed = len(poller.poll(0))
    print(json.dumps({"attempted": args.conns, "established": len(socks),
                      "open": len(socks) - closed, "connect_seconds": round(connect_s, 2),
                      "nofile": limit, "errors": dict(errors)}), flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    return 0


# ---------------------------------------------------------------- the orchestrator


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tag = str(os.getpid())
        self.k1 = f"{NS_PREFIX}k1-{self.tag}"
        self.k2 = f"{NS_PREFIX}k2-{self.tag}"
        self.s = f"{NS_PREFIX}s-{self.tag}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = Path(tempfile.mkdtemp(prefix="stackbench-", dir=shm))
        self.results: dict[str, dict] = {}
        self.notes: list[str] = []
        self.kernel_pid: int | None = None
        self.has_ethtool = shutil.which("ethtool") is not None
        self.offload_flag = "--offload" in run([PY, "-m", "stack", "up", "--help"]).stdout

    # -- lifecycle ------------------------------------------------------------

    def netns_add(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        ns = in_ns(name)
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])
        run([*ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        run([*ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=False)

    def setup(self) -> None:
        for name in (self.k1, self.k2, self.s):
            self.netns_add(name)
        va, vb = f"sbk1-{self.tag}"[:15], f"sbk2-{self.tag}"[:15]
        run(["ip", "link", "add", va, "netns", self.k1, "type", "veth",
             "peer", "name", vb, "netns", self.k2])
        for ns, dev, addr in ((self.k1, va, KERNEL_SERVER), (self.k2, vb, KERNEL_CLIENT)):
            run([*in_ns(ns), "ip", "addr", "add", f"{addr}/24", "dev", dev])
            run([*in_ns(ns), "ip", "link", "set", dev, "mtu", "1500", "up"])
        self.veths = ((self.k1, va), (self.k2, vb))
        proc = self.start([*in_ns(self.k1), PY, SELF, "_serve-kernel", "--address", KERNEL_SERVER],
                          "kernel-server")
        self.wait_ready(proc, "kernel-server", "kernel-server: up")
        self.kernel_pid = proc.pid
        run([*in_ns(self.k2), "ping", "-c", "2", "-i", "0.05", "-W", "1", KERNEL_SERVER])

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for name in reversed(self.namespaces):
            run(["ip", "netns", "del", name], check=False)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, cmd: list[str], name: str, stdin=None, stdout=None) -> subprocess.Popen:
        err = open(self.tmp / f"{name}.err", "w")
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=err, text=True,
                                cwd=ROOT, start_new_session=True)
        err.close()
        proc.log_name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def wait_ready(self, proc: subprocess.Popen, name: str, prefix: str, timeout=20.0) -> None:
        path = self.tmp / f"{name}.err"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = path.read_text()
            if any(line.startswith(prefix) for line in text.splitlines()):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start:\n{path.read_text()[-2000:]}")

    @contextmanager
    def stack_up(self, *extra: str, hold: bool = False):
        """Run ``stack up`` (or the hold server) in the stack namespace; yield its pid."""
        ns = in_ns(self.s)
        if hold:
            cmd = [*ns, PY, SELF, "_hold-stack", "--tap", "tap0", "--address",
                   f"{STACK_ADDR}/24", "--host-address", f"{STACK_HOST}/24"]
        else:
            cmd = [*ns, PY, "-m", "stack", "up", "--tap", "tap0", "--host-address",
                   f"{STACK_HOST}/24", "--address", f"{STACK_ADDR}/24",
                   "--serve", f"http:{HTTP_PORT}", "--serve", f"echo:{ECHO_PORT}", *extra]
        proc = self.start(cmd, "stack")
        try:
            self.wait_ready(proc, "stack", "stack: up")
            run([*ns, "sysctl", "-qw", "net.ipv6.conf.tap0.disable_ipv6=1"], check=False)
            run([*ns, "ping", "-c", "2", "-i", "0.05", "-W", "1", STACK_ADDR], check=False)
            yield proc.pid
        finally:
            self.stop(proc)

    def set_kernel_offloads(self, on: bool) -> bool:
        """Turn TSO/GSO/GRO on the veth pair on or off; False when ethtool is missing."""
        if not self.has_ethtool:
            return False
        state = "on" if on else "off"
        for ns, dev in self.veths:
            run([*in_ns(ns), "ethtool", "-K", dev, "tso", state, "gso", state, "gro", state])
        return True

    def record(self, key: str, side: str, value, **detail) -> None:
        row = self.results.setdefault(key, {"kernel": None, "stack": None, "detail": {}})
        row[side] = value
        if detail:
            row["detail"][side] = detail

    # -- metrics --------------------------------------------------------------

    def curl_best(self, ns: str, host: str, size: int, upload: bool,
                  dev: str | None = None) -> tuple[float, list]:
        """Best of 3 curl transfers of ``size`` bytes, in Mbit/s. With ``dev``, each
        run also notes the frames that crossed it each way and their mean size."""
        ns_cmd = in_ns(ns)
        if upload:
            path = self.tmp / f"upload-{size}.bin"
            if not path.exists():
                block = bytes(range(256)) * 4096
                with open(path, "wb") as f:
                    for off in range(0, size, len(block)):
                        f.write(block[: min(len(block), size - off)])
            cmd = [*ns_cmd, "curl", "-s", "-o", "/dev/null", "--max-time", "60", "-T", str(path),
                   "-w", "%{speed_upload} %{size_upload} %{http_code}", f"http://{host}/upload"]
        else:
            cmd = [*ns_cmd, "curl", "-s", "-o", "/dev/null", "--max-time", "60",
                   "-w", "%{speed_download} %{size_download} %{http_code}",
                   f"http://{host}/bytes/{size}"]
        runs = []
        for _ in range(3):
            before = link_counters(ns, dev) if dev else None
            r = run(cmd, timeout=70, check=False)
            frames = {}
            if dev:
                after = link_counters(ns, dev)
                for way in ("rx", "tx"):
                    n = after[f"{way}_packets"] - before[f"{way}_packets"]
                    nbytes = after[f"{way}_bytes"] - before[f"{way}_bytes"]
                    frames[f"{dev}_{way}_frames"] = n
                    frames[f"{dev}_{way}_mean_bytes"] = round(nbytes / n) if n else None
            try:
                speed, moved, code = r.stdout.split()
            except ValueError:
                runs.append({"error": f"curl exit {r.returncode}"})
                continue
            if code != "200" or int(moved) != size:
                runs.append({"error": f"curl exit {r.returncode}, http {code}, {moved} bytes"})
                continue
            runs.append({"mbps": round(float(speed) * 8 / 1e6, 1), **frames})
        good = [x["mbps"] for x in runs if "mbps" in x]
        return (max(good) if good else None), runs

    def transfers(self, kinds: list[str]) -> None:
        a = self.args
        k_size, s_size = a.kernel_mb * MB, a.stack_mb * MB
        for offload in (False, True):
            suffix = "offload" if offload else "mtu1500"
            if self.set_kernel_offloads(offload) or offload:
                for kind in kinds:
                    best, runs = self.curl_best(self.k2, KERNEL_SERVER, k_size, kind == "upload")
                    self.record(f"{kind}_{suffix}", "kernel", best, runs=runs, bytes=k_size)
                    log(f"kernel {kind} {suffix}: {best} Mbit/s")
            else:
                self.notes.append("ethtool missing: the kernel's MTU 1500 rows are not measured")
        self.set_kernel_offloads(True)
        variants = [(False, ())]
        if self.offload_flag:
            variants.append((True, ("--offload",)))
        else:
            self.notes.append("`stack up --help` has no --offload: the stack's offload rows are n/a")
        for offload, extra in variants:
            suffix = "offload" if offload else "mtu1500"
            with self.stack_up(*extra):
                for kind in kinds:
                    best, runs = self.curl_best(self.s, STACK_ADDR, s_size, kind == "upload",
                                                dev="tap0")
                    self.record(f"{kind}_{suffix}", "stack", best, runs=runs, bytes=s_size)
                    log(f"stack {kind} {suffix}: {best} Mbit/s")

    def ping_side(self, ns: str, host: str) -> tuple[float, float, dict]:
        run([*in_ns(ns), "ping", "-c", "5", "-i", "0.01", "-W", "1", host], check=False)
        r = run([*in_ns(ns), "ping", "-c", str(self.args.pings), "-i", "0.002", "-W", "1", host],
                timeout=60, check=False)
        times = [float(m) * 1000 for m in re.findall(r"time=([0-9.]+) ms", r.stdout)]
        if not times:
            return None, None, {"error": r.stdout[-300:] + r.stderr[-300:]}
        return (round(statistics.median(times), 1), round(percentile(times, 99), 1),
                {"replies": len(times), "sent": self.args.pings, "min_us": round(min(times), 1)})

    def ping(self) -> None:
        med, p99, detail = self.ping_side(self.k2, KERNEL_SERVER)
        self.record("ping_median", "kernel", med, **detail)
        self.record("ping_p99", "kernel", p99)
        with self.stack_up():
            med, p99, detail = self.ping_side(self.s, STACK_ADDR)
        self.record("ping_median", "stack", med, **detail)
        self.record("ping_p99", "stack", p99)
        # Linux busy-polls too when asked (net.core.busy_poll); the kernel
        # column is the same plain figure for comparison.
        self.record("ping_median_busy", "kernel", self.results["ping_median"]["kernel"])
        with self.stack_up("--busy-poll", "5000"):
            busy, _, bdetail = self.ping_side(self.s, STACK_ADDR)
        self.record("ping_median_busy", "stack", busy, **bdetail)
        log(f"ping median/p99: kernel {self.results['ping_median']['kernel']}/"
            f"{self.results['ping_p99']['kernel']} us, stack {med}/{p99} us")

    def rate_side(self, ns: str, host: str) -> tuple[float | None, dict]:
        cmd = [*in_ns(ns), PY, SELF, "_rate-client", "--host", host, "--port", str(HTTP_PORT),
               "--seconds", str(self.args.rate_seconds), "--threads", str(self.args.rate_threads)]
        r = run(cmd, timeout=self.args.rate_seconds + 30, check=False)
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return None, {"error": r.stderr[-500:]}
        return out["per_second"], out

    def rate(self) -> None:
        value, detail = self.rate_side(self.k2, KERNEL_SERVER)
        self.record("conn_rate", "kernel", value, **detail)
        with self.stack_up():
            svalue, sdetail = self.rate_side(self.s, STACK_ADDR)
        self.record("conn_rate", "stack", svalue, **sdetail)
        log(f"new connections/s: kernel {value}, stack {svalue}")

    def hold_side(self, ns: str, host: str, port: int, pid: int, conns: int) -> dict:
        before = rss_kib(pid)
        cmd = [*in_ns(ns), PY, SELF, "_hold-client", "--host", host, "--port", str(port),
               "--conns", str(conns), "--connect-seconds",
               str(self.args.connect_seconds), "--hold", "2"]
        client = self.start(cmd, "hold-client", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            line = ""
            ready, _, _ = select.select([client.stdout], [], [], self.args.connect_seconds + 30)
            if ready:
                line = client.stdout.readline()
            after = rss_kib(pid)
            try:
                out = json.loads(line)
            except ValueError:
                return {"error": (self.tmp / "hold-client.err").read_text()[-500:]}
            out["rss_before_kib"], out["rss_after_kib"] = before, after
            out["rss_per_conn_kib"] = (round((after - before) / out["open"], 2)
                                       if out["open"] else None)
            client.stdin.write("close\n")
            client.stdin.flush()
            client.wait(60)
            return out
        finally:
            self.stop(client)

    def concurrent(self) -> None:
        # The echo service serves at most MAX_CLIENTS (256) clients and closes
        # the rest on accept, on either side: fewer attempts show that cap as
        # well as 10,000 do, in a tenth of the time. The bare listener only
        # accepts, so it measures the TCP layer and the socket facade.
        a = self.args
        for key, port, conns in (("concurrent_echo", ECHO_PORT, min(a.echo_conns, a.conns)),
                                 ("concurrent_listener", HOLD_PORT, a.conns)):
            out = self.hold_side(self.k2, KERNEL_SERVER, port, self.kernel_pid, conns)
            self.record(key, "kernel", out.get("open"), **out)
            with self.stack_up(hold=port == HOLD_PORT) as pid:
                sout = self.hold_side(self.s, STACK_ADDR, port, pid, conns)
            self.record(key, "stack", sout.get("open"), **sout)
            log(f"{key}: kernel {out.get('open')} open, stack {sout.get('open')} open "
                f"({sout.get('rss_per_conn_kib')} KiB/conn)")
        self.record("rss_listener", "kernel", out.get("rss_per_conn_kib"))
        self.record("rss_listener", "stack", sout.get("rss_per_conn_kib"))
        self.notes.append("server RSS per held conn: the kernel's socket memory is in no RSS, "
                          "its figure is the Python server process's only")

    def profile(self) -> None:
        spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not os.access(spy, os.X_OK):
            self.notes.append("profile skipped: py-spy is not installed "
                              "(.venv/bin/pip install py-spy)")
            return
        seconds = self.args.profile_seconds
        variants = {"MTU 1500": ()}
        if self.offload_flag:
            variants["--offload"] = ("--offload",)
        self.results["profile"] = {}
        # Two views of one download: every thread py-spy sees busy (time in
        # system calls such as the TAP write included), then only the thread
        # holding the GIL (where the Python work goes).
        views = {"busy": ([], WAITS), "gil": (["--gil"], ())}
        for name, extra in variants.items():
            raw = self.tmp / "profile.txt"
            out = self.results["profile"][name] = {}
            with self.stack_up(*extra) as pid:
                # A download that outlasts the sampling at the stack's speed.
                curl = self.start([*in_ns(self.s), "curl", "-s", "-o", "/dev/null",
                                   "--max-time", str(2 * seconds + 20),
                                   f"http://{STACK_ADDR}/bytes/{8_000 * MB}"], "profile-curl")
                time.sleep(0.5)
                for view, (flags, skip) in views.items():
                    run([spy, "record", "--pid", str(pid), "--duration", str(seconds),
                         "--rate", "250", "--format", "raw", "--function", "--nonblocking",
                         *flags, "-o", str(raw)], timeout=seconds + 60)
                    out[view] = parse_profile(raw.read_text(), skip=skip)
                self.stop(curl)

    # -- the run ----------------------------------------------------------------

    def run(self, metrics: list[str]) -> None:
        steps = []
        kinds = [m for m in ("download", "upload") if m in metrics]
        if kinds:
            steps.append(("transfers", lambda: self.transfers(kinds)))
        for name in ("ping", "rate", "concurrent", "profile"):
            if name in metrics:
                steps.append((name, getattr(self, name)))
        for name, step in steps:
            t0 = time.monotonic()
            try:
                step()
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                self.notes.append(f"{name} failed: {e}")
                log(f"{name} failed: {e}")
            log(f"{name}: {time.monotonic() - t0:.1f} s")


# Blocking calls that py-spy does not always see as idle: left out of the
# "busy" view so that it ranks work, not waiting.
WAITS = ("Condition.wait", "EpollSelector.select", "PollSelector.select", "Event.wait",
         "Thread.join", "wait_stop")


def parse_profile(text: str, top: int = 15, skip: tuple[str, ...] = ()) -> dict:
    """py-spy raw (collapsed) stacks -> the functions with the most own samples.

    Samples whose innermost frame is a function named in ``skip`` are dropped
    (and counted in ``skipped``)."""
    own: Counter = Counter()
    skipped = 0
    total_incl: Counter = Counter()
    samples = 0
    prefixes = (str(ROOT) + "/", str(Path(PY).parent.parent) + "/")
    for line in text.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        n = int(count)
        frames = []
        for frame in stack_text.split(";"):
            for p in prefixes:
                frame = frame.replace(p, "")
            frames.append(re.sub(r"/usr/lib/python3[.0-9]*/|/usr/local/lib/python3[.0-9]*/",
                                 "", frame))
        if frames[-1].split(" (", 1)[0] in skip:
            skipped += n
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total_incl[frame] += n
    return {
        "samples": samples,
        "skipped": skipped,
        "own": [{"function": f, "samples": n, "percent": round(100 * n / samples, 1)}
                for f, n in own.most_common(top)] if samples else [],
        "inclusive": [{"function": f, "samples": n, "percent": round(100 * n / samples, 1)}
                      for f, n in total_incl.most_common(top + 10)] if samples else [],
    }


def fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("conns", "conn/s", "Mbit/s"):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def table(results: dict) -> str:
    head = ("metric", "kernel", "stack", "ratio", "target", "met")
    rows = []
    for key, label, unit, target, comparable in ROWS:
        if key not in results:
            continue
        r = results[key]
        k, s = r["kernel"], r["stack"]
        ratio = f"{s / k:.2f}" if comparable and k and s is not None else "n/a"
        tgt, met = "", ""
        if target is not None:
            op, goal = target
            tgt = f"{op.replace('>=', '≥').replace('<=', '≤')} {goal:,}"
            if s is not None:
                met = "yes" if (s >= goal if op == ">=" else s <= goal) else "no"
        rows.append((f"{label} ({unit})", fmt(k, unit), fmt(s, unit), ratio, tgt, met))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
           "-|-".join("-" * w for w in widths)]
    for r in rows:
        out.append(" | ".join([r[0].ljust(widths[0])]
                              + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]))
    return "\n".join(out)


PROFILE_VIEWS = {"busy": "busy threads, waits left out (system calls such as the TAP write in)",
                 "gil": "the thread holding the GIL (the Python work)"}


def profile_text(profiles: dict) -> str:
    lines = []
    for name, views in profiles.items():
        for view, prof in views.items():
            lines.append(f"\nstack up ({name}) during a download, top functions by own time, "
                         f"{PROFILE_VIEWS[view]} ({prof['samples']} samples):")
            for i, row in enumerate(prof["own"], 1):
                lines.append(f"{i:3d}. {row['percent']:5.1f}%  {row['function']}")
    return "\n".join(lines)


def source_version() -> str:
    """The commit measured, marked dirty when stack/ has uncommitted changes."""
    head = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False)
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "stack", "native"],
                check=False)
    commit = head.stdout.strip() or "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def clean_stale() -> None:
    """Remove namespaces of earlier runs whose process no longer exists."""
    r = run(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(?:k1|k2|s)-(\d+)", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            run(["ip", "netns", "del", name], check=False)


def cmd_main(args) -> int:
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, TAP, veth)", file=sys.stderr)
        return 2
    metrics = [m.strip() for m in args.only.split(",")] if args.only else list(METRICS)
    if args.profile and "profile" not in metrics:
        metrics.append("profile")
    unknown = set(metrics) - set(METRICS) - {"profile"}
    if unknown:
        print(f"bench: unknown metric(s) {', '.join(sorted(unknown))}; "
              f"choose from {', '.join(METRICS)}, profile", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    clean_stale()
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"load average {load:.2f} before the run: other work shares the CPUs, "
            "figures will be low and noisy")
    started = time.monotonic()
    bench = Bench(args)
    try:
        bench.setup()
        bench.run(metrics)
    finally:
        bench.close()
    results = bench.results
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(), "load_before": round(load, 2),
                    "load_after": round(os.getloadavg()[0], 2)},
        "settings": {"kernel_mb": args.kernel_mb, "stack_mb": args.stack_mb,
                     "pings": args.pings, "rate_seconds": args.rate_seconds,
                     "rate_threads": args.rate_threads, "conns": args.conns,
                     "echo_conns": args.echo_conns},
        "commit": source_version(),
        "seconds": round(time.monotonic() - started, 1),
        "metrics": {k: v for k, v in results.items() if k != "profile"},
        "notes": bench.notes,
    }
    if "profile" in results:
        report["profile"] = results["profile"]
    if any(key in results for key, *_ in ROWS):
        print(table(results))
    for note in bench.notes:
        print(f"note: {note}")
    if "profile" in results:
        print(profile_text(results["profile"]))
    print(f"({report['date']}, commit {report['commit']}, {report['seconds']} s, "
          f"load average {load:.2f} before, {report['machine']['load_after']:.2f} after)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", metavar="LIST",
                   help=f"comma-separated metrics: {', '.join(METRICS)}, profile (default: all "
                        "but profile)")
    p.add_argument("--profile", action="store_true",
                   help="also profile `stack up` with py-spy during a download")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--kernel-mb", type=int, default=200, help="kernel transfer size (MB)")
    p.add_argument("--stack-mb", type=int, default=100, help="stack transfer size (MB)")
    p.add_argument("--pings", type=int, default=200)
    p.add_argument("--rate-seconds", type=float, default=5.0)
    p.add_argument("--rate-threads", type=int, default=4)
    p.add_argument("--conns", type=int, default=10_000,
                   help="connections to hold on the bare listener")
    p.add_argument("--echo-conns", type=int, default=1_000,
                   help="connections to open to the echo service")
    p.add_argument("--connect-seconds", type=float, default=40.0,
                   help="time limit for opening the held connections")
    p.add_argument("--profile-seconds", type=int, default=8,
                   help="py-spy sampling time per view (two views per variant)")
    sub = p.add_subparsers(dest="helper")
    s = sub.add_parser("_serve-kernel")
    s.add_argument("--address", required=True)
    s = sub.add_parser("_hold-stack")
    s.add_argument("--tap", required=True)
    s.add_argument("--address", required=True)
    s.add_argument("--host-address", required=True)
    s = sub.add_parser("_rate-client")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--linger0", action="store_true", help="close with RST (SO_LINGER 0)")
    s = sub.add_parser("_hold-client")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--conns", type=int, required=True)
    s.add_argument("--connect-seconds", type=float, default=40.0)
    s.add_argument("--hold", type=float, default=2.0)
    s.add_argument("--threads", type=int, default=8)
    args = p.parse_args(argv)
    helpers = {"_serve-kernel": cmd_serve_kernel, "_hold-stack": cmd_hold_stack,
               "_rate-client": cmd_rate_client, "_hold-client": cmd_hold_client}
    if args.helper:
        return helpers[args.helper](args)
    return cmd_main(args)


if __name__ == "__main__":
    sys.exit(main())
