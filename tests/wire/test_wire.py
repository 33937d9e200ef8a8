"""The wire parsers and builders below TCP, in literal bytes.

Each parser (Ethernet, ARP, IPv4, ICMP, UDP) is fed a valid packet, the same
packet truncated at every length, and copies with one field wrong; each
builder's output is compared with literal bytes and parsed back. Checksums of
built headers are checked with ``ref_checksum``, an RFC 1071 implementation
in ``tests.helpers.checksum`` (one word at a time, end-around carry after every addition), so
that a shared bug in the stack's C and Python checksums cannot hide.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import WireError
from stack.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket, build_arp, parse_arp
from stack.wire.eth import BROADCAST, build_eth, mac2str, parse_eth, str2mac
from stack.wire.icmp import ECHO_REQUEST, IcmpMessage, build_icmp, parse_icmp
from stack.wire.ipv4 import Ipv4Header, build_ipv4, int2ip, ip2int, parse_ipv4
from stack.wire.udp import build_udp, parse_udp
from tests.helpers.checksum import ref_checksum, ref_pseudo, ref_sum, ref_sum_words

# ------------------------------------------------------------------ reference


def refix_ipv4(packet: bytes) -> bytes:
    """Recompute the header checksum of ``packet`` with the reference."""
    b = bytearray(packet)
    hlen = (b[0] & 0x0F) * 4
    b[10:12] = b"\x00\x00"
    b[10:12] = ref_checksum(bytes(b[:max(hlen, 20)])).to_bytes(2, "big")
    return bytes(b)


def edit(packet: bytes, offset: int, value: bytes) -> bytes:
    return packet[:offset] + value + packet[offset + len(value):]


@pytest.mark.parametrize("ref", [ref_sum_words, ref_sum])
def test_reference_checksum_matches_rfc1071_example(ref):
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ref(data) == 0xDDF2
    assert ~ref(data) & 0xFFFF == 0x220D
    # All-0xFF buffers need the carry folded more than once.
    assert ref(b"\xff" * 4096) == 0xFFFF
    assert ref(b"\xff\xff\x00\x01") == 0x0001
    assert ref(b"\x00" * 10) == 0 and ref(b"") == 0
    assert ref(b"\x12") == 0x1200                       # odd byte padded with zero
    assert ref(b"\x00\x01", 0xFFFF) == 0x0001


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=3000), initial=st.integers(0, 0xFFFF))
def test_the_two_references_agree(data, initial):
    assert ref_sum(data, initial) == ref_sum_words(data, initial)


# ------------------------------------------------------------------ Ethernet

ARP_REQUEST = bytes.fromhex(
    "0001 0800 06 04 0001 525400123456 c0000201 000000000000 c0000202".replace(" ", ""))
ETH_FRAME = bytes.fromhex("ffffffffffff 525400123456 0806".replace(" ", "")) + ARP_REQUEST


def test_eth_parse_valid():
    f = parse_eth(ETH_FRAME)
    assert f.dst == BROADCAST
    assert f.src == bytes.fromhex("525400123456")
    assert f.ethertype == 0x0806
    assert bytes(f.payload) == ARP_REQUEST


@pytest.mark.parametrize("n", range(14))
def test_eth_truncated(n):
    with pytest.raises(WireError) as e:
        parse_eth(ETH_FRAME[:n])
    assert e.value.field == "length"


def test_eth_header_only_has_empty_payload():
    f = parse_eth(ETH_FRAME[:14])
    assert bytes(f.payload) == b""


@pytest.mark.parametrize("ethertype", [0x0000, 0x002E, 0x05DC, 0x05FF])
def test_eth_length_field_is_not_an_ethertype(ethertype):
    with pytest.raises(WireError) as e:
        parse_eth(edit(ETH_FRAME, 12, ethertype.to_bytes(2, "big")))
    assert e.value.field == "ethertype"


def test_eth_smallest_ethertype_accepted():
    assert parse_eth(edit(ETH_FRAME, 12, b"\x06\x00")).ethertype == 0x0600


def test_eth_build_literal_and_round_trip():
    frame = build_eth(BROADCAST, bytes.fromhex("525400123456"), 0x0806, ARP_REQUEST)
    assert frame == ETH_FRAME
    f = parse_eth(frame)
    assert build_eth(f.dst, f.src, f.ethertype, f.payload) == frame


def test_mac_text():
    assert mac2str(bytes.fromhex("0253c0000202")) == "02:53:c0:00:02:02"
    assert str2mac("02:53:C0:00:02:02") == bytes.fromhex("0253c0000202")
    for bad in ("02:53:c0:00:02", "02:53:c0:00:02:zz", "", "0253c0000202"):
        with pytest.raises(ValueError):
            str2mac(bad)


# ------------------------------------------------------------------ ARP


def test_arp_parse_request():
    p = parse_arp(ARP_REQUEST)
    assert p == ArpPacket(OP_REQUEST, bytes.fromhex("525400123456"), 0xC0000201,
                          b"\x00" * 6, 0xC0000202)
    assert str(p) == "ARP, Request who-has 192.0.2.2 tell 192.0.2.1"


def test_arp_parse_ignores_ethernet_padding():
    # A 60-byte minimum frame carries 18 bytes of padding after the 28.
    assert parse_arp(ARP_REQUEST + b"\x00" * 18) == parse_arp(ARP_REQUEST)


@pytest.mark.parametrize("n", range(28))
def test_arp_truncated(n):
    with pytest.raises(WireError) as e:
        parse_arp(ARP_REQUEST[:n])
    assert e.value.field == "length"


@pytest.mark.parametrize("offset,value,field", [
    (0, b"\x00\x06", "htype"),       # IEEE 802 instead of Ethernet
    (0, b"\x00\x00", "htype"),
    (2, b"\x86\xdd", "ptype"),       # IPv6
    (2, b"\x08\x06", "ptype"),
    (4, b"\x08", "hlen"),
    (4, b"\x00", "hlen"),
    (5, b"\x10", "plen"),
    (5, b"\x00", "plen"),
    (6, b"\x00\x00", "op"),
    (6, b"\x00\x03", "op"),          # RARP request
    (6, b"\x01\x01", "op"),
])
def test_arp_field_wrong(offset, value, field):
    with pytest.raises(WireError) as e:
        parse_arp(edit(ARP_REQUEST, offset, value))
    assert e.value.field == field


def test_arp_build_literal_and_round_trip():
    reply = ArpPacket(OP_REPLY, bytes.fromhex("0253c0000202"), 0xC0000202,
                      bytes.fromhex("525400123456"), 0xC0000201)
    wire = build_arp(reply)
    assert wire == bytes.fromhex(
        "0001 0800 06 04 0002 0253c0000202 c0000202 525400123456 c0000201".replace(" ", ""))
    assert parse_arp(wire) == reply
    assert build_arp(parse_arp(ARP_REQUEST)) == ARP_REQUEST


# ------------------------------------------------------------------ IPv4

# The worked example from the IPv4 checksum literature: its checksum is b861.
IP_HEADER = bytes.fromhex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7".replace(" ", ""))
IP_PAYLOAD = bytes(range(95))
IP_PACKET = IP_HEADER + IP_PAYLOAD


def test_ipv4_parse_valid():
    h, payload = parse_ipv4(IP_PACKET)
    assert (h.src, h.dst, h.proto, h.ttl, h.ident, h.tos) == (0xC0A80001, 0xC0A800C7, 17, 64, 0, 0)
    assert h.df and not h.mf and h.frag_offset == 0 and not h.is_fragment
    assert (h.total_length, h.header_length, h.options) == (115, 20, b"")
    assert bytes(payload) == IP_PAYLOAD


def test_ipv4_literal_checksum_is_the_reference():
    assert ref_checksum(IP_HEADER) == 0
    assert ref_checksum(edit(IP_HEADER, 10, b"\x00\x00")) == 0xB861


@pytest.mark.parametrize("n", range(20))
def test_ipv4_shorter_than_header(n):
    with pytest.raises(WireError) as e:
        parse_ipv4(IP_PACKET[:n])
    assert e.value.field == "length"


@pytest.mark.parametrize("n", range(20, 115))
def test_ipv4_shorter_than_total_length(n):
    with pytest.raises(WireError) as e:
        parse_ipv4(IP_PACKET[:n])
    assert e.value.field == "total_length"


@pytest.mark.parametrize("version", [0, 1, 5, 6, 15])
def test_ipv4_version_wrong(version):
    with pytest.raises(WireError) as e:
        parse_ipv4(refix_ipv4(edit(IP_PACKET, 0, bytes((version << 4 | 5,)))))
    assert e.value.field == "version"


@pytest.mark.parametrize("ihl", range(5))
def test_ipv4_ihl_below_five(ihl):
    with pytest.raises(WireError) as e:
        parse_ipv4(refix_ipv4(edit(IP_PACKET, 0, bytes((0x40 | ihl,)))))
    assert e.value.field == "ihl"


@pytest.mark.parametrize("total", [0, 1, 19])
def test_ipv4_total_length_below_header(total):
    with pytest.raises(WireError) as e:
        parse_ipv4(refix_ipv4(edit(IP_PACKET, 2, total.to_bytes(2, "big"))))
    assert e.value.field == "total_length"


def test_ipv4_total_length_below_header_with_options():
    # IHL 6 (24 bytes) but total length 22.
    packet = refix_ipv4(edit(edit(IP_PACKET, 0, b"\x46"), 2, (22).to_bytes(2, "big")))
    with pytest.raises(WireError) as e:
        parse_ipv4(packet)
    assert e.value.field == "total_length"


@pytest.mark.parametrize("total", [116, 1500, 65535])
def test_ipv4_total_length_beyond_frame(total):
    with pytest.raises(WireError) as e:
        parse_ipv4(refix_ipv4(edit(IP_PACKET, 2, total.to_bytes(2, "big"))))
    assert e.value.field == "total_length"


def test_ipv4_ihl_beyond_frame():
    # IHL 15 says 60 header bytes; total length says 40 and the frame has 40.
    packet = refix_ipv4(edit(edit(IP_PACKET, 0, b"\x4f"), 2, (40).to_bytes(2, "big"))[:40])
    with pytest.raises(WireError) as e:
        parse_ipv4(packet)
    assert e.value.field == "total_length"


@pytest.mark.parametrize("bit", range(16))
def test_ipv4_checksum_wrong(bit):
    bad = (0xB861 ^ (1 << bit)).to_bytes(2, "big")
    with pytest.raises(WireError) as e:
        parse_ipv4(edit(IP_PACKET, 10, bad))
    assert e.value.field == "checksum"


@pytest.mark.parametrize("byte", [1, 4, 5, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19])
def test_ipv4_any_header_byte_changed_fails_the_checksum(byte):
    packet = bytearray(IP_PACKET)
    packet[byte] ^= 0x01
    with pytest.raises(WireError) as e:
        parse_ipv4(bytes(packet))
    assert e.value.field == "checksum"


def test_ipv4_reserved_flag():
    with pytest.raises(WireError) as e:
        parse_ipv4(refix_ipv4(edit(IP_PACKET, 6, b"\xc0\x00")))
    assert e.value.field == "flags"


def _fragment(offset: int, payload_len: int) -> bytes:
    total = 20 + payload_len
    head = bytes.fromhex("4500") + total.to_bytes(2, "big") + bytes.fromhex("1234") \
        + (offset // 8).to_bytes(2, "big") + bytes.fromhex("4011 0000 c0000201 c0000202".replace(" ", ""))
    return refix_ipv4(head + b"\xaa" * payload_len)


def test_ipv4_fragment_ending_at_65535_accepted():
    h, payload = parse_ipv4(_fragment(65528, 7))
    assert h.frag_offset == 65528 and not h.mf and h.is_fragment
    assert len(payload) == 7


@pytest.mark.parametrize("offset,length", [(65528, 8), (65528, 100), (65520, 16), (24, 65515)])
def test_ipv4_fragment_past_65535(offset, length):
    with pytest.raises(WireError) as e:
        parse_ipv4(_fragment(offset, length))
    assert e.value.field == "frag_offset"


def test_ipv4_flags_and_offset_decoded():
    # MF set, offset 185 * 8 = 1480.
    h, _ = parse_ipv4(refix_ipv4(edit(IP_PACKET, 6, b"\x20\xb9")))
    assert h.mf and not h.df and h.frag_offset == 1480 and h.is_fragment


def test_ipv4_options_are_skipped():
    # IHL 7: Router Alert (94 04 0000) then NOP NOP NOP EOL.
    options = bytes.fromhex("9404000001010100")
    head = bytes.fromhex("4700") + (28 + 5).to_bytes(2, "big") + bytes.fromhex(
        "0001 0000 4011 0000 c0000201 c0000202".replace(" ", ""))
    packet = refix_ipv4(head + options + b"hello")
    h, payload = parse_ipv4(packet)
    assert h.header_length == 28
    assert h.options == options
    assert bytes(payload) == b"hello"


def test_ipv4_ethernet_padding_beyond_total_length_is_cut():
    h, payload = parse_ipv4(IP_PACKET + b"\x00" * 30)
    assert h.total_length == 115
    assert bytes(payload) == IP_PAYLOAD


def test_ipv4_build_literal():
    h = Ipv4Header(src=0xC0A80001, dst=0xC0A800C7, proto=17, ttl=64, ident=0, df=True)
    assert build_ipv4(h, IP_PAYLOAD) == IP_PACKET


def test_ipv4_build_pads_options_to_32_bits():
    h = Ipv4Header(src=0xC0000201, dst=0xC0000202, proto=1, options=b"\x94\x04\x00\x00\x01")
    packet = build_ipv4(h, b"xy")
    assert packet[0] == 0x47
    assert packet[20:28] == b"\x94\x04\x00\x00\x01\x00\x00\x00"
    assert int.from_bytes(packet[2:4], "big") == 30
    assert ref_checksum(packet[:28]) == 0
    parsed, payload = parse_ipv4(packet)
    assert parsed.header_length == 28 and bytes(payload) == b"xy"


def test_ipv4_build_too_big():
    h = Ipv4Header(src=1, dst=2, proto=17)
    assert len(build_ipv4(h, bytes(65515))) == 65535
    with pytest.raises(WireError) as e:
        build_ipv4(h, bytes(65516))
    assert e.value.field == "total_length"


addresses = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=300, deadline=None)
@given(src=addresses, dst=addresses, proto=st.integers(0, 255), ttl=st.integers(0, 255),
       ident=st.integers(0, 0xFFFF), tos=st.integers(0, 255), df=st.booleans(), mf=st.booleans(),
       offset=st.integers(0, 0x1FFF), options=st.binary(max_size=40), payload=st.binary(max_size=300))
def test_ipv4_build_parse_round_trip(src, dst, proto, ttl, ident, tos, df, mf, offset, options,
                                     payload):
    frag_offset = min(offset * 8, (65535 - 60 - len(payload)) & ~7)
    h = Ipv4Header(src=src, dst=dst, proto=proto, ttl=ttl, ident=ident, tos=tos, df=df, mf=mf,
                   frag_offset=frag_offset, options=options)
    packet = build_ipv4(h, payload)
    hlen = 20 + (len(options) + 3) // 4 * 4
    assert ref_checksum(packet[:hlen]) == 0
    parsed, got = parse_ipv4(packet)
    assert bytes(got) == payload
    assert (parsed.src, parsed.dst, parsed.proto, parsed.ttl, parsed.ident, parsed.tos,
            parsed.df, parsed.mf, parsed.frag_offset) == (src, dst, proto, ttl, ident, tos, df, mf,
                                                          frag_offset)
    assert parsed.header_length == hlen
    assert parsed.total_length == len(packet)
    assert parsed.options == options + b"\x00" * (hlen - 20 - len(options))


def test_ip_text():
    assert ip2int("192.0.2.2") == 0xC0000202
    assert int2ip(0xC0000202) == "192.0.2.2"
    assert int2ip(0) == "0.0.0.0" and int2ip(0xFFFFFFFF) == "255.255.255.255"
    with pytest.raises(ValueError):
        ip2int("192.0.2.256")


# ------------------------------------------------------------------ ICMP

ECHO = bytes.fromhex("0800 2104 1234 0001 61626364".replace(" ", ""))


def test_icmp_parse_echo():
    m = parse_icmp(ECHO)
    assert (m.type, m.code, m.ident, m.seq) == (ECHO_REQUEST, 0, 0x1234, 1)
    assert bytes(m.data) == b"abcd"
    assert not m.is_error
    assert ref_checksum(ECHO) == 0


@pytest.mark.parametrize("n", range(8))
def test_icmp_truncated(n):
    with pytest.raises(WireError) as e:
        parse_icmp(ECHO[:n])
    assert e.value.field == "length"


@pytest.mark.parametrize("n", range(8, len(ECHO)))
def test_icmp_cut_data_fails_the_checksum(n):
    with pytest.raises(WireError) as e:
        parse_icmp(ECHO[:n])
    assert e.value.field == "checksum"


@pytest.mark.parametrize("byte", range(len(ECHO)))
def test_icmp_any_byte_changed_fails_the_checksum(byte):
    msg = bytearray(ECHO)
    msg[byte] ^= 0x80
    with pytest.raises(WireError) as e:
        parse_icmp(bytes(msg))
    assert e.value.field == "checksum"


def test_icmp_error_types():
    for type_ in (3, 4, 5, 11, 12):
        assert IcmpMessage(type_, 0, 0, b"").is_error
    for type_ in (0, 8, 13, 14):
        assert not IcmpMessage(type_, 0, 0, b"").is_error


def test_icmp_build_literal_and_round_trip():
    m = IcmpMessage(ECHO_REQUEST, 0, 0x12340001, b"abcd")
    assert build_icmp(m) == ECHO
    parsed = parse_icmp(build_icmp(m))
    assert (parsed.type, parsed.code, parsed.rest, bytes(parsed.data)) == (8, 0, 0x12340001, b"abcd")


@settings(max_examples=300, deadline=None)
@given(type_=st.integers(0, 255), code=st.integers(0, 255), rest=st.integers(0, 0xFFFFFFFF),
       data=st.binary(max_size=600))
def test_icmp_build_checksum_is_the_reference(type_, code, rest, data):
    msg = build_icmp(IcmpMessage(type_, code, rest, data))
    assert ref_checksum(msg) == 0
    assert int.from_bytes(msg[2:4], "big") == ref_checksum(msg[:2] + b"\x00\x00" + msg[4:])
    parsed = parse_icmp(msg)
    assert (parsed.type, parsed.code, parsed.rest, bytes(parsed.data)) == (type_, code, rest, data)


# ------------------------------------------------------------------ UDP

PEER, US = 0xC0000201, 0xC0000202
# 192.0.2.1:12345 > 192.0.2.2:7 "hi"; checksum e32c over the pseudo-header too.
UDP = bytes.fromhex("3039 0007 000a e32c 6869".replace(" ", ""))


def test_udp_parse_valid():
    d = parse_udp(PEER, US, UDP)
    assert (d.src_port, d.dst_port, bytes(d.payload)) == (12345, 7, b"hi")
    assert ref_checksum(ref_pseudo(PEER, US, 17, 10) + UDP) == 0


@pytest.mark.parametrize("n", range(8))
def test_udp_truncated_header(n):
    with pytest.raises(WireError) as e:
        parse_udp(PEER, US, UDP[:n])
    assert e.value.field == "length"


@pytest.mark.parametrize("n", [8, 9])
def test_udp_truncated_data(n):
    with pytest.raises(WireError) as e:
        parse_udp(PEER, US, UDP[:n])
    assert e.value.field == "length"


@pytest.mark.parametrize("length", [0, 1, 7])
def test_udp_length_too_small(length):
    with pytest.raises(WireError) as e:
        parse_udp(PEER, US, edit(UDP, 4, length.to_bytes(2, "big")))
    assert e.value.field == "length"


@pytest.mark.parametrize("length", [11, 12, 65535])
def test_udp_length_too_big(length):
    with pytest.raises(WireError) as e:
        parse_udp(PEER, US, edit(UDP, 4, length.to_bytes(2, "big")))
    assert e.value.field == "length"


def test_udp_bytes_beyond_length_are_ignored():
    d = parse_udp(PEER, US, UDP + b"padding")
    assert bytes(d.payload) == b"hi"


@pytest.mark.parametrize("bit", range(16))
def test_udp_checksum_wrong(bit):
    bad = (0xE32C ^ (1 << bit)).to_bytes(2, "big")
    with pytest.raises(WireError) as e:
        parse_udp(PEER, US, edit(UDP, 6, bad))
    assert e.value.field == "checksum"


def test_udp_checksum_covers_the_pseudo_header():
    # (Swapping source and destination leaves the sum unchanged, so it is not tried.)
    for src, dst in ((PEER + 1, US), (PEER, US + 256), (0, US), (PEER, 0xFFFFFFFF)):
        with pytest.raises(WireError) as e:
            parse_udp(src, dst, UDP)
        assert e.value.field == "checksum"


def test_udp_zero_checksum_accepted():
    # Zero means "not computed" (RFC 768): any data is accepted.
    d = parse_udp(PEER, US, edit(edit(UDP, 6, b"\x00\x00"), 8, b"zz"))
    assert bytes(d.payload) == b"zz"


def test_udp_destination_port_zero():
    wire = build_udp(PEER, US, 12345, 0, b"hi")
    with pytest.raises(WireError) as e:
        parse_udp(PEER, US, wire)
    assert e.value.field == "dst_port"


def test_udp_build_literal_and_round_trip():
    assert build_udp(PEER, US, 12345, 7, b"hi") == UDP
    d = parse_udp(PEER, US, UDP)
    assert build_udp(PEER, US, d.src_port, d.dst_port, d.payload) == UDP


def test_udp_computed_zero_is_sent_as_ffff():
    # Choose two data bytes that make the sum 0xffff: the checksum is then 0,
    # which UDP must transmit as 0xffff (RFC 768).
    rest = ref_sum(ref_pseudo(PEER, US, 17, 10) + bytes.fromhex("30390007000a0000"))
    word = (0xFFFF - rest) & 0xFFFF
    data = word.to_bytes(2, "big")
    assert ref_checksum(ref_pseudo(PEER, US, 17, 10) + bytes.fromhex("30390007000a0000") + data) == 0
    wire = build_udp(PEER, US, 12345, 7, data)
    assert wire[6:8] == b"\xff\xff"
    assert bytes(parse_udp(PEER, US, wire).payload) == data


def test_udp_build_too_big():
    assert len(build_udp(PEER, US, 1, 2, bytes(65527))) == 65535
    with pytest.raises(WireError) as e:
        build_udp(PEER, US, 1, 2, bytes(65528))
    assert e.value.field == "length"


@settings(max_examples=300, deadline=None)
@given(src=addresses, dst=addresses, sport=st.integers(0, 0xFFFF), dport=st.integers(1, 0xFFFF),
       payload=st.binary(max_size=600))
def test_udp_build_checksum_is_the_reference(src, dst, sport, dport, payload):
    wire = build_udp(src, dst, sport, dport, payload)
    assert len(wire) == 8 + len(payload)
    assert int.from_bytes(wire[4:6], "big") == len(wire)
    expected = ref_checksum(ref_pseudo(src, dst, 17, len(wire)) + wire[:6] + b"\x00\x00" + wire[8:])
    assert int.from_bytes(wire[6:8], "big") == (expected or 0xFFFF)
    d = parse_udp(src, dst, wire)
    assert (d.src_port, d.dst_port, bytes(d.payload)) == (sport, dport, payload)


@pytest.mark.parametrize("n", [41, 44, 60])
def test_ipv4_build_refuses_options_beyond_40_bytes(n):
    # IHL has four bits: 60 header bytes at most, 40 of them options.
    h = Ipv4Header(src=1, dst=2, proto=17, options=b"\x01" * n)
    with pytest.raises(WireError) as e:
        build_ipv4(h, b"")
    assert e.value.field == "options"


def test_ipv4_build_40_bytes_of_options():
    h = Ipv4Header(src=1, dst=2, proto=17, options=b"\x01" * 39)
    packet = build_ipv4(h, b"x")
    assert packet[0] == 0x4F and len(packet) == 61
    assert parse_ipv4(packet)[0].options == b"\x01" * 39 + b"\x00"
