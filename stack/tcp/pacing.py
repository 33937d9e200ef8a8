"""The pacer: segments leave no faster than the congestion control's
``pacing_rate``, as Linux's internal pacing (``tcp_internal_pacing``, the
earliest departure time model) spaces them.

The sender keeps one number, when the next segment may leave; each
transmission moves it ``len / rate`` seconds on (:func:`after_send`). The
sender sends a burst (:func:`burst`: about a millisecond of the rate, at
least two segments, one GSO super-segment at most) and arms the ``pace``
timer for the next. A timer that fires late keeps up to half a burst's time
as credit (Linux's ``tcp_update_skb_after_send``), so the wake-up delay of
the network thread does not slow the flow down.

Unlike the kernel's high-resolution timers, the network thread wakes with
about a millisecond's precision (epoll's timeout is in milliseconds), so a
segment may leave up to ``TcpConfig.pacing_slack`` before its time:
otherwise each wake-up would send one burst and a late timer would cap the
rate at a burst per millisecond, whatever the pacing rate says.
"""

from __future__ import annotations

BURST_SHIFT = 10      # a burst: rate / 1024 bytes, about 1 ms (Linux sk_pacing_shift)
BURST_MAX = 65536


def after_send(next_at: float, nbytes: int, rate: float, now: float) -> float:
    """When the segment after ``nbytes`` sent now at ``rate`` may leave."""
    t = nbytes / rate
    late = now - next_at
    if late > 0:
        return now + t - (late if late < t / 2 else t / 2)
    return next_at + t


def burst(rate: float, mss: int) -> int:
    """Bytes per burst at ``rate``: whole segments, at least two."""
    n = int(rate) >> BURST_SHIFT
    if n > BURST_MAX:
        n = BURST_MAX
    n -= n % mss
    return n if n > 2 * mss else 2 * mss
