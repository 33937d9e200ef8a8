"""Microbenchmarks of the hot paths, C (stack._native) against the Python twin.

Run: ``python -m pytest bench/test_bench_native.py --benchmark-only -q``.
The C module must be built; the C cases fail (not skip) when it is not.
"""

from __future__ import annotations

import random

import pytest

from stack import native_py

try:
    from stack import _native_impl
except ImportError as exc:
    _native_impl = None
    _C_ERROR = f"{type(exc).__name__}: {exc}"

# The largest IPv4 datagram payload an ICMP echo can carry (65507 + 8 header
# bytes), cut as on a 1500-byte MTU: 44 fragments of 1480 bytes and one of 395.
DATAGRAM = 65515
FRAGMENT = 1480


@pytest.fixture(params=["c", "python"])
def impl(request):
    if request.param == "python":
        return native_py
    if _native_impl is None:
        pytest.fail(
            f"stack._native is not built ({_C_ERROR}): run `pip install -e .`", pytrace=False
        )
    return _native_impl


@pytest.mark.parametrize("size", [20, 1460, 65535])
def test_checksum(benchmark, impl, size):
    benchmark.group = f"checksum {size} B"
    data = random.Random(size).randbytes(size)
    result = benchmark(impl.checksum, data)
    assert result == native_py.checksum(data)


def test_reassembly_64k_from_45_fragments(benchmark, impl):
    benchmark.group = "reassembly 64 KB, 45 fragments out of order"
    rnd = random.Random(45)
    payload = rnd.randbytes(DATAGRAM)
    fragments = [(off, payload[off : off + FRAGMENT]) for off in range(0, DATAGRAM, FRAGMENT)]
    assert len(fragments) == 45
    rnd.shuffle(fragments)
    Reassembly = impl.Reassembly

    def reassemble():
        r = Reassembly(65535, 64)
        for off, data in fragments:
            r.insert(off, data)
        return r.pop(r.contiguous())

    assert benchmark(reassemble) == payload


def _super_frame(payload: bytes, sport: int = 80) -> bytes:
    """One Ethernet + IPv4 + TCP frame (timestamps) carrying ``payload``."""
    from stack.wire.eth import build_eth
    from stack.wire.ipv4 import Ipv4Header, build_ipv4
    from stack.wire.tcp import ACK, PSH, build_tcp

    src, dst = 0xC0000202, 0xC0000201
    tcp = build_tcp(src, dst, sport, 40000, 1, 1, ACK | PSH, 500, payload, timestamps=(7, 9))
    ip = build_ipv4(Ipv4Header(src, dst, 6, ident=1, df=True), tcp)
    return build_eth(bytes(6), bytes(6), 0x0800, ip)


# A 64 KB TCP segment as the stack builds it (45 MSS of 1,448 bytes with
# timestamps), and the 45 frames GSO cuts it into for MTU 1500.
SEGMENT = 45 * 1448


def test_gso_segment_64k(benchmark, impl):
    benchmark.group = "gso: one 64 KB segment cut into 45 frames"
    frame = _super_frame(random.Random(1).randbytes(SEGMENT))
    frames = benchmark(impl.gso_segment, frame, 1448)
    assert len(frames) == 45 and frames == native_py.gso_segment(frame, 1448)


def test_gro_coalesce_45_frames(benchmark, impl):
    benchmark.group = "gro: 45 frames merged into one 64 KB segment"
    frame = _super_frame(random.Random(2).randbytes(SEGMENT))
    frames = native_py.gso_segment(frame, 1448)
    assert benchmark(impl.gro_coalesce, frames) == [frame]


def test_gro_coalesce_64_unmergeable_frames(benchmark, impl):
    """What GRO costs a batch it cannot merge (64 frames of 64 flows)."""
    benchmark.group = "gro: 64 frames of 64 flows, nothing merged"
    frames = [_super_frame(bytes(1448), 1000 + i) for i in range(64)]
    out = benchmark(impl.gro_coalesce, frames)
    assert out == frames
