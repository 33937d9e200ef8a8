"""IPv4 as conversations: validation, routing, fragmentation out, reassembly in.

Packets are built by hand (``tests.helpers.frames.ipv4``) with the reference
checksum (``tests.helpers.checksum``), and what the stack sends is taken apart by hand (``split``,
``reassemble``). The stack is 192.0.2.2/24; the peer 192.0.2.1 has already
introduced itself by ARP, so packets to it leave at once.
"""

from __future__ import annotations

import errno
import random

import pytest

from stack.net.reassembly import ReassemblyConfig
from tests.helpers.checksum import ref_checksum
from tests.helpers.frames import (BCAST, FAR, GATEWAY, GW_MAC, PEER, PEER_MAC, PROTO_TEST,
                                  SUBNET_BCAST, US, US_MAC, echo, eth, fragment, ipv4,
                                  reassemble, split)
from tests.helpers.hosts import IpHost, host_fixture

host = host_fixture(IpHost)


# ------------------------------------------------------------------ receiving


def test_packet_for_us_is_delivered(host):
    x = host()
    assert x.feed_ip(ipv4(PEER, US, PROTO_TEST, b"hello", ident=7)) == []
    [(h, data)] = x.got
    assert (h.src, h.dst, h.ident, data) == (PEER, US, 7, b"hello")
    assert x.counter("ip.packets_in") == 1


def test_echo_round_trip_sanity(host):
    x = host()
    [reply] = x.feed_ip(ipv4(PEER, US, 1, echo()))
    r = split(reply)
    assert r["csum_ok"] and (r["src"], r["dst"], r["proto"]) == (US, PEER, 1)
    assert r["payload"][0] == 0


@pytest.mark.parametrize("dst", [0xC0000203, 0xC0000102, 0xC6336401, 0xE0000001])
def test_not_for_us_is_dropped(host, dst):
    x = host()
    assert x.feed_ip(ipv4(PEER, dst, 1, echo())) == []
    assert x.counter("ip.drop.not_for_us") == 1
    assert x.counter("icmp.in.type8") == 0


@pytest.mark.parametrize("src", [0x7F000001, 0xFFFFFFFF, 0xE0000001, US, SUBNET_BCAST, 0])
def test_martian_source_is_dropped(host, src):
    # No reply must go to a broadcast, loopback or multicast address, or to ourselves.
    x = host()
    assert x.feed(eth(ipv4(src, US, 1, echo()))) == []
    assert x.counter("ip.drop.martian_source") == 1
    assert x.counter("icmp.in.type8") == 0


def test_broadcast_destination_is_accepted(host):
    x = host()
    x.feed(eth(ipv4(PEER, SUBNET_BCAST, PROTO_TEST, b"all"), dst=BCAST))
    x.feed(eth(ipv4(PEER, 0xFFFFFFFF, PROTO_TEST, b"everyone"), dst=BCAST))
    assert [d for _, d in x.got] == [b"all", b"everyone"]


@pytest.mark.parametrize("field,packet", [
    ("version", b"\x65" + ipv4(PEER, US, 1, echo())[1:]),
    ("checksum", ipv4(PEER, US, 1, echo())[:10] + b"\x00\x00" + ipv4(PEER, US, 1, echo())[12:]),
    ("length", ipv4(PEER, US, 1, echo())[:19]),
    ("total_length", ipv4(PEER, US, 1, echo())[:30]),
])
def test_malformed_is_dropped_and_counted(host, field, packet):
    x = host()
    assert x.feed(eth(packet)) == []
    assert x.counter("ip.drop.malformed") == 1
    assert x.counter("ip.packets_in") == 0


def test_options_are_skipped(host):
    x = host()
    opts = bytes.fromhex("94040000 01010100")   # Router Alert, NOPs, End
    [reply] = x.feed_ip(ipv4(PEER, US, 1, echo(data=b"opt"), options=opts))
    r = split(reply)
    assert r["hlen"] == 20 and r["csum_ok"]
    assert r["payload"][8:] == b"opt"


def test_ethernet_padding_is_not_part_of_the_packet(host):
    x = host()
    packet = ipv4(PEER, US, 1, echo(data=b""))
    frame = eth(packet) + b"\xee" * 18
    assert len(packet) == 28 and len(frame) == 60
    [reply] = x.ip_out(x.feed(frame))
    r = split(reply)
    assert r["total"] == 28 and len(reply) == 28
    assert r["payload"][0] == 0 and r["payload"][4:] == echo(data=b"")[4:]
    assert ref_checksum(r["payload"]) == 0


# ------------------------------------------------------------------ routing


def test_on_link_next_hop_is_the_destination(host):
    x = host(gateway="192.0.2.254")
    x.net.ip.send(US, 0xC000024D, PROTO_TEST, b"x", x.t)
    [req] = x.link.take_sent()
    assert req[:14] == BCAST + US_MAC + b"\x08\x06"
    assert req[14 + 24:14 + 28] == bytes.fromhex("c000024d")


def test_off_link_goes_to_the_gateway(host):
    x = host(gateway="192.0.2.254")
    assert x.net.ip.next_hop(FAR) == GATEWAY
    assert x.net.ip.next_hop(PEER) == PEER
    x.net.ip.send(US, FAR, PROTO_TEST, b"far away", x.t)
    [req] = x.link.take_sent()
    assert req[14 + 24:14 + 28] == GATEWAY.to_bytes(4, "big")   # ARP for the gateway
    sent = x.feed(US_MAC + GW_MAC + b"\x08\x06" + bytes.fromhex("0001080006040002") + GW_MAC
                  + GATEWAY.to_bytes(4, "big") + US_MAC + US.to_bytes(4, "big"))
    [packet] = x.ip_out(sent, GW_MAC)
    p = split(packet)
    assert (p["src"], p["dst"], p["payload"]) == (US, FAR, b"far away")


def test_off_link_without_gateway_is_unreachable(host):
    x = host()
    with pytest.raises(OSError) as e:
        x.net.ip.send(US, FAR, PROTO_TEST, b"x", x.t)
    assert e.value.errno == errno.ENETUNREACH
    assert x.link.take_sent() == []


def test_echo_from_off_link_is_answered_through_the_gateway(host):
    x = host(gateway="192.0.2.254")
    x.learn(GATEWAY, GW_MAC)
    [reply] = x.feed_ip(ipv4(FAR, US, 1, echo()), src_mac=GW_MAC)
    assert split(reply)["dst"] == FAR


def test_echo_from_off_link_without_gateway_is_dropped(host):
    x = host()
    assert x.feed(eth(ipv4(FAR, US, 1, echo()))) == []
    assert x.counter("icmp.drop.reply_unroutable") == 1


@pytest.mark.parametrize("dst", [SUBNET_BCAST, 0xFFFFFFFF])
def test_broadcast_needs_no_arp(host, dst):
    x = host()
    x.net.ip.send(US, dst, PROTO_TEST, b"hello all", x.t)
    [frame] = x.link.take_sent()
    assert frame[:14] == BCAST + US_MAC + b"\x08\x00"
    assert split(frame[14:])["dst"] == dst


def test_packet_to_ourselves_is_delivered_by_the_loop(host):
    x = host()
    x.net.ip.send(US, US, PROTO_TEST, b"me", x.t)
    assert x.link.take_sent() == []
    x.at(x.t)
    [(h, data)] = x.got
    assert (h.src, h.dst, data) == (US, US, b"me")


# ------------------------------------------------------------------ fragmenting


def test_small_datagram_is_not_fragmented(host):
    x = host()
    x.net.ip.send(US, PEER, PROTO_TEST, bytes(1480), x.t)
    [packet] = x.ip_out(x.link.take_sent())
    p = split(packet)
    assert p["total"] == 1500 and not p["mf"] and p["offset"] == 0 and p["ttl"] == 64


@pytest.mark.parametrize("mtu,size,expected", [
    (1500, 4000, [(0, 1480, True), (1480, 1480, True), (2960, 1040, False)]),
    (1500, 1481, [(0, 1480, True), (1480, 1, False)]),
    (576, 1200, [(0, 552, True), (552, 552, True), (1104, 96, False)]),
    (1006, 2000, [(0, 984, True), (984, 984, True), (1968, 32, False)]),
])
def test_large_datagram_is_fragmented(host, mtu, size, expected):
    x = host(mtu=mtu)
    data = random.Random(size).randbytes(size)
    x.net.ip.send(US, PEER, PROTO_TEST, data, x.t)
    packets = x.ip_out(x.link.take_sent())
    parts = [split(p) for p in packets]
    assert [(p["offset"], len(p["payload"]), p["mf"]) for p in parts] == expected
    assert len({p["id"] for p in parts}) == 1
    for p, raw in zip(parts, packets):
        assert p["csum_ok"] and not p["df"] and p["offset"] % 8 == 0
        assert p["total"] == len(raw) <= mtu
        assert (p["src"], p["dst"], p["proto"]) == (US, PEER, PROTO_TEST)
    assert reassemble(packets)[1] == data
    assert x.counter("ip.fragmented") == 1


def test_each_datagram_gets_its_own_id(host):
    x = host()
    x.net.ip.send(US, PEER, PROTO_TEST, bytes(3000), x.t)
    x.net.ip.send(US, PEER, PROTO_TEST, bytes(3000), x.t)
    ids = [split(p)["id"] for p in x.ip_out(x.link.take_sent())]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5]


def test_dont_fragment_too_big_is_emsgsize(host):
    x = host()
    with pytest.raises(OSError) as e:
        x.net.ip.send(US, PEER, PROTO_TEST, bytes(1481), x.t, df=True)
    assert e.value.errno == errno.EMSGSIZE
    assert x.link.take_sent() == []
    x.net.ip.send(US, PEER, PROTO_TEST, bytes(1480), x.t, df=True)
    [packet] = x.ip_out(x.link.take_sent())
    assert split(packet)["df"]


def test_datagram_beyond_65535_is_emsgsize(host):
    x = host()
    with pytest.raises(OSError) as e:
        x.net.ip.send(US, PEER, PROTO_TEST, bytes(65516), x.t)
    assert e.value.errno == errno.EMSGSIZE
    assert x.link.take_sent() == []
    x.net.ip.send(US, PEER, PROTO_TEST, bytes(65515), x.t)
    packets = x.ip_out(x.link.take_sent())
    assert len(packets) == 45
    assert len(reassemble(packets)[1]) == 65515


def test_fragments_wait_together_for_arp(host):
    x = host(learn=False)
    x.net.ip.send(US, PEER, PROTO_TEST, bytes(range(256)) * 12, x.t)
    [req] = x.link.take_sent()
    assert req[12:14] == b"\x08\x06"
    sent = x.feed(US_MAC + PEER_MAC + b"\x08\x06" + bytes.fromhex("0001080006040002") + PEER_MAC
                  + PEER.to_bytes(4, "big") + US_MAC + US.to_bytes(4, "big"))
    assert reassemble(x.ip_out(sent))[1] == bytes(range(256)) * 12


# ------------------------------------------------------------------ reassembling

DATA = random.Random(4000).randbytes(4000)


def frags(ident: int = 0x4242, data: bytes = DATA, size: int = 1480, proto: int = PROTO_TEST):
    return fragment(PEER, US, proto, data, ident, size)


@pytest.mark.parametrize("order", ["in_order", "reversed", "shuffled", "middle_first"])
def test_reassembly_any_order(host, order):
    x = host()
    parts = frags(size=504)
    if order == "reversed":
        parts = parts[::-1]
    elif order == "shuffled":
        random.Random(7).shuffle(parts)
    elif order == "middle_first":
        parts = parts[3:5] + parts[:3] + parts[5:]
    for i, p in enumerate(parts):
        assert x.got == [], f"delivered before fragment {i}"
        x.feed_ip(p)
    [(h, data)] = x.got
    assert data == DATA
    assert (h.src, h.dst, h.ident, h.proto) == (PEER, US, 0x4242, PROTO_TEST)
    assert x.counter("ip.reassembled") == 1
    assert x.net.ip.reassembler.datagrams == {}
    assert x.net.ip.reassembler.bytes_held == 0


def test_reassembled_header_describes_the_whole_datagram(host):
    x = host()
    x.feed_ip(*frags())
    [(h, data)] = x.got
    assert not h.mf and h.frag_offset == 0
    assert h.total_length == 20 + len(DATA)


def test_duplicates_are_ignored(host):
    x = host()
    a, b, c = frags()
    x.feed_ip(a, a, b, a, b)
    assert x.got == []
    x.feed_ip(c)
    assert [d for _, d in x.got] == [DATA]
    assert x.counter("ip.drop.fragment_duplicate") == 3


def test_interleaved_datagrams_are_kept_apart(host):
    x = host()
    one, two = frags(ident=1), frags(ident=2, data=DATA[::-1])
    for a, b in zip(one, two[::-1]):
        x.feed_ip(a, b)
    assert sorted(d for _, d in x.got) == sorted([DATA, DATA[::-1]])


def test_same_id_from_another_source_is_another_datagram(host):
    x = host()
    a, b, c = frags()
    other = fragment(0xC0000209, US, PROTO_TEST, DATA, 0x4242, 1480)
    x.feed_ip(a, other[1], b, other[0])
    assert x.got == []
    x.feed_ip(c)
    assert [d for _, d in x.got] == [DATA]
    assert len(x.net.ip.reassembler.datagrams) == 1


@pytest.mark.parametrize("second_offset", [1472, 8, 0])
def test_overlap_drops_the_whole_datagram(host, second_offset):
    x = host()
    first = ipv4(PEER, US, PROTO_TEST, DATA[:1480], 9, mf=True, offset=0)
    overlapping = ipv4(PEER, US, PROTO_TEST, DATA[second_offset:second_offset + 1488], 9, mf=True,
                       offset=second_offset)
    x.feed_ip(first, overlapping)
    assert x.counter("ip.drop.fragment_overlap") == 1
    assert x.net.ip.reassembler.datagrams == {}
    assert x.net.ip.reassembler.bytes_held == 0
    # The rest of the datagram cannot complete it any more.
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, DATA[2968:], 9, offset=2968))
    assert x.got == []


def test_last_fragment_ending_before_data_held_is_dropped(host):
    # 16 bytes at 0 (more to come), then "the last fragment ends at 8".
    x = host()
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, b"A" * 16, 5, mf=True),
              ipv4(PEER, US, PROTO_TEST, b"", 5, offset=8))
    assert x.got == []
    assert x.net.ip.reassembler.datagrams == {}
    assert x.net.ip.reassembler.bytes_held == 0


def test_two_different_ends_drop_the_datagram(host):
    x = host()
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, b"B" * 8, 6, offset=16),
              ipv4(PEER, US, PROTO_TEST, b"B" * 8, 6, offset=24))
    assert x.counter("ip.drop.fragment_conflict") == 1
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, b"A" * 16, 6, mf=True))
    assert x.got == []


def test_fragment_beyond_the_end_drops_the_datagram(host):
    x = host()
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, b"B" * 8, 6, offset=16),
              ipv4(PEER, US, PROTO_TEST, b"C" * 16, 6, mf=True, offset=16))
    assert x.counter("ip.drop.fragment_beyond_end") == 1
    assert x.net.ip.reassembler.datagrams == {}


@pytest.mark.parametrize("n", [0, 1, 7, 1479])
def test_non_last_fragment_must_be_a_multiple_of_8(host, n):
    x = host()
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, bytes(n), 3, mf=True))
    assert x.counter("ip.drop.fragment_length") == 1
    assert x.net.ip.reassembler.datagrams == {}


def test_timeout_drops_and_sends_time_exceeded(host):
    x = host()
    first, second, _ = frags(proto=1, data=echo(data=DATA[:3000]))
    x.feed_ip(first, second)
    assert x.net.ip.next_deadline() == 130.0
    assert x.at(129.9) == []
    [packet] = x.ip_out(x.at(130.0))
    assert x.counter("ip.drop.reassembly_timeout") == 1
    assert x.net.ip.reassembler.datagrams == {}
    assert x.net.ip.reassembler.bytes_held == 0
    p = split(packet)
    assert (p["src"], p["dst"], p["proto"]) == (US, PEER, 1)
    icmp = p["payload"]
    assert ref_checksum(icmp) == 0
    assert icmp[:2] == b"\x0b\x01" and icmp[4:8] == b"\x00\x00\x00\x00"
    # It quotes the first fragment's header and its first 8 bytes.
    assert icmp[8:] == first[:28]
    # A late fragment starts afresh; the old one is gone for good.
    x.feed_ip(frags(proto=1, data=echo(data=DATA[:3000]))[2])
    assert x.got == []


def test_timeout_without_first_fragment_sends_nothing(host):
    x = host()
    _, second, third = frags(proto=1, data=echo(data=DATA[:3000]))
    x.feed_ip(second, third)
    assert x.at(130.0) == []
    assert x.counter("ip.drop.reassembly_timeout") == 1
    assert x.counter("icmp.out.type11") == 0


def test_memory_bound(host):
    x = host()
    x.net.ip.reassembler.config = ReassemblyConfig(max_bytes=10_000)
    for ident in range(10):
        x.feed_ip(ipv4(PEER, US, PROTO_TEST, DATA[:1480], 100 + ident, mf=True))
        assert x.net.ip.reassembler.bytes_held <= 10_000
    assert len(x.net.ip.reassembler.datagrams) == 6           # 6 * 1480 = 8880
    assert x.counter("ip.drop.reassembly_evicted") == 4       # the oldest made room
    # Completing one frees its share.
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, DATA[1480:1500], 109, offset=1480))
    assert [d for _, d in x.got] == [DATA[:1500]]
    assert x.net.ip.reassembler.bytes_held == 5 * 1480


def test_datagram_larger_than_the_memory_bound_is_refused(host):
    # One datagram that could never fit is dropped, and evicts nobody.
    x = host()
    x.net.ip.reassembler.config = ReassemblyConfig(max_bytes=10_000)
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, DATA[:1480], 1, mf=True))
    x.feed_ip(ipv4(PEER, US, PROTO_TEST, DATA[:8], 2, mf=True, offset=64000))  # a 64008-byte buffer
    assert x.counter("ip.drop.reassembly_memory") == 1
    assert x.counter("ip.drop.reassembly_evicted") == 0
    assert list(x.net.ip.reassembler.datagrams) == [(PEER, US, 1, PROTO_TEST)]
    assert x.net.ip.reassembler.bytes_held == 1480


def test_memory_bound_counts_the_buffer_a_far_fragment_needs(host):
    # 8 bytes at offset 64000 make the buffer 64008 bytes long: that is what it costs.
    x = host()
    x.net.ip.reassembler.config = ReassemblyConfig(max_bytes=200_000)
    for ident in range(20):
        x.feed_ip(ipv4(PEER, US, PROTO_TEST, b"far away", 300 + ident, mf=True, offset=64000))
    assert len(x.net.ip.reassembler.datagrams) <= 3
    assert x.counter("ip.drop.reassembly_evicted") >= 17
    assert x.net.ip.reassembler.bytes_held <= 200_000


def test_too_many_concurrent_datagrams(host):
    x = host()
    x.net.ip.reassembler.config = ReassemblyConfig(max_datagrams=4)
    for ident in range(6):
        x.feed_ip(frags(ident=ident)[0])
    assert len(x.net.ip.reassembler.datagrams) == 4
    assert x.counter("ip.drop.reassembly_evicted") == 2       # ids 0 and 1 made room
    x.feed_ip(*frags(ident=5)[1:])
    assert [d for _, d in x.got] == [DATA]
    x.feed_ip(*frags(ident=0))
    assert [d for _, d in x.got] == [DATA, DATA]


def test_too_many_pieces_in_one_datagram(host):
    x = host()
    for i in range(65):   # 8 bytes every 16: 65 separate pieces, the limit is 64
        x.feed_ip(ipv4(PEER, US, PROTO_TEST, bytes(8), 77, mf=True, offset=16 * i))
    assert x.counter("ip.drop.too_many_fragments") == 1
    assert x.net.ip.reassembler.datagrams == {}
    assert x.net.ip.reassembler.bytes_held == 0


def test_fragment_flood_of_distinct_ids_stays_bounded(host):
    x = host()
    r = x.net.ip.reassembler
    for ident in range(3000):
        x.feed_ip(ipv4(PEER, US, 1, DATA[:1480], ident, mf=True, offset=8 * (ident % 4)))
        assert len(r.datagrams) <= r.config.max_datagrams
        assert r.bytes_held <= r.config.max_bytes
    assert len(r.datagrams) == r.config.max_datagrams
    assert x.counter("ip.drop.reassembly_evicted") == 3000 - r.config.max_datagrams
    # The stack still answers.
    [reply] = x.feed_ip(ipv4(PEER, US, 1, echo(data=b"still there?")))
    assert split(reply)["payload"][8:] == b"still there?"
    # And everything times out, the ICMP errors rate limited.
    # Of the 256 held (ids 2744-2999), the 64 with offset 0 earn a time exceeded;
    # all to one host: its burst of 6 goes out and the rest are rate limited.
    sent = x.at(130.0)
    assert r.datagrams == {} and r.bytes_held == 0
    assert len(sent) == 6
    assert x.counter("icmp.drop.rate_limited") == 58


def test_zero_source_is_accepted_for_a_broadcast(host):
    # A host without an address yet (DHCP) sends from 0.0.0.0 to 255.255.255.255.
    x = host()
    x.feed(eth(ipv4(0, 0xFFFFFFFF, PROTO_TEST, b"discover"), dst=BCAST))
    assert [d for _, d in x.got] == [b"discover"]
    assert x.counter("ip.drop.martian_source") == 0
