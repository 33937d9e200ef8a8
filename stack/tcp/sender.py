"""The sending half of a connection: output decisions (windows, Nagle, sender
SWS avoidance), ACK processing, RTT estimation (RFC 6298, one segment timed
on the real clock per round trip; RFC 7323 timestamps after a retransmission), loss recovery (RFC 6675 with SACK, RFC 6582 NewReno
without), retransmission (RTO with Karn's rule and backoff), the persist
timer and keepalive probes.

A mixin of :class:`~stack.tcp.conn.TcpConnection`; it shares its attributes.
Sending is driven by ACKs and user calls, never by a timer tick: every call
to :meth:`_output` sends as much as the windows allow at once.
"""

from __future__ import annotations

import errno

from stack.tcp.sack import Scoreboard
from stack.tcp.seq import HALF, MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from stack.tcp.states import SENDING
from stack.wire.tcp import ACK, FIN, PSH, SYN


class Sender:
    # ---- output ------------------------------------------------------------

    def _output(self, now: float, force: bool = False) -> None:
        """Send new (or go-back-N) data and the FIN as the windows allow;
        during SACK recovery, the holes first (RFC 6675 NextSeg).

        ``force`` (persist timer expiry) overrides Nagle and sender SWS
        avoidance for one segment.
        """
        if self.state not in SENDING or not self._sndbuf and not self._fin_pending:
            return  # (nothing to send or resend)
        sb = self._sb
        if self._in_recovery and sb is not None:
            self._sack_recovery_output(now, force)  # (_enter_recovery made sb for SACK only)
        elif sb is None or not sb.ranges:
            self._send_data(now, force, 0)
        else:
            # SACKed bytes have left the network (RFC 6675 pipe, nothing lost).
            una = self.snd_una
            self._send_data(now, force, -sb.sacked_below(seq_diff(self.snd_nxt, una)))

    def _send_data(self, now: float, force: bool, adj: int) -> int:
        """The new-data loop (also go-back-N after an RTO); returns the bytes
        sent. ``adj`` corrects ``snd_nxt - snd_una`` into the bytes that
        count against cwnd (SACKed bytes out, lost bytes out)."""
        buf = self._sndbuf
        mss = self.mss
        seg_max = mss
        tso = self._host.segment_max
        if tso is not None and tso > self._mss_wire + 20:
            # The link cuts segments (TSO): hand it whole MSS multiples.
            k = (tso - 20 - (self._mss_wire - mss)) // mss
            if k > 1:
                seg_max = k * mss
        sb = self._sb
        sacked = sb is not None and bool(sb.ranges)
        una = self.snd_una
        data_seq = self._snd_data_seq
        nbuf = len(buf)
        wnd = self.snd_wnd
        cwnd = self.cc.cwnd
        nxt = self.snd_nxt
        snd_max = self.snd_max
        total = 0
        remaining = 0
        while True:
            behind = nxt != snd_max and ((nxt - snd_max) & MASK) >= HALF  # going back
            limit = 0  # where a SACKed range cuts a go-back-N segment short
            if sacked and behind:
                # Going back after an RTO: skip what the receiver reported
                # holding since (RFC 6675 5.1, "filling in" the holes).
                off_u = seq_diff(nxt, una)
                r = sb.first_after(off_u)
                if r is not None:
                    if r[0] <= off_u:
                        end = seq_add(una, r[1])
                        nxt = self.snd_nxt = end if seq_lt(end, snd_max) else snd_max
                        adj = -sb.sacked_below(seq_diff(nxt, una))
                        continue
                    limit = r[0] - off_u
            off = seq_diff(nxt, data_seq)
            remaining = nbuf - off
            if remaining > 0:
                flight = (nxt - una) & MASK
                usable_w = wnd - flight
                usable_c = cwnd - flight - adj
                usable = usable_w if usable_w < usable_c else usable_c
                avail = limit if 0 < limit < remaining else remaining
                n = avail if avail < seg_max else seg_max
                if usable < n:
                    n = usable
                    if n > mss:
                        n -= n % mss  # no short segment cut from the middle
                if n <= 0:
                    break
                if n < mss and not force:
                    if n < avail:
                        # Limited by a window. Wait for the ACK clock unless
                        # the peer's window allows half its maximum (RFC 1122
                        # 4.2.3.4).
                        if usable_c <= usable_w or n < (self.max_snd_wnd >> 1):
                            break
                    elif (avail == remaining and not self.nodelay and not self._fin_pending
                          and seq_gt(self._snd_sml, una)
                          and seq_le(self._snd_sml, nxt)):
                        # Nagle, Minshall's variant (as Linux): at most one
                        # unacknowledged small segment. (After an RTO's go
                        # back, bytes past snd_nxt are not in flight.)
                        break
                force = False
                fin = self._fin_pending and n == remaining
                flags = ACK | PSH | FIN if fin else (ACK | PSH if n == remaining else ACK)
                end = (nxt + n + fin) & MASK
                self._xmit(nxt, flags, memoryview(buf)[off:off + n], now)
                total += n
                if behind:
                    self._note_retransmit("rto", nxt, n)
                elif self._rtt_seq is None:
                    # Time this segment with the real clock (timestamps
                    # tick in ms: a LAN's RTT would measure 0).
                    self._rtt_seq = end
                    self._rtt_time = now
                nxt = self.snd_nxt = end
                if ((snd_max - end) & MASK) >= HALF:  # end > snd_max
                    snd_max = self.snd_max = end
                if n % mss:
                    self._snd_sml = end  # (a TSO segment's short tail counts too)
                if self._rto_at is None:
                    self._rto_at = now + self.rto
                if fin:
                    break
                continue
            if self._fin_pending and nxt == self._fin_seq:
                self._xmit(nxt, ACK | FIN, b"", now)
                end = seq_add(nxt, 1)
                if behind:
                    self._note_retransmit("rto", nxt, 0)
                self.snd_nxt = end
                if seq_gt(end, snd_max):
                    self.snd_max = end
                if self._rto_at is None:
                    self._rto_at = now + self.rto
            break
        if remaining > 0 and self._rto_at is None and self._persist_at is None:
            # Data waits on the peer's window and nothing is in flight to
            # bring an ACK: probe the window later.
            self._persist_at = now + self._persist_interval()
        return total

    def _sack_recovery_output(self, now: float, force: bool) -> None:
        """RFC 6675 step (C): while ``cwnd - pipe >= SMSS``, send what
        NextSeg picks: lost holes (1), new data (2), other holes (3), and
        once per recovery the rescue retransmission (4)."""
        sb = self._sb
        una = self.snd_una
        mss = self.mss
        dt = self._cfg.dupack_threshold
        end = seq_diff(self.snd_max, una)
        hr = seq_diff(self._high_rxt, una)
        if hr < 0:
            hr = 0
        cwnd = self.cc.cwnd
        pipe = sb.pipe(end, hr, mss, dt)
        for lost_only in (True, False):
            while cwnd - pipe >= mss:
                hole = sb.next_hole(hr, mss, dt, lost_only)
                if hole is None:
                    break
                off, n = hole
                self._retransmit(seq_add(una, off), n, now, "sack")
                hr = off + n
                self._high_rxt = seq_add(una, hr)
                pipe += n
            if lost_only and cwnd - pipe >= mss:
                pipe += self._send_data(now, force, pipe - seq_diff(self.snd_nxt, una))
        if cwnd - pipe >= mss and seq_gt(una, self._rescue_rxt):
            # Rule (4), the rescue: one segment ending at the highest
            # unSACKed byte, so a lost tail does not wait for the RTO (not
            # when that byte was retransmitted already).
            end = seq_diff(self.snd_max, una)
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
            self._retransmit(seq_add(una, start), hi - start, now, "rescue")
            self._rescue_rxt = self._recover

    def _persist_interval(self) -> float:
        t = self.rto * (1 << self._persist_backoff)
        return t if t < self._cfg.rto_max else self._cfg.rto_max

    def _retransmit(self, seq: int, n: int, now: float, reason: str) -> None:
        """Resend ``n`` bytes of sequence space from ``seq`` (data, and the
        FIN when the range covers it) without moving ``snd_nxt``."""
        self._rtt_seq = None  # Karn: no RTT sample across a retransmission
        self._rtt_karn = True
        off = seq_diff(seq, self._snd_data_seq)
        if off < 0:
            return
        avail = len(self._sndbuf) - off
        k = n if n < avail else avail
        if k < 0:
            k = 0
        fin = (k < n and self._fin_pending and seq_gt(self.snd_max, self._fin_seq)
               and seq_add(seq, k) == self._fin_seq)
        if k == 0 and not fin:
            return
        flags = ACK | FIN if fin else (ACK | PSH if k == avail else ACK)
        self._xmit(seq, flags, memoryview(self._sndbuf)[off:off + k], now)
        self._note_retransmit(reason, seq, k)
        if self._rto_at is None:
            self._rto_at = now + self.rto

    def _note_retransmit(self, reason: str, seq: int, n: int, **extra) -> None:
        """Count a segment sent again and trace it (the one place that does)."""
        self._trace.count("tcp", "retrans_segs")
        if self._trace.on:
            self._trace.event("tcp", "retransmit", conn=self.name, reason=reason, seq=seq,
                              len=n, **extra)

    def _retransmit_head(self, now: float, reason: str) -> None:
        """Resend one segment from ``snd_una`` (fast retransmit, RTO, partial ACK)."""
        una = self.snd_una
        self._rtt_seq = None  # Karn: no RTT sample across a retransmission
        self._rtt_karn = True
        if seq_lt(una, self._snd_data_seq):
            return  # the SYN itself: handled by the handshake code
        off = seq_diff(una, self._snd_data_seq)
        avail = len(self._sndbuf) - off
        n = avail if avail < self.mss else self.mss
        if n > self.snd_wnd:
            # Never past the peer's window; with the window closed one byte
            # goes, which the peer answers like a window probe.
            n = self.snd_wnd if self.snd_wnd > 0 else 1
        if n > avail:
            n = avail
        if n < 0:
            n = 0
        fin = self._fin_pending and n == avail and seq_gt(self.snd_max, self._fin_seq)
        if n == 0 and not fin:
            return
        flags = ACK | FIN if fin else (ACK | PSH if n == avail else ACK)
        self._xmit(una, flags, memoryview(self._sndbuf)[off:off + n], now)
        self._note_retransmit(reason, una, n, rto=round(self.rto, 6))
        end = seq_add(una, n + fin)
        if seq_gt(end, self.snd_nxt):
            self.snd_nxt = end
        if seq_gt(end, self.snd_max):
            self.snd_max = end

    # ---- ACK processing (RFC 9293 3.10.7.4, fifth step; RFC 5681, 6675, 6582) --

    def _rcv_ack(self, seg, ack: int, dup_candidate: bool, now: float) -> None:
        """An acceptable ACK (``snd_una - max_snd_wnd <= ack <= snd_max``)."""
        una = self.snd_una
        acked = seq_diff(ack, una)
        win = seg.window << self._snd_wscale
        cc = self.cc
        cwnd0 = cc.cwnd
        ssthresh0 = cc.ssthresh
        why = "ack"
        sb = self._sb
        prior_flight = 0
        if acked > 0:
            prior_flight = seq_diff(self.snd_nxt, una)
            if sb is not None and sb.ranges:
                prior_flight -= sb.sacked_below(prior_flight)
                sb.advance(acked)
            self.snd_una = ack
            if seq_gt(ack, self.snd_nxt):
                self.snd_nxt = ack
            n = seq_diff(ack, self._snd_data_seq)
            if n > 0:
                buf = self._sndbuf
                if n > len(buf):
                    n = len(buf)
                if n:
                    before_w = self.sndbuf_size - len(buf) >= self._snd_lowat
                    del buf[:n]
                    self._snd_data_seq = seq_add(self._snd_data_seq, n)
                    if not before_w and self.sndbuf_size - len(buf) >= self._snd_lowat:
                        self._dirty = True
            if self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
                # One timed segment per round trip, on the real clock.
                self._rtt_sample(now - self._rtt_time, now)
                self._rtt_seq = None
                self._rtt_karn = False
            elif self._rtt_karn and self._ts_ok:
                # Since a retransmission (Karn) only TSecr can tell which
                # copy was acknowledged (RFC 7323 4.1): a sample from it, in
                # its ms ticks, per ACK of new data (TSecr 0: nothing echoed).
                ts = seg.timestamps
                if ts is not None and ts[1]:
                    d = (self._ts_base + int(now * 1000) - ts[1]) & MASK
                    if d < HALF:
                        self._rtt_sample(d / 1000, now)
            self._retries = 0
            self._probes = 0

        # SACK blocks, relative to the new SND.UNA; D-SACKs and blocks
        # outside what we sent are ignored (RFC 2883, RFC 6675 Update()).
        newly = 0
        if self._sack_ok and seg.sack and acked >= 0:
            if sb is None:
                sb = self._sb = Scoreboard(self._cfg.sack_max_ranges)
            end = seq_diff(self.snd_max, ack)
            for left, right in seg.sack:
                lo = seq_diff(left, ack)
                hi = seq_diff(right, ack)
                if 0 < hi <= end and lo < hi:
                    newly += sb.add(lo, hi)

        restart_timer = True
        if acked > 0:
            if self._in_recovery:
                if seq_ge(ack, self._recover):
                    self._exit_recovery(now)
                    why = "recovery_exit"
                elif self._sack_ok:
                    pass  # a partial ACK: _output sends what NextSeg picks
                elif cc.partial_ack_stays:
                    # NewReno (RFC 6582 3.2 step 5): deflate by what was
                    # acknowledged, add back one MSS if at least one was,
                    # resend the next hole; restart the timer only the first time.
                    cc.cwnd -= acked
                    if acked >= self.mss:
                        cc.cwnd += self.mss
                    if cc.cwnd < self.mss:
                        cc.cwnd = self.mss
                    self._partial_acks += 1
                    restart_timer = self._partial_acks == 1
                    why = "partial_ack"
                    self._retransmit_head(now, "partial")
                else:
                    self._exit_recovery(now)
                    why = "recovery_exit"
            else:
                self._dupacks = 0
                cwnd = cc.cwnd
                if (2 * prior_flight >= cwnd if cwnd < cc.ssthresh
                        else prior_flight + 2 * self.mss >= cwnd):
                    cc.on_ack(acked, now, self.srtt)
            if ack == self.snd_max:
                self._rto_at = None
            elif restart_timer:
                self._rto_at = now + self.rto

        if self._sack_ok:
            # RFC 6675 2: an ACK that SACKs new data is a duplicate ACK.
            dup = newly > 0
        else:
            dup = (acked == 0 and dup_candidate and win == self.snd_wnd
                   and self._rto_at is not None)
        if dup and self.snd_max != self.snd_una:
            if self._in_recovery:
                if not self._sack_ok:
                    cc.cwnd += self.mss  # RFC 5681 3.2 (4): inflate
                    why = "dupack"
            else:
                self._dupacks += 1
                dt = self._cfg.dupack_threshold
                if self._sack_ok:
                    go = self._dupacks >= dt or sb.is_lost(0, self.mss, dt)
                else:
                    go = self._dupacks == dt
                if go and (self._recover == self.iss or seq_gt(self.snd_una, self._recover)):
                    self._enter_recovery(now)
                    why = "fast_retransmit"

        if self._trace.on and (cc.cwnd != cwnd0 or cc.ssthresh != ssthresh0):
            self._trace_cwnd(why)

        # Window update (RFC 9293 3.10.7.4): only from newer segments.
        seq = seg.seq
        wl1 = self.snd_wl1
        if seq_lt(wl1, seq) or (wl1 == seq and seq_ge(ack, self.snd_wl2)):
            self.snd_wnd = win
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if win > self.max_snd_wnd:
                self.max_snd_wnd = win
            if win and self._persist_at is not None:
                self._persist_at = None
                self._persist_backoff = 0

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit; fast recovery (RFC 6582) or SACK loss recovery
        (RFC 6675 step 4)."""
        una = self.snd_una
        flight = seq_diff(self.snd_max, una)
        cc = self.cc
        self._recover = self.snd_max
        self._in_recovery = True
        self._partial_acks = 0
        cc.on_loss(flight, now)
        sb = self._sb
        if self._sack_ok and sb is not None:
            if seq_gt(self._high_rxt, una):
                # The last recovery resent these bytes already (new data it
                # sent was lost and resent); this one started on ACKs sent
                # before that copy arrived. Keep HighRxt: no second copy.
                self._rescue_rxt = self._high_rxt
            else:
                # (4.3) resend the first segment presumed lost; HighRxt and
                # RescueRxt both start at its end.
                first = sb.ranges[0][0] if sb.ranges else flight
                n = self.mss
                if first < n:
                    n = first
                self._retransmit(una, n, now, "fast")
                self._high_rxt = self._rescue_rxt = seq_add(una, n)
        else:
            cc.cwnd = cc.ssthresh + 3 * self.mss  # RFC 5681 3.2 (3)
            self._retransmit_head(now, "fast")
        self._rto_at = now + self.rto

    def _exit_recovery(self, now: float) -> None:
        cc = self.cc
        self._in_recovery = False
        self._dupacks = 0
        if not self._sack_ok:
            if cc.partial_ack_stays:
                # RFC 6582 3.2 step 3, option (1): no burst after recovery.
                flight = seq_diff(self.snd_max, self.snd_una)
                mss = self.mss
                w = (flight if flight > mss else mss) + mss
                cc.cwnd = cc.ssthresh if cc.ssthresh < w else w
            else:
                cc.cwnd = cc.ssthresh  # RFC 5681 3.2 (6)
        cc.on_recovery_exit(now)

    def _trace_cwnd(self, why: str) -> None:
        self._trace.event("tcp", "cwnd", conn=self.name, cwnd=self.cc.cwnd,
                          ssthresh=self.cc.ssthresh, why=why)

    def _rtt_sample(self, r: float, now: float) -> None:
        """RFC 6298 section 2."""
        cfg = self._cfg
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        rto = self.srtt + max(cfg.clock_granularity, 4 * self.rttvar)
        self.rto = min(max(rto, cfg.rto_min), cfg.rto_max)
        if self._trace.on:
            self._trace.event("tcp", "rtt", conn=self.name, sample=round(r, 6),
                              srtt=round(self.srtt, 6), rttvar=round(self.rttvar, 6),
                              rto=round(self.rto, 6))

    # ---- timers --------------------------------------------------------------

    def _on_rto(self, now: float) -> None:
        cfg = self._cfg
        self._rto_at = None
        self._retries += 1
        handshake = not self._synced
        limit = (cfg.synack_retries if self._passive else cfg.syn_retries) if handshake \
            else cfg.max_retries
        if (not handshake and self.snd_wnd == 0 and self._retries > limit
                and now - self._last_rcv <= cfg.rto_max and not self._user_closed):
            # The peer closed its window on data in flight but is still
            # answering: our retransmissions are window probes; keep going
            # (as Linux does), unless nobody owns the connection any more.
            self._retries = limit
        if self._retries > limit:
            self._fail(self._soft_error or errno.ETIMEDOUT, "timer retransmit (retries exhausted)",
                       now)
            return
        self.rto = min(self.rto * 2, cfg.rto_max)
        if self._trace.on:
            self._trace.event("tcp", "timer", conn=self.name, timer="rto", retries=self._retries,
                              rto=round(self.rto, 6))
        if handshake:
            self._rtt_seq = None
            self._syn_retransmitted = True
            self._send_syn(now)
            self._note_retransmit("rto", self.iss, 0, rto=round(self.rto, 6))
            self._rto_at = now + self.rto
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        self.cc.on_timeout(flight, now)
        if self._trace.on:
            self._trace_cwnd("rto")
        self._in_recovery = False
        self._dupacks = 0
        self._recover = self.snd_max  # RFC 6675 5.1, RFC 6582 4
        self._high_rxt = self.snd_una
        if self._sb is not None:
            # RFC 2018 8: after a timeout, prior SACK information is not
            # trusted (the receiver may have discarded it); ACKs rebuild it.
            self._sb.clear()
        # Go back N: resend from snd_una; ACKs clock out the rest.
        self.snd_nxt = self.snd_una
        self._retransmit_head(now, "rto")
        self._rto_at = now + self.rto

    def _on_persist(self, now: float) -> None:
        self._persist_at = None
        self._probes += 1
        cfg = self._cfg
        if self._probes > cfg.max_retries:
            self._fail(errno.ETIMEDOUT, "timer persist (probes unanswered)", now)
            return
        if self._user_closed and self._persist_backoff >= cfg.orphan_retries:
            # An orphan (closed by the application) whose peer keeps its
            # window shut while answering every probe: nobody waits for the
            # data, so give up like Linux (tcp_orphan_retries), counting the
            # backoffs, which the peer's answers do not reset. RFC 9293
            # 3.8.6.1 forbids this only while a user owns the connection.
            self._trace.count("tcp", "orphan_aborts")
            self._fail(errno.ETIMEDOUT, "timer persist (orphan retries exhausted)", now, rst=True)
            return
        if self._trace.on:
            self._trace.event("tcp", "timer", conn=self.name, timer="persist",
                              probes=self._probes)
        usable = self.snd_wnd - seq_diff(self.snd_nxt, self.snd_una)
        if usable > 0:
            # The window is open but too small for SWS avoidance: send anyway.
            self._output(now, force=True)
        else:
            # Zero-window probe, as Linux sends it: an empty segment with an
            # old sequence number (snd_una - 1), which any receiver must
            # answer with an ACK carrying its current window. Unlike a probe
            # byte past the window it puts nothing in flight, so it never
            # meets the retransmission timer.
            self._xmit(seq_add(self.snd_una, -1), ACK, b"", now)
        if self._rto_at is None and self._persist_at is None:
            off = seq_diff(self.snd_nxt, self._snd_data_seq)
            if off < len(self._sndbuf):
                self._persist_backoff += 1
                self._persist_at = now + self._persist_interval()

    def _on_keepalive(self, now: float) -> None:
        self._keepalive_at = None
        if not self.keepalive or not self._synced:
            return
        if self.snd_max != self.snd_una or len(self._sndbuf):
            # Data outstanding: the retransmission timer watches the peer.
            self._keepalive_at = now + self.keepalive_idle
            return
        if self._ka_probes >= self.keepalive_count:
            self._fail(errno.ETIMEDOUT, "timer keepalive (probes unanswered)", now, rst=True)
            return
        self._ka_probes += 1
        if self._trace.on:
            self._trace.event("tcp", "timer", conn=self.name, timer="keepalive",
                              probes=self._ka_probes)
        # seq = snd_una - 1: an old byte, which makes the peer answer with an ACK.
        self._xmit(seq_add(self.snd_una, -1), ACK, b"", now)
        self._keepalive_at = now + self.keepalive_interval

    # ---- SYN -----------------------------------------------------------------

    def _send_syn(self, now: float) -> None:
        """SYN (active) or SYN,ACK (passive or simultaneous open) at ``iss``."""
        flags = SYN | ACK if self._irs_known else SYN
        self._xmit(self.iss, flags, b"", now, syn=True)
        end = seq_add(self.iss, 1)
        if seq_gt(end, self.snd_nxt):
            self.snd_nxt = end
        if seq_gt(end, self.snd_max):
            self.snd_max = end
