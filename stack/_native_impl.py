"""Thin wrappers over the compiled cffi module ``stack._native``.

Same names, signatures and results as ``stack.native_py``; import through
``stack.native``, which falls back to the pure-Python twin when this module's
import fails (``stack._native`` not built).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from stack._native import ffi as _ffi
from stack._native import lib as _lib

if TYPE_CHECKING:
    from stack.native_py import BytesLike

__all__ = ["FrameReader", "GsoWriter", "Reassembly", "checksum", "csum_partial", "gro_coalesce",
           "gso_segment"]

try:
    _csum = _lib.csum_partial
    _new = _lib.reasm_new
    _free = _lib.reasm_free
    _insert = _lib.reasm_insert
    _overlaps = _lib.reasm_overlaps
    _contiguous = _lib.reasm_contiguous
    _data = _lib.reasm_data
    _pop = _lib.reasm_pop
    _count = _lib.reasm_count
    _ranges = _lib.reasm_ranges
    _buffered = _lib.reasm_buffered
    _clear = _lib.reasm_clear
    _NO_MEMORY = _lib.REASM_NO_MEMORY
    _gso = _lib.gso_segment
    _read_batch = _lib.tap_read_batch
    _gro = _lib.gro_coalesce
    _gso_write = _lib.tap_gso_write
except AttributeError as exc:  # a stale build: let stack.native fall back to Python
    raise ImportError(f"stack._native is out of date, rebuild it ({exc})") from exc

_from_buffer = _ffi.from_buffer
_gc = _ffi.gc
_unpack = _ffi.unpack
_bytes = bytes

# Largest capacity or max_holes accepted, shared with native_py (C keeps int64_t).
LIMIT = 1 << 62


def csum_partial(data: BytesLike, initial: int = 0) -> int:
    """16-bit ones-complement sum of big-endian words of ``data`` plus ``initial``.

    An odd trailing byte is padded with a zero byte. The result is folded to
    16 bits but not complemented. ``initial`` is an int in ``[0, 2**32)``.
    """
    if type(data) is _bytes:  # cffi passes bytes as a pointer, no wrapper needed
        return _csum(data, len(data), initial)
    buf = _from_buffer(data)
    return _csum(buf, len(buf), initial)


def checksum(data: BytesLike, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data``, starting from ``initial``."""
    if type(data) is _bytes:
        return _csum(data, len(data), initial) ^ 0xFFFF
    buf = _from_buffer(data)
    return _csum(buf, len(buf), initial) ^ 0xFFFF


class Reassembly:
    """A byte-range buffer: insert data at offsets, read the contiguous prefix.

    Offsets live in ``[0, capacity)``. At most ``max_holes`` disjoint ranges
    are stored at once. Bytes already stored are kept (first copy wins).
    """

    __slots__ = ("capacity", "max_holes", "_r")

    def __init__(self, capacity: int, max_holes: int) -> None:
        if capacity < 0 or max_holes < 1:
            raise ValueError("capacity must be >= 0 and max_holes >= 1")
        if capacity > LIMIT or max_holes > LIMIT:
            raise ValueError("capacity and max_holes must be <= 2**62")
        self.capacity = capacity
        self.max_holes = max_holes
        r = _new(capacity, max_holes)
        if r == _ffi.NULL:
            raise MemoryError("reassembly buffer")
        self._r = _gc(r, _free)

    def overlaps(self, offset: int, length: int) -> bool:
        try:
            return bool(_overlaps(self._r, offset, length))
        except OverflowError:
            # Beyond int64_t: exact answer from the ranges, rarely needed.
            end = offset + length
            return length > 0 and any(s < end and offset < e for s, e in self.ranges())

    def insert(self, offset: int, data: BytesLike) -> int:
        buf = data if type(data) is _bytes else _from_buffer(data)
        try:
            got = _insert(self._r, offset, buf, len(buf))
        except OverflowError:  # offset beyond int64_t: out of range either way
            return -1
        if got == _NO_MEMORY:
            raise MemoryError("reassembly buffer")
        return got

    def contiguous(self) -> int:
        return _contiguous(self._r)

    def pop(self, n: int) -> bytes:
        r = self._r
        if n < 0 or n > _contiguous(r):
            raise ValueError("pop beyond the contiguous prefix")
        if n == 0:
            return b""
        out = _unpack(_data(r), n)
        _pop(r, n)
        return out

    def ranges(self) -> list[tuple[int, int]]:
        r = self._r
        rg = _ranges(r)
        return [(rg[k].start, rg[k].end) for k in range(_count(r))]

    def buffered(self) -> int:
        return _buffered(self._r)

    def clear(self) -> None:
        _clear(self._r)


# Most header bytes one frame can have: Ethernet 14, IPv4 20, TCP 60.
_MAX_HEADERS = 94


def gso_segment(frame: BytesLike, mss: int) -> list[bytes]:
    """Software GSO (stack.native_py.gso_segment says what it does): one C
    call cuts the frame, copying and adjusting the headers and checksums."""
    if mss <= 0:
        raise ValueError("mss must be positive")
    data = frame if type(frame) is _bytes else _bytes(frame)
    n = len(data)
    most = n // mss + 1
    cap = n + most * _MAX_HEADERS
    out = bytearray(cap)
    lens = _ffi.new("uint32_t[]", most)
    count = _gso(data, n, mss, _from_buffer(out), cap, lens, most)
    if count <= 0:  # (-1 cannot happen: ``out`` and ``lens`` are made big enough)
        return [data]
    return _split(out, lens, count)


def _split(buf: bytearray, lens: Any, count: int) -> list[bytes]:
    """The ``count`` frames lying one after another in ``buf``, frame i ``lens[i]`` bytes."""
    frames = []
    at = 0
    for i in range(count):
        k = lens[i]
        frames.append(_bytes(buf[at:at + k]))
        at += k
    return frames


class FrameReader:
    """A batch of frames from a non-blocking fd in one C call
    (stack.native_py.FrameReader says what it does); the buffer is the
    reader's own, so one reader serves one thread at a time."""

    __slots__ = ("frame_max", "_buf", "_cbuf", "_lens", "_most")

    def __init__(self, frame_max: int, most: int = 64, room: int | None = None) -> None:
        if frame_max <= 0 or most <= 0:
            raise ValueError("frame_max and most must be positive")
        if room is not None and room < frame_max:
            raise ValueError("room must hold one frame of frame_max bytes")
        self.frame_max = frame_max
        self._most = most
        self._buf = bytearray(frame_max * most if room is None else room)
        self._cbuf = _from_buffer(self._buf)
        self._lens = _ffi.new("uint32_t[]", most)

    def read(self, fd: int, limit: int) -> list[bytes]:
        limit = min(limit, self._most)
        if limit <= 0:
            return []
        count = _read_batch(fd, self._cbuf, len(self._buf), self.frame_max, self._lens, limit)
        if count <= 0:
            if count < 0:
                raise OSError(-count, os.strerror(-count))
            return []
        return _split(self._buf, self._lens, count)


class GsoWriter:
    """Software GSO at the device: one C call cuts a TCP super-frame and
    writes the frames (stack.native_py.GsoWriter says what it does); the
    scratch buffer is the writer's own, one writer at a time."""

    __slots__ = ("mtu", "_scratch", "_cscratch", "_lens", "_dropped", "_most")

    def __init__(self, mtu: int) -> None:
        if mtu < 88:
            raise ValueError("mtu must be at least 88 (8 bytes of data after 80 of headers)")
        self.mtu = mtu
        # A 64 KB segment (the largest IPv4 packet) in frames of 8 bytes at the least.
        self._most = 65536 // 8 + 1
        self._scratch = bytearray(65536 + self._most * _MAX_HEADERS)
        self._cscratch = _from_buffer(self._scratch)
        self._lens = _ffi.new("uint32_t[]", self._most)
        self._dropped = _ffi.new("uint32_t *")

    def write(self, fd: int, frame: BytesLike) -> tuple[int, int]:
        data = frame if type(frame) is _bytes else _from_buffer(frame)
        n = len(data)
        if n > 65535 + 14:
            return 0, 0
        got = _gso_write(fd, data, n, self.mtu, self._cscratch, len(self._scratch), self._lens,
                         self._most, self._dropped)
        if got < 0:
            raise OSError(-got, os.strerror(-got))
        if got == 0 and not self._dropped[0]:
            return 0, 0
        return got, self._dropped[0]


def gro_coalesce(frames: list[bytes]) -> list[bytes]:
    """Software GRO (stack.native_py.gro_coalesce says what merges): one C
    call over the whole batch; frames that do not merge come back as the
    same objects."""
    n = len(frames)
    if n < 2:
        return list(frames)
    joined = _bytes().join(frames)
    lens = _ffi.new("uint32_t[]", [len(f) for f in frames])
    cap = len(joined)
    out = bytearray(cap)
    which = _ffi.new("int32_t[]", n)
    most = n // 2 + 1
    out_lens = _ffi.new("uint32_t[]", most)
    count = _gro(joined, lens, n, _from_buffer(out), cap, which, out_lens, most)
    if count < 0:  # (cannot happen: merged frames are shorter than their parts)
        return list(frames)
    result = []
    starts = [0] * most
    at = 0
    for k in range(most):
        starts[k] = at
        at += out_lens[k]
    for k in range(count):
        w = which[k]
        if w >= 0:
            result.append(frames[w])
        else:
            m = -1 - w
            result.append(_bytes(out[starts[m]:starts[m] + out_lens[m]]))
    return result
