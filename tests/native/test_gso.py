"""Software GSO, both twins (``stack.native_py.gso_segment`` and the C one in
native/gso.c), proven against the wire parsers: every frame cut is a valid
Ethernet + IPv4 + TCP frame (both checksums right), the pieces put back
together give the original payload, and each header field moves as TSO
moves it; and the two twins give the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack import _native_impl as c_twin
from stack import native_py as py_twin
from stack.wire.eth import build_eth, parse_eth
from stack.wire.ipv4 import Ipv4Header, build_ipv4, parse_ipv4
from stack.wire.tcp import ACK, CWR, FIN, PSH, URG, build_tcp, parse_tcp

SRC, DST = 0xC0000202, 0xC0000201   # 192.0.2.2 -> 192.0.2.1
MAC_A, MAC_B = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")


def frame(payload: bytes, seq: int, flags: int, ident: int, urgent: int = 0,
          ts: tuple[int, int] | None = (7, 9), df: bool = True) -> bytes:
    tcp = build_tcp(SRC, DST, 80, 40000, seq, 1234, flags, 500, payload, urgent=urgent,
                    timestamps=ts)
    ip = build_ipv4(Ipv4Header(SRC, DST, 6, ttl=64, ident=ident, df=df), tcp)
    return build_eth(MAC_B, MAC_A, 0x0800, ip)


def parse(f: bytes):
    eth = parse_eth(f)
    h, body = parse_ipv4(eth.payload)
    return h, parse_tcp(h.src, h.dst, body)


TWINS = pytest.mark.parametrize("gso_segment", [py_twin.gso_segment, c_twin.gso_segment],
                                ids=["python", "c"])


@TWINS
@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 20_000), mss=st.integers(1, 3000),
       seq=st.integers(0, 2**32 - 1), ident=st.integers(0, 0xFFFF),
       flags=st.sets(st.sampled_from([FIN, PSH, URG, CWR])), urgent=st.integers(1, 0xFFFF),
       ts=st.booleans())
def test_cut_frames_are_valid_and_put_back_together_exactly(gso_segment, n, mss, seq, ident,
                                                            flags, urgent, ts):
    payload = bytes((i * 7 + 3) & 0xFF for i in range(n))
    f0 = ACK
    for f in flags:
        f0 |= f
    original = frame(payload, seq, f0, ident, urgent if f0 & URG else 0, (7, 9) if ts else None)
    frames = gso_segment(original, mss)
    if n <= mss:
        assert frames == [original]
        return
    parsed = [parse(f) for f in frames]          # raises on a bad checksum or length
    pieces = [bytes(t.payload) for _, t in parsed]
    assert b"".join(pieces) == payload
    assert all(len(p) == mss for p in pieces[:-1]) and 0 < len(pieces[-1]) <= mss
    h0, t0 = parse(original)
    for i, (h, t) in enumerate(parsed):
        off = i * mss
        assert h.ident == (ident + i) & 0xFFFF and h.df == h0.df and h.ttl == h0.ttl
        assert t.seq == (seq + off) & 0xFFFFFFFF
        assert (t.ack, t.window, t.timestamps) == (t0.ack, t0.window, t0.timestamps)
        last = i == len(parsed) - 1
        assert bool(t.flags & FIN) == (last and bool(f0 & FIN))
        assert bool(t.flags & PSH) == (last and bool(f0 & PSH))
        assert bool(t.flags & CWR) == (i == 0 and bool(f0 & CWR))
        assert t.flags & ACK
        if f0 & URG and urgent - off > 0:
            assert t.flags & URG and t.urgent == min(urgent - off, 0xFFFF)
        else:
            assert not t.flags & URG and t.urgent == 0


@TWINS
def test_a_worked_example_across_the_sequence_wrap(gso_segment):
    payload = bytes(range(256)) * 12               # 3072 bytes: 1448 + 1448 + 176
    frames = gso_segment(frame(payload, 2**32 - 1000, ACK | PSH | FIN, 0xFFFF), 1448)
    got = [(h.ident, t.seq, len(t.payload), t.flags) for h, t in map(parse, frames)]
    assert got == [(0xFFFF, 2**32 - 1000, 1448, ACK), (0, 448, 1448, ACK),
                   (1, 1896, 176, ACK | PSH | FIN)]


@pytest.mark.parametrize("mangle", [
    lambda f: f[:20],                                  # truncated
    lambda f: f[:12] + b"\x86\xdd" + f[14:],           # not IPv4
    lambda f: f[:23] + b"\x11" + f[24:],               # not TCP
    lambda f: f[:20] + b"\x20\x00" + f[22:],           # a fragment (MF)
])
@TWINS
def test_what_it_cannot_cut_comes_back_unchanged(gso_segment, mangle):
    bad = mangle(frame(bytes(5000), 1, ACK, 1))
    assert gso_segment(bad, 1448) == [bad]


@TWINS
def test_mss_must_be_positive(gso_segment):
    with pytest.raises(ValueError):
        gso_segment(frame(bytes(10), 1, ACK, 1), 0)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), mss=st.integers(1, 2000),
       cut=st.integers(0, 200), flip=st.integers(0, 2**16))
def test_the_twins_agree_byte_for_byte_even_on_mangled_frames(data, mss, cut, flip):
    """Any bytes at all, and real frames with a byte changed or cut short."""
    assert c_twin.gso_segment(data, mss) == py_twin.gso_segment(data, mss)
    f = bytearray(frame(data, flip * 65537 & 0xFFFFFFFF, ACK | PSH, flip & 0xFFFF))
    if f and flip % 3 == 0:
        f[flip % len(f)] ^= 0xFF
    f = f[:len(f) - cut] if flip % 5 == 0 else f
    assert c_twin.gso_segment(bytes(f), mss) == py_twin.gso_segment(bytes(f), mss)
