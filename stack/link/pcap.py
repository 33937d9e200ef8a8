"""Capture wrapper: writes every frame to a classic pcap file.

The file is the libpcap format tcpdump, tshark and Wireshark read::

    global header (24 bytes)
      magic 0xa1b2c3d4 | version 2.4 | thiszone 0 | sigfigs 0
      snaplen 262144   | linktype 1 (LINKTYPE_ETHERNET)
    then per frame: ts_sec | ts_usec | incl_len | orig_len (4 x u32), frame

Fields are written little-endian; readers detect the byte order from the
magic. Timestamps have microsecond resolution. Frames received from the inner
link and frames sent to it go to the same file in the order they pass; the
classic format has no direction flag.

The wrapper keeps every capability of the link it wraps. With offload, TCP
super-frames are captured whole as they pass (up to 64 KB, IP total length
and checksums complete: the capture sits above the device that cuts them),
which tcpdump and tshark read like any frame. Over software GSO
(``inner.gso``) the capture holds the frames the link cuts them into, as
they go on the wire. Writes to the file take the
wrapper's own lock, so ``defer_writes`` stays the inner link's.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import IO, Callable

from stack.link.base import Link, LinkWrapper, gso_cut

PCAP_MAGIC = 0xA1B2C3D4
PCAP_VERSION = (2, 4)
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def pcap_header(snaplen: int = SNAPLEN, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    return _GLOBAL.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, linktype)


def pcap_record(timestamp: float, frame: bytes, snaplen: int = SNAPLEN) -> bytes:
    """The record header for ``frame`` captured at ``timestamp`` (seconds)."""
    sec, usec = divmod(round(timestamp * 1_000_000), 1_000_000)
    return _RECORD.pack(sec & 0xFFFFFFFF, usec, min(len(frame), snaplen), len(frame))


class PcapLink(LinkWrapper):
    """Wrap ``inner``; capture both directions to ``path_or_file``.

    ``path_or_file`` is a path (opened, truncated and closed by this link) or
    a binary file object (flushed on close, left open for its owner).
    ``clock`` gives the timestamps (wall-clock seconds by default).
    """

    def __init__(
        self,
        inner: Link,
        path_or_file: str | bytes | IO[bytes],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(inner)
        self.clock = clock
        f: IO[bytes]
        if hasattr(path_or_file, "write"):
            f = path_or_file  # type: ignore[assignment]
            self._owns_file = False
        else:
            f = open(path_or_file, "wb")  # closed in close()
            self._owns_file = True
        f.write(pcap_header())
        self._file: IO[bytes] | None = f
        self._lock = threading.Lock()
        self.frames = 0

    def _write(self, frames: list[bytes] | tuple[bytes, ...]) -> None:
        with self._lock:   # senders may be other threads (defer_writes): keep time order
            if self._file is None:
                return
            # One timestamp and one write for the whole batch (a cut
            # super-frame is 45 frames): the records are joined first.
            sec, usec = divmod(round(self.clock() * 1_000_000), 1_000_000)
            sec &= 0xFFFFFFFF
            pack = _RECORD.pack
            parts: list[bytes] = []
            for frame in frames:
                n = len(frame)
                if n <= SNAPLEN:
                    parts += (pack(sec, usec, n, n), frame)
                else:
                    parts += (pack(sec, usec, SNAPLEN, n), frame[:SNAPLEN])
            self._file.write(b"".join(parts))
            self.frames += len(frames)

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        frames = self.inner.recv_batch(limit)
        if frames:
            self._write(frames)
        return frames

    def send(self, frame: bytes) -> None:
        if self.inner.gso and len(frame) > self.inner.mtu + 14:
            self._write(gso_cut(frame, self.inner.mtu))  # the frames on the wire
        else:
            self._write((frame,))
        self.inner.send(frame)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            f, self._file = self._file, None
        try:
            self.inner.close()
        finally:
            if f is not None:
                f.flush()
                if self._owns_file:
                    f.close()
