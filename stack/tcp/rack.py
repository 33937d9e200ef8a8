"""RACK: loss detection by time (RFC 8985 6), with Linux's choices.

A segment is lost when one sent after it has been delivered and a little
more than a round trip has passed since it went out. Unlike counting
duplicate ACKs (RFC 6675), this tells reordering from loss by the clock,
finds a lost retransmission, and needs only one SACK to act.

:class:`Rack` keeps one record per segment in flight, in sequence order:
``[start, end, sent, flags, order]`` (and the delivery-rate stamps
``rate.py`` adds after them). ``start`` and ``end`` are positions in
the byte stream (unbounded integers counted from ``SND.UNA`` at the
handshake, so no sequence arithmetic past :meth:`Rack.pos`), ``sent`` the
time of its latest transmission, ``order`` that transmission's number (the
clock may read the same for a whole burst, and "sent after" must still hold
between a retransmission and the segments sent just before it), ``flags``
what is known of it:

* ``SACKED``: the receiver reported holding it;
* ``LOST``: RACK (or the RTO) decided it is lost;
* ``RETRANS``: sent again, and that copy is not known to be lost;
* ``EVER``: sent more than once, so its round trip is ambiguous (Karn).

A record is cut in two where a retransmission starts or ends inside it, and
where a SACK block does, rounded inwards to whole MSS from the record's
start (as Linux's ``tcp_match_skb_to_sack``): flags always hold for whole
records, and a peer that SACKs odd bytes cannot make more records than there
are segments in flight. From the flags it
keeps the bytes SACKed, lost and retransmitted, and so the bytes in the
network: Linux's ``packets_out - sacked_out - lost_out + retrans_out``.

The reordering window is Linux's (``tcp_rack_reo_wnd``): a quarter of the
minimum RTT, times a step that each D-SACK raises (RFC 8985 6.2 step 4),
never more than SRTT; and zero while no reordering has been seen, once
recovery has begun or ``DupThresh`` segments are SACKed.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter
from typing import Any

from stack.tcp.rate import Rate
from stack.tcp.seq import seq_diff

SACKED = 1
LOST = 2
RETRANS = 4
EVER = 8

STEPS_MAX = 255        # Linux: reo_wnd_steps is a byte
STEPS_PERSIST = 16     # recoveries without a D-SACK before the step falls back to 1

_start = itemgetter(0)


class Rack:
    __slots__ = ("segs", "una_seq", "una_pos", "high", "sacked", "lost", "retrans", "sends",
                 "xmit_ts", "end", "order", "rtt", "min_rtt", "fack", "reordering", "steps", "persist",
                 "dsack_high", "rate", "marked", "ack_order")

    def __init__(self, una: int) -> None:
        self.segs: list[list[Any]] = []    # [start, end, sent, flags, order], from SND.UNA on
        self.una_seq = una
        self.una_pos = 0
        self.high = 0                 # end of the last record: SND.MAX's position
        self.sacked = 0               # bytes SACKED
        self.lost = 0                 # bytes LOST (and not SACKED)
        self.retrans = 0              # bytes RETRANS (and not SACKED)
        self.sends = 0                # transmissions numbered so far
        self.xmit_ts: float | None = None  # RACK.xmit_ts and RACK.end_seq: the most
        self.end = 0                       # recently sent segment delivered (and
        self.order = 0                     # its transmission's number)
        self.rtt = 0.0                # RACK.rtt: that segment's round trip
        self.ack_order = -1           # the newest transmission the ACK at hand delivered
        self.min_rtt: float | None = None
        self.fack = 0                 # the highest end delivered (RACK.fack)
        self.reordering = False       # reordering seen on this connection
        self.steps = 1                # RACK.reo_wnd_mult
        self.persist = 0              # RACK.reo_wnd_persist
        self.dsack_high = 0           # a D-SACK raises the step once per flight: up to here
        self.marked = 0               # bytes ever marked lost (what an ACK newly marked: the change)
        self.rate = Rate()            # delivery-rate sampling on the same records (rate.py)

    # ---- positions ---------------------------------------------------------------------

    def pos(self, seq: int) -> int:
        return self.una_pos + seq_diff(seq, self.una_seq)

    def in_flight(self) -> int:
        """Bytes in the network (RFC 8985's and Linux's pipe)."""
        return self.high - self.una_pos - self.sacked - self.lost + self.retrans

    def _index(self, p: int) -> int:
        """The index of the record starting at ``p``, cutting one in two if
        ``p`` falls inside it (len(segs) when ``p`` is at or past the end)."""
        segs = self.segs
        i = bisect_right(segs, p, key=_start) - 1
        if i < 0:
            return 0
        r = segs[i]
        if r[0] == p:
            return i
        if p >= r[1]:
            return i + 1
        segs.insert(i + 1, [p, *r[1:]])
        r[1] = p
        return i + 1

    # ---- transmissions -----------------------------------------------------------------

    def sent(self, n: int, now: float) -> None:
        """``n`` new bytes of sequence space went out at the top."""
        h = self.high
        self.sends += 1
        r = [h, h + n, now, 0, self.sends]
        self.rate.stamp(r, h == self.una_pos, now)
        self.segs.append(r)
        self.high = h + n

    def resent(self, seq: int, n: int, now: float) -> None:
        """``n`` bytes of sequence space from ``seq`` went out again."""
        lo = self.pos(seq)
        hi = lo + n
        if lo < self.una_pos:
            lo = self.una_pos
        top = hi if hi < self.high else self.high
        if lo < top:
            segs = self.segs
            i = self._index(lo)
            j = self._index(top)
            self.sends += 1
            stamp = self.rate.stamp
            for r in segs[i:j]:
                f = r[3]
                if not f & RETRANS and not f & SACKED:
                    self.retrans += r[1] - r[0]
                    r[3] = f | RETRANS | EVER
                r[2] = now
                r[4] = self.sends
                stamp(r, False, now)
        if hi > self.high:
            self.sent(hi - self.high, now)  # past SND.MAX: new bytes after all

    def timed_out(self) -> None:
        """The RTO fired: every copy in flight counts as gone and go-back-N
        resends what is not SACKed. What was SACKed stays so (as Linux,
        which forgets it only when the peer reneges): SACKed again, it must
        not count as delivered a second time."""
        for r in self.segs:
            r[3] &= SACKED | EVER
        self.lost = self.retrans = 0

    # ---- what an ACK reports -------------------------------------------------------------

    def begin_ack(self) -> None:
        """An ACK is about to be taken in (acked, then its SACK blocks)."""
        self.ack_order = -1

    def acked(self, ack: int, now: float) -> None:
        """The cumulative ACK moved to ``ack``: what it covers was delivered."""
        p = self.pos(ack)
        if p <= self.una_pos:
            return
        segs = self.segs
        k = self._index(p) if p < self.high else len(segs)
        rate = self.rate
        for r in segs[:k]:
            self._forget(r)
            if not r[3] & SACKED:
                rate.delivered_record(r, r[4], bool(r[3] & EVER), now)
                self._delivered(r, now)
        del segs[:k]
        self.una_pos = p
        self.una_seq = ack

    def _cut(self, p: int, mss: int, up: bool) -> int:
        """Where a SACK edge at ``p`` may cut: ``p`` itself at a record's
        edge, else the nearest whole MSS from its record's start, inwards."""
        segs = self.segs
        i = bisect_right(segs, p, key=_start) - 1
        if i < 0:
            return p
        start: int = segs[i][0]
        end: int = segs[i][1]
        if p == start or p >= end:
            return p
        k, part = divmod(p - start, mss)
        q = start + (k + (1 if up and part else 0)) * mss
        return q if q < end else end

    def sacked_block(self, left: int, right: int, now: float, mss: int) -> None:
        """A SACK block (in window): its records are held by the receiver."""
        lo = self.pos(left)
        hi = self.pos(right)
        if lo < self.una_pos:
            lo = self.una_pos
        if hi > self.high:
            hi = self.high
        if lo >= hi:
            return
        lo = self._cut(lo, mss, True)
        hi = self._cut(hi, mss, False)
        if lo >= hi:
            return
        segs = self.segs
        i = self._index(lo)
        j = self._index(hi)
        for r in segs[i:j]:
            f = r[3]
            if f & SACKED:
                continue
            self._forget(r)
            r[3] = SACKED | (f & EVER)
            self.sacked += r[1] - r[0]
            self.rate.delivered_record(r, r[4], bool(f & EVER), now)
            self._delivered(r, now)

    def dsack(self, flight_end: int, probe: bool) -> None:
        """A D-SACK (RFC 2883): a retransmission was not needed, so the path
        reorders; widen the window, once per flight (RFC 8985 6.2 step 4).
        A tail loss probe's D-SACK (``probe``) is no sign of reordering: it
        only raises the step (as Linux)."""
        if not probe:
            self.reordering = True
        if self.una_pos >= self.dsack_high:
            if self.steps < STEPS_MAX:
                self.steps += 1
            self.persist = STEPS_PERSIST
            self.dsack_high = self.pos(flight_end)

    def recovery_over(self) -> None:
        """After enough recoveries without a D-SACK the window narrows again."""
        if self.persist:
            self.persist -= 1
            if not self.persist:
                self.steps = 1

    def path_rtt(self, rtt: float | None) -> None:
        """The connection's smallest RTT sample so far (the handshake's too):
        RACK's minimum never exceeds it (Linux's ``tcp_min_rtt``)."""
        if rtt is not None and (self.min_rtt is None or rtt < self.min_rtt):
            self.min_rtt = rtt

    def _forget(self, r: list[Any]) -> None:
        """Take a record out of the counts (acknowledged, or SACKed now)."""
        f = r[3]
        n = r[1] - r[0]
        if f & SACKED:
            self.sacked -= n
            return
        if f & LOST:
            self.lost -= n
        if f & RETRANS:
            self.retrans -= n

    def _delivered(self, r: list[Any], now: float) -> None:
        """RFC 8985 6.2 steps 2 and 3 for one delivered record."""
        rtt = now - r[2]
        if r[3] & EVER:
            # Which copy arrived? One delivered faster than the path's
            # minimum RTT was the original (Linux's rule): ignore it. And
            # the original, late, was not lost: the path reorders (what
            # Linux learns from the same luck in tcp_try_undo_partial).
            if self.min_rtt is None or rtt < self.min_rtt:
                if self.min_rtt is not None:
                    self.reordering = True
                return
        elif self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if r[4] >= self.ack_order:
            # RACK.rtt is the round trip of the most recently sent segment
            # this ACK delivers (RFC 8985 6.2 step 2 takes them in order of
            # sending), not of whichever came last: an old one whose SACK
            # was lost on the way would make every loss wait its age.
            self.ack_order = r[4]
            self.rtt = rtt
        if r[4] > self.order or (r[4] == self.order and r[1] > self.end):
            self.xmit_ts = r[2]
            self.end = r[1]
            self.order = r[4]
        if r[1] < self.fack and not r[3] & EVER:
            self.reordering = True  # delivered below something delivered before
        elif r[1] > self.fack:
            self.fack = r[1]

    # ---- loss detection ---------------------------------------------------------------

    def reo_wnd(self, in_recovery: bool, srtt: float | None, mss: int, dupthresh: int) -> float:
        if not self.reordering and (in_recovery or self.sacked >= dupthresh * mss):
            return 0.0
        base = self.min_rtt if self.min_rtt is not None else (srtt or 0.0)
        w = base / 4 * self.steps
        return w if srtt is None or w < srtt else srtt

    def detect(self, now: float, reo_wnd: float) -> float:
        """RFC 8985 6.2 step 5: mark lost every record sent before the most
        recently delivered one, and out for longer than ``RACK.rtt`` plus
        the window. Returns the time until the next record would be (0:
        none waiting), for the reordering timer."""
        if self.xmit_ts is None:
            return 0.0
        end = self.end
        order = self.order
        wait = self.rtt + reo_wnd
        timeout = 0.0
        for r in self.segs:
            f = r[3]
            if f & SACKED or (f & LOST and not f & RETRANS):
                continue
            if r[4] > order or (r[4] == order and r[1] >= end):
                continue  # sent after the newest delivered one: no evidence
            remaining = r[2] + wait - now
            if remaining <= 0:
                n = r[1] - r[0]
                if f & RETRANS:
                    self.retrans -= n  # a retransmission lost in its turn
                if not f & LOST:
                    self.lost += n
                self.marked += n
                r[3] = (f & ~RETRANS) | LOST
            elif remaining > timeout:
                timeout = remaining
        return timeout

    def first_lost(self) -> tuple[int, int] | None:
        """``(offset from SND.UNA, length)`` of the first record that is
        lost and not yet sent again."""
        for r in self.segs:
            if r[3] & (LOST | RETRANS | SACKED) == LOST:
                lo = r[0] - self.una_pos
                return lo, r[1] - r[0]
        return None
