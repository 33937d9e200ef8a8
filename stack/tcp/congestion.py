"""Congestion control, pluggable: Reno (RFC 5681), NewReno (RFC 6582) and
CUBIC (RFC 9438, the default, with HyStart++, RFC 9406, ``hystart.py``);
and during SACK loss recovery Proportional Rate Reduction (RFC 6937).

Loss detection (duplicate ACKs, SACK, the RTO) is ``recovery.py``'s; every
change to the window is the controller's: this file is the only one that
assigns ``cwnd`` (growth on new acknowledgments, the reduction after a loss,
NewReno's inflation and deflation during fast recovery, the window after
recovery and after a timeout). Windows are in bytes; CUBIC's function is in segments and seconds, as
the RFC writes it. Growth uses appropriate byte counting (RFC 3465): slow
start adds the bytes acknowledged, at most ``L = 2`` MSS per ACK, so a
receiver that acknowledges every second segment does not halve the growth.

A new algorithm subclasses :class:`CongestionControl` and is named in
``algorithms.py``. One driven by a model of the path rather than by loss
(BBR, ``bbr.py``) sets ``wants_samples`` and gets every ACK's delivery-rate
sample through :meth:`CongestionControl.on_sample`.

Every algorithm may set ``pacing_rate`` (bytes per second; 0.0: no pacing),
which the sender honours (``pacing.py``). BBR always does; the others only
when ``TcpConfig.pacing`` asks, at Linux's rate (:meth:`pace`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp.hystart import CSS, CSS_GROWTH_DIVISOR, DONE, HyStart

if TYPE_CHECKING:
    from stack.tcp.rate import RateSample

ABC_LIMIT = 2  # RFC 3465 L: at most 2 MSS of growth per ACK in slow start
INITIAL_SSTHRESH = 1 << 30


class CongestionControl:
    __slots__ = ("_acked", "cwnd", "mss", "pacing_rate", "prr_delivered", "recover_fs", "ssthresh")

    name = "base"
    wants_samples = False  # on_sample on every ACK (BBR)
    # Without SACK, after a partial ACK in fast recovery: stay in recovery
    # (NewReno, RFC 6582) or leave it (Reno, RFC 5681).
    partial_ack_stays = True

    def __init__(self, mss: int, initial_segments: int, seed: int = 0) -> None:
        self.mss = mss
        self.cwnd = initial_segments * mss
        self.ssthresh = INITIAL_SSTHRESH
        self.prr_delivered = 0    # PRR (RFC 6937): bytes delivered since recovery began
        self.recover_fs = 0       # ... and the flight then (RecoverFS)
        self.pacing_rate = 0.0  # bytes/s the sender paces at (0.0: as fast as the windows allow)
        self._acked = 0  # bytes counted toward the next congestion-avoidance increase

    def set_mss(self, mss: int) -> None:
        self.mss = mss

    def restart(self, initial_segments: int) -> None:
        """The handshake is over: the initial window in the final MSS (RFC 6928)."""
        self.cwnd = initial_segments * self.mss

    def take_over(self, old: CongestionControl) -> None:
        """Continue from another algorithm's window (TCP_CONGESTION on a live
        connection), in a recovery under way too."""
        self.cwnd, self.ssthresh = old.cwnd, old.ssthresh
        self.prr_delivered, self.recover_fs = old.prr_delivered, old.recover_fs

    def on_ack(self, acked: int, now: float, rtt: float | None) -> None:
        """``acked`` new bytes acknowledged outside loss recovery, while the
        sender was using its window (the caller checks). ``rtt``: SRTT."""
        if self.cwnd < self.ssthresh:
            self.cwnd += acked if acked < ABC_LIMIT * self.mss else ABC_LIMIT * self.mss
        else:
            self._avoid(acked, now, rtt)

    def start(self, srtt: float | None) -> None:
        """The connection is synchronized (or switched to this algorithm)."""

    def on_sample(self, rs: RateSample | None, inflight: int, lost: int, phase: int,
                  srtt: float | None, now: float) -> None:
        """An ACK delivered (or lost) something, in recovery too: ``rs`` its
        delivery-rate sample, ``inflight`` the bytes in the network after it,
        ``lost`` the bytes it had marked lost, ``phase`` the sender's loss
        state (``bbr.OPEN``, ``RECOVERY``, ``LOSS``). Only called with
        ``wants_samples``."""

    def pace(self, srtt: float) -> None:
        """Pacing asked for a loss-based algorithm: Linux's rate
        (``tcp_update_pacing_rate``), twice cwnd per SRTT in slow start's
        first half, 1.2 times after."""
        gain = 2.0 if self.cwnd < self.ssthresh // 2 else 1.2
        self.pacing_rate = gain * self.cwnd / (srtt if srtt > 0.0001 else 0.0001)

    def info(self) -> dict[str, object]:
        """The algorithm's own state, for ``status()`` (none here)."""
        return {}

    def holds_back(self) -> bool:
        """Sending less than it could on purpose (BBR's PROBE_RTT): the
        samples meanwhile measure that, not the path."""
        return False

    def model_key(self) -> tuple[object, ...]:
        """What, changed, makes a ``bbr`` trace event (a model's mode and round)."""
        return ()

    def _avoid(self, acked: int, now: float, rtt: float | None) -> None:
        """Congestion avoidance: Reno's one MSS per window of acknowledged bytes."""
        self._acked += acked
        if self._acked >= self.cwnd:
            self._acked -= self.cwnd
            self.cwnd += self.mss

    def ssthresh_after_loss(self, flight: int) -> int:
        return max(flight // 2, 2 * self.mss)  # RFC 5681 (4)

    def on_loss(self, flight: int, now: float) -> None:
        """Loss detected by duplicate ACKs or SACK: fast recovery starts with
        ``cwnd = ssthresh``."""
        self.ssthresh = self.ssthresh_after_loss(flight)
        self.cwnd = self.ssthresh
        self._acked = 0

    def enter_fast_recovery(self, flight: int, now: float, sack: bool) -> None:
        """Fast retransmit: :meth:`on_loss`, and without SACK the three
        segments that left the network inflate the window (RFC 5681 3.2 (3))."""
        self.on_loss(flight, now)
        if not sack:
            self.cwnd = self.ssthresh + 3 * self.mss

    def slow_start_ack(self, rtt: float | None, round_start: bool) -> str | None:
        """Each ACK of new data in the first slow start, with an RTT sample
        (``None``: none) and whether it begins a round trip: for HyStart++.
        Returns what changed (``"hystart_css"``, ``"hystart_exit"``), or None."""
        return None

    # ---- Proportional Rate Reduction (RFC 6937), SACK recovery -------------------------

    def prr_start(self, flight: int) -> None:
        """Recovery begins with ``flight`` bytes outstanding (RecoverFS)."""
        self.prr_delivered = 0
        self.recover_fs = flight if flight > 0 else 1

    def prr(self, delivered: int, pipe: int, prr_out: int) -> None:
        """An ACK in recovery delivered ``delivered`` bytes (cumulatively or
        by SACK); ``pipe`` are in the network, ``prr_out`` were sent since
        recovery began. The window lets out what RFC 6937 allows: in
        proportion to what is delivered while the pipe is above ssthresh,
        then (PRR-SSRB) slow start back up to it, at most one MSS more than
        delivered per ACK."""
        self.prr_delivered += delivered
        ss = self.ssthresh
        if pipe > ss:
            fs = self.recover_fs if self.recover_fs > 0 else pipe
            sndcnt = -(-self.prr_delivered * ss // fs) - prr_out
        else:
            limit = self.prr_delivered - prr_out
            if limit < delivered:
                limit = delivered
            limit += self.mss
            sndcnt = ss - pipe if ss - pipe < limit else limit
        self.cwnd = pipe + (sndcnt if sndcnt > 0 else 0)

    def prr_end(self) -> None:
        """Recovery is over (RFC 6937): the window is ssthresh (unless that
        is still infinite, as Linux's ``tcp_end_cwnd_reduction``)."""
        if self.ssthresh < INITIAL_SSTHRESH:
            self.cwnd = self.ssthresh

    def undo(self, cwnd: int, ssthresh: int) -> None:
        """The cut was spurious (``undo.py``): back to the window and
        ssthresh it started from, unless they have grown past them since."""
        if cwnd > self.cwnd:
            self.cwnd = cwnd
        if ssthresh > self.ssthresh:
            self.ssthresh = ssthresh

    def on_dupack_in_recovery(self) -> None:
        """RFC 5681 3.2 (4), without SACK: each duplicate ACK inflates by one MSS."""
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        """NewReno (RFC 6582 3.2 step 5): deflate by what was acknowledged and
        add back one MSS if at least one was."""
        mss = self.mss
        w = self.cwnd - acked
        if acked >= mss:
            w += mss
        self.cwnd = w if w > mss else mss

    def exit_recovery(self, flight: int, now: float, sack: bool) -> None:
        """Fast recovery is over. Without SACK the inflated window goes:
        NewReno takes ``min(ssthresh, max(flight, mss) + mss)`` (RFC 6582 3.2
        step 3, option 1: no burst), Reno ``ssthresh`` (RFC 5681 3.2 (6))."""
        if not sack:
            if self.partial_ack_stays:
                mss = self.mss
                w = (flight if flight > mss else mss) + mss
                self.cwnd = self.ssthresh if self.ssthresh < w else w
            else:
                self.cwnd = self.ssthresh
        self.on_recovery_exit(now)

    def on_recovery_exit(self, now: float) -> None:
        """Fast recovery is over; congestion avoidance starts again (a hook)."""

    def on_timeout(self, flight: int, now: float) -> None:
        """Retransmission timeout: the loss window, slow start again."""
        self.ssthresh = self.ssthresh_after_loss(flight)
        self.cwnd = self.mss  # RFC 5681 (5): LW = 1 MSS
        self._acked = 0


class Reno(CongestionControl):
    """RFC 5681: a partial ACK ends fast recovery."""

    __slots__ = ()

    name = "reno"
    partial_ack_stays = False


class NewReno(CongestionControl):
    """RFC 6582: partial ACKs keep fast recovery going (see ``sender.py``)."""

    __slots__ = ()

    name = "newreno"


class Cubic(CongestionControl):
    """RFC 9438. Within an epoch (a congestion avoidance stage, ``t`` seconds
    old) the window follows ``W_cubic(t) = C * (t - K)**3 + W_max`` segments,
    never below the Reno-friendly estimate ``W_est``."""

    __slots__ = ("_after_rto", "_cwnd_f", "_cwnd_prior", "_origin", "_w_est", "epoch", "hystart",
                 "k", "w_max")

    name = "cubic"
    C = 0.4
    BETA = 0.7
    ALPHA = 3 * (1 - BETA) / (1 + BETA)  # RFC 9438 section 4.3
    fast_convergence = True

    def __init__(self, mss: int, initial_segments: int, seed: int = 0) -> None:
        super().__init__(mss, initial_segments, seed)
        self.w_max = 0.0          # segments, the window before the last reduction
        self.k = 0.0              # seconds to get back to w_max
        self.epoch: float | None = None  # when the current avoidance stage began
        self._origin = 0.0        # the plateau of the current curve (w_max or cwnd_epoch)
        self._w_est = 0.0         # segments, the Reno-friendly estimate
        self._cwnd_prior = 0.0    # segments, cwnd before the last reduction
        self._after_rto = False
        self._cwnd_f = float(self.cwnd)  # bytes, with the fraction the integer cwnd drops
        self.hystart: HyStart | None = None  # from the first slow start ACK (RFC 9406)

    def slow_start_ack(self, rtt: float | None, round_start: bool) -> str | None:
        if self.ssthresh != INITIAL_SSTHRESH or self.cwnd >= self.ssthresh:
            return None  # only the first slow start (not after an RTO)
        hs = self.hystart
        if hs is None:
            hs = self.hystart = HyStart()
        before = hs.phase
        phase = hs.ack(rtt, round_start)
        if phase == DONE:
            self.ssthresh = self.cwnd  # congestion avoidance from here (RFC 9406 4.2)
            return "hystart_exit"
        return "hystart_css" if phase == CSS and before != CSS else None

    def on_ack(self, acked: int, now: float, rtt: float | None) -> None:
        hs = self.hystart
        if hs is not None and hs.phase == CSS and self.cwnd < self.ssthresh:
            # Conservative Slow Start: a quarter of slow start's growth.
            step = acked if acked < ABC_LIMIT * self.mss else ABC_LIMIT * self.mss
            self.cwnd += step // CSS_GROWTH_DIVISOR
            return
        super().on_ack(acked, now, rtt)

    def w_cubic(self, t: float) -> float:
        """RFC 9438 figure 1, in segments, for the current epoch."""
        d = t - self.k
        return self.C * d * d * d + self._origin

    def _start_epoch(self, now: float) -> None:
        cw = self.cwnd / self.mss
        self.epoch = now
        self._w_est = cw
        if self._after_rto or self.w_max <= cw:
            # After a timeout (section 4.8), or above the old maximum: the
            # curve starts here with K = 0.
            if self._after_rto:
                self.w_max = cw
            self._after_rto = False
            self.k = 0.0
            self._origin = cw
        else:
            self.k = ((self.w_max - cw) / self.C) ** (1 / 3)  # figure 2
            self._origin = self.w_max

    def _avoid(self, acked: int, now: float, rtt: float | None) -> None:
        mss = self.mss
        if int(self._cwnd_f) != self.cwnd:
            self._cwnd_f = float(self.cwnd)  # the sender moved cwnd (recovery exit)
        if self.epoch is None:
            self._start_epoch(now)
        epoch = self.epoch if self.epoch is not None else now
        cw = self._cwnd_f / mss
        segs = acked / mss
        # Reno-friendly region (section 4.3); alpha becomes 1 once W_est
        # has reached the window before the reduction.
        self._w_est += (1.0 if self._w_est >= self._cwnd_prior else self.ALPHA) * segs / cw
        t = now - epoch
        if self.w_cubic(t) < self._w_est:
            new = self._w_est if self._w_est > cw else cw
        else:
            # Concave and convex regions (sections 4.4, 4.5): close the gap
            # to W_cubic one RTT ahead, at most 1.5 * cwnd.
            target = self.w_cubic(t + (rtt or 0.0))
            if target < cw:
                target = cw
            elif target > 1.5 * cw:
                target = 1.5 * cw
            new = cw + (target - cw) / cw * segs
        self._cwnd_f = new * mss
        self.cwnd = int(self._cwnd_f)

    def ssthresh_after_loss(self, flight: int) -> int:
        return max(int(flight * self.BETA), 2 * self.mss)  # section 4.6

    def on_loss(self, flight: int, now: float) -> None:
        if self.hystart is not None:
            self.hystart.over()
        cw = self.cwnd / self.mss
        self._cwnd_prior = cw
        if self.fast_convergence and cw < self.w_max:
            self.w_max = cw * (1 + self.BETA) / 2  # section 4.7
        else:
            self.w_max = cw
        self.epoch = None
        super().on_loss(flight, now)
        self._cwnd_f = float(self.cwnd)

    def on_recovery_exit(self, now: float) -> None:
        self.epoch = None

    def undo(self, cwnd: int, ssthresh: int) -> None:
        super().undo(cwnd, ssthresh)
        if self.ssthresh == INITIAL_SSTHRESH:
            self.hystart = None  # back in the first slow start: HyStart++ afresh
        self.epoch = None
        self._after_rto = False
        self._cwnd_f = float(self.cwnd)

    def on_timeout(self, flight: int, now: float) -> None:
        if self.hystart is not None:
            self.hystart.over()
        self._cwnd_prior = self.cwnd / self.mss
        self.epoch = None
        self._after_rto = True
        super().on_timeout(flight, now)
        self._cwnd_f = float(self.cwnd)

