"""The Trace object (stack/trace.py): rendering, filtering, counters as ``stack up``
prints them, and every drop provoked seen as both a drop event and a counter.
"""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest

from stack import cli
from stack.link.memory import CaptureLink
from stack.runtime import Stack
from stack.trace import STATE_EVENTS, Trace, group_counters, parse_layers
from stack.wire.arp import ArpPacket, build_arp
from stack.wire.eth import ETHERTYPE_ARP, ETHERTYPE_IPV4, build_eth
from stack.wire.icmp import IcmpMessage, build_icmp
from stack.wire.ipv4 import Ipv4Header, build_ipv4, ip2int
from stack.wire.tcp import ACK, FIN, RST, SYN, build_tcp
from stack.wire.udp import build_udp

C1 = "192.0.2.1:40000-192.0.2.2:80"


# --- the Trace object: rendering and filtering --------------------------------


def test_jsonl_rendering_round_trips():
    sink = io.StringIO()
    tr = Trace(sink, "jsonl", clock=lambda: 1.25)
    tr.event("tcp", "seg", conn=C1, dir="in", flags="S.", seq=1, ack=2, win=3, len=0,
             options=["mss 1460"])
    tr.drop("ip", "not_for_us", dst="192.0.2.9")
    tr.event("arp", "reply", target=b"\x01")  # not JSON-able: written with str()
    lines = sink.getvalue().splitlines()
    assert [json.loads(ln) for ln in lines] == [
        {"t": 1.25, "layer": "tcp", "event": "seg", "conn": C1, "dir": "in", "flags": "S.",
         "seq": 1, "ack": 2, "win": 3, "len": 0, "options": ["mss 1460"]},
        {"t": 1.25, "layer": "ip", "event": "drop", "reason": "not_for_us", "dst": "192.0.2.9"},
        {"t": 1.25, "layer": "arp", "event": "reply", "target": "b'\\x01'"},
    ]
    assert tr.written == 3


def test_text_rendering_one_readable_line_per_event():
    sink = io.StringIO()
    tr = Trace(sink, "text", clock=lambda: 0.5)
    tr.event("tcp", "state", conn=C1, **{"from": "SYN_SENT", "to": "ESTABLISHED"},
             cause="rcv SYN,ACK seq=300 ack=101")
    tr.event("tcp", "seg", conn=C1, dir="out", flags="S", seq=100, ack=0, win=65535, len=0,
             options=["mss 1460", "wscale 7"])
    tr.event("tcp", "seg", conn=C1, dir="in", flags="P.", seq=5, ack=6, win=7, len=8, options=[])
    tr.drop("udp", "port_closed", port=9, src="192.0.2.1")
    tr.event("tcp", "retransmit", conn=C1, reason="fast", seq=1, len=1460)
    assert sink.getvalue().splitlines() == [
        f"    0.500000 tcp    state      {C1} SYN_SENT -> ESTABLISHED "
        "(rcv SYN,ACK seq=300 ack=101)",
        f"    0.500000 tcp    seg        {C1} out [S] seq 100 win 65535 len 0 "
        "<mss 1460,wscale 7>",
        f"    0.500000 tcp    seg        {C1} in [P.] seq 5 ack 6 win 7 len 8",
        "    0.500000 udp    drop       reason=port_closed port=9 src=192.0.2.1",
        f"    0.500000 tcp    retransmit {C1} reason=fast seq=1 len=1460",
    ]


def _emit_one_of_each(tr: Trace) -> None:
    tr.event("link", "up", address="192.0.2.2/24")
    tr.event("link", "impair", spec="loss=0.1", seed=3)
    tr.event("arp", "request", target="192.0.2.1")
    tr.event("ip", "fragment", id=1)
    tr.drop("ip", "not_for_us")
    tr.event("tcp", "state", conn=C1, **{"from": "CLOSED", "to": "SYN_SENT"}, cause="x")
    tr.event("tcp", "seg", conn=C1, dir="out", flags="S", seq=1, ack=0, win=1, len=0)
    tr.event("tcp", "retransmit", conn=C1, reason="rto", seq=1, len=0)
    tr.event("tcp", "rtt", conn=C1, sample=0.1)
    tr.event("tcp", "cwnd", conn=C1, cwnd=1, ssthresh=2)
    tr.drop("tcp", "no_conn")
    tr.event("link", "down")


@pytest.mark.parametrize("level, layers, expected", [
    ("all", None, ["link.up", "link.impair", "arp.request", "ip.fragment", "ip.drop",
                   "tcp.state", "tcp.seg", "tcp.retransmit", "tcp.rtt", "tcp.cwnd",
                   "tcp.drop", "link.down"]),
    ("state", None, ["link.up", "link.impair", "ip.drop", "tcp.state", "tcp.retransmit",
                     "tcp.drop", "link.down"]),
    ("all", "tcp", ["tcp.state", "tcp.seg", "tcp.retransmit", "tcp.rtt", "tcp.cwnd",
                    "tcp.drop"]),
    ("state", "tcp,ip", ["ip.drop", "tcp.state", "tcp.retransmit", "tcp.drop"]),
    ("all", ["arp", "link"], ["link.up", "link.impair", "arp.request", "link.down"]),
])
def test_level_and_layer_filters(level, layers, expected):
    sink = io.StringIO()
    seen = []
    tr = Trace(sink, "jsonl", level=level, layers=layers)
    tr.subscribe(seen.append)
    _emit_one_of_each(tr)
    written = [f"{e['layer']}.{e['event']}" for e in map(json.loads, sink.getvalue().splitlines())]
    assert written == expected
    assert [f"{e['layer']}.{e['event']}" for e in seen] == expected
    for name in ("tcp.seg", "tcp.state", "arp.request", "ip.drop"):
        assert tr.wants(*name.split(".")) == (name in expected), name
    # Filters choose events; counters count every drop.
    assert tr.drops() == {"ip.drop.not_for_us": 1, "tcp.drop.no_conn": 1}
    if level == "state":
        assert {e["event"] for e in seen} <= STATE_EVENTS


def test_filters_are_checked():
    with pytest.raises(ValueError, match="unknown trace layer 'tpc'"):
        Trace(layers="tpc")
    with pytest.raises(ValueError, match="level"):
        Trace(level="verbose")
    assert parse_layers(" tcp, ip ") == frozenset({"tcp", "ip"})
    assert parse_layers(None) is None


def test_trace_off_writes_nothing_and_still_counts():
    tr = Trace()
    assert not tr.on
    tr.event("tcp", "state", conn=C1)
    tr.drop("eth", "short")
    assert tr.written == 0 and tr.drops() == {"eth.drop.short": 1}


# --- counters as `stack up` prints them ---------------------------------------


def test_format_counters_groups_by_layer_with_every_drop_reason():
    counters = {"tcp.out_segs": 10, "tcp.drop.no_conn": 2, "tcp.drop.bad_checksum": 1,
                "eth.frames_in": 7, "link.rx.loss": 3, "link.tx.dup": 0, "ip.drop.not_for_us": 4,
                "icmp.in.type8": 3, "custom.thing": 1}
    assert cli.format_counters(counters) == "\n".join([
        "link:", "    rx.loss: 3",
        "eth:", "    frames_in: 7",
        "ip:", "    drops: 4", "        not_for_us: 4",
        "icmp:", "    in.type8: 3",
        "tcp:", "    out_segs: 10", "    drops: 3", "        bad_checksum: 1",
        "        no_conn: 2",
        "custom:", "    thing: 1",
    ])
    assert list(group_counters(counters)) == ["link", "eth", "ip", "icmp", "tcp", "custom"]
    assert cli.format_counters({}) == "(no counters)"


# --- every drop provoked is a drop event and a counter ------------------------


US, PEER = ip2int("192.0.2.2"), ip2int("192.0.2.1")


US_MAC = bytes.fromhex("0253c0000202")
PEER_MAC = bytes.fromhex("020000000001")


def _ip(payload, proto, src=PEER, dst=US, **kw) -> bytes:
    return build_eth(US_MAC, PEER_MAC, ETHERTYPE_IPV4,
                     build_ipv4(Ipv4Header(src=src, dst=dst, proto=proto, **kw), payload))


def _tcp(flags, dport=81, sport=5555, seq=1, ack=0) -> bytes:
    return _ip(build_tcp(PEER, US, sport, dport, seq, ack, flags, 1000), 6)


def _corrupt(frame: bytes, offset: int) -> bytes:
    b = bytearray(frame)
    b[offset] ^= 0x01
    return bytes(b)


def _arp(op, sender_ip, target_ip) -> bytes:
    body = build_arp(ArpPacket(op, PEER_MAC, sender_ip, US_MAC, target_ip))
    return build_eth(US_MAC, PEER_MAC, ETHERTYPE_ARP, body)


DROPS = [
    ("eth", "short", bytes(10)),
    ("eth", "not_for_us", build_eth(bytes.fromhex("020000000099"), PEER_MAC, ETHERTYPE_IPV4,
                                    bytes(40))),
    ("eth", "multicast", build_eth(bytes.fromhex("01005e000001"), PEER_MAC, ETHERTYPE_IPV4,
                                   bytes(40))),
    ("eth", "unsupported_ethertype", build_eth(US_MAC, PEER_MAC, 0x86DD, bytes(40))),
    ("arp", "malformed", build_eth(US_MAC, PEER_MAC, ETHERTYPE_ARP, bytes(5))),
    ("arp", "unsolicited_reply", _arp(2, ip2int("192.0.2.7"), US)),
    ("ip", "malformed", _corrupt(_ip(b"x" * 8, 17), 14 + 10)),
    ("ip", "not_for_us", _ip(b"x" * 8, 17, dst=ip2int("192.0.2.9"))),
    ("ip", "martian_source", _ip(b"x" * 8, 17, src=ip2int("127.0.0.1"))),
    ("ip", "unknown_protocol", _ip(b"x" * 8, 99)),
    ("icmp", "malformed", _corrupt(_ip(build_icmp(IcmpMessage(8, 0, 1, b"abc")), 1), 34 + 2)),
    ("icmp", "unsupported_type", _ip(build_icmp(IcmpMessage(42, 0, 0, b"")), 1)),
    ("udp", "malformed", _corrupt(_ip(build_udp(PEER, US, 5, 9, b"hello"), 17), 34 + 9)),
    ("udp", "port_closed", _ip(build_udp(PEER, US, 5, 9, b"hello"), 17)),
    ("tcp", "bad_checksum", _corrupt(_tcp(SYN), 34 + 20 - 1)),
    ("tcp", "bad_flags", _tcp(SYN | FIN)),
    ("tcp", "port_zero", _tcp(SYN, dport=0)),
    ("tcp", "no_conn", _tcp(SYN)),
    ("tcp", "rst_no_conn", _tcp(RST | ACK)),
    ("ip", "reassembly_timeout", _ip(b"y" * 16, 17, mf=True, ident=77)),
]


def test_every_provoked_drop_is_an_event_and_a_counter():
    now = [100.0]
    sink = io.StringIO()
    seen: list[dict] = []
    tr = Trace(sink, "jsonl")
    tr.subscribe(seen.append)
    link = CaptureLink()
    net = Stack(link, address="192.0.2.2/24", trace=tr, clock=lambda: now[0], thread=False)
    try:
        for layer, reason, frame in DROPS:
            before = dict(net.stats())
            n_seen = len(seen)
            link.inject(frame)
            net.step()
            if reason == "reassembly_timeout":
                now[0] += 120.0
                net.step()
            new = [(e["layer"], e["reason"]) for e in seen[n_seen:] if e["event"] == "drop"]
            assert (layer, reason) in new, (layer, reason, new)
            key = f"{layer}.drop.{reason}"
            assert net.stats().get(key, 0) - before.get(key, 0) == 1, key
    finally:
        net.close()
    # Across the whole run the drop events and the drop counters agree exactly.
    events = Counter(f"{e['layer']}.drop.{e['reason']}" for e in seen if e["event"] == "drop")
    assert events == Counter(tr.drops())
    written = [json.loads(ln) for ln in sink.getvalue().splitlines()]
    assert Counter(f"{e['layer']}.drop.{e['reason']}" for e in written
                   if e["event"] == "drop") == events
    text = cli.format_counters(net.stats())
    for _, reason, _ in DROPS:
        assert f"        {reason}: " in text
