"""The stack as a Mininet host (``stack.lab.build.StackHost``) in a topology
that Mininet itself builds from a user's ``Topo``: a kernel host's curl
reaches the stack's HTTP service through a Linux router."""

from __future__ import annotations

import subprocess
import sys

from stack.lab import evidence as ev

from tests.helpers.cli import ENV, ROOT

INNER = 'mount --make-rprivate / && ip link set lo up && exec "$@"'


def test_a_kernel_host_fetches_from_the_stack_host_through_a_router(tmp_path):
    r = subprocess.run(["unshare", "--net", "--mount", "--", "sh", "-c", INNER, "sh",
                        sys.executable, str(ROOT / "tests/helpers/mininet_topo.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=90, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "curl 200 100000" in r.stdout, r.stdout + r.stderr
    # The stack itself served it: its capture has the kernel host's SYN, by way
    # of the router (TTL 63), and its own answer of 100,000 bytes and more.
    tcp = [p for p in ev.pcap(str(tmp_path / "web.pcap")) if p.proto == 6]
    syn = [p for p in tcp if p.flags == "S" and p.dport == 80]
    assert syn and syn[0].src == "203.0.113.2" and syn[0].ttl == 63
    sent = sum(p.payload for p in tcp if p.src == "198.51.100.2")
    assert sent > 100_000
    states = ev.states(ev.trace(str(tmp_path / "web.jsonl")))
    assert any(to == "ESTABLISHED" and "203.0.113.2" in conn for _, conn, _, to, _ in states)
