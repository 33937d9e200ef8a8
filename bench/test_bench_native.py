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
