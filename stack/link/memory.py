"""In-memory links: a cable between two stacks, and a test probe.

``MemoryLink.pair()`` returns two ends of a virtual cable; a frame sent on one
end is received on the other. Each end has a bounded receive queue; a frame
that finds its peer's queue full is dropped and counted in the sender's
``dropped``. ``fileno()`` is an eventfd that is readable exactly while the
end's receive queue holds frames, so the ends work with ``select``.

``CaptureLink`` is a single end for unit tests of one stack: every frame the
stack sends lands in ``.sent``; ``inject(frame)`` queues a frame for the
stack to receive.

``offload=True`` makes either kind declare TCP segmentation offload, like a
veth pair with GSO: TCP frames of up to 64 KB go through whole, with their
checksums complete, and are never cut.
"""

from __future__ import annotations

import threading
from collections import deque

from stack.link.base import TSO_SEGMENT_MAX, Link, ReadySignal, queue_full

DEFAULT_QUEUE = 4096


class _Inbox:
    """A bounded frame queue with a readiness fd (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.frames: deque[bytes] = deque()
        self.signal = ReadySignal()
        self.lock = threading.Lock()
        self.closed = False

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False when it was dropped (full or closed)."""
        with self.lock:
            if self.closed or len(self.frames) >= self.capacity:
                return False
            self.frames.append(bytes(frame))
            self.signal.set()
            return True

    def take(self, limit: int) -> list[bytes]:
        with self.lock:
            frames = self.frames
            if len(frames) <= limit:
                out = list(frames)
                frames.clear()
            else:
                out = [frames.popleft() for _ in range(limit)]
            if not frames:
                self.signal.clear()
            return out

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.frames.clear()
                self.signal.close()


class _InboxLink(Link):
    """A link whose received frames wait in an in-memory inbox."""

    def __init__(self, mtu: int = 1500, queue: int = DEFAULT_QUEUE, offload: bool = False) -> None:
        self.mtu = mtu
        self.offload = offload
        self.segment_max = TSO_SEGMENT_MAX if offload else None
        self.dropped = 0
        self._inbox = _Inbox(queue)

    def _check_open(self) -> None:
        if self._inbox.closed:
            raise ValueError("I/O operation on closed link")

    def fileno(self) -> int:
        return self._inbox.signal.fileno()

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        self._check_open()
        return self._inbox.take(limit)

    def counters(self) -> dict[str, int]:
        return queue_full(self, self.dropped)

    def pending(self) -> int:
        """Frames waiting in this end's receive queue."""
        return len(self._inbox.frames)

    def close(self) -> None:
        self._inbox.close()


class MemoryLink(_InboxLink):
    """One end of an in-memory cable. Make ends with :meth:`pair`."""

    def __init__(self, mtu: int = 1500, queue: int = DEFAULT_QUEUE, offload: bool = False) -> None:
        super().__init__(mtu, queue, offload)
        self.peer: MemoryLink | None = None

    @classmethod
    def pair(cls, mtu: int = 1500, queue: int = DEFAULT_QUEUE,
             offload: bool = False) -> tuple[MemoryLink, MemoryLink]:
        a, b = cls(mtu, queue, offload), cls(mtu, queue, offload)
        a.peer, b.peer = b, a
        return a, b

    def send(self, frame: bytes) -> None:
        self._check_open()
        peer = self.peer
        # A closed or missing peer is an unplugged cable: the frame is lost.
        if peer is None or not peer._inbox.put(frame):
            self.dropped += 1


class CaptureLink(_InboxLink):
    """A link for single-stack tests: records sends, replays injected frames."""

    def __init__(self, mtu: int = 1500, queue: int = DEFAULT_QUEUE, offload: bool = False) -> None:
        super().__init__(mtu, queue, offload)
        self.sent: list[bytes] = []

    def inject(self, frame: bytes) -> None:
        """Queue ``frame`` to be returned by a later :meth:`recv_batch`."""
        if not self._inbox.put(frame):
            self.dropped += 1

    def take_sent(self) -> list[bytes]:
        """Return and forget the frames sent so far."""
        out, self.sent = self.sent, []
        return out

    def send(self, frame: bytes) -> None:
        self._check_open()
        self.sent.append(bytes(frame))
