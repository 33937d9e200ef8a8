"""The pacer: segments leave no faster than the congestion control's
``pacing_rate``, as Linux's internal pacing (``tcp_internal_pacing``, the
earliest departure time model) spaces them.

After each transmission the next one may leave ``len / rate`` seconds
later; the sender sends one burst (about a millisecond of the rate, at least
two segments, one GSO super-segment) and arms the ``pace`` timer for the
next. A timer that fires late keeps up to half a burst's time as credit
(Linux's ``tcp_update_skb_after_send``), so the wake-up delay of the
network thread does not slow the flow down.

Unlike the kernel's high-resolution timers, the network thread wakes with
about a millisecond's precision (epoll's timeout is in milliseconds), so
a segment may leave up to ``slack`` seconds before its time: otherwise each
wake-up would send one burst and a late timer would cap the rate at a burst
per millisecond, whatever the pacing rate says.
"""

from __future__ import annotations

BURST_SHIFT = 10      # a burst: rate / 1024 bytes, about 1 ms (Linux sk_pacing_shift)
BURST_MAX = 65536


class Pacer:
    __slots__ = ("next_at", "slack")

    def __init__(self, slack: float) -> None:
        self.next_at = 0.0   # the earliest time the next segment may leave
        self.slack = slack

    def waiting(self, rate: float, now: float) -> bool:
        """True while ``rate`` makes the next segment wait."""
        return rate > 0.0 and now + self.slack < self.next_at

    def wake_at(self) -> float:
        """When the pace timer should let the next burst go."""
        return self.next_at - self.slack

    def sent(self, nbytes: int, rate: float, now: float) -> None:
        """``nbytes`` left now (data or a retransmission)."""
        if rate <= 0.0:
            return
        t = nbytes / rate
        late = now - self.next_at
        if late > 0:
            self.next_at = now + t - (late if late < t / 2 else t / 2)
        else:
            self.next_at += t

    @staticmethod
    def burst(rate: float, mss: int) -> int:
        """Bytes per burst at ``rate``: whole segments, at least two."""
        n = int(rate) >> BURST_SHIFT
        if n > BURST_MAX:
            n = BURST_MAX
        n -= n % mss
        return n if n > 2 * mss else 2 * mss
