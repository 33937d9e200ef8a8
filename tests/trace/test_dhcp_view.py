"""``stack trace --layer dhcp``: the DHCP client's messages, states and leases."""

from __future__ import annotations

import json

from stack.tracetool.layers import layer_view, summary
from tests.helpers.cli import run_stack

XID = "0x0000002a"
EVENTS = [
    {"t": 0.01, "layer": "dhcp", "event": "state", "from": "INIT", "to": "SELECTING",
     "cause": "start"},
    {"t": 0.02, "layer": "dhcp", "event": "send", "message": "DISCOVER", "xid": XID,
     "dst": "255.255.255.255", "ciaddr": "0.0.0.0", "attempt": 1},
    {"t": 0.03, "layer": "dhcp", "event": "drop", "reason": "wrong_xid", "xid": "0x00000001",
     "message": "OFFER", "state": "SELECTING"},
    {"t": 0.04, "layer": "dhcp", "event": "receive", "message": "OFFER", "xid": XID,
     "yiaddr": "198.51.100.50", "server": "198.51.100.1"},
    {"t": 0.05, "layer": "dhcp", "event": "send", "message": "REQUEST", "xid": XID,
     "dst": "255.255.255.255", "ciaddr": "0.0.0.0", "attempt": 1,
     "requested": "198.51.100.50", "server": "198.51.100.1"},
    {"t": 0.06, "layer": "dhcp", "event": "receive", "message": "ACK", "xid": XID,
     "yiaddr": "198.51.100.50", "server": "198.51.100.1"},
    {"t": 0.07, "layer": "dhcp", "event": "bound", "renewal": False,
     "address": "198.51.100.50/24", "router": "198.51.100.1", "dns": ["198.51.100.1"],
     "server": "198.51.100.1", "lease": 120, "t1": 60.0, "t2": 105.0},
    {"t": 9.0, "layer": "dhcp", "event": "unbound", "address": "198.51.100.50/24",
     "reason": "released"},
]


def test_the_view_lists_the_exchange_in_order():
    lines = layer_view(EVENTS, "dhcp").splitlines()
    assert lines[0] == "dhcp layer"
    kinds = [line.split()[1] for line in lines[1:-1]]
    assert kinds == ["INIT", "->", "drop", "<-", "->", "<-", "bound", "gave"]
    assert "DISCOVER" in lines[2] and "to 255.255.255.255" in lines[2]
    assert "OFFER" in lines[4] and "yiaddr 198.51.100.50 from 198.51.100.1" in lines[4]
    assert "asking 198.51.100.50" in lines[5]
    assert "router 198.51.100.1" in lines[7] and "lease 120 s" in lines[7]
    assert lines[-1] == summary(EVENTS, "dhcp")
    assert summary(EVENTS, "dhcp") == ("dhcp: 1 DISCOVER, 1 OFFER, 1 REQUEST, 1 ACK; gave up "
                                       "198.51.100.50/24 (released); 1 reply dropped")


def test_stack_trace_layer_dhcp_and_the_default_view_name_it(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    r = run_stack("trace", str(path), "--layer", "dhcp")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "dhcp layer"
    r = run_stack("trace", str(path))
    assert r.returncode == 0, r.stderr
    assert "  dhcp: 1 DISCOVER, 1 OFFER" in r.stdout
