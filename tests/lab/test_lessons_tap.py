"""Every lesson, run as a learner runs it (``stack lab NAME --out DIR``), and
its behaviour checked here again from the traces and captures it left, not
from what it printed."""

from __future__ import annotations

import json
import os

import pytest

from stack import tracetool
from stack.lab import evidence as ev
from stack.lab.lessons.paths import (bbr_modes, drained_into_probe_bw, moves_ok, paced_at_gain,
                                     segments_after_icmp)

from tests.helpers.cli import run_stack


def lesson(name: str, out) -> str:
    r = run_stack("lab", name, "--out", str(out), timeout=150)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lesson seen." in r.stdout
    # The views a learner reads are there beside every trace.
    for f in os.listdir(out):
        if f.endswith(".jsonl"):
            base = str(out / f[:-len(".jsonl")])
            assert os.path.getsize(base + "-timeline.txt") > 0
            assert os.path.exists(base + "-ladder.txt")
    return r.stdout


def conn_states(trace, port):
    return [(t, to, cause) for t, conn, _, to, cause in ev.states(trace) if f":{port}" in conn]


def test_handshake(tmp_path):
    lesson("handshake", tmp_path)
    tcp = [p for p in ev.pcap(str(tmp_path / "handshake.pcap")) if p.proto == 6]
    assert [p.flags for p in tcp[:3]] == ["S", "S.", "."]
    states = conn_states(ev.trace(str(tmp_path / "handshake.jsonl")), 7000)
    at = {to: t for t, to, _ in states}
    assert [to for _, to, _ in states][-3:] == ["FIN_WAIT_2", "TIME_WAIT", "CLOSED"]
    assert 1.9 <= at["CLOSED"] - at["TIME_WAIT"] <= 2.5  # 2 MSL with --msl 1
    assert os.path.getsize(tmp_path / "handshake-ladder.txt") > 0


def test_refused(tmp_path):
    lesson("refused", tmp_path)
    trace = ev.trace(str(tmp_path / "refused.jsonl"))
    refused = [s for s in conn_states(trace, 80) if s[1] == "CLOSED"]
    opened = [s for s in conn_states(trace, 80) if s[1] == "SYN_SENT"]
    # Refused by the server's RST well within 100 ms of the SYN.
    assert refused and opened and refused[0][0] - opened[0][0] < 0.1
    assert "RST" in refused[0][2]
    syns = [e for e in ev.events(trace, "tcp", "seg", dir="out", flags="S") if ":81" in e["conn"]]
    assert len(syns) == 3 and 1.5 < syns[-1]["t"] - syns[0]["t"] < 2.5  # 0 s, 1 s, 2 s
    icmp = [p for p in ev.pcap(str(tmp_path / "r1-lan.pcap")) if p.icmp == (3, 1)]
    assert icmp and icmp[0].dst == "198.51.100.2"
    asked = [e for e in ev.events(trace, "arp", "request") if e["target"] == "198.51.100.77"]
    failed = [e for e in ev.events(trace, "arp", "failed") if e["ip"] == "198.51.100.77"]
    # Three requests a second apart, then no route to host.
    assert failed and failed[0]["tries"] == 3
    before = [e for e in asked if e["t"] < failed[0]["t"]]
    assert len(before) == 3 and 1.5 < failed[0]["t"] - before[0]["t"] - 1 < 2.5


def test_closewait(tmp_path):
    lesson("closewait", tmp_path)
    sockets = json.loads((tmp_path / "closewait-ss.json").read_text().strip().splitlines()[-1])
    assert [s["state"] for s in sockets if s["local"][1] == 8080].count("CLOSE_WAIT") == 5
    assert len((tmp_path / "closewait-kernel-ss.txt").read_text().splitlines()) == 5


def test_timewait(tmp_path):
    lesson("timewait", tmp_path)
    trace = ev.trace(str(tmp_path / "timewait.jsonl"))
    waits = {conn for _, conn, _, to, _ in ev.states(trace) if to == "TIME_WAIT"}
    assert len([c for c in waits if c.endswith(":8000")]) == 20
    assert len([c for c in waits if c.endswith(":8001")]) == 1


def test_mtu(tmp_path):
    lesson("mtu", tmp_path)
    pkts = ev.pcap(str(tmp_path / "pmtud.pcap"))
    icmp = [p for p in pkts if p.icmp == (3, 4)]
    assert icmp and icmp[0].mtu == 1400
    # Once TCP took the ICMP in, no segment is bigger than the new MTU allows:
    # 1400 - 20 (IP) - 20 (TCP) - 12 (timestamps) bytes of payload.
    after = segments_after_icmp(ev.trace(str(tmp_path / "pmtud.jsonl")))
    assert after and max(after) <= 1348
    hole = ev.trace(str(tmp_path / "blackhole.jsonl"))
    assert not [p for p in ev.pcap(str(tmp_path / "blackhole.pcap")) if p.icmp]
    assert len([e for e in ev.events(hole, "tcp", "retransmit") if e["len"] == 1448]) >= 2
    # The same full-size segments went out again and again, and in that time
    # the download never got through to the client.
    sent = ev.pcap(str(tmp_path / "blackhole.pcap"))
    full = [p for p in sent if p.src == "198.51.100.2" and p.length == 1500]
    assert len(full) > len({p.seq for p in full})
    t0, t1 = sent[0].t, sent[-1].t
    far = [p for p in ev.pcap(str(tmp_path / "r2-wan.pcap"))
           if t0 <= p.t <= t1 and p.src == "198.51.100.2" and p.proto == 6]
    assert sum(p.payload for p in far) < 400_000
    clamped = [p for p in ev.pcap(str(tmp_path / "clamped.pcap")) if p.flags == "S"]
    assert clamped and clamped[0].mss == 1360


def test_fragments(tmp_path):
    lesson("fragments", tmp_path)
    mine = [p for p in ev.pcap(str(tmp_path / "fragments.pcap")) if p.fragment]
    assert sorted(p.frag_offset for p in mine if p.src == "198.51.100.2")[:2] == [0, 1480]
    far = [p for p in ev.pcap(str(tmp_path / "r2-wan.pcap"))
           if p.fragment and p.src == "198.51.100.2" and p.proto == 17]
    assert len(far) == 3 and max(p.length for p in far) <= 1400
    # The 3000-byte ping without DF came in fragments and went back in fragments.
    ping = ev.pcap(str(tmp_path / "fragments-ping.pcap"))
    assert [p for p in ping if p.fragment and p.src == "203.0.113.2"]
    assert [p for p in ping if p.fragment and p.src == "198.51.100.2" and p.proto == 1]


def test_nat(tmp_path):
    lesson("nat", tmp_path)
    lan = [p for p in ev.pcap(str(tmp_path / "r1-lan.pcap")) if p.proto == 6 and p.dport == 8000]
    wan = [p for p in ev.pcap(str(tmp_path / "r1-wan.pcap")) if p.proto == 6 and p.dport == 8000]
    assert {p.src for p in lan} == {"198.51.100.2"}
    assert {p.src for p in wan} == {"203.0.113.1"}   # the far side sees the router's address
    assert "203.0.113.1" in (tmp_path / "nat-server.out").read_text()


def png_height(path) -> int:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[20:24], "big")


@pytest.mark.parametrize("name", ["loss", "loss-and-recovery"])
def test_loss(tmp_path, name):
    out = lesson(name, tmp_path)
    trace = ev.trace(str(tmp_path / "loss.jsonl"))
    reasons = [e["reason"] for e in ev.events(trace, "tcp", "retransmit")]
    assert reasons.count("fast") + reasons.count("rack") >= 3
    assert not list(ev.events(trace, "tcp", "bbr"))           # CUBIC: no model
    assert png_height(tmp_path / "loss.png") == 800             # two panels, as before
    # The same download with BBR: its model in the trace, a third panel in its plot,
    # its modes in the timeline's summary.
    bbr = ev.trace(str(tmp_path / "loss-bbr.jsonl"))
    models = list(ev.events(bbr, "tcp", "bbr"))
    assert drained_into_probe_bw(bbr_modes(models))
    assert all(e["pacing_rate"] > 0 for e in models)
    assert png_height(tmp_path / "loss-bbr.png") == 1000
    data = tracetool.plot_data(bbr, models[0]["conn"])
    assert len(data["bbr_bw"]) == len(data["pacing_rate"]) == len(models)
    phases = [p for _, _, p in data["bbr_phases"]]
    assert phases[0] == "STARTUP" and {"PROBE_BW up", "PROBE_BW down", "PROBE_BW cruise"} <= set(phases)
    assert "    bbr       STARTUP " in (tmp_path / "loss-bbr-timeline.txt").read_text()
    assert [e for e in ev.events(bbr, "tcp", "retransmit") if e["reason"] != "syn"]
    faster = next(line for line in out.splitlines() if "faster than CUBIC" in line)
    assert faster.startswith("  yes "), faster
    heavy = ev.trace(str(tmp_path / "heavy-loss.jsonl"))
    assert [e for e in ev.events(heavy, "tcp", "retransmit") if e["reason"] in ("rto", "tlp")]


def test_bbr_moves_and_pacing_checks():
    """The lesson's checks on BBR's trace, on hand-built events."""
    def m(mode, gain=1.0, bw=1000, rate=990):
        return {"bbr_mode": mode, "bbr_pacing_gain": gain, "bbr_bw": bw, "pacing_rate": rate}
    order = bbr_modes([m("STARTUP"), m("STARTUP"), m("DRAIN"), m("PROBE_BW"), m("PROBE_BW")])
    assert order == ["STARTUP", "DRAIN", "PROBE_BW"] and moves_ok(order)
    assert moves_ok(["STARTUP", "PROBE_BW", "PROBE_RTT", "PROBE_BW"])
    assert not moves_ok(["DRAIN", "PROBE_BW"]) and not moves_ok(["STARTUP", "DRAIN", "STARTUP"])
    assert not moves_ok([])
    assert drained_into_probe_bw(["STARTUP", "DRAIN", "PROBE_BW", "PROBE_RTT", "PROBE_BW"])
    assert drained_into_probe_bw(["STARTUP", "PROBE_BW"])
    for order in (["STARTUP"], ["STARTUP", "DRAIN"], ["STARTUP", "PROBE_RTT", "PROBE_BW"],
                  ["STARTUP", "DRAIN", "PROBE_BW", "DRAIN"]):
        assert not drained_into_probe_bw(order), order
    assert paced_at_gain([m("PROBE_BW", 1.25, 1000, 1240), m("STARTUP", 2.885, 1000, 9000)]) == []
    bad = [m("PROBE_BW", 1.0, 1000, 900), m("PROBE_BW", 0.75, 1000, 1000), m("STARTUP", 2.0, 0, 5)]
    assert paced_at_gain(bad) == bad


def test_dns(tmp_path):
    lesson("dns", tmp_path)
    trace = ev.trace(str(tmp_path / "dns.jsonl"))
    big = list(ev.events(trace, "dns", "answer", name="big.example.test"))
    assert [e["via"] for e in big] == ["udp", "tcp"] and big[0]["truncated"]
    assert big[1]["answers"] == 40
    assert [e["rcode"] for e in ev.events(trace, "dns", "answer", name="nosuch.example.test")] == [3]
    assert any(e["server"] == "198.51.100.9" for e in ev.events(trace, "dns", "unreachable"))
    tcp53 = [p for p in ev.pcap(str(tmp_path / "dns.pcap")) if p.proto == 6 and p.dport == 53]
    assert tcp53 and tcp53[0].flags == "S"


def test_traceroute(tmp_path):
    lesson("traceroute", tmp_path)
    probes = [p for p in ev.pcap(str(tmp_path / "traceroute.pcap"))
              if p.proto == 17 and p.src == "198.51.100.2"]
    assert sorted({p.ttl for p in probes}) == [1, 2, 3, 4]
    answers = [p.src for p in ev.pcap(str(tmp_path / "traceroute.pcap")) if p.icmp == (11, 0)]
    order = list(dict.fromkeys(answers))
    assert order == ["198.51.100.1", "192.0.2.2", "192.0.2.66"]   # the routers, in order
    filtered = [p.src for p in ev.pcap(str(tmp_path / "traceroute-filtered.pcap"))
                if p.icmp == (11, 0)]
    assert "192.0.2.2" not in filtered and "192.0.2.66" in filtered


def test_dhcp(tmp_path):
    lesson("dhcp", tmp_path)
    trace = ev.trace(str(tmp_path / "dhcp.jsonl"))
    assert [e["message"] for e in ev.events(trace, "dhcp", "send")] == \
        ["DISCOVER", "REQUEST", "RELEASE"]
    (bound,) = ev.events(trace, "dhcp", "bound")
    assert bound["router"] == "198.51.100.1" and bound["dns"] == ["198.51.100.1"]
    udp = [p for p in ev.pcap(str(tmp_path / "dhcp.pcap")) if p.proto == 17 and p.dport == 67]
    assert udp[0].src == "0.0.0.0" and udp[0].dst == "255.255.255.255"
