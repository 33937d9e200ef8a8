"""Helpers for tests against the Linux kernel on a TAP (they run as root in a private netns)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def sh(cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell command in the test namespace and return its result."""
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}")
    return r


def wait_for(pred, timeout: float = 5.0, interval: float = 0.01):
    """Poll ``pred`` until it returns something true or ``timeout`` passes; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return pred()


def stack_up(tap: str, *args: str) -> subprocess.Popen:
    """Start ``python -m stack up --tap TAP --host-address 192.0.2.1/24 ARGS...`` in the
    test namespace (a TAP of that name left over from an earlier run is deleted
    first). Its stderr is a text pipe: the first line is ``stack: up ...``."""
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    return subprocess.Popen([sys.executable, "-m", "stack", "up", "--tap", tap,
                             "--host-address", "192.0.2.1/24", *args],
                            stderr=subprocess.PIPE, text=True)


def stop_stack_up(p: subprocess.Popen, timeout: float = 15) -> str:
    """SIGTERM to a ``stack up`` process; asserts it exits 0 and returns the rest of its stderr."""
    p.send_signal(signal.SIGTERM)
    rest = p.stderr.read()
    assert p.wait(timeout=timeout) == 0, rest
    return rest


def stop(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaped, its stderr closed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def kill(*procs: subprocess.Popen | None) -> None:
    """Kill (and reap) each process this test started that is still running."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()


def kernel_counters() -> dict[str, int]:
    """The namespace's IP and TCP counters (what ``nstat -a`` reads), as
    ``Ip.InHdrErrors``, ``Tcp.InCsumErrors``, ``TcpExt.TCPSACKReorder``..."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=True):
            proto, names = names.split(":", 1)
            for k, v in zip(names.split(), values.split(":", 1)[1].split(), strict=True):
                out[f"{proto}.{k}"] = int(v)
    return out
