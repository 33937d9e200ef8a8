"""The impairment of one direction of a path, with no IO: frames and ``now``
(seconds, any monotonic clock) come in, frames due for sending and the next
deadline go out. The relay (``relay.py``) runs two of these, one per direction,
with the same profile and seeds derived from the one seed.

The pipeline a frame goes through, in order:

1. **loss**: dropped with probability ``loss`` (counted ``lost``);
2. **queue**: waits for the rate limiter; a frame arriving to a full queue
   (``queue`` frames) is dropped at the tail (``queue_drops``). Unlike netem's
   ``limit``, frames already on their way through the delay are not in it: this
   is the queue of a bottleneck router, in front of a link of that delay;
3. **rate**: a token bucket of ``rate`` Mbit/s and ``burst`` bytes; a frame
   leaves the queue at the exact (virtual) time the bucket holds its length,
   so a late wake-up of the relay does not slow the link down;
4. **delay**: ``delay`` ms plus a jitter drawn per frame, uniform in
   ``±jitter`` ms or normal with standard deviation ``jitter`` ms, never below
   zero in total. Frames with different delays may overtake each other, as on
   netem;
5. **reordering**: with probability ``reorder`` a frame is held back until the
   next frame of this direction has been sent, then sent right after it, so it
   arrives overtaken by exactly one frame (or ``reorder_hold`` ms after it was
   due, if no other frame comes).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import asdict, dataclass, field

DISTRIBUTIONS = ("uniform", "normal")
# Frames in flight in the delay line, at most (memory stays bounded whatever
# arrives): 10 ms at 1 Gbit/s of small frames is about 15,000.
LINE_LIMIT = 100_000


@dataclass(frozen=True)
class Profile:
    """One path's settings; times in ms, rate in Mbit/s (0: unlimited)."""

    delay: float = 0.0
    jitter: float = 0.0
    distribution: str = "uniform"
    loss: float = 0.0
    reorder: float = 0.0
    reorder_hold: float = 10.0
    rate: float = 0.0
    queue: int = 1000
    burst: int = 3028                       # bytes: two full Ethernet frames
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "rate", "reorder_hold"):
            value = getattr(self, name)
            if not 0 <= value < 1e6:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value:g}")
        for name in ("loss", "reorder"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"--{name} is a probability in [0, 1], got {value:g}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"--distribution must be uniform or normal, got {self.distribution!r}")
        if self.queue < 1:
            raise ValueError(f"--queue must be at least 1 packet, got {self.queue}")
        if self.burst < 1514:
            raise ValueError(f"--burst must hold one frame (>= 1514 bytes), got {self.burst}")


def pure_ack(frame: bytes) -> bool:
    """An Ethernet frame holding an IPv4 TCP segment with no payload and
    none of SYN, FIN, RST: a pure ACK (window updates and SACKs included)."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return False
    ihl = (frame[14] & 0x0F) * 4
    tcp = 14 + ihl
    if len(frame) < tcp + 20 or (frame[20] & 0x3F) or frame[21]:   # (a fragment: not TCP's)
        return False
    total = int.from_bytes(frame[16:18], "big")
    doff = (frame[tcp + 12] >> 4) * 4
    return total == ihl + doff and not frame[tcp + 13] & 0x07


@dataclass
class Counters:
    frames_in: int = 0
    pure_acks_in: int = 0       # of them TCP pure ACKs (``pure_ack``), whatever became of them
    forwarded: int = 0
    lost: int = 0
    queue_drops: int = 0
    line_drops: int = 0         # the delay line held LINE_LIMIT frames already
    reordered: int = 0          # frames held back on purpose
    out_of_order: int = 0       # frames sent after a frame that arrived later
    bytes_forwarded: int = 0
    max_queue: int = 0
    delay_sum: float = 0.0      # seconds, arrival to send, over forwarded frames
    max_delay: float = 0.0

    def summary(self) -> dict:
        out = asdict(self)
        del out["delay_sum"], out["max_delay"]
        out["mean_delay_ms"] = round(1e3 * self.delay_sum / self.forwarded, 3) if self.forwarded else 0.0
        out["max_delay_ms"] = round(1e3 * self.max_delay, 3)
        return out


@dataclass(order=True)
class _Pending:
    release: float
    seq: int
    arrival: float = field(compare=False)
    frame: bytes = field(compare=False)
    held: bool = field(compare=False, default=False)
    due: float = field(compare=False, default=0.0)


class Direction:
    """One direction's impairment: ``arrive`` frames, send what ``due`` returns,
    wake up again at ``next_deadline``."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.counters = Counters()
        self.queue: deque[tuple[int, float, bytes]] = deque()
        self.bytes_per_s = profile.rate * 1e6 / 8
        self.tokens = float(profile.burst)
        self.tokens_at = 0.0
        self.line: list[_Pending] = []       # the delay line, a heap by release time
        self.held: list[_Pending] = []       # held back for reordering, in arrival order
        self.seq = 0
        self.sent_seq = -1
        self.head_departs: float | None = None

    # -- input -----------------------------------------------------------------------

    def arrive(self, frame: bytes, now: float) -> None:
        c = self.counters
        c.frames_in += 1
        if pure_ack(frame):
            c.pure_acks_in += 1
        seq, self.seq = self.seq, self.seq + 1
        if self.profile.loss and self.rng.random() < self.profile.loss:
            c.lost += 1
            return
        self._drain(now)
        if len(self.queue) >= self.profile.queue:
            c.queue_drops += 1
            return
        self.queue.append((seq, now, frame))
        c.max_queue = max(c.max_queue, len(self.queue))
        self._drain(now)

    # -- the rate limiter --------------------------------------------------------------

    def _departure(self, arrival: float, size: int) -> float:
        """When the head frame (``size`` bytes) leaves, by the bucket's virtual time."""
        if not self.bytes_per_s:
            return arrival
        start = max(arrival, self.tokens_at)
        tokens = min(self.profile.burst, self.tokens + (start - self.tokens_at) * self.bytes_per_s)
        if tokens >= size:
            return start
        return start + (size - tokens) / self.bytes_per_s

    def _drain(self, now: float) -> None:
        """Move every frame whose departure time has come into the delay line."""
        self.head_departs = None
        while self.queue:
            seq, arrival, frame = self.queue[0]
            departs = self._departure(arrival, len(frame))
            if departs > now:
                self.head_departs = departs
                return
            self.queue.popleft()
            if self.bytes_per_s:
                self.tokens = min(self.profile.burst, self.tokens
                                  + (departs - self.tokens_at) * self.bytes_per_s) - len(frame)
                self.tokens_at = departs
            self._schedule(seq, arrival, departs, frame)

    def _schedule(self, seq: int, arrival: float, departs: float, frame: bytes) -> None:
        p = self.profile
        if len(self.line) >= LINE_LIMIT:
            self.counters.line_drops += 1
            return
        delay = p.delay
        if p.jitter:
            if p.distribution == "uniform":
                delay += self.rng.uniform(-p.jitter, p.jitter)
            else:
                delay += self.rng.gauss(0.0, p.jitter)
        release = departs + max(0.0, delay) / 1e3
        item = _Pending(release, seq, arrival, frame)
        if p.reorder and self.rng.random() < p.reorder:
            # Held back: it goes right after the next frame sent once its own time
            # has come, or at the end of its hold.
            self.counters.reordered += 1
            item.held, item.due = True, release
            item.release = release + p.reorder_hold / 1e3
            self.held.append(item)
        heapq.heappush(self.line, item)

    # -- output ------------------------------------------------------------------------

    def due(self, now: float) -> list[bytes]:
        """The frames to send now, in order."""
        self._drain(now)
        out: list[bytes] = []
        while self.line and self.line[0].release <= now:
            item = heapq.heappop(self.line)
            if item.held:
                if any(h is item for h in self.held):    # still waiting: its hold ran out
                    self.held = [h for h in self.held if h is not item]
                    self._send(item, now, out)
                continue
            self._send(item, now, out)
        return out

    def _send(self, item: _Pending, now: float, out: list[bytes]) -> None:
        c = self.counters
        out.append(item.frame)
        c.forwarded += 1
        c.bytes_forwarded += len(item.frame)
        waited = now - item.arrival
        c.delay_sum += waited
        c.max_delay = max(c.max_delay, waited)
        if item.seq < self.sent_seq:
            c.out_of_order += 1
        self.sent_seq = max(self.sent_seq, item.seq)
        if not item.held:
            # The frames held back before this one now go, overtaken by it.
            overtaken = [h for h in self.held if h.seq < item.seq and h.due <= now]
            if overtaken:
                self.held = [h for h in self.held if not (h.seq < item.seq and h.due <= now)]
                for h in overtaken:
                    self._send(h, now, out)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.head_departs,
                             self.line[0].release if self.line else None) if t is not None]
        return min(times) if times else None
