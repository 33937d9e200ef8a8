"""Pure-Python twins of the C hot paths in ``native/``.

Same names, signatures and results as the C module; property tests prove the
two agree. The stack falls back to these when the C module is not built.
"""

from __future__ import annotations

import errno
import os
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


# The errors that lose one frame without anything being broken (a full
# queue, no buffers, the interface down): dropped and counted, never raised
# (as the C twin, native/tapio.c).
DROPPED_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM, errno.EIO, errno.ENETDOWN})


class FrameReader:
    """Reads a batch of frames from a non-blocking fd in one call (the C
    twin reads them with one trip into C): ``read(fd, limit)`` returns up to
    ``limit`` frames (``most`` at the most) of at most ``frame_max`` bytes
    each, ``[]`` when none is waiting. ``room`` is the C twin's buffer (all
    frames of one batch together; default ``frame_max * most``): a batch
    also ends when less than ``frame_max`` of it is left. An error on the
    first read raises OSError; one after frames were read ends the batch
    (the next call sees it)."""

    __slots__ = ("frame_max", "most", "room")

    def __init__(self, frame_max: int, most: int = 64, room: int | None = None) -> None:
        if frame_max <= 0 or most <= 0:
            raise ValueError("frame_max and most must be positive")
        if room is not None and room < frame_max:
            raise ValueError("room must hold one frame of frame_max bytes")
        self.frame_max = frame_max
        self.most = most
        self.room = frame_max * most if room is None else room

    def read(self, fd: int, limit: int) -> list[bytes]:
        limit = min(limit, self.most)
        frames: list[bytes] = []
        read = os.read
        frame_max = self.frame_max
        left = self.room
        while len(frames) < limit and left >= frame_max:
            try:
                frame = read(fd, frame_max)
            except InterruptedError:
                continue
            except OSError as e:
                if isinstance(e, BlockingIOError) or frames:
                    break
                raise
            if not frame:
                break
            frames.append(frame)
            left -= len(frame)
        return frames


class GsoWriter:
    """Software GSO at the device (the C twin cuts and writes in one call):
    ``write(fd, frame)`` cuts a TCP super-frame into frames whose IP packets
    fit ``mtu`` (:func:`gso_segment`) and writes each to ``fd``. Returns
    ``(written, dropped)``: frames written, frames the device queue refused
    (EAGAIN, ENOBUFS: lost, as a full queue loses them). ``(0, 0)`` when the
    frame is not one to cut (the caller writes it whole); other write errors
    raise OSError."""

    __slots__ = ("mtu",)

    def __init__(self, mtu: int) -> None:
        if mtu < 88:
            raise ValueError("mtu must be at least 88 (8 bytes of data after 80 of headers)")
        self.mtu = mtu

    def write(self, fd: int, frame: BytesLike) -> tuple[int, int]:
        if len(frame) < 54:
            return 0, 0
        thl = (frame[46] >> 4) * 4
        if self.mtu <= 20 + thl:
            return 0, 0
        frames = gso_segment(frame, self.mtu - 20 - thl)
        if len(frames) == 1:
            return 0, 0
        written = dropped = 0
        for piece in frames:
            while True:
                try:
                    os.write(fd, piece)
                    written += 1
                except InterruptedError:
                    continue
                except OSError as e:
                    if e.errno not in DROPPED_ERRNOS:
                        raise
                    dropped += 1
                break
        return written, dropped


def _gro_parse(f: bytes) -> tuple[int, int, int, bool] | None:
    """(TCP header length, payload length, sequence number, timestamps-only
    options) of a frame that may merge, or None (gro_coalesce's rules)."""
    if len(f) < 54 or f[12:14] != b"\x08\x00" or f[14] != 0x45 or f[23] != 6:
        return None
    total = int.from_bytes(f[16:18], "big")
    if int.from_bytes(f[20:22], "big") & 0xBFFF or total < 40 or 14 + total > len(f):
        return None
    thl = (f[46] >> 4) * 4
    if thl < 20 or 20 + thl >= total or f[46] & 0x0F:
        return None
    if f[47] not in (0x10, 0x18) or f[52:54] != b"\x00\x00":
        return None
    if checksum(f[14:34]) != 0:
        return None
    pseudo = (int.from_bytes(f[26:28], "big") + int.from_bytes(f[28:30], "big")
              + int.from_bytes(f[30:32], "big") + int.from_bytes(f[32:34], "big") + 6
              + total - 20)
    if checksum(f[34:14 + total], pseudo) != 0:
        return None
    return (thl, total - 20 - thl, int.from_bytes(f[38:42], "big"),
            thl == 32 and f[54:58] == b"\x01\x01\x08\x0a")


def _gro_follows(head: tuple[int, int, int, bool], a: bytes, pa: tuple[int, int, int, bool],
                 b: bytes, pb: tuple[int, int, int, bool], total: int) -> bool:
    """Whether ``b`` may follow ``a``, the last of a group that began with
    ``head`` and has ``total`` bytes of IP packet so far."""
    if pb[0] != pa[0] or pa[1] != head[1] or pb[1] > head[1] or total + pb[1] > 65535:
        return False
    if a[47] & 0x08:
        return False                                    # PSH ends a group
    if a[:14] != b[:14] or a[15] != b[15] or a[20:23] != b[20:23] or a[26:34] != b[26:34]:
        return False
    if a[34:38] != b[34:38] or a[42:46] != b[42:46] or a[48:50] != b[48:50]:
        return False
    if pb[2] != (pa[2] + pa[1]) & 0xFFFFFFFF:
        return False
    if pa[3] and pb[3]:
        for at in (58, 62):                             # TSval, TSecr: never back
            step = (int.from_bytes(b[at:at + 4], "big") - int.from_bytes(a[at:at + 4], "big"))
            if step & 0xFFFFFFFF >= 0x80000000:
                return False
        return True
    return a[54:34 + pa[0]] == b[54:34 + pb[0]]


def gro_coalesce(frames: list[bytes]) -> list[bytes]:
    """Software GRO: merge consecutive in-order TCP segments of one flow.

    The rules (the C twin's, native/native.h): IPv4 without options or
    fragments, both checksums right, flags ACK or ACK+PSH (PSH on the last
    only), a payload, no urgent pointer; the same Ethernet header, TOS, DF,
    TTL, addresses, ports, acknowledgment, window and header length; each
    segment starting where the last one ended; every segment but the last as
    long as the first and the last no longer; the same options, or both
    exactly NOP, NOP, timestamps with neither value going back; at most
    65,535 bytes of IP packet. A merged frame keeps the first frame's
    headers with the IP total length and both checksums recomputed, and PSH
    when the last had it. Every other frame comes back as the same object,
    in order.
    """
    out: list[bytes] = []
    i = 0
    n = len(frames)
    while i < n:
        f = frames[i]
        head = _gro_parse(f)
        j = i
        if head is not None:
            total = 20 + head[0] + head[1]
            last, plast = f, head
            while j + 1 < n:
                g = frames[j + 1]
                pg = _gro_parse(g)
                if pg is None or not _gro_follows(head, last, plast, g, pg, total):
                    break
                total += pg[1]
                last, plast = g, pg
                j += 1
        if j == i:
            out.append(f)
        else:
            hdr = 34 + head[0]                          # type: ignore[index]
            merged = bytearray(f[:hdr])
            for g in frames[i:j + 1]:
                merged += g[hdr:14 + int.from_bytes(g[16:18], "big")]
            merged[16:18] = total.to_bytes(2, "big")
            merged[24:26] = b"\x00\x00"
            merged[24:26] = checksum(merged[14:34]).to_bytes(2, "big")
            merged[47] = f[47] | (frames[j][47] & 0x08)
            merged[50:52] = b"\x00\x00"
            pseudo = (int.from_bytes(f[26:28], "big") + int.from_bytes(f[28:30], "big")
                      + int.from_bytes(f[30:32], "big") + int.from_bytes(f[32:34], "big") + 6
                      + total - 20)
            merged[50:52] = checksum(memoryview(merged)[34:], pseudo).to_bytes(2, "big")
            out.append(bytes(merged))
        i = j + 1
    return out
