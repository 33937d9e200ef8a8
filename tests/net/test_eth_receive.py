"""Ethernet demux (EthernetArp.receive) and the frame description used by
``link impaired`` trace events (stack.net.arp.describe_frame).

The stack is 192.0.2.2 at 02:53:c0:00:02:02; frames are built with stack.wire.
"""

from __future__ import annotations

import pytest

from stack.link import CaptureLink, ImpairLink
from stack.net.arp import EthernetArp, describe_frame
from stack.runtime import Stack
from stack.trace import Trace
from stack.wire.arp import OP_REQUEST, ArpPacket, build_arp
from stack.wire.eth import BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, build_eth
from stack.wire.ipv4 import PROTO_TCP, PROTO_UDP, Ipv4Header, build_ipv4, ip2int
from stack.wire.tcp import ACK, PSH, SYN, build_tcp
from stack.wire.udp import build_udp

US_MAC = bytes.fromhex("0253c0000202")
PEER_MAC = bytes.fromhex("525400123456")
US, PEER = ip2int("192.0.2.2"), ip2int("192.0.2.1")


def ipv4_frame(proto: int, payload: bytes, dst_mac: bytes = US_MAC, **kw) -> bytes:
    ip = build_ipv4(Ipv4Header(src=PEER, dst=US, proto=proto, **kw), payload)
    return build_eth(dst_mac, PEER_MAC, ETHERTYPE_IPV4, ip)


def tcp_frame(seq: int = 1000, data: bytes = b"", flags: int = ACK | PSH) -> bytes:
    return ipv4_frame(PROTO_TCP, build_tcp(PEER, US, 5555, 80, seq, 1, flags, 4096, data))


def arp_request(dst_mac: bytes = BROADCAST) -> bytes:
    pkt = ArpPacket(OP_REQUEST, PEER_MAC, PEER, b"\x00" * 6, US)
    return build_eth(dst_mac, PEER_MAC, ETHERTYPE_ARP, build_arp(pkt))


class Eth:
    """An EthernetArp with its IPv4 hand-off recorded."""

    def __init__(self) -> None:
        self.trace = Trace()
        self.sent: list[bytes] = []
        self.up: list[tuple[bytes, float, bool]] = []
        self.eth = EthernetArp(US_MAC, US, self.sent.append, self.trace)
        self.eth.ipv4_receive = lambda pkt, now, link_broadcast: self.up.append(
            (bytes(pkt), now, link_broadcast))

    def counters(self) -> dict[str, int]:
        return {k: v for k, v in self.trace.counters.items() if k.startswith("eth.")}


@pytest.mark.parametrize("frame, reason", [
    (b"", "short"),
    (tcp_frame()[:13], "short"),
    (b"\x02\x00\x00\x00\x00\x99" + tcp_frame()[6:], "not_for_us"),
    (b"\x01\x00\x5e\x00\x00\x01" + tcp_frame()[6:], "multicast"),
    (b"\x33\x33\x00\x00\x00\x01" + tcp_frame()[6:], "multicast"),
    (US_MAC + PEER_MAC + b"\x86\xdd" + bytes(40), "unsupported_ethertype"),
    (US_MAC + PEER_MAC + b"\x00\x2e" + bytes(46), "unsupported_ethertype"),  # 802.3 length
], ids=["empty", "13-bytes", "other-unicast", "ipv4-multicast", "ipv6-multicast", "ipv6",
        "802.3"])
def test_frames_not_for_ipv4_or_arp_are_dropped_and_counted(frame, reason):
    e = Eth()
    events = []
    e.trace.subscribe(events.append)
    e.eth.receive(frame, 1.0)
    assert e.up == [] and e.sent == []
    want = {f"eth.drop.{reason}": 1}
    if reason == "unsupported_ethertype":
        want["eth.frames_in"] = 1  # it was for us; what it carries is not supported
    assert e.counters() == want
    assert [(ev["layer"], ev["event"], ev["reason"]) for ev in events] == [
        ("eth", "drop", reason)]


def test_ipv4_goes_up_with_the_broadcast_flag_and_arp_is_answered():
    e = Eth()
    unicast = tcp_frame()
    e.eth.receive(unicast, 2.0)
    e.eth.receive(memoryview(ipv4_frame(PROTO_UDP, b"x" * 8, dst_mac=BROADCAST)), 3.0)
    assert e.up == [(unicast[14:], 2.0, False), (e.up[1][0], 3.0, True)]
    assert e.counters() == {"eth.frames_in": 2}
    e.eth.receive(arp_request(), 4.0)
    assert e.counters() == {"eth.frames_in": 3}
    assert len(e.sent) == 1 and e.sent[0][:6] == PEER_MAC   # the ARP reply
    assert e.trace.counters["arp.replies_out"] == 1


def test_without_an_ipv4_layer_ipv4_is_unsupported():
    e = Eth()
    e.eth.ipv4_receive = None
    e.eth.receive(tcp_frame(), 1.0)
    assert e.counters() == {"eth.frames_in": 1, "eth.drop.unsupported_ethertype": 1}


def test_the_stack_receives_through_ethernet_and_never_raises():
    link = CaptureLink()
    net = Stack(link, address="192.0.2.2/24", thread=False, clock=lambda: 5.0)
    try:
        assert net.mac == US_MAC
        net.receive_frame(b"\x01" * 10, 5.0)
        net.receive_frame(arp_request(), 5.0)          # the peer asks: now we know it
        net.receive_frame(tcp_frame(flags=SYN), 5.0)   # to a closed port: RST
        stats = net.stats()
        assert stats["eth.drop.short"] == 1 and stats["eth.frames_in"] == 2
        assert any(f[12:14] == b"\x08\x00" and f[47] & 0x04 for f in link.take_sent())

        def boom(*args, **kw):
            raise RuntimeError("a bug in a layer above")

        net.eth.ipv4_receive = boom
        net.receive_frame(tcp_frame(), 5.0)   # counted, not raised
        assert net.stats()["eth.drop.internal_error"] == 1
    finally:
        net.close()


# -- describe_frame ------------------------------------------------------------


def test_describe_a_tcp_frame_both_ways():
    f = tcp_frame(seq=0xFFFFFFF0, data=b"hello")
    assert describe_frame(f, outgoing=False) == {
        "proto": 6, "conn": "192.0.2.2:80-192.0.2.1:5555", "seq": 0xFFFFFFF0, "len": 5}
    assert describe_frame(f, outgoing=True) == {
        "proto": 6, "conn": "192.0.2.1:5555-192.0.2.2:80", "seq": 0xFFFFFFF0, "len": 5}
    # Ethernet padding after a short IP packet is not data.
    assert describe_frame(tcp_frame() + bytes(6), outgoing=False)["len"] == 0


def test_describe_other_frames():
    udp = ipv4_frame(PROTO_UDP, build_udp(PEER, US, 53, 53, b"q"))
    assert describe_frame(udp, False) == {"proto": 17, "src": "192.0.2.1", "dst": "192.0.2.2"}
    frag = ipv4_frame(PROTO_TCP, bytes(24), mf=True)   # the first fragment of a segment
    assert describe_frame(frag, False) == {"proto": 6, "src": "192.0.2.1", "dst": "192.0.2.2"}
    assert describe_frame(arp_request(), False) == {}
    assert describe_frame(b"\x00" * 13, False) == {}
    assert describe_frame(US_MAC + PEER_MAC + b"\x00\x2e" + bytes(46), False) == {}


def test_describe_a_damaged_frame_names_what_failed():
    f = bytearray(tcp_frame(data=b"hello"))
    f[-1] ^= 0x01   # a payload bit: the TCP checksum fails
    assert describe_frame(bytes(f), True) == {
        "proto": 6, "src": "192.0.2.1", "dst": "192.0.2.2", "malformed": "checksum"}
    f = bytearray(tcp_frame())
    f[22] ^= 0x01   # the TTL: the IPv4 header checksum fails
    assert describe_frame(bytes(f), True) == {"malformed": "checksum"}
    assert describe_frame(ipv4_frame(PROTO_TCP, bytes(8)), True)["malformed"] == "length"


def test_impaired_events_describe_the_frame():
    link = CaptureLink()
    injector = ImpairLink(link, "loss=1,seed=3")
    net = Stack(injector, address="192.0.2.2/24", thread=False, clock=lambda: 1.0)
    events = []
    net.trace.subscribe(events.append)
    try:
        link.inject(tcp_frame(seq=77, data=b"abc"))
        net.step(1.0)
        got = [e for e in events if e["event"] == "impaired"]
        assert [(e["dir"], e["kind"], e["conn"], e["seq"], e["len"], e["length"])
                for e in got] == [("rx", "loss", "192.0.2.2:80-192.0.2.1:5555", 77, 3,
                                   len(tcp_frame(data=b"abc")))]
        assert net.stats()["link.rx.loss"] == 1 and "eth.frames_in" not in net.stats()
    finally:
        net.close()
