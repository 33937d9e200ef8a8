"""Small helpers shared by the end-to-end benchmark's modules (``bench/e2e.py``)."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SELF = str(Path(__file__).resolve().parent / "e2e.py")

NS_PREFIX = "stackbench-"
KERNEL_SERVER, KERNEL_CLIENT = "198.51.100.1", "198.51.100.2"
STACK_HOST, STACK_ADDR = "192.0.2.1", "192.0.2.2"
HTTP_PORT, ECHO_PORT, HOLD_PORT, NGINX_PORT = 80, 7, 9000, 8080
MB = 1_000_000


def client_addresses(first: str, count: int) -> list[str]:
    """``count`` extra client addresses on the /24 of ``first``: .11, .12, ..."""
    net = first.rsplit(".", 1)[0]
    return [f"{net}.{11 + i}" for i in range(count)]


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
    """Raise RLIMIT_NOFILE to ``want`` (the hard limit too, when allowed: root
    may go up to fs.nr_open); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = int(f.read())
    except (OSError, ValueError):
        ceiling = want
    want = min(want, ceiling)
    for new in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            break
        except (ValueError, OSError):
            continue
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


def write_pattern(path: Path, size: int) -> None:
    """``size`` bytes where byte i is i % 251: what the http service's /bytes/N sends."""
    block = bytes(range(251)) * 4096
    with open(path, "wb") as f:
        for off in range(0, size, len(block)):
            f.write(block[: min(len(block), size - off)])


def wait_stop(holder: Holder | None = None) -> None:
    """Block until SIGTERM or SIGINT. With a holder, log its count on stderr
    (``holder: held N``) every half second while it changes."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    last = -1
    while not stop.wait(0.5 if holder else 3600):
        if holder is not None and len(holder.held) != last:
            last = len(holder.held)
            print(f"holder: held {last}", file=sys.stderr, flush=True)


def last_held(path: Path) -> int | None:
    """The last ``holder: held N`` a server logged to ``path``."""
    held = None
    for line in path.read_text().splitlines():
        if line.startswith("holder: held "):
            held = int(line.split()[-1])
    return held


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
