"""Pure-Python twins of the C hot paths in ``native/``.

Same names, signatures and results as the C module; property tests prove the
two agree. The stack falls back to these when the C module is not built.
"""

from __future__ import annotations

import sys

_BIG = sys.byteorder == "big"

# Largest capacity or max_holes accepted (the C twin keeps offsets in int64_t).
LIMIT = 1 << 62

# What the checksum and reassembly functions read: any of these (the C twin
# takes the same through cffi's from_buffer).
BytesLike = bytes | bytearray | memoryview


def csum_partial(data: BytesLike, initial: int = 0) -> int:
    """16-bit ones-complement sum of big-endian words of ``data`` plus ``initial``.

    An odd trailing byte is padded with a zero byte. The result is folded to
    16 bits but not complemented. ``initial`` is an int in ``[0, 2**32)``
    (OverflowError otherwise, as from the C twin).
    """
    if not 0 <= initial <= 0xFFFFFFFF:
        raise OverflowError("initial must be in [0, 2**32)")
    mv = memoryview(data).cast("B")
    n = len(mv)
    total = initial
    if n & 1:
        total += mv[n - 1] << 8
        n -= 1
    if n:
        # One big integer: sum of 16-bit words == value folded modulo 0xffff,
        # computed here by adding the words directly.
        words = mv[:n].cast("H")
        s = sum(words)
        if not _BIG:
            # Words were read little-endian; swapping bytes of the ones-complement
            # sum is the same as summing the swapped words (RFC 1071, 2.B).
            # Fold to 16 bits first: two folds are not enough past ~256 KB.
            while s >> 16:
                s = (s & 0xFFFF) + (s >> 16)
            s = ((s & 0xFF) << 8) | (s >> 8)
        total += s
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: BytesLike, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data``, starting from ``initial``."""
    return (~csum_partial(data, initial)) & 0xFFFF


class Reassembly:
    """A byte-range buffer: insert data at offsets, read the contiguous prefix.

    Offsets live in ``[0, capacity)``. At most ``max_holes`` disjoint ranges
    are stored at once. Bytes already stored are kept (first copy wins).
    """

    __slots__ = ("capacity", "max_holes", "_buf", "_ranges")

    def __init__(self, capacity: int, max_holes: int) -> None:
        if capacity < 0 or max_holes < 1:
            raise ValueError("capacity must be >= 0 and max_holes >= 1")
        if capacity > LIMIT or max_holes > LIMIT:
            raise ValueError("capacity and max_holes must be <= 2**62")
        self.capacity = capacity
        self.max_holes = max_holes
        self._buf = bytearray()
        self._ranges: list[list[int]] = []  # sorted, disjoint, non-adjacent [start, end)

    def overlaps(self, offset: int, length: int) -> bool:
        if length <= 0:  # an empty range touches nothing
            return False
        end = offset + length
        for s, e in self._ranges:
            if s < end and offset < e:
                return True
        return False

    def insert(self, offset: int, data: BytesLike) -> int:
        mv = memoryview(data).cast("B")
        length = len(mv)  # bytes, whatever the item size of data
        end = offset + length
        if offset < 0 or end > self.capacity:
            return -1
        if length == 0:
            return 0
        ranges = self._ranges
        # Ranges that touch or overlap [offset, end) merge into one.
        i = 0
        while i < len(ranges) and ranges[i][1] < offset:
            i += 1
        j = i
        while j < len(ranges) and ranges[j][0] <= end:
            j += 1
        if j == i and len(ranges) >= self.max_holes:
            return -2
        if len(self._buf) < end:
            self._buf.extend(bytes(end - len(self._buf)))
        new = 0
        cur = offset
        for s, e in ranges[i:j]:
            if cur < s:
                self._buf[cur:s] = mv[cur - offset : s - offset]
                new += s - cur
            cur = max(cur, e)
        if cur < end:
            self._buf[cur:end] = mv[cur - offset :]
            new += end - cur
        merged_start = min(offset, ranges[i][0]) if j > i else offset
        merged_end = max(end, ranges[j - 1][1]) if j > i else end
        ranges[i:j] = [[merged_start, merged_end]]
        return new

    def contiguous(self) -> int:
        r = self._ranges
        return r[0][1] if r and r[0][0] == 0 else 0

    def pop(self, n: int) -> bytes:
        if n < 0 or n > self.contiguous():
            raise ValueError("pop beyond the contiguous prefix")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        shifted: list[list[int]] = []
        for s, e in self._ranges:
            s, e = s - n, e - n
            if e > 0:
                shifted.append([max(s, 0), e])
        self._ranges = shifted
        return out

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, e) for s, e in self._ranges]

    def buffered(self) -> int:
        return sum(e - s for s, e in self._ranges)

    def clear(self) -> None:
        self._buf = bytearray()
        self._ranges = []


def gso_segment(frame: BytesLike, mss: int) -> list[bytes]:
    """Software GSO: cut one Ethernet + IPv4 + TCP frame whose payload is
    longer than ``mss`` into frames of ``mss`` payload bytes (the last one
    shorter), as a NIC's TSO or Linux's ``tcp_gso_segment`` would.

    Every frame gets the headers copied and adjusted: the IP total length,
    identification (one more each frame) and header checksum; the TCP
    sequence number (``mss`` more each frame) and checksum. FIN and PSH stay
    on the last frame only and CWR on the first only; URG stays on every
    frame its urgent pointer still points past the start of, with the
    pointer moved to it. A frame that needs no cutting (not IPv4 TCP, IP
    options or fragments, or a payload of ``mss`` or less) comes back as it
    is. The C twin (issue 15) must give the same bytes.
    """
    data = bytes(frame)
    if mss <= 0:
        raise ValueError("mss must be positive")
    if len(data) < 54 or data[12:14] != b"\x08\x00" or data[14] != 0x45 or data[23] != 6:
        return [data]
    total = int.from_bytes(data[16:18], "big")
    frag = int.from_bytes(data[20:22], "big")
    tcp_at = 34
    thl = (data[tcp_at + 12] >> 4) * 4
    end = 14 + total
    if frag & 0x3FFF or thl < 20 or end > len(data) or tcp_at + thl > end:
        return [data]
    payload = data[tcp_at + thl:end]
    if len(payload) <= mss:
        return [data]
    eth = data[:14]
    ip = bytearray(data[14:34])
    tcp0 = bytearray(data[tcp_at:tcp_at + thl])
    ident = int.from_bytes(ip[4:6], "big")
    seq = int.from_bytes(tcp0[4:8], "big")
    flags = tcp0[13]
    urg = int.from_bytes(tcp0[18:20], "big")
    pseudo = (int.from_bytes(ip[12:14], "big") + int.from_bytes(ip[14:16], "big")
              + int.from_bytes(ip[16:18], "big") + int.from_bytes(ip[18:20], "big") + 6)
    out = []
    n = len(payload)
    for i, off in enumerate(range(0, n, mss)):
        piece = payload[off:off + mss]
        last = off + mss >= n
        ip[2:4] = (20 + thl + len(piece)).to_bytes(2, "big")
        ip[4:6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
        ip[10:12] = b"\x00\x00"
        ip[10:12] = checksum(ip).to_bytes(2, "big")
        tcp = bytearray(tcp0)
        tcp[4:8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if not last:
            f &= ~(0x01 | 0x08)            # FIN, PSH: the last frame's
        if i:
            f &= ~0x80                     # CWR: the first frame's
        up = 0
        if flags & 0x20:
            up = urg - off
            if up <= 0:
                f &= ~0x20
                up = 0
            elif up > 0xFFFF:
                up = 0xFFFF
        tcp[13] = f
        tcp[18:20] = up.to_bytes(2, "big")
        tcp[16:18] = b"\x00\x00"
        tcp[16:18] = checksum(piece, csum_partial(tcp, pseudo + thl + len(piece))
                              ).to_bytes(2, "big")
        out.append(eth + bytes(ip) + bytes(tcp) + piece)
    return out
