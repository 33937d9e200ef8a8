"""Sequence numbers: 32-bit values compared modulo 2**32 (RFC 9293 section 3.4).

``a`` is "less than" ``b`` when ``b - a`` taken modulo 2**32 lies in
``(0, 2**31)``. Every comparison and addition of sequence numbers,
acknowledgment numbers and timestamps in the TCP code goes through these
helpers; nothing else in ``stack/tcp`` masks with 2**32 - 1 or compares
against 2**31 (``tests/tcp/test_seq.py`` scans the package for it).
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` wrapped to 32 bits (``n`` may be negative)."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in ``[-2**31, 2**31)``."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def seq_offset(a: int, b: int) -> int:
    """Unsigned distance from ``b`` forward to ``a``, in ``[0, 2**32)``."""
    return (a - b) & MASK


def seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) >= HALF


def seq_le(a: int, b: int) -> bool:
    return a == b or ((a - b) & MASK) >= HALF


def seq_gt(a: int, b: int) -> bool:
    return ((b - a) & MASK) >= HALF


def seq_ge(a: int, b: int) -> bool:
    return a == b or ((b - a) & MASK) >= HALF


def seq_in(x: int, lo: int, n: int) -> bool:
    """Is ``x`` in the window ``[lo, lo + n)``? (``n`` >= 0)"""
    return ((x - lo) & MASK) < n


def seq_between(x: int, lo: int, hi: int) -> bool:
    """Is ``x`` in ``[lo, hi]`` (both ends included)?"""
    return ((x - lo) & MASK) <= ((hi - lo) & MASK)


def tsval(base: int, now: float) -> int:
    """Our timestamp clock (RFC 7323 5.4): milliseconds since ``now``'s
    origin plus a per-connection offset, modulo 2**32."""
    return (base + int(now * 1000)) & MASK


def seq_max(a: int, b: int) -> int:
    return b if ((a - b) & MASK) >= HALF else a


def seq_min(a: int, b: int) -> int:
    return a if ((a - b) & MASK) >= HALF else b
