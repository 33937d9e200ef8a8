"""The sending half of a connection: output decisions (windows, Nagle, sender
SWS avoidance), ACK processing, RTT estimation (RFC 6298), retransmission
(RTO with Karn's rule and backoff, fast retransmit), the persist timer and
keepalive probes.

A mixin of :class:`~stack.tcp.conn.TcpConnection`; it shares its attributes.
Sending is driven by ACKs and user calls, never by a timer tick: every call
to :meth:`_output` sends as much as the windows allow at once.
"""

from __future__ import annotations

import errno

from stack.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_le, seq_lt
from stack.tcp.states import SENDING
from stack.wire.tcp import ACK, FIN, PSH, SYN


class Sender:
    # ---- output ------------------------------------------------------------

    def _output(self, now: float, force: bool = False) -> None:
        """Send new (or go-back-N) data and the FIN as the windows allow.

        ``force`` (persist timer expiry) overrides Nagle and sender SWS
        avoidance for one segment.
        """
        if self.state not in SENDING:
            return
        buf = self._sndbuf
        mss = self.mss
        remaining = 0
        while True:
            nxt = self.snd_nxt
            off = seq_diff(nxt, self._snd_data_seq)
            remaining = len(buf) - off
            if remaining > 0:
                wnd = self.snd_wnd
                cwnd = self.cc.cwnd
                in_flight = seq_diff(nxt, self.snd_una)
                usable = (wnd if wnd < cwnd else cwnd) - in_flight
                n = remaining if remaining < mss else mss
                if usable < n:
                    n = usable
                if n <= 0:
                    break
                if n < mss and not force:
                    if n < remaining:
                        # Limited by a window. Wait for the ACK clock unless
                        # the peer's window allows half its maximum (RFC 1122
                        # 4.2.3.4).
                        if cwnd <= wnd or n < (self.max_snd_wnd >> 1):
                            break
                    elif (not self.nodelay and not self._fin_pending
                          and seq_gt(self._snd_sml, self.snd_una)
                          and seq_le(self._snd_sml, nxt)):
                        # Nagle, Minshall's variant (as Linux): at most one
                        # unacknowledged small segment. (After an RTO's go
                        # back, bytes past snd_nxt are not in flight.)
                        break
                force = False
                fin = self._fin_pending and n == remaining
                flags = ACK | PSH | FIN if fin else (ACK | PSH if n == remaining else ACK)
                end = seq_add(nxt, n + fin)
                retrans = seq_lt(nxt, self.snd_max)
                self._xmit(nxt, flags, memoryview(buf)[off:off + n], now)
                if retrans:
                    self._trace.count("tcp", "retrans_segs")
                    if self._trace.on:
                        self._trace.event("tcp", "retransmit", conn=self.name, reason="rto",
                                          seq=nxt, len=n)
                elif self._rtt_seq is None:
                    self._rtt_seq = end
                    self._rtt_time = now
                self.snd_nxt = end
                if seq_gt(end, self.snd_max):
                    self.snd_max = end
                if n < mss:
                    self._snd_sml = end
                if self._rto_at is None:
                    self._rto_at = now + self.rto
                if fin:
                    break
                continue
            if self._fin_pending and nxt == self._fin_seq:
                self._xmit(nxt, ACK | FIN, b"", now)
                end = seq_add(nxt, 1)
                if seq_lt(nxt, self.snd_max):
                    self._trace.count("tcp", "retrans_segs")
                self.snd_nxt = end
                if seq_gt(end, self.snd_max):
                    self.snd_max = end
                if self._rto_at is None:
                    self._rto_at = now + self.rto
            break
        if remaining > 0 and self._rto_at is None and self._persist_at is None:
            # Data waits on the peer's window and nothing is in flight to
            # bring an ACK: probe the window later.
            self._persist_at = now + self._persist_interval()

    def _persist_interval(self) -> float:
        t = self.rto * (1 << self._persist_backoff)
        return t if t < self._cfg.rto_max else self._cfg.rto_max

    def _retransmit_head(self, now: float, reason: str) -> None:
        """Resend one segment from ``snd_una`` (fast retransmit, RTO, partial ACK)."""
        una = self.snd_una
        self._rtt_seq = None  # Karn: no RTT sample across a retransmission
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
        self._trace.count("tcp", "retrans_segs")
        if self._trace.on:
            self._trace.event("tcp", "retransmit", conn=self.name, reason=reason, seq=una,
                              len=n, rto=round(self.rto, 6))
        end = seq_add(una, n + fin)
        if seq_gt(end, self.snd_nxt):
            self.snd_nxt = end
        if seq_gt(end, self.snd_max):
            self.snd_max = end

    # ---- ACK processing (RFC 9293 3.10.7.4, fifth step; RFC 5681) -----------

    def _rcv_ack(self, seq: int, ack: int, window: int, dup_candidate: bool,
                 now: float) -> None:
        """An acceptable ACK (``snd_una - max_snd_wnd <= ack <= snd_max``)."""
        una = self.snd_una
        acked = seq_diff(ack, una)
        win = window << self._snd_wscale
        if acked > 0:
            self.snd_una = ack
            if seq_gt(ack, self.snd_nxt):
                self.snd_nxt = ack
            n = seq_diff(ack, self._snd_data_seq)
            if n > 0:
                buf = self._sndbuf
                if n > len(buf):
                    n = len(buf)
                if n:
                    before = self.sndbuf_size - len(buf) >= self._snd_lowat
                    del buf[:n]
                    self._snd_data_seq = seq_add(self._snd_data_seq, n)
                    if not before and self.sndbuf_size - len(buf) >= self._snd_lowat:
                        self._dirty = True
            if self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
                self._rtt_sample(now - self._rtt_time, now)
                self._rtt_seq = None
            self._retries = 0
            self._probes = 0
            flight = seq_diff(self.snd_max, ack)
            cc = self.cc
            before_cwnd = cc.cwnd
            if self._in_recovery:
                if seq_ge(ack, self._recover) or not cc.partial_ack_stays:
                    self._in_recovery = False
                    self._dupacks = 0
                    cc.on_recovery_exit(flight)
                else:
                    cc.on_partial_ack(acked)
                    self._retransmit_head(now, "partial")
                    self._rto_at = now + self.rto
            else:
                self._dupacks = 0
                cc.on_ack(acked, flight)
            if cc.cwnd != before_cwnd and self._trace.on:
                self._trace_cwnd("ack")
            if ack == self.snd_max:
                self._rto_at = None
            else:
                self._rto_at = now + self.rto
        elif (acked == 0 and dup_candidate and win == self.snd_wnd and self.snd_max != una
              and self._rto_at is not None):
            # A duplicate ACK (RFC 5681 section 2).
            self._dupacks += 1
            cc = self.cc
            if self._in_recovery:
                cc.on_dupack_in_recovery()
                if self._trace.on:
                    self._trace_cwnd("dupack")
            elif (self._dupacks == self._cfg.dupack_threshold
                  and (self._recover == self.iss or seq_gt(una, self._recover))):
                self._recover = self.snd_max
                cc.on_fast_retransmit(seq_diff(self.snd_max, una))
                self._in_recovery = True
                if self._trace.on:
                    self._trace_cwnd("fast_retransmit")
                self._retransmit_head(now, "fast")
                self._rto_at = now + self.rto
        # Window update (RFC 9293 3.10.7.4): only from newer segments.
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
                and now - self._last_rcv <= cfg.rto_max):
            # The peer closed its window on data in flight but is still
            # answering: our retransmissions are window probes; keep going
            # (as Linux does).
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
            self._trace.count("tcp", "retrans_segs")
            if self._trace.on:
                self._trace.event("tcp", "retransmit", conn=self.name, reason="rto",
                                  seq=self.iss, len=0, rto=round(self.rto, 6))
            self._rto_at = now + self.rto
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        self.cc.on_timeout(flight)
        if self._trace.on:
            self._trace_cwnd("rto")
        self._in_recovery = False
        self._dupacks = 0
        self._recover = self.snd_max
        # Go back N: resend from snd_una; ACKs clock out the rest.
        self.snd_nxt = self.snd_una
        self._retransmit_head(now, "rto")
        self._rto_at = now + self.rto

    def _on_persist(self, now: float) -> None:
        self._persist_at = None
        self._probes += 1
        if self._probes > self._cfg.max_retries:
            self._fail(errno.ETIMEDOUT, "timer persist (probes unanswered)", now)
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
