"""Loss detection and recovery: duplicate ACKs and fast retransmit (RFC
5681), NewReno's fast recovery without SACK (RFC 6582), SACK-based loss
recovery (RFC 6675), RACK's loss detection by time (RFC 8985 6, ``rack.py``)
and what the RTO does to all of them.

With SACK and ``rack`` on (the default, as Linux), RACK alone decides what
is lost and recovery resends it as the window allows; otherwise the
duplicate ACK count and RFC 6675's IsLost/NextSeg do. RACK's records are
kept either way: the delivery-rate samples (``rate.py``) are taken on them.

:class:`Recovery` owns the SACK scoreboard (``sack.py``), RACK's records,
the duplicate ACK count, ``RecoveryPoint``, HighRxt and RescueRxt, and the
congestion controller ``cc``, which it tells about every ACK, loss and
timeout (the controller alone changes the window). Retransmissions go out
through the sender, which owns the bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp import timers as T
from stack.tcp.algorithms import ALGORITHMS
from stack.tcp.congestion import CongestionControl
from stack.tcp.rack import Rack
from stack.tcp.sack import Scoreboard
from stack.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt, tsval
from stack.tcp.undo import Undo
from stack.wire.tcp import TcpSegment

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection
    from stack.tcp.sender import Sender


class Recovery:
    __slots__ = ("cc", "cfg", "conn", "dupacks", "high_rxt", "hs", "in_recovery", "partial_acks",
                 "rack_on", "model_seen", "prr_base", "round_end", "undo",
                 "rack", "recover", "rescue_rxt", "sb", "snd", "timers")
    def __init__(self, conn: TcpConnection, iss: int) -> None:
        self.conn = conn
        cfg = self.cfg = conn.cfg
        self.hs = conn.handshake
        self.timers = conn.timers
        self.snd: Sender  # set by the connection once the sender exists
        self.cc: CongestionControl = ALGORITHMS[cfg.congestion](self.hs.mss, cfg.initial_cwnd, iss)
        self.sb: Scoreboard | None = None  # SACKed bytes, once the peer SACKs
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss                 # RecoveryPoint (RFC 6675), "recover" (RFC 6582)
        self.partial_acks = 0
        self.high_rxt = iss                # RFC 6675 HighRxt (one past), RescueRxt
        self.rescue_rxt = iss
        self.rack: Rack | None = None      # the records, from the first data sent
        self.rack_on = False               # RACK finds the losses (SACK agreed, cfg.rack)
        self.model_seen: tuple[object, ...] = ()  # the model's state last traced (BBR)
        self.prr_base = 0                  # the sender's bytes_sent when recovery began (PRR)
        self.round_end = iss               # SND.NXT when this round trip began (HyStart++)
        self.undo: Undo | None = None      # the loss episode's saved window (undo.py)

    def synchronized(self, una: int) -> None:
        """The handshake is over, with SND.UNA at ``una``."""
        self.rack_on = self.cfg.rack and self.hs.sack_ok

    def records(self, now: float) -> Rack:
        """RACK's records, made when the first data goes out (a connection
        that never sends keeps none: 100,000 idle ones cost nothing here)."""
        rack = self.rack
        if rack is None:
            snd = self.snd
            rack = self.rack = Rack(snd.snd_una)
            out = seq_diff(snd.snd_max, snd.snd_una)
            if out > 0:
                rack.sent(out, now)  # already out (a window probe): one record
        return rack

    # ---- what the sender asks ---------------------------------------------------------

    def sacked(self) -> int:
        return self.sb.sacked if self.sb is not None else 0

    def rack_status(self) -> dict[str, int]:
        """For ``status()``: RACK's bytes marked lost and its records (none without RACK)."""
        rack = self.rack
        on = self.rack_on
        return {"lost": rack.lost if rack and on else 0,
                "rack_records": len(rack.segs) if rack and on else 0}

    def sacked_below(self, off: int) -> int:
        """SACKed bytes below ``off`` (from SND.UNA): out of the network."""
        sb = self.sb
        return sb.sacked_below(off) if sb is not None and sb.ranges else 0


    def skip_sacked(self, off: int) -> tuple[int, int]:
        """Going back after an RTO at offset ``off``: ``(skip, 0)`` when
        ``off`` lies in a SACKed range ending at ``skip``, else ``(0, limit)``
        with the bytes before the next SACKed range (0: none)."""
        assert self.sb is not None
        r = self.sb.first_after(off)
        if r is None:
            return 0, 0
        if r[0] <= off:
            return r[1], 0
        return 0, r[0] - off

    def set_congestion(self, name: str) -> bool:
        """Switch algorithm, keeping the window; False for an unknown name."""
        cls = ALGORITHMS.get(name)
        if cls is None:
            return False
        if type(self.cc) is not cls:
            cc = cls(self.hs.mss, self.cfg.initial_cwnd, self.snd.iss)
            cc.take_over(self.cc)
            self.cc = cc
            cc.start(self.conn.rtt.srtt)
            if cc.wants_samples and self.rack is not None:
                self.rack.rate.sample(None)  # from the next ACK on
        return True

    # ---- ACKs ------------------------------------------------------------------

    def advance(self, acked: int, sent: int) -> int:
        """SND.UNA moves by ``acked`` with ``sent`` bytes beyond it: shift the
        scoreboard; returns the bytes that were in flight (SACKed ones out)."""
        sb = self.sb
        if sb is not None and sb.ranges:
            sent -= sb.sacked_below(sent)
            sb.advance(acked)
        return sent

    def on_ack(self, seg: TcpSegment, ack: int, acked: int, prior_flight: int,
               dup_candidate: bool, now: float) -> None:
        """After the sender moved SND.UNA to ``ack`` (``acked`` new bytes):
        the SACK blocks, recovery, the window, the RTO, fast retransmit."""
        snd = self.snd
        cc = self.cc
        mss = self.hs.mss
        sack_ok = self.hs.sack_ok
        cwnd0 = cc.cwnd
        ssthresh0 = cc.ssthresh
        why = "ack"

        # SACK blocks, relative to the new SND.UNA; D-SACKs and blocks
        # outside what we sent are ignored (RFC 2883, RFC 6675 Update()).
        newly = 0
        sb = self.sb
        rack = self.rack
        marked = rack.marked if rack is not None else 0
        sacked0 = rack.sacked if rack is not None else 0
        if rack is not None:
            rack.begin_ack()
            rack.path_rtt(self.conn.rtt.min_rtt)
            if acked > 0:
                rack.acked(ack, now)
        blocks = seg.sack
        if sack_ok and blocks and acked >= 0:
            if sb is None:
                sb = self.sb = Scoreboard(self.cfg.sack_max_ranges)
            end = seq_diff(snd.snd_max, ack)
            for left, right in blocks:
                lo = seq_diff(left, ack)
                hi = seq_diff(right, ack)
                if 0 < hi <= end and lo < hi:
                    newly += sb.add(lo, hi)
                    if rack is not None:
                        rack.sacked_block(left, right, now, mss)
            left, right = blocks[0]
            if seq_le(right, ack) or (len(blocks) > 1 and seq_ge(left, blocks[1][0])
                                      and seq_le(right, blocks[1][1])):
                # RFC 2883's two kinds of D-SACK.
                if self.rack_on and rack is not None:
                    rack.dsack(snd.snd_max, snd.tlp_high is not None)
                undo = self.undo
                if (undo is not None and undo.first_seq is not None
                        and seq_ge(left, undo.first_seq) and seq_le(right, undo.high)
                        and undo.dsacked(seq_diff(right, left))):
                    why = self._undo("dsack")

        undo = self.undo
        if (acked > 0 and undo is not None and undo.first_seq is not None
                and not undo.tested and seq_gt(ack, undo.first_seq)):
            # The first ACK past the first retransmission: Eifel's test, once.
            undo.tested = True
            ts = seg.timestamps
            if ts is not None and ts[1] and seq_lt(ts[1], undo.first_ts):
                why = self._undo("eifel")
        restart_timer = True
        if acked > 0:
            if self.in_recovery:
                if seq_ge(ack, self.recover):
                    self._exit(now)
                    why = "recovery_exit"
                elif sack_ok:
                    pass  # a partial ACK: the sender's output sends what NextSeg picks
                elif cc.partial_ack_stays:
                    # NewReno (RFC 6582 3.2 step 5): deflate, resend the
                    # next hole; restart the timer only the first time.
                    cc.on_partial_ack(acked)
                    self.partial_acks += 1
                    restart_timer = self.partial_acks == 1
                    why = "partial_ack"
                    snd.retransmit_head(now, "partial")
                else:
                    self._exit(now)
                    why = "recovery_exit"
            else:
                self.dupacks = 0
                if cc.cwnd < cc.ssthresh and self.cfg.hystart:
                    start = seq_ge(ack, self.round_end)
                    if start:
                        self.round_end = snd.snd_nxt
                    sample = rack.rtt if rack is not None and rack.ack_order >= 0 else None
                    why = cc.slow_start_ack(sample, start) or why
                cw = cc.cwnd
                if (2 * prior_flight >= cw if cw < cc.ssthresh
                        else prior_flight + 2 * mss >= cw):
                    cc.on_ack(acked, now, self.conn.rtt.srtt)
            if ack == snd.snd_max:
                self.timers.stop(T.RTO)
            elif restart_timer:
                snd.arm_rto(now)

        if sack_ok:
            # RFC 6675 2: an ACK that SACKs new data is a duplicate ACK.
            dup = newly > 0
        else:
            dup = acked == 0 and dup_candidate and self.timers.armed(T.RTO)
        if dup and snd.snd_max != snd.snd_una:
            if self.in_recovery:
                if not sack_ok:
                    cc.on_dupack_in_recovery()
                    why = "dupack"
            elif not self.rack_on:
                self.dupacks += 1
                dt = self.cfg.dupack_threshold
                if sack_ok:
                    assert sb is not None
                    go = self.dupacks >= dt or sb.is_lost(0, mss, dt)
                else:
                    go = self.dupacks == dt
                if go and self._may_enter():
                    self._enter(now)
                    why = "fast_retransmit"
            else:
                self.dupacks += 1
        if self.rack_on and rack is not None and (blocks or self.in_recovery or rack.lost
                                                  or self.timers.armed(T.REO)):
            if self.rack_detect(now):
                why = "fast_retransmit"
        if self.in_recovery and self.prr_on() and rack is not None:
            # RFC 6937's DeliveredData: SND.UNA's advance plus the change in
            # SACKed bytes (negative when the ACK covers what was SACKed).
            self.prr(acked + rack.sacked - sacked0)
        if cc.wants_samples and rack is not None:
            self.sample(rack, rack.marked - marked, now)
        elif self.cfg.pacing and self.conn.rtt.srtt:
            cc.pace(self.conn.rtt.srtt)

        if self.conn.trace.on and (cc.cwnd != cwnd0 or cc.ssthresh != ssthresh0):
            self.trace_cwnd(why)

    def _undo(self, how: str) -> str:
        """The episode's retransmissions were spurious: its window back."""
        undo = self.undo
        assert undo is not None
        self.undo = None
        self.cc.undo(undo.window, undo.ssthresh)
        self.conn.trace.count("tcp", "undo_" + how)
        if self.in_recovery:
            # Nothing was lost: recovery is over, and its cut with it (no
            # PRR ending at ssthresh: Linux goes back to Open the same way).
            self.in_recovery = False
            self.dupacks = 0
            if self.rack is not None:
                self.rack.recovery_over()
        else:
            self.snd.resume()  # a spurious RTO: no going back over what was not lost
        return "undo"

    def retransmitted(self, seq: int, n: int, now: float) -> None:
        """Bytes sent again during a loss episode (the connection reports all)."""
        undo = self.undo
        if undo is not None:
            undo.retransmitted(seq, n, tsval(self.hs.ts_base, now))

    def prr_on(self) -> bool:
        """PRR sets the window in SACK recovery (not BBR's: it has its own)."""
        return self.cfg.prr and self.sb is not None and not self.cc.wants_samples

    def prr(self, delivered: int) -> None:
        """RFC 6937 on an ACK in recovery: the window is what is in the
        network plus what PRR lets out now."""
        snd = self.snd
        if self.rack_on and self.rack is not None:
            pipe = self.rack.in_flight()
        else:
            sb = self.sb
            assert sb is not None
            hr = seq_diff(self.high_rxt, snd.snd_una)
            pipe = sb.pipe(seq_diff(snd.snd_max, snd.snd_una), hr if hr > 0 else 0,
                           self.hs.mss, self.cfg.dupack_threshold)
        self.cc.prr(delivered, pipe, snd.bytes_sent - self.prr_base)

    def basis(self) -> int:
        """What a loss's new window is a fraction of (``TcpConfig.loss_window``)."""
        return self.cc.cwnd if self.cfg.loss_window == "cwnd" else self.snd.flight()

    def sample(self, rack: Rack, lost: int, now: float) -> None:
        """The ACK's delivery-rate sample, to a controller that wants it (BBR)."""
        rs = rack.rate.sample(self.conn.rtt.min_rtt)
        if rs is None and not lost:
            return
        snd = self.snd
        if self.in_recovery:
            phase = 1                      # bbr.RECOVERY
        elif seq_gt(self.recover, snd.snd_una) and self.recover != snd.iss:
            phase = 2                      # bbr.LOSS: the RTO's go-back-N is under way
        else:
            phase = 0
        inflight = (rack.in_flight() if self.rack_on
                    else seq_diff(snd.snd_nxt, snd.snd_una) - self.sacked())
        cc = self.cc
        cc.on_sample(rs, inflight, lost, phase, self.conn.rtt.srtt, now)
        if cc.holds_back():
            rack.rate.mark_app_limited(inflight)
        if self.conn.trace.on:
            seen = cc.model_key()
            if seen != self.model_seen:
                self.model_seen = seen
                self.conn.trace.event("tcp", "bbr", conn=self.conn.name, cwnd=cc.cwnd,
                                      pacing_rate=round(cc.pacing_rate), **cc.info())

    def _may_enter(self) -> bool:
        """Not twice for one flight: without SACK only once SND.UNA passed
        ``recover`` (RFC 6582 4.1); with SACK once it reached it (the
        scoreboard tells a new loss from an old one, as Linux)."""
        una = self.snd.snd_una
        if self.recover == self.snd.iss or seq_gt(una, self.recover):
            return True
        return una == self.recover and self.hs.sack_ok

    def _enter(self, now: float) -> None:
        """Fast retransmit; fast recovery (RFC 6582) or SACK loss recovery
        (RFC 6675 step 4)."""
        snd = self.snd
        una = snd.snd_una
        flight = snd.flight()
        sack = self.hs.sack_ok and self.sb is not None
        self.recover = snd.snd_max
        self.in_recovery = True
        self.partial_acks = 0
        basis = self.basis()
        cc = self.cc
        if self.cfg.undo and (self.hs.ts_ok or sack):
            self.undo = Undo(cc.cwnd, cc.ssthresh)
        cc.enter_fast_recovery(basis, now, sack)
        if sack and self.prr_on():
            # RecoverFS: what ssthresh is a fraction of, so that PRR brings
            # the flight down to it over one round (Linux: prior_cwnd).
            self.prr_base = snd.bytes_sent
            self.cc.prr_start(basis)
        sb = self.sb
        if self.rack_on:
            self._resend_lost(now, "fast")
        elif sack and sb is not None:
            if seq_gt(self.high_rxt, una):
                # The last recovery resent these bytes already (new data it
                # sent was lost and resent); this one started on ACKs sent
                # before that copy arrived. Keep HighRxt: no second copy.
                self.rescue_rxt = self.high_rxt
            else:
                # (4.3) resend the first segment presumed lost; HighRxt and
                # RescueRxt both start at its end.
                first = sb.ranges[0][0] if sb.ranges else flight
                n = self.hs.mss
                if first < n:
                    n = first
                snd.retransmit(una, n, now, "fast")
                self.high_rxt = self.rescue_rxt = seq_add(una, n)
        else:
            snd.retransmit_head(now, "fast")
        self.timers.start(T.RTO, now + self.conn.rtt.rto)

    def _exit(self, now: float) -> None:
        self.in_recovery = False
        self.dupacks = 0
        self.cc.exit_recovery(self.snd.flight(), now, self.hs.sack_ok)
        if self.prr_on():
            self.cc.prr_end()
        if self.rack is not None:
            self.rack.recovery_over()

    # ---- RACK (RFC 8985 6) ------------------------------------------------------------

    def rack_detect(self, now: float) -> bool:
        """Mark what RACK finds lost, (re)arm the reordering timer for what
        may soon be, and start recovery on a loss. True if it started."""
        rack = self.rack
        assert rack is not None
        wnd = rack.reo_wnd(self.in_recovery, self.conn.rtt.srtt, self.hs.mss,
                           self.cfg.dupack_threshold)
        wait = rack.detect(now, wnd)
        if wait:
            # Linux waits 2 ms more (TCP_TIMEOUT_MIN), so that a timer
            # never fires a hair too early.
            self.timers.start(T.REO, now + wait + 0.002)
        else:
            self.timers.stop(T.REO)
        if rack.lost and not self.in_recovery:
            if self._may_enter():
                self._enter(now)
                return True
            # Recovering from an RTO (SND.UNA short of ``recover``): a
            # go-back copy found lost goes again now, one per ACK, as
            # Linux resends what RACK marks in its Loss state.
            self._resend_lost(now, "rack", below_nxt=True)
        return False

    def _resend_lost(self, now: float, reason: str, below_nxt: bool = False) -> int:
        """Send again (at most one MSS of) the first segment RACK marked lost
        and not yet resent; ``below_nxt``: only one SND.NXT has passed (go-back
        N sends the rest). Returns the sequence space sent (0: nothing)."""
        assert self.rack is not None
        lost = self.rack.first_lost()
        snd = self.snd
        if lost is None or below_nxt and lost[0] >= seq_diff(snd.snd_nxt, snd.snd_una):
            return 0
        off, n = lost
        mss = self.hs.mss
        return snd.retransmit(seq_add(snd.snd_una, off), n if n < mss else mss, now, reason)

    def on_reo_timeout(self, now: float) -> None:
        """The reordering window passed (RFC 8985 6.3): look again, and
        resend what is now lost."""
        self.timers.stop(T.REO)
        if not self.rack_on or self.snd.snd_max == self.snd.snd_una:
            return
        self.conn.trace_timer("reo")
        if self.rack_detect(now) and self.conn.trace.on:
            self.trace_cwnd("fast_retransmit")
        self.snd.output(now)

    def on_timeout(self, now: float) -> None:
        """The RTO fired on data: the loss window, and recovery starts over."""
        snd = self.snd
        cc = self.cc
        episode = self.in_recovery or (self.recover != snd.iss
                                       and seq_lt(snd.snd_una, self.recover))
        if self.cfg.undo and (self.hs.ts_ok or self.hs.sack_ok) and (
                self.undo is None or not episode):
            self.undo = Undo(cc.cwnd, cc.ssthresh)  # (an RTO within an episode keeps its)
        cc.on_timeout(self.basis(), now)
        if self.conn.trace.on:
            self.trace_cwnd("rto")
        self.in_recovery = False
        self.dupacks = 0
        self.recover = snd.snd_max  # RFC 6675 5.1, RFC 6582 4
        self.high_rxt = snd.snd_una
        if self.sb is not None:
            # RFC 2018 8: after a timeout, prior SACK information is not
            # trusted (the receiver may have discarded it); ACKs rebuild it.
            self.sb.clear()
        if self.rack is not None:
            self.rack.timed_out()
            self.timers.stop(T.REO)

    def trace_cwnd(self, why: str) -> None:
        self.conn.trace.event("tcp", "cwnd", conn=self.conn.name, cwnd=self.cc.cwnd,
                              ssthresh=self.cc.ssthresh, why=why)

    # ---- output during SACK recovery ---------------------------------------------------

    def sack_output(self, now: float, force: bool) -> None:
        """RFC 6675 step (C): while ``cw - pipe >= SMSS``, send what
        NextSeg picks: lost holes (1), new data (2), other holes (3), and
        once per recovery the rescue retransmission (4). With RACK, as
        Linux: what RACK marked lost, then new data."""
        if self.rack_on:
            self._rack_output(now, force)
            return
        sb = self.sb
        assert sb is not None
        snd = self.snd
        una = snd.snd_una
        mss = self.hs.mss
        dt = self.cfg.dupack_threshold
        end = seq_diff(snd.snd_max, una)
        hr = seq_diff(self.high_rxt, una)
        if hr < 0:
            hr = 0
        cw = self.cc.cwnd
        pipe = sb.pipe(end, hr, mss, dt)
        for lost_only in (True, False):
            while cw - pipe >= mss:
                hole = sb.next_hole(hr, mss, dt, lost_only)
                if hole is None:
                    break
                off, n = hole
                snd.retransmit(seq_add(una, off), n, now, "sack")
                hr = off + n
                self.high_rxt = seq_add(una, hr)
                pipe += n
            if lost_only and cw - pipe >= mss:
                pipe += snd.send_data(now, force, pipe - seq_diff(snd.snd_nxt, una))
        if cw - pipe >= mss and seq_gt(una, self.rescue_rxt):
            # Rule (4), the rescue: one segment ending at the highest
            # unSACKed byte, so a lost tail does not wait for the RTO (not
            # when that byte was retransmitted already).
            end = seq_diff(snd.snd_max, una)
            top = sb.high()
            if end > top:
                lo, hi = top, end
            else:
                holes = sb.holes(end)
                if not holes:
                    return
                lo, hi = holes[-1]
            if hi <= hr:
                return
            start = hi - mss if hi - mss > lo else lo
            if start < hr:
                start = hr
            snd.retransmit(seq_add(una, start), hi - start, now, "rescue")
            self.rescue_rxt = self.recover

    def _rack_output(self, now: float, force: bool) -> None:
        rack = self.rack
        assert rack is not None
        snd = self.snd
        una = snd.snd_una
        mss = self.hs.mss
        cw = self.cc.cwnd
        pace = self.cc.pacing_rate
        pipe = rack.in_flight()
        while cw - pipe >= mss:
            if pace and snd.pace_wait(now):
                return
            sent = self._resend_lost(now, "rack")
            if not sent:
                break
            pipe += sent
        if cw - pipe >= mss:
            snd.send_data(now, force, pipe - seq_diff(snd.snd_nxt, una))
