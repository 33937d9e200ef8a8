"""The sender's SACK scoreboard (RFC 2018, RFC 6675).

It records which bytes above ``SND.UNA`` the receiver has reported holding,
as ``[lo, hi)`` offsets from ``SND.UNA`` (so no sequence arithmetic here): a
short sorted list of disjoint, non-touching ranges. The connection shifts it
when the cumulative ACK moves (:meth:`Scoreboard.advance`).

RFC 6675's routines work on the holes between the ranges, a handful at a
time, never byte by byte:

* ``IsLost(S)``: at least ``DupThresh`` SACKed ranges above ``S``, or more
  than ``(DupThresh - 1) * SMSS`` SACKed bytes above it. Every byte of one hole
  has the same ranges above it, so a hole is lost or not as a whole.
* ``SetPipe()``: every unSACKed byte below ``HighData`` counts once if not
  lost and once more if retransmitted (below ``HighRxt``).
* ``NextSeg()``: rules (1) and (3) are :meth:`Scoreboard.next_hole`; rule (2)
  (new data) and rule (4) (the rescue retransmission) are the sender's.

D-SACK blocks (RFC 2883) need no special case: a block at or below the
cumulative ACK is ignored, and one inside the SACKed space adds nothing.

The ranges are bounded (``max_ranges``): a peer that SACKs every other byte
would otherwise make every ACK cost time linear in the bytes in flight. A
block that would start a new range beyond the bound is ignored, which only
costs a retransmission the peer did not need.
"""

from __future__ import annotations


class Scoreboard:
    __slots__ = ("ranges", "sacked", "max_ranges")

    def __init__(self, max_ranges: int = 256) -> None:
        self.ranges: list[list[int]] = []  # [lo, hi) offsets from SND.UNA, sorted, disjoint
        self.sacked = 0                    # bytes in ``ranges``
        self.max_ranges = max_ranges

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def clear(self) -> None:
        self.ranges.clear()
        self.sacked = 0

    def add(self, lo: int, hi: int) -> int:
        """Record ``[lo, hi)`` as SACKed; returns the bytes newly SACKed."""
        if lo < 0:
            lo = 0
        if hi <= lo:
            return 0
        ranges = self.ranges
        # Find every range touching [lo, hi) and replace them with their union.
        i = 0
        n = len(ranges)
        while i < n and ranges[i][1] < lo:
            i += 1
        if (i == n or ranges[i][0] > hi) and n >= self.max_ranges:
            return 0  # a new range, and no room for one
        j = i
        covered = 0
        new_lo, new_hi = lo, hi
        while j < n and ranges[j][0] <= hi:
            r = ranges[j]
            # Bytes of [lo, hi) this range already held.
            a = r[0] if r[0] > lo else lo
            b = r[1] if r[1] < hi else hi
            if b > a:
                covered += b - a
            if r[0] < new_lo:
                new_lo = r[0]
            if r[1] > new_hi:
                new_hi = r[1]
            j += 1
        ranges[i:j] = [[new_lo, new_hi]]
        added = (hi - lo) - covered
        self.sacked += added
        return added

    def advance(self, n: int) -> None:
        """SND.UNA moved forward by ``n``: shift, and forget what it covers."""
        ranges = self.ranges
        drop = 0
        for r in ranges:
            r[0] -= n
            r[1] -= n
            if r[1] <= 0:
                self.sacked -= r[1] - r[0]
                drop += 1
            elif r[0] < 0:
                self.sacked += r[0]
                r[0] = 0
        if drop:
            del ranges[:drop]

    def sacked_below(self, off: int) -> int:
        """SACKed bytes below offset ``off``."""
        total = 0
        for lo, hi in self.ranges:
            if lo >= off:
                break
            total += (hi if hi < off else off) - lo
        return total

    def first_after(self, off: int) -> list[int] | None:
        """The first range ending after ``off`` (it may contain ``off``)."""
        for r in self.ranges:
            if r[1] > off:
                return r
        return None

    def high(self) -> int:
        """One past the highest SACKed byte (0 when nothing is SACKed)."""
        return self.ranges[-1][1] if self.ranges else 0

    def is_lost(self, off: int, mss: int, dupthresh: int) -> bool:
        """RFC 6675 IsLost for the byte at ``off``."""
        count = 0
        above = 0
        for lo, hi in reversed(self.ranges):
            if hi <= off:
                break
            count += 1
            above += hi - (lo if lo > off else off + 1)
            if count >= dupthresh or above > (dupthresh - 1) * mss:
                return True
        return False

    def pipe(self, end: int, high_rxt: int, mss: int, dupthresh: int) -> int:
        """RFC 6675 SetPipe for the bytes below ``end`` (HighData), with
        ``high_rxt`` one past the highest byte retransmitted."""
        ranges = self.ranges
        n = len(ranges)
        limit = (dupthresh - 1) * mss
        above = self.sacked
        pipe = 0
        start = 0
        for i in range(n):
            lo, hi = ranges[i]
            if lo > start:
                # The hole [start, lo): lost when enough is SACKed above it.
                if n - i < dupthresh and above <= limit:
                    pipe += lo - start
                if high_rxt > start:
                    pipe += (high_rxt if high_rxt < lo else lo) - start
            above -= hi - lo
            start = hi
        if end > start:
            # Above the highest SACKed byte nothing is lost yet.
            pipe += end - start
            if high_rxt > start:
                pipe += (high_rxt if high_rxt < end else end) - start
        return pipe

    def next_hole(self, high_rxt: int, mss: int, dupthresh: int,
                  lost_only: bool) -> tuple[int, int] | None:
        """NextSeg rules (1) (``lost_only``) and (3): ``(offset, length)`` of
        the first unSACKed bytes at or above ``high_rxt`` that lie below some
        SACKed byte, at most one ``mss``; None if there are none."""
        ranges = self.ranges
        n = len(ranges)
        limit = (dupthresh - 1) * mss
        above = self.sacked
        start = 0
        for i in range(n):
            lo, hi = ranges[i]
            s = start if start > high_rxt else high_rxt
            if s < lo and (not lost_only or n - i >= dupthresh or above > limit):
                return s, (lo - s if lo - s < mss else mss)
            above -= hi - lo
            start = hi
        return None

    def holes(self, end: int) -> list[tuple[int, int]]:
        """The unSACKed ``[lo, hi)`` ranges below ``end`` (for tests and traces)."""
        out = []
        start = 0
        for lo, hi in self.ranges:
            if lo > start:
                out.append((start, lo))
            start = hi
        if end > start:
            out.append((start, end))
        return out
