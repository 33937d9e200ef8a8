"""Helpers for tests against the Linux kernel on a TAP (they run as root in a private netns)."""

from __future__ import annotations

import subprocess
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
