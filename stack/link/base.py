"""The link interface every device and wrapper implements.

A link moves whole Ethernet II frames (no preamble, no FCS). The stack owns
one link; capture (:mod:`stack.link.pcap`) and fault injection
(:mod:`stack.link.impair`) wrap any link and look exactly like one, so the
stack cannot tell a bare TAP from a TAP seen through three wrappers.

Readiness works with ``select``/``selectors``: ``fileno()`` is readable when
``recv_batch`` may return frames. A link that holds frames back (a delay)
says when it next needs attention with ``next_deadline()``; the runtime then
calls ``poll(now)`` at that time.
"""

from __future__ import annotations

import os

from stack.native import gso_segment


# The largest IPv4 packet, and so the largest TCP segment (header and data)
# after a 20-byte IP header, that a link with TCP segmentation offload takes.
IPV4_MAX = 65535
TSO_SEGMENT_MAX = IPV4_MAX - 20


class Link:
    """Base class: one Ethernet port.

    Subclasses implement :meth:`fileno`, :meth:`recv_batch`, :meth:`send`
    and :meth:`close`. What a link can do is declared, never discovered:

    * ``mtu``: the IP MTU (the largest IP packet a frame carries); frames are
      at most ``mtu + 14`` bytes on the wire, except TCP super-frames below.
    * ``offload``: TCP segmentation and checksum offload. The link takes
      IPv4/TCP frames larger than the MTU (a TCP segment of at most
      ``segment_max`` bytes) and delivers them as MTU-sized segments; it may
      fill in the TCP checksum of such a frame itself (a TAP does), so bytes
      changed above the device after the stack checksummed them can go
      unnoticed. It may also hand up super-frames, every checksum complete.
    * ``gso``: software GSO. Without offload, the link still takes IPv4/TCP
      frames larger than the MTU and cuts them into MTU-sized frames itself
      (headers and checksums set) before they leave; what leaves is exactly
      what the stack would have sent one segment at a time.
    * ``segment_max``: the largest TCP segment (header and data) the link
      takes in one frame (with offload or gso); None: what fits the MTU
      (one MSS).
    * ``defer_writes``: :meth:`send` may run outside the stack lock, from any
      thread, one writer at a time (the runtime then writes after releasing
      its lock).
    * ``inner``: the link this one wraps; None for a device.

    :meth:`counters` gives the link's own counters; :meth:`chain` lists the
    link and the links under it, so the runtime reads all of them.
    """

    mtu: int = 1500
    offload: bool = False
    gso: bool = False
    segment_max: int | None = None
    defer_writes: bool = False
    inner: Link | None = None

    def fileno(self) -> int:
        raise NotImplementedError

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` received frames; ``[]`` when none. Never blocks."""
        raise NotImplementedError

    def send(self, frame: bytes) -> None:
        """Queue one frame. A full queue drops it (and counts), never raises."""
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must next run (monotonic seconds), or None."""
        return None

    def poll(self, now: float) -> None:
        """Release whatever is due at ``now``. No-op for plain devices."""

    def close(self) -> None:
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """This link's own counters by name (not those of the link it wraps)."""
        return {}

    def chain(self) -> list[Link]:
        """This link, then the link it wraps, and so on down to the device."""
        out: list[Link] = []
        link: Link | None = self
        while link is not None:
            out.append(link)
            link = link.inner
        return out

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def queue_full(link: Link, dropped: int) -> dict[str, int]:
    """The counter of frames a device dropped because its queue was full."""
    return {f"drop.{type(link).__name__.lower()}_queue_full": dropped} if dropped else {}


class LinkWrapper(Link):
    """A link that forwards everything to ``inner``; wrappers override parts.

    The capabilities (``mtu``, ``offload``, ``gso``, ``segment_max``,
    ``defer_writes``) are the inner link's. A wrapper that cannot keep one of
    them (one that is not safe outside the stack lock, say) overrides it.
    """

    inner: Link

    def __init__(self, inner: Link) -> None:
        self.inner = inner

    @property
    def mtu(self) -> int:  # type: ignore[override]
        return self.inner.mtu

    @property
    def offload(self) -> bool:  # type: ignore[override]
        return self.inner.offload

    @property
    def gso(self) -> bool:  # type: ignore[override]
        return self.inner.gso

    @property
    def segment_max(self) -> int | None:  # type: ignore[override]
        return self.inner.segment_max

    @property
    def defer_writes(self) -> bool:  # type: ignore[override]
        return self.inner.defer_writes

    def fileno(self) -> int:
        return self.inner.fileno()

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        return self.inner.recv_batch(limit)

    def send(self, frame: bytes) -> None:
        self.inner.send(frame)

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    def poll(self, now: float) -> None:
        self.inner.poll(now)

    def close(self) -> None:
        self.inner.close()


def gso_cut(frame: bytes, mtu: int) -> list[bytes]:
    """The frames software GSO cuts a TCP super-frame into for a link of
    ``mtu`` (each IP packet at most ``mtu``); ``[frame]`` for anything else."""
    if len(frame) < 54:
        return [frame]
    thl = (frame[46] >> 4) * 4
    return gso_segment(frame, mtu - 20 - thl) if mtu > 20 + thl else [frame]


def earliest(*deadlines: float | None) -> float | None:
    """The smallest deadline that is not None, or None."""
    found = [d for d in deadlines if d is not None]
    return min(found) if found else None


class ReadySignal:
    """A file descriptor that is readable while a flag is set.

    Backed by a non-blocking eventfd (a pipe where eventfd is missing). The
    owner keeps the flag equal to "frames are queued" by calling
    :meth:`set` when a queue becomes non-empty and :meth:`clear` when it
    becomes empty, both under the owner's lock; then the fd is readable
    exactly when frames are queued.
    """

    def __init__(self) -> None:
        self._is_set = False
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._rfd = self._wfd = fd
        else:  # pragma: no cover - non-Linux fallback
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)

    def fileno(self) -> int:
        if self._rfd < 0:
            raise ValueError("I/O operation on closed link")
        return self._rfd

    @property
    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if not self._is_set and self._wfd >= 0:
            self._is_set = True
            # eventfd takes an 8-byte counter increment; a pipe takes anything.
            os.write(self._wfd, (1).to_bytes(8, "little"))

    def clear(self) -> None:
        if self._is_set and self._rfd >= 0:
            self._is_set = False
            try:
                os.read(self._rfd, 8)
            except BlockingIOError:
                pass

    def close(self) -> None:
        fds = {self._rfd, self._wfd} - {-1}
        self._rfd = self._wfd = -1
        self._is_set = False
        for fd in fds:
            os.close(fd)
