"""The Internet checksum computed independently of the stack (RFC 1071).

Frames the tests build by hand carry checksums from here, so a bug in the
stack's own checksum cannot hide behind a test frame made with it.
"""

from __future__ import annotations


def ref_sum_words(data: bytes, initial: int = 0) -> int:
    """Ones-complement sum of big-endian words, folding the carry after each add."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_sum(data: bytes, initial: int = 0) -> int:
    """The same sum through one big integer (fast enough for the fuzz tests).

    2**16 is 1 modulo 0xffff, so the buffer read as one big-endian number is,
    modulo 0xffff, the sum of its 16-bit words. A ones-complement sum is that
    residue, except that it is 0xffff, not 0, unless every word is zero.
    """
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    n = int.from_bytes(data, "big") + initial
    return n % 0xFFFF or (0xFFFF if n else 0)


def ref_checksum(data: bytes, initial: int = 0) -> int:
    return ~ref_sum(data, initial) & 0xFFFF


def ref_pseudo(src: int, dst: int, proto: int, length: int) -> bytes:
    """The IPv4 pseudo-header that TCP and UDP checksums cover."""
    return src.to_bytes(4, "big") + dst.to_bytes(4, "big") + bytes((0, proto)) + length.to_bytes(2, "big")
