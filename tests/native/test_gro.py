"""Software GRO, both twins (``stack.native_py.gro_coalesce`` and the C one in
native/gro.c): what GSO cut, GRO puts back byte for byte; merges happen only
where the rules allow (one flow, the next bytes, ACK/PSH only, checksums
right, same options but advancing timestamps); everything else passes
through as the same objects, in order; and the two twins give the same
frames for any batch, mangled ones included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack import _native_impl as c_twin
from stack import native_py as py_twin
from stack.wire.eth import build_eth, parse_eth
from stack.wire.ipv4 import Ipv4Header, build_ipv4, parse_ipv4
from stack.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, build_tcp, parse_tcp

SRC, DST = 0xC0000201, 0xC0000202   # 192.0.2.1 -> 192.0.2.2
MAC_A, MAC_B = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")

TWINS = pytest.mark.parametrize("gro", [py_twin.gro_coalesce, c_twin.gro_coalesce],
                                ids=["python", "c"])


def frame(payload: bytes, seq: int, flags: int = ACK, ident: int = 1, sport: int = 40000,
          ack: int = 1234, win: int = 500, ts: tuple[int, int] | None = (7, 9),
          sack: tuple[tuple[int, int], ...] = (), ttl: int = 64, urgent: int = 0) -> bytes:
    tcp = build_tcp(SRC, DST, sport, 80, seq, ack, flags, win, payload, timestamps=ts,
                    sack=sack, urgent=urgent)
    ip = build_ipv4(Ipv4Header(SRC, DST, 6, ttl=ttl, ident=ident, df=True), tcp)
    return build_eth(MAC_A, MAC_B, 0x0800, ip)


def parse(f: bytes):
    h, body = parse_ipv4(parse_eth(f).payload)
    return h, parse_tcp(h.src, h.dst, body)   # raises on a bad checksum or length


def data(n: int, salt: int = 0) -> bytes:
    return bytes((i * 13 + salt) & 0xFF for i in range(n))


@TWINS
@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 60_000), mss=st.integers(500, 1460), seq=st.integers(0, 2**32 - 1),
       psh=st.booleans(), ts=st.booleans())
def test_gso_then_gro_gives_back_the_segment(gro, n, mss, seq, psh, ts):
    """A super-segment cut by GSO comes back whole, byte for byte (the IP
    identification is the first frame's, which is the original's)."""
    if n <= mss:
        n = mss + 1
    original = frame(data(n), seq, ACK | (PSH if psh else 0), ident=77,
                     ts=(5, 6) if ts else None)
    cut = c_twin.gso_segment(original, mss)
    assert len(cut) > 1
    assert gro(cut) == [original]


@TWINS
def test_a_worked_example_across_the_sequence_wrap(gro):
    a = frame(data(1000, 1), 2**32 - 500)
    b = frame(data(1000, 2), 500, ident=2)
    c = frame(data(300, 3), 1500, PSH | ACK, ident=3)
    merged = gro([a, b, c])
    assert len(merged) == 1
    h, t = parse(merged[0])
    assert t.seq == 2**32 - 500 and bytes(t.payload) == data(1000, 1) + data(1000, 2) + data(300, 3)
    assert t.flags == ACK | PSH and h.ident == 1 and h.total_length == 20 + 32 + 2300


@TWINS
def test_timestamps_may_advance_and_the_first_ones_are_kept(gro):
    a = frame(data(100), 1000, ts=(50, 9))
    b = frame(data(100), 1100, ts=(51, 10))
    c = frame(data(100), 1200, ts=(51, 10))
    [m] = gro([a, b, c])
    assert parse(m)[1].timestamps == (50, 9)
    # A timestamp going back ends the merge (TSval, then TSecr).
    for later in ((49, 9), (50, 8)):
        d = frame(data(100), 1100, ts=later)
        assert gro([a, d]) == [a, d]


@TWINS
def test_psh_ends_a_merge_and_a_short_segment_is_the_last(gro):
    a, b = frame(data(100), 0), frame(data(100), 100, ACK | PSH)
    c = frame(data(100), 200)
    out = gro([a, b, c])
    assert len(out) == 2 and out[1] is c and parse(out[0])[1].flags == ACK | PSH
    short, after = frame(data(50), 100), frame(data(100), 150)
    out = gro([a, short, after])
    assert len(out) == 2 and out[1] is after
    longer = frame(data(150), 100)
    assert gro([a, longer]) == [a, longer]


@pytest.mark.parametrize("other", [
    pytest.param(lambda: frame(data(100), 150), id="a gap"),
    pytest.param(lambda: frame(data(100), 50), id="an overlap"),
    pytest.param(lambda: frame(data(100), 100, sport=40001), id="another flow"),
    pytest.param(lambda: frame(data(100), 100, ack=1235), id="another ack"),
    pytest.param(lambda: frame(data(100), 100, win=501), id="another window"),
    pytest.param(lambda: frame(data(100), 100, ttl=63), id="another ttl"),
    pytest.param(lambda: frame(data(100), 100, ts=None), id="other options"),
    pytest.param(lambda: frame(data(100), 100, sack=((1, 2),)), id="sack blocks"),
    pytest.param(lambda: frame(b"", 100), id="a pure ack"),
    pytest.param(lambda: frame(data(100), 100, ACK | FIN), id="fin"),
    pytest.param(lambda: frame(data(100), 100, ACK | RST), id="rst"),
    pytest.param(lambda: frame(data(100), 100, ACK | SYN), id="syn"),
    pytest.param(lambda: frame(data(100), 100, ACK | URG, urgent=5), id="urgent"),
    pytest.param(lambda: _corrupt(frame(data(100), 100), 70), id="bad tcp checksum"),
    pytest.param(lambda: _corrupt(frame(data(100), 100), 22), id="bad ip checksum"),
])
@TWINS
def test_what_may_not_merge_passes_through_as_it_came(gro, other):
    a = frame(data(100), 0)
    b = other()
    out = gro([a, b])
    assert out == [a, b] and out[0] is a and out[1] is b


def _corrupt(f: bytes, at: int) -> bytes:
    g = bytearray(f)
    g[at] ^= 0x40
    return bytes(g)


@TWINS
def test_at_most_one_ip_packet_of_64_kb(gro):
    frames = [frame(data(1448), i * 1448, ident=i) for i in range(100)]
    out = gro(frames)
    sizes = [parse(f)[0].total_length for f in out]
    assert all(s <= 65535 for s in sizes) and sum(s - 52 for s in sizes) == 100 * 1448
    assert len(out) == 3   # 45 + 45 + 10 segments
    payload = b"".join(bytes(parse(f)[1].payload) for f in out)
    assert payload == b"".join(data(1448) for _ in range(100))


@TWINS
def test_interleaved_flows_merge_only_where_adjacent(gro):
    a0, a1 = frame(data(100), 0), frame(data(100), 100)
    b0 = frame(data(100), 0, sport=40001)
    a2 = frame(data(100), 200)
    out = gro([a0, a1, b0, a2])
    assert len(out) == 3 and out[1] is b0 and out[2] is a2
    assert bytes(parse(out[0])[1].payload) == data(100) * 2


def _batches():
    seg = st.builds(lambda n, k, f, s: frame(data(n, k), s * 100, f),
                    st.integers(0, 200), st.integers(0, 3),
                    st.sampled_from([ACK, ACK, ACK | PSH, ACK | FIN]), st.integers(0, 6))
    mangled = st.tuples(seg, st.integers(0, 300), st.integers(0, 255), st.integers(0, 400)).map(
        lambda t: _mangle(*t))
    return st.lists(st.one_of(seg, mangled, st.binary(max_size=80)), max_size=12)


def _mangle(f: bytes, at: int, value: int, cut: int) -> bytes:
    g = bytearray(f[:cut] if cut < len(f) else f)
    if at < len(g):
        g[at] = value
    return bytes(g)


@settings(max_examples=1500, deadline=None)
@given(batch=_batches())
def test_the_twins_agree_on_any_batch_and_never_raise(batch):
    got_c = c_twin.gro_coalesce(batch)
    got_py = py_twin.gro_coalesce(batch)
    assert got_c == got_py
    # Nothing is lost or invented: every frame that did not merge is an
    # input object, and merged frames parse.
    for f in got_c:
        if not any(f is g for g in batch):
            parse(f)


@st.composite
def _runs(draw):
    """A batch that is mostly one flow's next segments (so merges happen),
    with some sizes, flags, timestamps, flows and bytes changed."""
    mss = draw(st.integers(1, 300))
    seq = draw(st.integers(0, 2**32 - 1))
    tsval = draw(st.integers(0, 2**32 - 1))
    frames = []
    for _ in range(draw(st.integers(1, 14))):
        n = mss if draw(st.integers(0, 3)) else draw(st.integers(0, mss + 5))
        flags = draw(st.sampled_from([ACK] * 6 + [ACK | PSH, ACK | FIN, ACK | URG]))
        tsval = (tsval + draw(st.sampled_from([0, 0, 1, 2**31 + 5]))) & 0xFFFFFFFF
        sport = 40000 if draw(st.integers(0, 7)) else 40001
        f = frame(data(n, seq & 0xFF), seq, flags, sport=sport, ts=(tsval, 1),
                  urgent=1 if flags & URG else 0)
        if not draw(st.integers(0, 9)):
            f = _mangle(f, draw(st.integers(0, len(f))), draw(st.integers(0, 255)), len(f))
        frames.append(f)
        seq = (seq + n + (0 if draw(st.integers(0, 9)) else 1)) & 0xFFFFFFFF
    return frames


def _stream(frames):
    """(sequence number, payload) of every valid frame, in order."""
    out = []
    for f in frames:
        try:
            h, t = parse(f)
        except Exception:
            continue
        out.append((t.seq, bytes(t.payload)))
    return out


@settings(max_examples=1500, deadline=None)
@given(batch=_runs())
def test_the_twins_agree_on_runs_of_one_flow_and_keep_every_byte(batch):
    got_c = c_twin.gro_coalesce(batch)
    assert got_c == py_twin.gro_coalesce(batch)
    assert len(got_c) <= len(batch)
    merged = [f for f in got_c if not any(f is g for g in batch)]
    for f in merged:
        parse(f)
    # The valid segments carry the same bytes before and after, in order.
    before, after = _stream(batch), _stream(got_c)
    assert b"".join(p for _, p in before) == b"".join(p for _, p in after)
    assert len(after) == len(before) - (len(batch) - len(got_c))
