"""Running the real ``stack`` command from tests, and checking its errors."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run_stack(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stack", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT, stdin=subprocess.DEVNULL)


def assert_one_error(r: subprocess.CompletedProcess, code: int, *names: str) -> str:
    """The run failed with ``code`` and said so in one ``stack: error:`` line naming ``names``."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == code, (r.returncode, out)
    assert r.stdout == "", r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("stack: error: "), line
    for name in names:
        assert name in line, (name, line)
    return line
