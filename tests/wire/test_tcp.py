"""TCP wire format (stack/wire/tcp.py); sequence arithmetic is in tests/tcp/test_seq.py."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import WireError
from stack.wire.tcp import ACK, FIN, PSH, RST, SYN, build_tcp, parse_tcp
from tests.helpers.checksum import ref_checksum, ref_pseudo

SRC = 0xC0000201
DST = 0xC0000202


def reference_checksum(src: int, dst: int, segment: bytes) -> int:
    """The independent Internet checksum over pseudo-header + segment."""
    return ref_checksum(ref_pseudo(src, dst, 6, len(segment)) + segment)


def with_checksum(src: int, dst: int, raw: bytes) -> bytes:
    raw = bytearray(raw)
    raw[16:18] = b"\0\0"
    raw[16:18] = reference_checksum(src, dst, bytes(raw)).to_bytes(2, "big")
    return bytes(raw)


def header(sport=1, dport=2, seq=3, ack=4, doff=5, flags=ACK, win=100, options=b"",
           payload=b"") -> bytes:
    raw = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0, 0)
    return with_checksum(SRC, DST, raw + options + payload)


# ---- building and parsing ---------------------------------------------------------


def test_syn_ack_round_trip_and_tcpdump_form():
    raw = build_tcp(SRC, DST, 80, 40000, 1, 2, SYN | ACK, 65535, mss=1460)
    seg = parse_tcp(SRC, DST, raw)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.window) == (80, 40000, 1, 2, 65535)
    assert seg.mss == 1460 and seg.flags == SYN | ACK
    assert str(seg) == "Flags [S.], seq 1, ack 2, win 65535, options [mss 1460], length 0"
    assert len(raw) == 24


def test_data_segment_tcpdump_form_shows_the_range():
    raw = build_tcp(SRC, DST, 1, 2, 4294967290, 7, PSH | ACK | FIN, 512, b"0123456789")
    seg = parse_tcp(SRC, DST, raw)
    assert bytes(seg.payload) == b"0123456789"
    assert str(seg) == "Flags [FP.], seq 4294967290:4, ack 7, win 512, length 10"
    assert seg.seg_len == 11


def test_rst_without_ack_has_no_ack_field_in_text():
    seg = parse_tcp(SRC, DST, build_tcp(SRC, DST, 1, 2, 99, 0, RST, 0))
    assert str(seg) == "Flags [R], seq 99, win 0, length 0"


def test_checksum_matches_independent_reference_odd_and_even():
    for payload in (b"", b"a", b"ab", bytes(range(256)) * 5 + b"x", b"\xff" * 1461):
        raw = build_tcp(SRC, DST, 65535, 65535, 0xFFFFFFFF, 0xFFFFFFFF, 0xFF, 65535, payload)
        stored = int.from_bytes(raw[16:18], "big")
        zeroed = raw[:16] + b"\0\0" + raw[18:]
        assert stored == reference_checksum(SRC, DST, zeroed)


def test_all_options_round_trip():
    raw = build_tcp(SRC, DST, 1, 2, 3, 4, SYN, 1000, mss=1400, wscale=7, sack_perm=True,
                    timestamps=(111, 222))
    seg = parse_tcp(SRC, DST, raw)
    assert (seg.mss, seg.wscale, seg.sack_perm, seg.timestamps) == (1400, 7, True, (111, 222))
    assert "options [mss 1400,sackOK,TS val 111 ecr 222,wscale 7]" in str(seg)
    raw = build_tcp(SRC, DST, 1, 2, 3, 4, ACK, 1000, sack=((10, 20), (30, 40)))
    assert parse_tcp(SRC, DST, raw).sack == ((10, 20), (30, 40))


@settings(max_examples=200, deadline=None)
@given(sport=st.integers(0, 65535), dport=st.integers(0, 65535),
       seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       flags=st.integers(0, 255), win=st.integers(0, 65535),
       payload=st.binary(max_size=300), mss=st.none() | st.integers(0, 65535))
def test_round_trip_property(sport, dport, seq, ack, flags, win, payload, mss):
    raw = build_tcp(SRC, DST, sport, dport, seq, ack, flags, win, payload, mss=mss)
    seg = parse_tcp(SRC, DST, raw)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window) == \
        (sport, dport, seq, ack, flags, win)
    assert bytes(seg.payload) == payload and seg.mss == mss
    assert seg.to_bytes(SRC, DST) == raw


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(min_size=0, max_size=200), bit=st.integers(0, 10_000))
def test_any_single_bit_flip_is_caught(payload, bit):
    raw = bytearray(build_tcp(SRC, DST, 1, 2, 3, 4, ACK, 5, payload))
    bit %= len(raw) * 8
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(WireError):
        parse_tcp(SRC, DST, bytes(raw))


def test_wrong_pseudo_header_fails_checksum():
    raw = build_tcp(SRC, DST, 1, 2, 3, 4, ACK, 5, b"data")
    with pytest.raises(WireError) as e:
        parse_tcp(SRC, DST + 1, raw)
    assert e.value.field == "checksum"


# ---- malformed input ------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 19])
def test_too_short(n):
    with pytest.raises(WireError) as e:
        parse_tcp(SRC, DST, header()[:n])
    assert e.value.field == "length"


@pytest.mark.parametrize("doff", [0, 4])
def test_data_offset_below_five(doff):
    with pytest.raises(WireError) as e:
        parse_tcp(SRC, DST, header(doff=doff))
    assert e.value.field == "data_offset"


def test_data_offset_beyond_segment():
    with pytest.raises(WireError) as e:
        parse_tcp(SRC, DST, header(doff=6))
    assert e.value.field == "data_offset"


@pytest.mark.parametrize("options", [
    bytes([2, 0, 0, 0]),            # length 0
    bytes([2, 1, 0, 0]),            # length 1
    bytes([1, 1, 1, 2]),            # kind 2 without a length byte
    bytes([8, 10, 0, 0]),           # timestamps running past the header
    bytes([99, 6, 0, 0]),           # unknown kind running past the header
])
def test_bad_option_lengths(options):
    with pytest.raises(WireError) as e:
        parse_tcp(SRC, DST, header(doff=6, options=options))
    assert e.value.field == "options"


def test_unknown_options_skipped_and_end_stops_parsing():
    opts = bytes([99, 4, 0xAA, 0xBB, 2, 4, 0x05, 0xB4, 0, 2, 0, 0])  # unknown, MSS, END, junk
    seg = parse_tcp(SRC, DST, header(doff=8, options=opts, payload=b"xy"))
    assert seg.mss == 1460 and bytes(seg.payload) == b"xy"


def test_known_option_with_wrong_length_is_ignored():
    opts = bytes([2, 3, 5, 1])  # MSS with length 3
    seg = parse_tcp(SRC, DST, header(doff=6, options=opts))
    assert seg.mss is None


def test_too_many_options_rejected_when_building():
    with pytest.raises(WireError):
        build_tcp(SRC, DST, 1, 2, 3, 4, ACK, 5, mss=1, sack=((1, 2),) * 4, timestamps=(1, 2))
