"""The sending half of a connection (RFC 9293 3.3.1, the send sequence space).

:class:`Sender` owns SND.UNA, SND.NXT (and SND.MAX, the highest ever sent),
SND.WND with SND.WL1/WL2, the send buffer (which doubles as the retransmit
queue: bytes stay in it until acknowledged) and the probes that keep a
stalled sender going: the persist timer's window probes and keepalives.

Sending is driven by ACKs and user calls, never by a timer tick: every call
to :meth:`Sender.output` sends as much as the windows allow at once. Loss
recovery (which segments to resend) is :mod:`stack.tcp.recovery`'s; how big
the congestion window is, :mod:`stack.tcp.congestion`'s.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.tcp import timers as T
from stack.tcp.pacing import after_send, burst
from stack.tcp.timers import RTO
from stack.tcp.seq import seq_add, seq_diff, seq_ge, seq_gt, seq_lt, seq_offset, tsval
from stack.tcp.sendbuf import SendBuffer
from stack.tcp.states import SENDING
from stack.wire.tcp import ACK, FIN, PSH, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection


class Sender:
    __slots__ = ("buf", "buf_locked", "bufsize", "bytes_acked", "bytes_retrans", "bytes_sent", "cfg", "conn",
                 "data_seq", "fin_pending", "fin_seq", "hs", "iss", "ka_probes", "max_snd_wnd",
                 "nodelay", "pace_at", "persist_backoff", "probe_due", "probes", "rec", "retries", "rto_at",
                 "rtt", "sml", "snd_max", "snd_nxt", "snd_una", "snd_wl1", "snd_wl2", "snd_wnd",
                 "tail_start", "timers", "tlp_high", "wscale")
    def __init__(self, conn: TcpConnection, iss: int, bufsize: int) -> None:
        self.conn = conn
        cfg = self.cfg = conn.cfg
        self.hs = conn.handshake
        self.rtt = conn.rtt
        self.timers = conn.timers
        self.rec = conn.recovery
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss                # back to una after an RTO (go-back-N)
        self.snd_max = iss                # the highest sequence number sent, plus one
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.wscale = 0               # the peer's shift, applied to its window fields
        self.buf = SendBuffer()       # bytes from data_seq on, sent or not
        self.data_seq = seq_add(iss, 1)
        self.bufsize = bufsize        # SO_SNDBUF
        self.buf_locked = False       # SO_SNDBUF was set: no autotuning
        self.sml = iss                # end of the last small segment (Nagle)
        self.fin_pending = False      # a FIN follows the buffered bytes
        self.fin_seq = 0
        self.nodelay = cfg.nodelay
        self.retries = 0              # RTO expiries since the last new ACK
        self.probe_due = False        # the RTO slot holds a tail loss probe's timeout
        self.pace_at = 0.0            # when the pacer lets the next segment go (pacing.py)
        self.rto_at = 0.0             # ... and the RTO's own deadline then
        self.tlp_high: int | None = None  # SND.MAX when a probe went, until ACKed past
        self.tail_start = 0           # where the last new segment sent began
        self.probes = 0               # window probes unanswered
        self.persist_backoff = 0
        self.ka_probes = 0            # keepalives unanswered
        self.bytes_sent = 0           # payload bytes transmitted, retransmissions included
        self.bytes_retrans = 0        # of which sent again
        self.bytes_acked = 0          # sequence space acknowledged (the SYN and FIN count one)

    # ---- what the other parts ask --------------------------------------------

    def can_write(self) -> bool:
        """The buffer takes more: as Linux's ``sk_stream_is_writeable``, its
        free space is at least half of what it holds."""
        held = len(self.buf)
        room = self.bufsize - held
        return room > 0 and room >= held >> 1

    @property
    def room(self) -> int:
        return self.bufsize - len(self.buf)

    def flight(self) -> int:
        return seq_offset(self.snd_max, self.snd_una)

    def fin_acked(self) -> bool:
        return self.fin_pending and seq_gt(self.snd_una, self.fin_seq)

    # ---- changes made by the handshake and user calls ---------------------------

    def syn_sent(self) -> None:
        """Our SYN (or SYN,ACK) is out: it occupies ``iss``."""
        end = seq_add(self.iss, 1)
        if seq_gt(end, self.snd_nxt):
            self.snd_nxt = end
        if seq_gt(end, self.snd_max):
            self.snd_max = end

    def set_wscale(self, shift: int) -> None:
        """The shift the peer's SYN announced for its window fields."""
        self.wscale = shift

    def synchronize(self, una: int, wnd: int, seg: TcpSegment) -> None:
        """The handshake's ACK: our SYN is acknowledged and the peer's window known."""
        self.bytes_acked += seq_diff(una, self.snd_una)
        self.snd_una = una
        self.snd_wnd = self.max_snd_wnd = wnd
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self.retries = 0
        self.rec.synchronized(una)

    def set_bufsize(self, size: int) -> None:
        """SO_SNDBUF: this size from now on."""
        self.bufsize = size
        self.buf_locked = True

    def _autotune(self) -> None:
        """The buffer holds twice cwnd (Linux ``tcp_sndbuf_expand``): a
        window's worth in flight and the next one waiting, SACKed bytes above
        a hole included."""
        want = 2 * self.rec.cc.cwnd
        top = self.cfg.sndbuf_max
        if want > top:
            want = top
        if want > self.bufsize:
            before = self.can_write()
            self.bufsize = want
            if not before and self.can_write():
                self.conn.changed()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Copy what fits into the buffer; the count (0 when full)."""
        n = len(data)
        free = self.bufsize - len(self.buf)
        if n > free:
            n = free if free > 0 else 0
            if n:
                self.buf.append(memoryview(data)[:n])
        elif n:
            self.buf.append(data)
        return n

    def queue_fin(self) -> None:
        self.fin_pending = True
        self.fin_seq = seq_add(self.data_seq, len(self.buf))

    def discard(self) -> None:
        """The connection is over (CLOSED or TIME_WAIT): nothing more to send."""
        self.buf = SendBuffer()

    def go_back(self) -> None:
        """Go back N: send again from SND.UNA (after an RTO or a smaller MTU)."""
        self.snd_nxt = self.snd_una

    # ---- output ----------------------------------------------------------------

    def output(self, now: float, force: bool = False) -> None:
        """Send new (or go-back-N) data and the FIN as the windows allow;
        during SACK recovery, what RFC 6675's NextSeg picks.

        ``force`` (persist timer expiry) overrides Nagle and sender SWS
        avoidance for one segment."""
        if self.conn.state not in SENDING or not self.buf and not self.fin_pending:
            return  # (nothing to send or resend)
        rec = self.rec
        sb = rec.sb
        if sb is None:
            self.send_data(now, force, 0)
        elif rec.in_recovery:
            rec.sack_output(now, force)
        else:
            self.send_data(now, force, -rec.sacked_below(seq_diff(self.snd_nxt, self.snd_una)))

    def send_data(self, now: float, force: bool, adj: int) -> int:
        """The new-data loop (also go-back-N after an RTO); returns the bytes
        sent. ``adj`` corrects ``nxt - una`` into the bytes that count
        against cwnd (SACKed bytes out, lost bytes out)."""
        buf = self.buf
        hs = self.hs
        mss = hs.mss
        seg_max = mss
        layer = self.conn.layer
        tso = layer.segment_max
        if tso is not None and hs.mss_wire == layer.segment_mss and tso > hs.mss_wire + 20:
            # The link cuts segments (TSO) at our MSS: hand it whole MSS multiples.
            k = (tso - 20 - (hs.mss_wire - mss)) // mss
            if k > 1:
                seg_max = k * mss
        rec = self.rec
        cc = rec.cc
        pace = cc.pacing_rate
        if pace:
            most = burst(pace, mss)
            if most < seg_max:
                seg_max = most
        sacked = rec.sb is not None and bool(rec.sb.ranges)
        una = self.snd_una
        data_seq = self.data_seq
        nbuf = len(buf)
        wnd = self.snd_wnd
        cw = cc.cwnd
        nxt = self.snd_nxt
        snd_max = self.snd_max
        xmit = self.conn.transmit
        rack = rec.records(now)
        total = 0
        remaining = 0
        behind = seq_lt(nxt, snd_max)  # going back after an RTO
        while True:
            limit = 0  # where a SACKed range cuts a go-back-N segment short
            if sacked and behind:
                # Skip what the receiver reported holding since the RTO
                # (RFC 6675 5.1, "filling in" the holes).
                off_u = seq_diff(nxt, una)
                skip, limit = rec.skip_sacked(off_u)
                if skip:
                    end = seq_add(una, skip)
                    nxt = self.snd_nxt = end if seq_lt(end, snd_max) else snd_max
                    adj = -rec.sacked_below(seq_diff(nxt, una))
                    behind = nxt != snd_max
                    continue
            off = seq_diff(nxt, data_seq)
            remaining = nbuf - off
            if remaining > 0:
                flight = seq_offset(nxt, una)
                usable_w = wnd - flight
                usable_c = cw - flight - adj
                usable = usable_w if usable_w < usable_c else usable_c
                avail = limit if 0 < limit < remaining else remaining
                n = avail if avail < seg_max else seg_max
                if usable < n:
                    n = usable
                    if n > mss:
                        n -= n % mss  # no short segment cut from the middle
                if n <= 0:
                    break
                if pace and self.pace_wait(now):
                    break
                if n < mss and not force:
                    if n < avail:
                        # Limited by a window. Wait for the ACK clock unless
                        # the peer's window allows half its maximum (RFC 1122
                        # 4.2.3.4).
                        if usable_c <= usable_w or n < (self.max_snd_wnd >> 1):
                            break
                    elif (avail == remaining and not self.nodelay and not self.fin_pending
                          and seq_gt(self.sml, una) and seq_ge(nxt, self.sml)
                          and self.conn.snd_up is None):
                        # Nagle, Minshall's variant (as Linux): at most one
                        # unacknowledged small segment, unless urgent data
                        # waits. (After an RTO's go back, bytes past nxt are
                        # not in flight.)
                        break
                force = False
                fin = self.fin_pending and n == remaining
                flags = ACK | PSH | FIN if fin else (ACK | PSH if n == remaining else ACK)
                end = seq_add(nxt, n + fin)
                xmit(nxt, flags, buf.view(off, n), now)
                total += n
                if pace:
                    self.pace_at = after_send(self.pace_at, n, pace, now)
                if behind:
                    rack.resent(nxt, n + fin, now)
                else:
                    rack.sent(n + fin, now)
                if behind:
                    self.bytes_retrans += n
                    self.conn.count_retransmit("rto", nxt, n)
                elif self.rtt.timed_seq is None:
                    self.rtt.time(end, now)
                if not behind:
                    self.tail_start = nxt
                nxt = self.snd_nxt = end
                if not behind:  # (then nxt was snd_max)
                    snd_max = self.snd_max = end
                else:
                    if seq_gt(end, snd_max):
                        snd_max = self.snd_max = end
                    behind = seq_lt(nxt, snd_max)
                if n % mss:
                    self.sml = end  # (a TSO segment's short tail counts too)
                if self.timers.at[RTO] is None:
                    self.arm_rto(now)
                if fin:
                    break
                continue
            if self.fin_pending and nxt == self.fin_seq:
                xmit(nxt, ACK | FIN, b"", now)
                end = seq_add(nxt, 1)
                if behind:
                    self.conn.count_retransmit("rto", nxt, 0)
                rack.resent(nxt, 1, now)  # (new at the top: recorded as sent)
                self.snd_nxt = end
                if seq_gt(end, snd_max):
                    self.tail_start = nxt
                    self.snd_max = end
                if self.timers.at[RTO] is None:
                    self.arm_rto(now)
            break
        timers = self.timers
        if (cc.wants_samples and remaining < mss
                and self.bufsize - nbuf >= mss and rack.lost <= rack.retrans):
            # Room in the windows, nothing to send and the application not
            # held back by a full buffer (Linux ``tcp_rate_check_app_limited``):
            # what the rate samples measure for a while is the application.
            flight = rack.in_flight()
            if flight < cw:
                rack.rate.mark_app_limited(flight)
        if total and self.probe_due and self._may_probe():
            self.arm_rto(now)  # the probe's timeout counts from the flight's last segment
        if (remaining > 0 and not timers.armed(T.RTO) and not timers.armed(T.PERSIST)
                and not timers.armed(T.PACE)):
            # Data waits on the peer's window and nothing is in flight to
            # bring an ACK: probe the window later.
            timers.start(T.PERSIST, now + self.persist_interval())
        self.bytes_sent += total
        return total

    def resume(self) -> None:
        """A spurious RTO was undone: what went back N was not lost."""
        if seq_lt(self.snd_nxt, self.snd_max):
            self.snd_nxt = self.snd_max

    def pace_wait(self, now: float) -> bool:
        """True (and the pace timer armed) while the pacer holds the next segment."""
        at = self.pace_at - self.cfg.pacing_slack
        if now >= at:
            return False
        self.timers.start(T.PACE, at)
        return True

    def persist_interval(self) -> float:
        t = self.rtt.rto * (1 << self.persist_backoff)
        return t if t < self.cfg.rto_max else self.cfg.rto_max

    # ---- retransmission -------------------------------------------------------------

    def retransmit(self, seq: int, n: int, now: float, reason: str) -> int:
        """Resend ``n`` bytes of sequence space from ``seq`` (data, and the
        FIN when the range covers it) without moving SND.NXT; returns the
        sequence space sent."""
        self.rtt.retransmitted()
        off = seq_diff(seq, self.data_seq)
        if off < 0:
            return 0
        avail = len(self.buf) - off
        k = n if n < avail else avail
        if k < 0:
            k = 0
        fin = (k < n and self.fin_pending and seq_gt(self.snd_max, self.fin_seq)
               and seq_add(seq, k) == self.fin_seq)
        if k == 0 and not fin:
            return 0
        flags = ACK | FIN if fin else (ACK | PSH if k == avail else ACK)
        self.conn.transmit(seq, flags, self.buf.view(off, k), now)
        rate = self.rec.cc.pacing_rate
        if rate:
            self.pace_at = after_send(self.pace_at, k, rate, now)
        self.bytes_sent += k
        self.bytes_retrans += k
        self.conn.count_retransmit(reason, seq, k)
        self.rec.records(now).resent(seq, k + fin, now)
        self.timers.start_if_idle(T.RTO, now + self.rtt.rto)
        return k + fin

    def retransmit_head(self, now: float, reason: str) -> None:
        """Resend one segment from SND.UNA (fast retransmit, RTO, partial ACK)."""
        una = self.snd_una
        self.rtt.retransmitted()
        if seq_lt(una, self.data_seq):
            return  # the SYN itself: the handshake resends it
        off = seq_diff(una, self.data_seq)
        avail = len(self.buf) - off
        n = avail if avail < self.hs.mss else self.hs.mss
        if n > self.snd_wnd:
            # Never past the peer's window; with the window closed one byte
            # goes, which the peer answers like a window probe.
            n = self.snd_wnd if self.snd_wnd > 0 else 1
        if n > avail:
            n = avail
        if n < 0:
            n = 0
        fin = self.fin_pending and n == avail and seq_gt(self.snd_max, self.fin_seq)
        if n == 0 and not fin:
            return
        flags = ACK | FIN if fin else (ACK | PSH if n == avail else ACK)
        self.conn.transmit(una, flags, self.buf.view(off, n), now)
        self.bytes_sent += n
        self.bytes_retrans += n
        self.conn.count_retransmit(reason, una, n, rto=round(self.rtt.rto, 6))
        self.rec.records(now).resent(una, n + fin, now)
        end = seq_add(una, n + fin)
        if seq_gt(end, self.snd_nxt):
            self.snd_nxt = end
        if seq_gt(end, self.snd_max):
            self.snd_max = end

    # ---- tail loss probes (RFC 8985 7) --------------------------------------------------

    def arm_rto(self, now: float) -> None:
        """(Re)arm the retransmission timer, or, when a tail loss probe may
        go first, the probe's timeout (PTO): 2 SRTT, plus 200 ms with one
        segment in flight (the peer may delay its ACK), 1 s before any RTT
        sample, and never later than the RTO would fire (Linux's
        ``tcp_schedule_loss_probe``)."""
        rto = self.rtt.rto
        self.rto_at = now + rto
        self.probe_due = self._may_probe()
        if self.probe_due:
            srtt = self.rtt.srtt
            if srtt is None:
                pto = 1.0
            else:
                alone = not seq_gt(self.tail_start, self.snd_una)  # one segment in flight
                pto = 2 * srtt + (0.2 if alone else 0.002)
            rto = min(rto, pto)
        self.timers.start(T.RTO, now + rto)

    def _may_probe(self) -> bool:
        """A probe only with SACK (its ACK tells what arrived), while nothing
        is SACKed or in recovery (Linux's Open state: RACK watches a flight
        with holes), before any RTO of this flight, one per flight."""
        return (self.cfg.tlp and self.hs.sack_ok and self.conn.synchronized
                and not self.rec.in_recovery and not self.retries and self.tlp_high is None
                and self.snd_max != self.snd_una and not self.rec.sacked())

    def _send_probe(self, now: float) -> None:
        """The probe: the flight's last segment again (RFC 8985 7.3; the
        newest segment sent, not the last MSS of bytes), then the RTO from now."""
        start = self.tail_start if seq_gt(self.tail_start, self.snd_una) else self.snd_una
        self.tlp_high = self.snd_max
        self.conn.trace.count("tcp", "tlp_probes")
        self.conn.trace_timer("tlp", rto=round(self.rtt.rto, 6))
        self.retransmit(start, seq_diff(self.snd_max, start), now, "tlp")
        self.timers.start(T.RTO, now + self.rtt.rto)

    def on_rto(self, now: float) -> None:
        """The retransmission timer expired (RFC 6298 5.4-5.6): a tail loss
        probe when one was due; else give up after the retries, or back off
        and resend (the SYN during the handshake; otherwise tell recovery
        and go back N)."""
        cfg = self.cfg
        conn = self.conn
        self.timers.stop(T.RTO)
        if self.probe_due:
            self.probe_due = False
            if self._may_probe():
                self._send_probe(now)
                return
            if now < self.rto_at:
                # No probe may go now (a SACK came since): wait for the RTO.
                self.timers.start(T.RTO, self.rto_at)
                return
        self.tlp_high = None
        self.retries += 1
        handshake = not conn.synchronized
        if handshake:
            limit = cfg.synack_retries if conn.passive else cfg.syn_retries
        else:
            limit = cfg.max_retries
        if (not handshake and self.snd_wnd == 0 and self.retries > limit
                and now - conn.last_rcv <= cfg.rto_max and not conn.user_closed):
            # The peer closed its window on data in flight but is still
            # answering: our retransmissions are window probes; keep going
            # (as Linux does), unless nobody owns the connection any more.
            self.retries = limit
        if self.retries > limit:
            if not handshake:
                why = "retries exhausted"
            elif conn.passive:
                why = f"handshake timed out after {self.retries} SYN,ACKs"
            else:
                why = f"connect timed out after {self.retries} SYNs"
            conn.fail(conn.soft_error or errno.ETIMEDOUT, f"timer retransmit ({why})", now)
            return
        if not (handshake and not conn.passive and self.retries <= cfg.syn_linear_timeouts):
            self.rtt.backoff()
        conn.trace_timer("rto", retries=self.retries, rto=round(self.rtt.rto, 6))
        if handshake:
            self.hs.resend_syn(now)
        else:
            self.rec.on_timeout(now)
            self.go_back()
            self.retransmit_head(now, "rto")
        self.timers.start(T.RTO, now + self.rtt.rto)

    # ---- ACK processing (RFC 9293 3.10.7.4, fifth step) -------------------------------

    def on_ack(self, seg: TcpSegment, ack: int, dup_candidate: bool, now: float) -> None:
        """An acceptable ACK (``una - max_wnd <= ack <= max``)."""
        una = self.snd_una
        acked = seq_diff(ack, una)
        win = seg.window << self.wscale
        prior_flight = 0
        if acked > 0:
            prior_flight = seq_diff(self.snd_nxt, una)
            self.bytes_acked += acked
            if self.rec.sb is not None:
                prior_flight = self.rec.advance(acked, prior_flight)
            self.snd_una = ack
            if seq_gt(ack, self.snd_nxt):
                self.snd_nxt = ack
            n = seq_diff(ack, self.data_seq)
            if n > 0:
                buf = self.buf
                if n > len(buf):
                    n = len(buf)
                if n:
                    before_w = self.can_write()
                    buf.consume(n)
                    self.data_seq = seq_add(self.data_seq, n)
                    if not before_w and self.can_write():
                        self.conn.changed()
            rtt = self.rtt
            if rtt.timed_seq is not None and rtt.acked(ack, now):
                pass
            elif rtt.karn and self.hs.ts_ok:
                # Since a retransmission only TSecr can tell which copy was
                # acknowledged (RFC 7323 4.1): a sample from it, in its ms
                # ticks, per ACK of new data (TSecr 0: nothing echoed).
                ts = seg.timestamps
                if ts is not None and ts[1]:
                    d = seq_diff(tsval(self.hs.ts_base, now), ts[1])
                    if d >= 0:
                        rtt.sample(d / 1000, now, ticks=True)
            self.retries = 0
            self.probes = 0
            if self.tlp_high is not None and seq_ge(ack, self.tlp_high):
                self.tlp_high = None  # the probe's episode is over (RFC 8985 7.4)
        self.rec.on_ack(seg, ack, acked, prior_flight, dup_candidate and win == self.snd_wnd, now)
        if not self.buf_locked and 2 * self.rec.cc.cwnd > self.bufsize:
            self._autotune()

        # Window update (RFC 9293 3.10.7.4): only from newer segments.
        seq = seg.seq
        wl1 = self.snd_wl1
        if seq_lt(wl1, seq) or (wl1 == seq and seq_ge(ack, self.snd_wl2)):
            self.snd_wnd = win
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if win > self.max_snd_wnd:
                self.max_snd_wnd = win
            if win and self.timers.armed(T.PERSIST):
                self.timers.stop(T.PERSIST)
                self.persist_backoff = 0

    def fast_path_data(self, seg: TcpSegment) -> None:
        """Header prediction's data segment: the window is unchanged, only
        WL1 and WL2 move (RFC 9293 3.10.7.4)."""
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self.probes = 0

    def peer_alive(self) -> None:
        """An acceptable ACK arrived (RFC 1122 4.2.2.17): window probes are answered."""
        self.probes = 0

    def keepalive_answered(self) -> None:
        self.ka_probes = 0
