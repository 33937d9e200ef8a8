"""The C hot paths (stack._native via stack._native_impl) against their pure-Python
twin (stack.native_py), and both against independent references written here.

Agreement alone proves nothing if both twins share a bug, so every function is
also checked against a slow reference: a big-integer checksum, RFC 1071's worked
example, buffers that need a second fold, and a plain list model of reassembly.

The C module must be built (``pip install -e .`` or ``python native/build.py``);
when it is not, the tests that need it fail, they do not skip.
"""

from __future__ import annotations

import array
import itertools
import random
import resource
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stack.native
from stack import native_py as py

try:
    from stack import _native_impl as _c
except ImportError as exc:  # the C-vs-Python tests fail below, with this reason
    _c = None
    _C_ERROR = f"{type(exc).__name__}: {exc}"


def c_impl():
    if _c is None:
        pytest.fail(
            "the C module stack._native is not built or not importable "
            f"({_C_ERROR}); build it with `pip install -e .` or `python native/build.py`",
            pytrace=False,
        )
    return _c


@pytest.fixture(params=["python", "c"])
def impl(request):
    """Each implementation in turn, for the tests against a reference."""
    return py if request.param == "python" else c_impl()


def test_stack_native_uses_c():
    c_impl()
    assert stack.native.IMPL == "c"
    assert stack.native.csum_partial is _c.csum_partial
    assert stack.native.Reassembly is _c.Reassembly


# ---------------------------------------------------------------- references


def ref_csum_words(data, initial=0):
    """Add big-endian 16-bit words one by one, then reduce modulo 0xffff."""
    b = bytes(data)
    if len(b) % 2:
        b += b"\x00"
    total = initial
    for i in range(0, len(b), 2):
        total += b[i] * 256 + b[i + 1]
    return _ones_complement_16(total)


def ref_csum_bigint(data, initial=0):
    """The whole buffer as one big integer: 2**16 == 1 modulo 0xffff."""
    b = bytes(data)
    if len(b) % 2:
        b += b"\x00"
    return _ones_complement_16(int.from_bytes(b, "big") + initial)


def _ones_complement_16(total):
    # The end-around-carry sum is the value in [1, 0xffff] congruent to the
    # plain sum modulo 0xffff, and 0 only when everything summed was 0.
    return 0 if total == 0 else (total - 1) % 0xFFFF + 1


def test_reference_sanity():
    assert ref_csum_words(b"") == 0
    assert ref_csum_words(b"\x12\x34") == 0x1234
    assert ref_csum_words(b"\x12") == 0x1200
    assert ref_csum_words(b"\xff\xff\x00\x01") == 0x0001  # 0x10000 wraps to 1
    assert ref_csum_words(b"\xff\xff") == 0xFFFF
    assert ref_csum_bigint(b"\x01\x02\x03") == ref_csum_words(b"\x01\x02\x03") == 0x0402


# ---------------------------------------------------------------- checksum vs references

# RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
RFC1071 = bytes.fromhex("0001f203f4f5f6f7")
# An IPv4 header with a zero checksum field; its checksum is 0xb861.
IPV4_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")


def test_rfc1071_example(impl):
    assert impl.csum_partial(RFC1071) == 0xDDF2
    assert impl.checksum(RFC1071) == 0x220D
    assert impl.csum_partial(memoryview(b"x" + RFC1071)[1:]) == 0xDDF2


def test_ipv4_header(impl):
    assert impl.checksum(IPV4_HEADER) == 0xB861
    filled = IPV4_HEADER[:10] + b"\xb8\x61" + IPV4_HEADER[12:]
    assert impl.checksum(filled) == 0
    assert impl.csum_partial(filled) == 0xFFFF


def test_empty_and_zero(impl):
    for empty in (b"", bytearray(), memoryview(b"abc")[1:1]):
        assert impl.csum_partial(empty) == 0
        assert impl.checksum(empty) == 0xFFFF
        assert impl.csum_partial(empty, 0x1234) == 0x1234
    assert impl.csum_partial(bytes(1001)) == 0
    assert impl.csum_partial(bytes(1001), 0x10000) == 1


@pytest.mark.parametrize("n", list(range(0, 70)) + [1459, 1460, 1461, 65534, 65535, 131075, 300001])
def test_all_ff_needs_second_fold(impl, n):
    data = b"\xff" * n
    expected = ref_csum_bigint(data)
    assert expected == (0 if n == 0 else 0xFFFF if n % 2 == 0 else 0xFF00)
    assert impl.csum_partial(data) == expected
    assert impl.csum_partial(bytearray(data)) == expected
    for initial in (1, 0xFF, 0xFFFF, 0x1FFFE, 0xFFFFFFFF):
        assert impl.csum_partial(data, initial) == ref_csum_bigint(data, initial)


def test_initial_plus_sum_overflows_more_than_once(impl):
    # 0xffffffff + 0xffff = 0x1_0000_fffe: folding once leaves 0x1fffe, twice 0xffff.
    data = b"\xff\xff"
    assert impl.csum_partial(data, 0xFFFFFFFF) == 0xFFFF
    assert impl.csum_partial(b"\xff" * 8, 0xFFFFFFFF) == 0xFFFF
    assert impl.csum_partial(b"\xff\xfe", 0xFFFF0001) == ref_csum_words(b"\xff\xfe", 0xFFFF0001)
    assert impl.checksum(data, 0xFFFFFFFF) == 0


@pytest.mark.parametrize("target", [0x20000FFFF, 0x2FFFEFFFF, 0x3FFFEFFFF])
def test_long_buffer_sum_beyond_32_bits(impl, target):
    # Little-endian words adding up to `target`: a 64-bit sum that two folds
    # (of the byte-swapped form) do not bring down to 16 bits.
    k, rest = divmod(target, 0xFFFF)
    data = b"\xff\xff" * k + rest.to_bytes(2, sys.byteorder)
    assert impl.csum_partial(data) == ref_csum_bigint(data)


def test_runs_of_ff_then_a_small_carry(impl):
    # Sums that land just above a power of two in whatever word size an
    # implementation accumulates in (e.g. 16 bytes of 0xff then 00 00 01 00
    # makes 0x1_0000_ffff in a 32-bit-word sum): folding twice is not enough.
    tails = [
        b"\x01",
        b"\x00\x01",
        b"\x00\x00\x01",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x01\x00",
        b"\xff\xfe",
    ]
    for k in range(0, 49):
        for zeros in range(0, 8):
            for tail in tails:
                for after in (0, 12):
                    data = b"\xff" * k + bytes(zeros) + tail + bytes(after)
                    assert impl.csum_partial(data) == ref_csum_words(data), (k, zeros, tail, after)


def test_initial_out_of_range(impl):
    with pytest.raises(OverflowError):
        impl.csum_partial(b"ab", -1)
    with pytest.raises(OverflowError):
        impl.csum_partial(b"ab", 1 << 32)


def test_other_buffer_formats(impl):
    words = array.array("H", [1, 2, 0xFFFF, 0x8000])
    raw = words.tobytes()
    assert impl.csum_partial(words) == ref_csum_words(raw)
    assert impl.csum_partial(memoryview(words)) == ref_csum_words(raw)
    assert impl.csum_partial(memoryview(raw).cast("I")) == ref_csum_words(raw)


def test_rejects_text(impl):
    with pytest.raises(TypeError):
        impl.csum_partial("abc")


@settings(max_examples=400)
@given(data=st.binary(max_size=300), initial=st.integers(0, 0xFFFFFFFF))
def test_checksum_matches_reference(data, initial):
    expected = ref_csum_words(data, initial)
    assert py.csum_partial(data, initial) == expected
    assert py.checksum(data, initial) == expected ^ 0xFFFF
    c = c_impl()
    assert c.csum_partial(data, initial) == expected
    assert c.checksum(data, initial) == expected ^ 0xFFFF


def _biased_bytes(rnd, n, bias):
    """Random bytes, mostly 0xff when bias is high (sums near a multiple of 0xffff)."""
    if bias == 0:
        return rnd.randbytes(n)
    out = bytearray(b"\xff" * n)
    for _ in range(max(1, n // bias)):
        if n:
            out[rnd.randrange(n)] = rnd.randrange(256)
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(
    n=st.one_of(st.integers(0, 4096), st.integers(60000, 70000), st.integers(250000, 400000)),
    seed=st.integers(0, 2**32),
    bias=st.sampled_from([0, 0, 3, 1000]),
    initial=st.sampled_from([0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF),
)
def test_long_buffers_match_reference(n, seed, bias, initial):
    data = _biased_bytes(random.Random(seed), n, bias)
    expected = ref_csum_bigint(data, initial)
    assert py.csum_partial(data, initial) == expected
    assert c_impl().csum_partial(data, initial) == expected


# ---------------------------------------------------------------- checksum: C vs Python


@settings(max_examples=500)
@given(
    data=st.binary(max_size=2000),
    start=st.integers(0, 15),
    stop_cut=st.integers(0, 15),
    initial=st.integers(0, 0xFFFFFFFF),
    kind=st.sampled_from(["bytes", "bytearray", "memoryview", "readonly-memoryview"]),
)
def test_checksum_c_equals_python(data, start, stop_cut, initial, kind):
    c = c_impl()
    # A slice starting at an odd (or any) alignment inside a larger buffer.
    stop = max(start, len(data) - stop_cut)
    if kind == "bytes":
        buf = data[start:stop]
    elif kind == "bytearray":
        buf = bytearray(data)[start:stop]
    elif kind == "memoryview":
        buf = memoryview(bytearray(data))[start:stop]
    else:
        buf = memoryview(data)[start:stop]
    assert c.csum_partial(buf, initial) == py.csum_partial(buf, initial)
    assert c.checksum(buf, initial) == py.checksum(buf, initial)
    assert c.csum_partial(buf) == py.csum_partial(buf)


def test_checksum_c_equals_python_every_small_length_and_alignment():
    c = c_impl()
    rnd = random.Random(1071)
    backing = bytearray(rnd.randbytes(200))
    mv = memoryview(backing)
    for start in range(9):
        for n in range(0, 130):
            piece = mv[start : start + n]
            assert c.csum_partial(piece) == py.csum_partial(piece) == ref_csum_words(piece)


def test_checksum_incremental_matches_whole():
    # Chaining csum_partial over even-length pieces is the checksum of the whole.
    c = c_impl()
    data = random.Random(7).randbytes(5000)
    for impl in (py, c):
        acc = 0
        for i in range(0, 5000, 500):
            acc = impl.csum_partial(data[i : i + 500], acc)
        assert acc == impl.csum_partial(data) == ref_csum_bigint(data)


# ---------------------------------------------------------------- reassembly: a model


class Model:
    """Reassembly as a plain list of optional bytes, one slot per offset."""

    def __init__(self, capacity, max_holes):
        self.capacity = capacity
        self.max_holes = max_holes
        self.slots = [None] * capacity

    def ranges(self):
        out, start = [], None
        for i, b in enumerate(self.slots + [None]):
            if b is not None and start is None:
                start = i
            elif b is None and start is not None:
                out.append((start, i))
                start = None
        return out

    def insert(self, offset, data):
        data = bytes(data)
        end = offset + len(data)
        if offset < 0 or end > self.capacity:
            return -1
        if not data:
            return 0
        ranges = self.ranges()
        touches = any(s <= end and offset <= e for s, e in ranges)
        if not touches and len(ranges) >= self.max_holes:
            return -2
        new = 0
        for i, b in enumerate(data):
            if self.slots[offset + i] is None:
                self.slots[offset + i] = b
                new += 1
        return new

    def overlaps(self, offset, length):
        lo, hi = max(offset, 0), min(offset + length, self.capacity)
        return any(self.slots[i] is not None for i in range(lo, hi))

    def contiguous(self):
        n = 0
        while n < self.capacity and self.slots[n] is not None:
            n += 1
        return n

    def pop(self, n):
        if n < 0 or n > self.contiguous():
            raise ValueError(n)
        out = bytes(self.slots[:n])
        self.slots = self.slots[n:] + [None] * n
        return out

    def buffered(self):
        return sum(b is not None for b in self.slots)

    def clear(self):
        self.slots = [None] * self.capacity


CAP = 64


def _pattern(length, tag):
    """Bytes that are never zero and differ from one insert to the next."""
    return bytes((tag * 31 + i * 7) % 255 + 1 for i in range(length))


_offset = st.integers(-8, CAP + 8)
_edge = (st.integers(0, 7), st.booleans(), st.integers(-2, 2))  # range, at its end?, shift
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), _offset, st.integers(0, 24), st.integers(0, 999)),
        st.tuples(st.just("insert-bytes"), _offset, st.binary(max_size=24)),
        st.tuples(
            st.just("insert-view"),
            _offset,
            st.integers(0, 24),
            st.integers(0, 999),
            st.integers(0, 3),
        ),
        st.tuples(st.just("insert-edge"), *_edge, st.integers(0, 12), st.integers(0, 999)),
        st.tuples(st.just("overlaps"), _offset, st.integers(-4, 30)),
        st.tuples(st.just("overlaps-edge"), *_edge, st.integers(-1, 12)),
        st.tuples(st.just("pop"), st.integers(-2, CAP + 2), st.booleans()),
        st.tuples(st.just("clear")),
    ),
    max_size=50,
)


def _edge_offset(obj, k, at_end, shift, length):
    """An offset at (or `shift` bytes from) an edge of one stored range."""
    ranges = obj.ranges() or [(0, 0)]
    start, end = ranges[k % len(ranges)]
    return end + shift if at_end else start - length + shift


def _concrete(obj, op):
    """Turn a drawn op into ("insert", offset, data, skip), ("overlaps", offset,
    length), ("pop", n) or ("clear",), looking at obj's state where needed."""
    name = op[0]
    if name == "insert":
        return ("insert", op[1], _pattern(op[2], op[3]), None)
    if name == "insert-bytes":
        return ("insert", op[1], op[2], None)
    if name == "insert-view":
        return ("insert", op[1], _pattern(op[2], op[3]), op[4])
    if name == "insert-edge":
        _, k, at_end, shift, length, tag = op
        return ("insert", _edge_offset(obj, k, at_end, shift, length), _pattern(length, tag), None)
    if name == "overlaps-edge":
        _, k, at_end, shift, length = op
        return ("overlaps", _edge_offset(obj, k, at_end, shift, length), length)
    if name == "pop":
        if not op[2]:
            return ("pop", op[1])
        # A valid pop: a part of (or all of) the contiguous prefix.
        c = obj.contiguous()
        return ("pop", op[1] % (c + 1) if op[1] >= 0 else c)
    return op  # overlaps, clear


def _apply(obj, op):
    """Run one concrete step; return its result or the exception class it raised."""
    name = op[0]
    try:
        if name == "insert":
            _, offset, data, skip = op
            if skip is not None:  # a memoryview at an odd alignment
                data = memoryview(b"\xaa" * skip + data)[skip:]
            return obj.insert(offset, data)
        if name == "overlaps":
            return obj.overlaps(op[1], op[2])
        if name == "pop":
            return obj.pop(op[1])
        obj.clear()
        return None
    except (ValueError, MemoryError) as exc:
        return type(exc)


def _state(obj):
    return obj.ranges(), obj.contiguous(), obj.buffered()


def _fill_and_drain(obj, capacity):
    # Inserting zeros everywhere fills only the holes (first copy wins), so the
    # popped bytes show every stored byte (inserted patterns are never zero).
    obj.insert(0, bytes(capacity))
    return obj.pop(obj.contiguous())


def _run_against(objs, capacity, ops):
    for step, drawn in enumerate(ops):
        op = _concrete(objs[0], drawn)
        results = [_apply(o, op) for o in objs]
        states = [_state(o) for o in objs]
        where = f"step {step}: {op!r}"
        assert all(r == results[0] for r in results), (where, results)
        assert all(s == states[0] for s in states), (where, states)
        ranges = states[0][0]
        assert all(s < e for s, e in ranges), where
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), (
            where
        )  # disjoint, not adjacent
    drained = [_fill_and_drain(o, capacity) for o in objs]
    assert all(d == drained[0] for d in drained)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(max_holes=st.integers(1, 5), ops=_ops)
def test_reassembly_c_equals_python(max_holes, ops):
    c = c_impl()
    _run_against([py.Reassembly(CAP, max_holes), c.Reassembly(CAP, max_holes)], CAP, ops)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(max_holes=st.integers(1, 5), ops=_ops)
def test_reassembly_python_matches_model(max_holes, ops):
    _run_against([Model(CAP, max_holes), py.Reassembly(CAP, max_holes)], CAP, ops)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(max_holes=st.integers(1, 5), ops=_ops)
def test_reassembly_c_matches_model(max_holes, ops):
    c = c_impl()
    _run_against([Model(CAP, max_holes), c.Reassembly(CAP, max_holes)], CAP, ops)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 65535),
    frag=st.integers(1, 2000),
    seed=st.integers(0, 2**32),
    dup=st.booleans(),
)
def test_reassembly_fragments_in_any_order(size, frag, seed, dup):
    c = c_impl()
    frag = max(frag, size // 200)  # at most ~200 pieces: the Python twin is O(pieces**2)
    rnd = random.Random(seed)
    payload = rnd.randbytes(size)
    pieces = [(off, payload[off : off + frag]) for off in range(0, size, frag)]
    if dup:
        pieces += [(off, bytes(len(p))) for off, p in rnd.sample(pieces, len(pieces) // 3 + 1)]
    rnd.shuffle(pieces)
    for impl in (py, c):
        r = impl.Reassembly(65535, len(pieces) + 1)
        first = {}
        for off, piece in pieces:
            r.insert(off, piece)
            first.setdefault(off, piece)  # duplicates (zeros) come after or before: first wins
        assert r.contiguous() == size == r.buffered()
        expected = b"".join(first[off] for off in sorted(first))
        assert r.pop(size) == expected
        assert r.ranges() == [] and r.buffered() == 0


# ---------------------------------------------------------------- reassembly: edge cases


def test_insert_bounds(impl):
    r = impl.Reassembly(10, 4)
    assert r.insert(-1, b"a") == -1
    assert r.insert(-1, b"") == -1
    assert r.insert(10, b"") == 0
    assert r.insert(11, b"") == -1
    assert r.insert(9, b"ab") == -1
    assert r.insert(8, b"ab") == 2
    assert r.insert(1 << 70, b"a") == -1
    assert r.insert(-(1 << 70), b"a") == -1
    assert r.ranges() == [(8, 10)]


def test_first_copy_wins_and_merge(impl):
    r = impl.Reassembly(100, 8)
    assert r.insert(10, b"AAAA") == 4
    assert r.insert(20, b"BBBB") == 4
    assert r.insert(8, b"xxxxxxxxxxxxxxxxxx") == 10  # covers 8..26, fills 8..10, 14..20, 24..26
    assert r.ranges() == [(8, 26)]
    assert r.insert(26, b"cc") == 2  # adjacent: merges
    assert r.insert(0, b"01234567") == 8
    assert r.ranges() == [(0, 28)]
    assert r.pop(28) == b"01234567xxAAAAxxxxxxBBBBxxcc"
    assert r.insert(0, b"dup") == 3
    assert r.insert(0, b"DUP") == 0
    assert r.pop(3) == b"dup"


def test_holes_limit(impl):
    r = impl.Reassembly(100, 2)
    assert r.insert(10, b"a") == 1
    assert r.insert(20, b"b") == 1
    assert r.insert(30, b"c") == -2
    assert r.insert(0, b"") == 0
    assert r.insert(11, b"a") == 1  # touches an existing range: allowed
    assert r.insert(12, b"abcdefgh") == 8  # bridges to 20: still allowed
    assert r.ranges() == [(10, 21)]
    assert r.insert(30, b"c") == 1
    assert r.buffered() == 12


def test_overlaps(impl):
    r = impl.Reassembly(100, 4)
    r.insert(10, b"abcd")
    assert r.overlaps(13, 1) and r.overlaps(0, 11) and r.overlaps(5, 100)
    assert not r.overlaps(14, 5) and not r.overlaps(0, 10)
    assert not r.overlaps(12, 0) and not r.overlaps(12, -1)  # empty ranges touch nothing
    assert not r.overlaps(1 << 70, 5) and r.overlaps(-(1 << 70), 1 << 71)


def test_pop_errors_and_shift(impl):
    r = impl.Reassembly(20, 4)
    assert r.pop(0) == b""
    with pytest.raises(ValueError):
        r.pop(1)
    r.insert(0, b"hello")
    r.insert(8, b"xy")
    with pytest.raises(ValueError):
        r.pop(6)
    with pytest.raises(ValueError):
        r.pop(-1)
    assert r.pop(2) == b"he"
    assert r.ranges() == [(0, 3), (6, 8)]
    assert r.pop(3) == b"llo"
    assert r.ranges() == [(3, 5)] and r.contiguous() == 0 and r.buffered() == 2
    r.clear()
    assert r.ranges() == [] and r.buffered() == 0 and r.contiguous() == 0
    assert r.insert(0, b"again") == 5 and r.pop(5) == b"again"


def test_constructor_checks(impl):
    for bad in ((-1, 4), (10, 0), (1 << 63, 4), (10, 1 << 63)):
        with pytest.raises(ValueError):
            impl.Reassembly(*bad)
    r = impl.Reassembly(0, 1)
    assert r.insert(0, b"") == 0 and r.insert(0, b"a") == -1
    assert (r.capacity, r.max_holes) == (0, 1)


def test_insert_item_size_is_bytes(impl):
    r = impl.Reassembly(100, 4)
    words = array.array("H", [0x0102, 0x0304])
    assert r.insert(0, words) == 4
    assert r.pop(4) == words.tobytes()


def test_out_of_memory_raises(impl):
    r = impl.Reassembly(1 << 62, 4)
    with pytest.raises(MemoryError):
        r.insert(1 << 61, b"x")
    assert r.ranges() == [] and r.buffered() == 0
    assert r.insert(0, b"ok") == 2


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
def test_c_buffers_are_freed():
    c = c_impl()
    chunk = bytes(60000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(20000):  # 1.2 GB if nothing were freed
        r = c.Reassembly(65535, 16)
        r.insert(0, chunk)
        del r
    r = c.Reassembly(1 << 30, 16)
    for _ in range(20000):  # popping everything releases the buffer too
        r.insert(0, chunk)
        r.pop(60000)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200
