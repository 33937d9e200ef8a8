"""The README's "Run your own programs over the stack" examples, run exactly
as written: the ``sh`` block by bash (with a ``stack`` on PATH that is this
checkout's), the ``python`` block as a script with the kernel-side server the
README says to start first."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers.cli import ENV, ROOT
from tests.helpers.tap import kill

SECTION = "## Run your own programs over the stack"


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(rf"```{lang}\n(.*?)```", text[start:end], re.S)


def _path_with_stack(tmp_path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "stack"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m stack "$@"\n')
    shim.chmod(0o755)
    return {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}


def test_the_stack_run_example(netns, tmp_path):
    [block] = _blocks("sh")
    subprocess.run(["ip", "link", "del", "tap1"], capture_output=True)
    r = subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=90,
                       cwd=tmp_path, env=_path_with_stack(tmp_path))
    lines = r.stdout.splitlines()
    assert lines[0] == "Serving HTTP on 192.0.2.2 port 8000 (http://192.0.2.2:8000/) ..."
    assert lines[1] == "<!DOCTYPE HTML>", r.stdout + r.stderr  # curl's first line
    assert "stack: up tap=tap1" in r.stderr and "stack: down" in r.stderr, r.stderr
    timeline = "\n".join(lines[2:])  # stack trace's, of curl's connection
    assert "connection 192.0.2.2:8000-192.0.2.1:" in timeline, timeline
    for step in ("LISTEN       -> SYN_RECEIVED", "SYN_RECEIVED -> ESTABLISHED", "-> CLOSED"):
        assert step in timeline, timeline


def test_the_patched_example(netns, tmp_path):
    [block] = _blocks("python")
    assert "net.patched()" in block
    (tmp_path / "example.py").write_text(block)
    subprocess.run(["ip", "link", "del", "tap1"], capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "http.server", "8000"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout.readline().startswith("Serving HTTP on")
        r = subprocess.run([sys.executable, "example.py"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env=ENV)
    finally:
        kill(server)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("200 SimpleHTTP/"), r.stdout + r.stderr
