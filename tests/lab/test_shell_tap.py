"""``stack lab --topology FILE --shell``, and a lab torn down completely when
it is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers.cli import ENV, ROOT

TOPOLOGY = """
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"

[hosts.server]
address = "203.0.113.2/24"
gateway = "203.0.113.1"
link = "wan"

[routers.r1]
interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }
"""


def test_a_shell_in_a_topology_reaches_every_node(tmp_path):
    topo = tmp_path / "two.toml"
    topo.write_text(TOPOLOGY)
    script = (f"lab server ping -c 1 -W 2 198.51.100.2 && echo PING-OK\n"
              f"lab client {sys.executable} -m stack ss -tan\n"
              "lab r1 ip -br addr\n"
              "exit\n")
    r = subprocess.run([sys.executable, "-m", "stack", "lab", "--topology", str(topo), "--shell"],
                       input=script, capture_output=True, text=True, timeout=90, cwd=tmp_path,
                       env={**ENV, "SHELL": "/bin/sh"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PING-OK" in r.stdout, r.stdout + r.stderr
    assert "Local Address:Port" in r.stdout            # stack ss, answered by the stack
    assert "r1-wan" in r.stdout and "203.0.113.1/24" in r.stdout
    # stack up ran in the stack host and left its trace and capture.
    (out,) = [p for p in tmp_path.iterdir() if p.name.startswith("lab-shell-")]
    assert (out / "client.jsonl").stat().st_size > 0 and (out / "client.pcap").exists()


def _ours(marker: str) -> list[int]:
    """PIDs of processes whose command line names ``marker`` (the lab's out dir)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_an_interrupted_lesson_leaves_nothing_running(tmp_path):
    out = tmp_path / "interrupted"
    shells_before = set(_ours("mininet:"))   # Mininet names each node's shell so
    proc = subprocess.Popen([sys.executable, "-m", "stack", "lab", "loss", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out / "loss.log").exists():
        time.sleep(0.1)
    assert (out / "loss.log").exists(), "the lesson never started its stack"
    time.sleep(1.0)
    assert _ours(str(out)), "nothing of the lab's was running to interrupt"
    assert set(_ours("mininet:")) - shells_before, "no node shells to end"
    # Ctrl-C at a terminal reaches the whole process group, and an impatient
    # learner presses it twice.
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    text = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    time.sleep(0.5)
    assert _ours(str(out)) == [], text   # the stack and the routers' tcpdumps are gone
    assert set(_ours("mininet:")) <= shells_before, text   # and every node's shell
