"""One TCP connection: the RFC 9293 state machine (section 3.10) and the
user calls OPEN/SEND/RECEIVE/CLOSE/ABORT/STATUS.

Sans-IO: every entry takes ``now``; segments go out through the owning
:class:`~stack.tcp.layer.TcpLayer`. :meth:`TcpConnection._set_state` is the
one function that changes ``state``; it also writes the trace event and the
counters.

Where an incoming segment is handled: :meth:`TcpConnection._process` (the
"SEGMENT ARRIVES" rules, step by step, with the RFC 5961 protections). The
sending side (output, ACKs, timers) is in ``sender.py``, the receiving side
(text, window, delayed ACK) in ``receiver.py``.
"""

from __future__ import annotations

import errno
import os

from stack.tcp.congestion import ALGORITHMS
from stack.tcp.receiver import Receiver
from stack.tcp.sender import Sender
from stack.tcp.seq import HALF, MASK, seq_add, seq_diff, seq_gt, seq_in, seq_le, seq_lt
from stack.tcp.states import (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
                              LAST_ACK, LISTEN, RECEIVING, SYN_RECEIVED, SYN_SENT,
                              SYNCHRONIZED, TIME_WAIT)
from stack.wire.tcp import (ACK, FIN, PSH, RST, SYN, build_options, build_tcp, flags_names,
                            flags_str, sack_option, syn_options_list, ts_option)

PROTO_TCP = 6
TS_OPT_LEN = 12                       # NOP, NOP, Timestamps on every segment once negotiated
PAWS_IDLE = 24 * 24 * 3600.0          # RFC 7323 5.5: TS.Recent older than 24 days is invalid


def wscale_for(rcvbuf: int) -> int:
    """The smallest shift (at most 14) that lets 65535 << shift cover ``rcvbuf``."""
    shift = 0
    while shift < 14 and 65535 << shift < rcvbuf:
        shift += 1
    return shift


def ip_str(a: int) -> str:
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


def conn_name(laddr: int, lport: int, raddr: int, rport: int) -> str:
    return f"{ip_str(laddr)}:{lport}-{ip_str(raddr)}:{rport}"


def os_error(err: int) -> OSError:
    """``OSError(errno)``; Python picks the subclass (ConnectionResetError, ...)."""
    return OSError(err, os.strerror(err))


def rcv_cause(seg) -> str:
    """A trace cause naming an incoming segment."""
    if seg.flags & ACK:
        return f"rcv {flags_names(seg.flags)} seq={seg.seq} ack={seg.ack}"
    return f"rcv {flags_names(seg.flags)} seq={seg.seq}"


class TcpConnection(Sender, Receiver):
    """One connection. Created by :class:`~stack.tcp.layer.TcpLayer`
    (``connect`` or a listener), never directly by users."""

    state = CLOSED  # changed only by _set_state

    def __init__(self, host, local: tuple[int, int], remote: tuple[int, int], iss: int,
                 now: float, listener=None) -> None:
        cfg = host.config
        self._host = host
        self._trace = host.trace
        self._cfg = cfg
        self.local = local
        self.remote = remote
        self.name = conn_name(local[0], local[1], remote[0], remote[1])
        self.error: int | None = None
        self.on_change = None
        self._soft_error: int | None = None
        self._dirty = False
        self._now = now
        self._sched = None  # the layer's timer-heap bookkeeping
        self._listener = listener
        self._passive = listener is not None

        # Options a user can set.
        self.nodelay = cfg.nodelay
        self.keepalive = cfg.keepalive
        self.keepalive_idle = cfg.keepalive_idle
        self.keepalive_interval = cfg.keepalive_interval
        self.keepalive_count = cfg.keepalive_count
        self.sndbuf_size = cfg.sndbuf
        self.rcvbuf_size = cfg.rcvbuf

        # Send sequence space. snd_nxt goes back to snd_una after an RTO
        # (go-back-N); snd_max is the highest sequence number ever sent.
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self._snd_wscale = 0                 # the peer's shift, applied to its window fields
        self._sndbuf = bytearray()           # bytes from _snd_data_seq on
        self._snd_data_seq = seq_add(iss, 1)
        self._snd_sml = iss                  # end of the last small segment (Nagle)
        self._shut_wr = False
        self._fin_pending = False
        self._fin_seq = 0
        self._close_deferred = False
        self._user_closed = False

        # Receive sequence space.
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0                     # right edge of the advertised window
        self._rcv_wscale = 0                 # our shift, applied to the windows we send
        self._irs_known = False
        self._rcvbuf = bytearray()
        self._ooo = None
        self._ooo_fin = None
        self._fin_received = False
        self._unacked = 0                    # bytes received since our last ACK
        self._ack_now = False
        self._last_ack_sent = 0

        # Options (RFC 7323, RFC 2018): offered in our SYN as configured, in
        # use once the peer's SYN offered them too.
        self._our_wscale = wscale_for(cfg.rcvbuf) if cfg.window_scaling else 0
        self._ws_ok = False
        self._ts_ok = False
        self._sack_ok = False
        self._ts_base = host._ts_offset(local[0], local[1], remote[0], remote[1])
        self._ts_recent = 0                  # TS.Recent
        self._ts_recent_age = now            # when TS.Recent was last set
        self._sack_recent: list[int] = []    # a byte of each recently received OOO block
        self._sb = None                      # Scoreboard of SACKed bytes (sack.py), when used
        self._challenge_second = -1          # RFC 5961 7 budget, per connection
        self._challenge_count = 0
        self._high_rxt = iss                 # RFC 6675 HighRxt (one past), RescueRxt
        self._rescue_rxt = iss

        # Segment sizes.
        self.mss_local = cfg.mss
        self.peer_mss = cfg.default_peer_mss
        self._pmtu_mss = cfg.mss
        self._mss_wire = min(self.peer_mss, self.mss_local)  # data plus options
        self.mss = self._mss_wire                             # data per full segment
        self._rcv_mss = min(cfg.default_peer_mss, cfg.mss)

        # RTT, retransmission, congestion control.
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = cfg.rto_initial
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._rtt_karn = False               # retransmitted since the last timed sample
        self._retries = 0
        self._syn_retransmitted = False
        self.cc = ALGORITHMS[cfg.congestion](self.mss, cfg.initial_cwnd)
        self._dupacks = 0
        self._in_recovery = False
        self._recover = iss
        self._partial_acks = 0

        # Timers: absolute deadlines or None.
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._persist_backoff = 0
        self._probes = 0
        self._delack_at: float | None = None
        self._keepalive_at: float | None = None
        self._ka_probes = 0
        self._tw_at: float | None = None
        self._fin2_at: float | None = None
        self._last_rcv = now

    # ---- properties -----------------------------------------------------------

    @property
    def _synced(self) -> bool:
        return self.state in SYNCHRONIZED

    @property
    def _snd_lowat(self) -> int:
        return max(1, self.sndbuf_size >> 1)

    @property
    def readable(self) -> bool:
        """recv() would return data, EOF or an error without waiting."""
        return (bool(self._rcvbuf) or self._fin_received or self.error is not None
                or self.state == CLOSED)

    @property
    def writable(self) -> bool:
        """send() would accept data (at least half the buffer) or fail at once."""
        st = self.state
        if self.error is not None or st == CLOSED or self._shut_wr:
            return True
        if st != ESTABLISHED and st != CLOSE_WAIT:
            return False
        return self.sndbuf_size - len(self._sndbuf) >= self._snd_lowat

    # ---- the one state-changing function ----------------------------------------

    def _set_state(self, new: str, cause: str, now: float, frm: str | None = None) -> None:
        old = self.state if frm is None else frm
        self.state = new
        self._dirty = True
        trace = self._trace
        if new == ESTABLISHED:
            trace.count("tcp", "passive_opens" if self._passive else "active_opens")
        elif new == CLOSED:
            if old in (SYN_SENT, SYN_RECEIVED):
                trace.count("tcp", "attempt_fails")
            elif old in (ESTABLISHED, CLOSE_WAIT) and self.error is not None:
                trace.count("tcp", "estab_resets")
        if trace.on:
            trace.event("tcp", "state", conn=self.name, **{"from": old, "to": new}, cause=cause)
        if new == CLOSED:
            self._teardown()
        elif new == TIME_WAIT:
            self._rto_at = self._persist_at = self._keepalive_at = self._fin2_at = None
            self._sndbuf = bytearray()
            self._ooo_clear()
            self._tw_at = now + self._cfg.time_wait

    def _teardown(self) -> None:
        self._rto_at = self._persist_at = self._delack_at = None
        self._keepalive_at = self._tw_at = self._fin2_at = None
        self._sndbuf = bytearray()
        self._ooo_clear()
        if self._user_closed:
            self._rcvbuf = bytearray()
        self._host._release(self)

    def _finish(self) -> None:
        """End of every entry point: re-arm the layer's timer, tell the user."""
        if self.state != CLOSED:
            self._host._schedule(self)
        if self._dirty:
            self._dirty = False
            cb = self.on_change
            if cb is not None:
                cb()

    def _fail(self, err: int | None, cause: str, now: float, rst: bool = False) -> None:
        if rst and self.state not in (CLOSED, SYN_SENT, TIME_WAIT):
            self._send_rst(self.snd_max, now)
        if err is not None:
            self.error = err
        self._set_state(CLOSED, cause, now)

    # ---- output helpers -----------------------------------------------------------

    def _xmit(self, seq: int, flags: int, payload, now: float, syn: bool = False) -> None:
        """Build and hand one segment to IP. Segments with ACK carry the
        current window and cancel any pending delayed ACK; once negotiated,
        every segment carries timestamps and ACKs carry SACK blocks while
        out-of-order data waits."""
        ack = 0
        win = 0
        if flags & ACK:
            ack = self.rcv_nxt
            # The window of a SYN is never scaled (RFC 7323 2.2).
            win = (self.rcvbuf_size if self.rcvbuf_size < 65535 else 65535) if syn \
                else self._rcv_window()
            self._unacked = 0
            self._ack_now = False
            self._delack_at = None
            self._last_ack_sent = ack
        elif syn:
            win = self.rcvbuf_size if self.rcvbuf_size < 65535 else 65535
        blocks = None
        tsval = 0
        if syn:
            options = self._syn_options(flags, now)
        elif self._ts_ok:
            tsval = (self._ts_base + int(now * 1000)) & MASK
            options = ts_option(tsval, self._ts_recent if flags & ACK else 0)
        else:
            options = b""
        if self._ooo is not None and self._sack_ok and flags & ACK and not syn:
            room = 36 - len(options)
            if payload:
                room = min(room, self._mss_wire - len(options) - len(payload) - 4)
            blocks = self._sack_blocks(room >> 3)
            if blocks:
                options += sack_option(blocks)
        laddr, lport = self.local
        raddr, rport = self.remote
        data = build_tcp(laddr, raddr, lport, rport, seq, ack, flags, win, payload,
                         options=options)
        host = self._host
        host.ip_send(laddr, raddr, PROTO_TCP, data)
        trace = self._trace
        trace.count("tcp", "out_segs")
        if flags & RST:
            trace.count("tcp", "out_rsts")
        if trace.on and trace.wants("tcp", "seg"):
            if syn:
                opts = self._syn_options_list(flags, now)
            else:
                opts = []
                if self._ts_ok:
                    opts.append(f"TS val {tsval} ecr {self._ts_recent if flags & ACK else 0}")
                if blocks:
                    opts.append("sack " + " ".join(f"{a}:{b}" for a, b in blocks))
            trace.event("tcp", "seg", conn=self.name, dir="out", flags=flags_str(flags), seq=seq,
                        ack=ack, win=win, len=len(payload), options=opts)

    def _syn_offers(self, flags: int, now: float):
        """What our SYN or SYN,ACK carries: (mss, wscale, sack_perm, timestamps).

        A SYN offers what the configuration allows; a SYN,ACK only what the
        peer's SYN offered too (RFC 7323 2.2 and 3.2, RFC 2018 2)."""
        cfg = self._cfg
        tsval = (self._ts_base + int(now * 1000)) & MASK
        if flags & ACK:
            return (self.mss_local, self._our_wscale if self._ws_ok else None, self._sack_ok,
                    (tsval, self._ts_recent) if self._ts_ok else None)
        return (self.mss_local, self._our_wscale if cfg.window_scaling else None, cfg.sack,
                (tsval, 0) if cfg.timestamps else None)

    def _syn_options(self, flags: int, now: float) -> bytes:
        return build_options(*self._syn_offers(flags, now))

    def _syn_options_list(self, flags: int, now: float) -> list[str]:
        return syn_options_list(*self._syn_offers(flags, now))

    def _send_ack(self, now: float) -> None:
        self._xmit(self.snd_max, ACK, b"", now)

    def _send_rst(self, seq: int, now: float) -> None:
        self._xmit(seq, RST, b"", now)

    def _challenge_ack(self, now: float, why: str) -> None:
        """RFC 5961: answer a suspicious RST/SYN/ACK with an ACK, at most
        ``challenge_ack_limit`` a second.

        The budget is this connection's own (as Linux since 6.0). One budget
        shared by the layer is the side channel of CVE-2016-5696: an
        off-path attacker spends it on its own connection and counts the
        ACKs it gets back, which tells whether a spoofed RST landed in some
        other connection's window. There is no global cap on top: any cap
        that one connection can exhaust leaks the same bit. Each challenge
        ACK answers one received segment, so the total is bounded by what
        arrives."""
        trace = self._trace
        trace.drop("tcp", why, conn=self.name)
        sec = int(now)
        if sec != self._challenge_second:
            self._challenge_second = sec
            self._challenge_count = 0
        if self._challenge_count >= self._cfg.challenge_ack_limit:
            trace.count("tcp", "challenge_ack_limited")
            return
        self._challenge_count += 1
        trace.count("tcp", "challenge_acks")
        self._send_ack(now)

    # ---- opening ------------------------------------------------------------------

    def _size_rcvbuf(self, size: int) -> None:
        """SO_RCVBUF before the SYN: it also picks the window scale we offer."""
        self.rcvbuf_size = size
        self._our_wscale = wscale_for(size) if self._cfg.window_scaling else 0

    def _open_active(self, now: float) -> None:
        self._set_state(SYN_SENT, "user connect", now)
        self._rtt_seq = seq_add(self.iss, 1)
        self._rtt_time = now
        self._send_syn(now)
        self._rto_at = now + self.rto
        self._finish()

    def _open_passive(self, seg, now: float) -> None:
        """A listener hands over an acceptable SYN (RFC 9293 3.10.7.2)."""
        self._take_syn(seg, now)
        self._set_state(SYN_RECEIVED, rcv_cause(seg), now, frm=LISTEN)
        self._rtt_seq = seq_add(self.iss, 1)
        self._rtt_time = now
        self._send_syn(now)
        self._rto_at = now + self.rto
        self._finish()

    def _take_syn(self, seg, now: float | None = None) -> None:
        """The peer's SYN (or SYN,ACK): its ISN, MSS, and which options both
        sides offered (RFC 7323 2.2 and 3.2, RFC 2018 2)."""
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, min(self.rcvbuf_size, 65535))
        self._irs_known = True
        if seg.mss is not None:
            self.peer_mss = max(seg.mss, 64)
        cfg = self._cfg
        self._ws_ok = cfg.window_scaling and seg.wscale is not None
        if self._ws_ok:
            self._snd_wscale = min(seg.wscale, 14)  # RFC 7323 2.3: larger means 14
            self._rcv_wscale = self._our_wscale
        else:
            self._snd_wscale = self._rcv_wscale = 0
        ts = seg.timestamps
        self._ts_ok = cfg.timestamps and ts is not None
        if self._ts_ok:
            self._ts_recent = ts[0]
            self._ts_recent_age = self._now if now is None else now
        self._sack_ok = cfg.sack and seg.sack_perm
        self._update_mss()

    def _update_mss(self) -> None:
        """Data per full segment: the smallest of the peer's MSS, ours and the
        path's, less the options every segment carries (RFC 6691)."""
        self._mss_wire = min(self.peer_mss, self.mss_local, self._pmtu_mss)
        self.mss = self._mss_wire - TS_OPT_LEN if self._ts_ok else self._mss_wire

    def _on_established(self, now: float) -> None:
        if self._syn_retransmitted and self.srtt is None:
            self.rto = max(self.rto, 3.0)  # RFC 6298 (5.7)
            self.rto = min(self.rto, self._cfg.rto_max)
        self._rto_at = None
        self._retries = 0
        self.cc.set_mss(self.mss)
        self.cc.cwnd = self._cfg.initial_cwnd * self.mss
        if self.keepalive:
            self._keepalive_at = now + self.keepalive_idle
        if self._listener is not None:
            self._listener._established(self)
        if self._close_deferred:
            self._close_deferred = False
            self._begin_fin(now, "user close (deferred)")

    # ---- SEGMENT ARRIVES (RFC 9293 3.10.7) ------------------------------------------

    def segment_arrives(self, seg, now: float) -> None:
        """Entry from the layer for a segment demultiplexed to this connection."""
        self._now = now
        self._last_rcv = now
        if self._keepalive_at is not None or self._ka_probes:
            self._ka_probes = 0
            if self.keepalive and self._synced:
                self._keepalive_at = now + self.keepalive_idle
        state = self.state
        if state == ESTABLISHED and self._predicted(seg, now):
            pass
        elif state == SYN_SENT:
            self._process_syn_sent(seg, now)
        else:
            self._process(seg, now)
        if self.state != CLOSED:
            self._output(now)
            self._ack_decision(now)
        self._finish()

    def _predicted(self, seg, now: float) -> bool:
        """Header prediction (RFC 7323 appendix D): the two segments of a bulk
        transfer, handled with what :meth:`_process` would do, in fewer steps.

        In ESTABLISHED, the next in-order segment with only ACK (and PSH)
        set, no SACK blocks and a timestamp that PAWS lets through, that is
        either data acknowledging nothing new under an unchanged window, or a
        pure ACK. Anything else returns False and takes the general path."""
        if seg.flags & ~PSH != ACK or seg.seq != self.rcv_nxt or seg.sack:
            return False
        ts = seg.timestamps
        if self._ts_ok and (ts is None or ((ts[0] - self._ts_recent) & MASK) >= HALF):
            return False
        ack = seg.ack
        payload = seg.payload
        n = len(payload)
        if n:
            if (ack != self.snd_una or self._ooo is not None or self._ooo_fin is not None
                    or self._user_closed or seg.window << self._snd_wscale != self.snd_wnd
                    or n > ((self.rcv_adv - self.rcv_nxt) & MASK)):
                return False
        elif ((ack - self.snd_una) & MASK) > ((self.snd_max - self.snd_una) & MASK):
            return False  # not in [snd_una, snd_max]
        if ts is not None and self._ts_ok and self.rcv_nxt == self._last_ack_sent:
            self._ts_recent = ts[0]  # R3: SEG.SEQ <= Last.ACK.sent
            self._ts_recent_age = now
        self._probes = 0
        if n:
            buf = self._rcvbuf
            if not buf:
                self._dirty = True
            buf += payload
            self.rcv_nxt = (self.rcv_nxt + n) & MASK
            self._unacked += n
            if n > self._rcv_mss:
                self._rcv_mss = n if n < self.mss_local else self.mss_local
            self.snd_wl1 = seg.seq  # the window is unchanged (RFC 9293 3.10.7.4)
            self.snd_wl2 = ack
        else:
            self._rcv_ack(seg, ack, True, now)
        return True

    def _process_syn_sent(self, seg, now: float) -> None:
        flags = seg.flags
        ack = seg.ack
        trace = self._trace
        if flags & ACK:
            if seq_le(ack, self.iss) or seq_gt(ack, self.snd_max):
                trace.drop("tcp", "bad_ack", conn=self.name)
                if not flags & RST:
                    self._send_rst(ack, now)
                return
        if flags & RST:
            if flags & ACK:
                self._fail(errno.ECONNREFUSED, rcv_cause(seg), now)
            else:
                trace.drop("tcp", "rst_without_ack", conn=self.name)
            return
        if not flags & SYN:
            trace.drop("tcp", "no_syn", conn=self.name)
            return
        self._take_syn(seg, now)
        if flags & ACK:
            self.snd_una = ack
            if self._rtt_seq is not None and seq_le(self._rtt_seq, ack):
                self._rtt_sample(now - self._rtt_time, now)
                self._rtt_seq = None
            self.snd_wnd = seg.window
            self.max_snd_wnd = seg.window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            self._set_state(ESTABLISHED, rcv_cause(seg), now)
            self._on_established(now)
            self._ack_now = True
            payload = seg.payload
            fin = bool(flags & FIN)
            if payload or fin:
                room = seq_diff(self.rcv_adv, self.rcv_nxt)
                if len(payload) > room:
                    payload = payload[:room]
                    fin = False
                if self._rcv_text(self.rcv_nxt, payload, fin, now):
                    self._rcv_fin(seg, now)
        else:
            # Simultaneous open (RFC 9293 figure 8).
            self._set_state(SYN_RECEIVED, rcv_cause(seg), now)
            self._send_syn(now)

    def _process(self, seg, now: float) -> None:
        state = self.state
        trace = self._trace
        flags = seg.flags
        seq = seg.seq
        payload = seg.payload
        if state == SYN_RECEIVED and flags & SYN and seq == self.irs:
            if flags & RST:
                return
            if not flags & ACK:
                # The peer retransmitted its SYN: our SYN,ACK was lost.
                self._send_syn(now)
                trace.count("tcp", "retrans_segs")
                return
            # The SYN,ACK of a simultaneous open: its SYN is old, its ACK is new.
            flags &= ~SYN
            seq = seq_add(seq, 1)

        # PAWS (RFC 7323 5.3 R1): once timestamps are on, a segment whose
        # TSval is older than TS.Recent is an old duplicate; ACK it and drop
        # it. RSTs are exempt, and a TS.Recent idle for more than 24 days is
        # no longer trusted (5.5): the segment is accepted and its TSval kept.
        ts = seg.timestamps
        ts_invalid = False
        if self._ts_ok:
            if ts is None:
                if not flags & RST:
                    trace.drop("tcp", "no_timestamp", conn=self.name)  # 3.2: SHOULD drop
                    return
            elif ((ts[0] - self._ts_recent) & MASK) >= HALF and not flags & RST:
                if now - self._ts_recent_age <= PAWS_IDLE:
                    trace.drop("tcp", "paws", conn=self.name)
                    self._ack_now = True
                    return
                ts_invalid = True

        # First: is the sequence number acceptable?
        fin = flags & FIN
        n = len(payload)
        seg_len = n + (1 if flags & SYN else 0) + (1 if fin else 0)
        rcv_nxt = self.rcv_nxt
        rcv_wnd = seq_diff(self.rcv_adv, rcv_nxt)
        if rcv_wnd < 0:
            rcv_wnd = 0
        if seg_len == 0:
            ok = seq == rcv_nxt if rcv_wnd == 0 else seq_in(seq, rcv_nxt, rcv_wnd)
        else:
            ok = rcv_wnd > 0 and (seq_in(seq, rcv_nxt, rcv_wnd)
                                  or seq_in(seq_add(seq, seg_len - 1), rcv_nxt, rcv_wnd))
        if not ok:
            if flags & RST:
                trace.drop("tcp", "rst_out_of_window", conn=self.name)
                return
            if rcv_wnd == 0 and seq == rcv_nxt and not flags & SYN:
                # Zero window: keep the ACK (and a bare FIN), drop the text.
                if n:
                    trace.drop("tcp", "zero_window", conn=self.name)
                    payload = b""
                    fin = 0
                self._ack_now = True
            else:
                trace.drop("tcp", "out_of_window", conn=self.name)
                if state == TIME_WAIT and fin:
                    # A retransmitted FIN: ACK it again and restart 2MSL.
                    self._tw_at = now + self._cfg.time_wait
                self._ack_now = True
                return
        else:
            # Trim to the window: old bytes (and an old SYN) on the left,
            # bytes beyond the window (and the FIN) on the right.
            if seq != rcv_nxt and seq_lt(seq, rcv_nxt):
                # Partly old: our ACK was probably lost, so ACK at once.
                self._ack_now = True
                skip = seq_diff(rcv_nxt, seq)
                if flags & SYN:
                    flags &= ~SYN
                    skip -= 1
                if skip:
                    payload = payload[skip:]
                seq = rcv_nxt
            room = rcv_wnd - seq_diff(seq, rcv_nxt)
            if len(payload) > room:
                payload = payload[:room]
                fin = 0
                self._ack_now = True

        # R3: keep the TSval of the segment that our next ACK acknowledges
        # (SEG.SEQ <= Last.ACK.sent), never one from a segment past a gap.
        if (ts is not None and self._ts_ok and not flags & RST
                and (ts_invalid or ((ts[0] - self._ts_recent) & MASK) < HALF)
                and seq_le(seg.seq, self._last_ack_sent)):
            self._ts_recent = ts[0]
            self._ts_recent_age = now

        # Second: RST (RFC 5961 section 3: exact match resets, in-window is challenged).
        if flags & RST:
            if seg.seq == rcv_nxt:
                self._rcv_rst(seg, now)
            else:
                self._challenge_ack(now, "rst_not_exact")
            return

        # Fourth: SYN (RFC 5961 section 4).
        if flags & SYN:
            if state == SYN_RECEIVED and self._passive:
                self._set_state(CLOSED, rcv_cause(seg) + " (SYN in window)", now)
                return
            self._challenge_ack(now, "syn_in_window")
            return

        # Fifth: ACK.
        if not flags & ACK:
            trace.drop("tcp", "no_ack", conn=self.name)
            return
        ack = seg.ack
        if state == SYN_RECEIVED:
            if seq_gt(ack, self.snd_una) and seq_le(ack, self.snd_max):
                lst = self._listener
                if lst is not None and lst.queue_full():
                    trace.drop("tcp", "accept_queue_full", conn=self.name)
                    return
                self.snd_wnd = seg.window << self._snd_wscale
                self.max_snd_wnd = self.snd_wnd
                self.snd_wl1 = seg.seq
                self.snd_wl2 = ack
                self.snd_una = seq_add(self.iss, 1)  # our SYN is acknowledged
                if self._rtt_seq is not None:
                    self._rtt_sample(now - self._rtt_time, now)
                    self._rtt_seq = None
                self._set_state(ESTABLISHED, rcv_cause(seg), now)
                self._on_established(now)
                state = self.state
            else:
                trace.drop("tcp", "bad_ack", conn=self.name)
                self._send_rst(ack, now)
                return
        if seq_gt(ack, self.snd_max):
            # ACK for data never sent: ACK back, drop.
            trace.drop("tcp", "ack_unsent", conn=self.name)
            self._ack_now = True
            return
        if seq_lt(ack, seq_add(self.snd_una, -self.max_snd_wnd)):
            self._challenge_ack(now, "ack_too_old")
            return
        una_before = self.snd_una
        self._probes = 0  # the peer is alive (RFC 1122 4.2.2.17)
        self._rcv_ack(seg, ack, not seg.payload and not seg.flags & (SYN | FIN), now)
        if self.state == CLOSED:
            return
        if self.snd_una != una_before and self._fin_pending and self._fin_acked():
            if state == FIN_WAIT_1:
                self._set_state(FIN_WAIT_2, rcv_cause(seg), now)
                state = FIN_WAIT_2
                if self._user_closed:
                    self._fin2_at = now + self._cfg.fin_wait2_timeout
            elif state == CLOSING:
                self._set_state(TIME_WAIT, rcv_cause(seg), now)
                return
            elif state == LAST_ACK:
                self._set_state(CLOSED, rcv_cause(seg), now)
                return

        # Sixth (URG) is not supported: urgent data is delivered inline.
        # Seventh: text. Eighth: FIN.
        if payload or fin:
            if state in RECEIVING:
                if payload and self._user_closed:
                    # Nobody will read it (RFC 2525 2.17, Linux): reset.
                    self._fail(None, rcv_cause(seg) + " (data after close)", now, rst=True)
                    return
                if self._rcv_text(seq, payload, bool(fin), now):
                    self._rcv_fin(seg, now)
            elif payload:
                trace.drop("tcp", "data_after_fin", conn=self.name)

    def _fin_acked(self) -> bool:
        return seq_gt(self.snd_una, self._fin_seq)

    def _rcv_rst(self, seg, now: float) -> None:
        state = self.state
        cause = rcv_cause(seg)
        self._trace.count("tcp", "in_rsts")
        if state == SYN_RECEIVED:
            if self._passive:
                self._set_state(CLOSED, cause, now)  # back to LISTEN: the listener remains
            else:
                self._fail(errno.ECONNREFUSED, cause, now)
        elif state == CLOSE_WAIT:
            self._fail(errno.EPIPE, cause, now)  # the peer had closed: as Linux (tcp_reset)
        elif state in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2):
            self._fail(errno.ECONNRESET, cause, now)
        else:
            self._set_state(CLOSED, cause, now)

    def _rcv_fin(self, seg, now: float) -> None:
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self._fin_received = True
        self._ack_now = True
        self._dirty = True
        self._ooo_clear()
        state = self.state
        cause = rcv_cause(seg)
        if not seg.flags & FIN:
            cause += " (fills the gap before a queued FIN)"
        if state in (SYN_RECEIVED, ESTABLISHED):
            self._set_state(CLOSE_WAIT, cause, now)
        elif state == FIN_WAIT_1:
            if self._fin_acked():
                self._set_state(TIME_WAIT, cause, now)
            else:
                self._set_state(CLOSING, cause, now)  # simultaneous close
        elif state == FIN_WAIT_2:
            self._fin2_at = None
            self._set_state(TIME_WAIT, cause, now)

    # ---- timers ------------------------------------------------------------------

    def deadline(self) -> float | None:
        d = None
        for t in (self._rto_at, self._persist_at, self._delack_at, self._keepalive_at,
                  self._tw_at, self._fin2_at):
            if t is not None and (d is None or t < d):
                d = t
        return d

    def _on_timer(self, now: float) -> None:
        """Run whichever of this connection's timers are due."""
        self._now = now
        if self._tw_at is not None and now >= self._tw_at:
            self._set_state(CLOSED, "timer 2MSL", now)
        elif self._fin2_at is not None and now >= self._fin2_at:
            self._set_state(CLOSED, "timer FIN_WAIT_2", now)
        else:
            if self._rto_at is not None and now >= self._rto_at:
                self._on_rto(now)
            if self._persist_at is not None and now >= self._persist_at and self.state != CLOSED:
                self._on_persist(now)
            if self._delack_at is not None and now >= self._delack_at and self.state != CLOSED:
                self._delack_at = None
                self._send_ack(now)
            if (self._keepalive_at is not None and now >= self._keepalive_at
                    and self.state != CLOSED):
                self._on_keepalive(now)
        self._finish()

    # ---- ICMP ---------------------------------------------------------------------

    def _icmp(self, kind: str, seq: int, mtu: int | None, now: float) -> None:
        """An ICMP error quoting one of our segments (RFC 1122 4.2.3.9, RFC 5927)."""
        if not (seq_le(self.snd_una, seq) and seq_lt(seq, self.snd_max)) and seq != self.snd_una:
            self._trace.drop("tcp", "icmp_stale", conn=self.name)
            return
        if kind == "frag_needed":
            # RFC 1191 allows an MTU down to 68, but a forged ICMP could then
            # cut every segment to 28 bytes of data. Like Linux (min_pmtu),
            # an MTU below ``min_pmtu`` counts as ``min_pmtu`` (RFC 5927 7).
            if mtu and mtu < self._cfg.min_pmtu:
                mtu = self._cfg.min_pmtu
            if mtu and mtu - 40 < self._mss_wire:
                self._pmtu_mss = mtu - 40
                self._update_mss()
                self.cc.set_mss(self.mss)
                if self._synced:
                    self.snd_nxt = self.snd_una
                    self._output(now, force=True)
            self._finish()
            return
        err = {"port_unreachable": errno.ECONNREFUSED, "host_unreachable": errno.EHOSTUNREACH,
               "net_unreachable": errno.ENETUNREACH,
               "protocol_unreachable": errno.ENOPROTOOPT}.get(kind, errno.EHOSTUNREACH)
        if self.state == SYN_SENT or (self.state == SYN_RECEIVED and not self._passive):
            # Linux aborts a connection attempt on an ICMP error.
            self._fail(err, f"icmp {kind}", now)
        else:
            self._soft_error = err  # reported only if the connection times out
        self._finish()

    # ---- user calls ------------------------------------------------------------------

    def send(self, data, now: float) -> int:
        """SEND: copy what fits into the send buffer; returns the count (0 when full)."""
        self._now = now
        if self.error is not None:
            raise os_error(self.error)
        st = self.state
        if self._shut_wr or st not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            raise os_error(errno.EPIPE)
        n = len(data)
        free = self.sndbuf_size - len(self._sndbuf)
        if n > free:
            n = free if free > 0 else 0
            if not n:
                return 0
            self._sndbuf += memoryview(data)[:n]
        elif n:
            self._sndbuf += data
        else:
            return 0
        self._output(now)
        self._finish()
        return n

    def recv(self, n: int, now: float | None = None) -> bytes | None:
        """RECEIVE: up to ``n`` bytes; ``b""`` at EOF; None when nothing yet."""
        buf = self._rcvbuf
        if buf:
            if n >= len(buf):
                out = bytes(buf)
                buf.clear()
            else:
                out = bytes(buf[:n])
                del buf[:n]
            self._after_read(now)
            return out
        if self.error is not None:
            raise os_error(self.error)
        if self._fin_received or self.state == CLOSED:
            return b""
        return None

    def recv_into(self, buffer, nbytes: int = 0, now: float | None = None) -> int | None:
        """Like :meth:`recv` into a writable buffer; 0 at EOF, None when nothing yet."""
        mv = memoryview(buffer).cast("B")
        n = nbytes or len(mv)
        buf = self._rcvbuf
        if buf:
            k = min(n, len(buf))
            mv[:k] = buf[:k]
            del buf[:k]
            self._after_read(now)
            return k
        if self.error is not None:
            raise os_error(self.error)
        if self._fin_received or self.state == CLOSED:
            return 0
        return None

    def _after_read(self, now: float | None) -> None:
        if now is not None:
            self._now = now
        if self.state in RECEIVING and self._window_update_due():
            self._send_ack(self._now)
            self._finish()

    def shutdown_write(self, now: float) -> None:
        """Half-close: send a FIN after the buffered data; keep receiving."""
        self._now = now
        if self.state == CLOSED:
            raise os_error(self.error or errno.ENOTCONN)
        self._shutdown_wr(now, "user shutdown")
        self._finish()

    def _shutdown_wr(self, now: float, cause: str) -> None:
        if self._shut_wr:
            return
        self._shut_wr = True
        self._dirty = True
        if self.state in (SYN_SENT, SYN_RECEIVED):
            self._close_deferred = True
        else:
            self._begin_fin(now, cause)

    def _begin_fin(self, now: float, cause: str) -> None:
        self._fin_pending = True
        self._fin_seq = seq_add(self._snd_data_seq, len(self._sndbuf))
        st = self.state
        if st == ESTABLISHED:
            self._set_state(FIN_WAIT_1, cause, now)
        elif st == CLOSE_WAIT:
            self._set_state(LAST_ACK, cause, now)
        self._output(now)

    def close(self, now: float) -> None:
        """CLOSE: no more sends or receives; buffered data goes out before the FIN.

        Unread received data makes it an abort (RST), as in Linux.
        """
        self._now = now
        st = self.state
        self._user_closed = True
        if st == CLOSED:
            return
        if st == SYN_SENT:
            self._set_state(CLOSED, "user close", now)
        elif self._rcvbuf and st in RECEIVING or self._rcvbuf and st == CLOSE_WAIT:
            self._fail(None, "user close (unread data)", now, rst=True)
        else:
            self._shutdown_wr(now, "user close")
            if self.state == FIN_WAIT_2 and self._fin2_at is None:
                self._fin2_at = now + self._cfg.fin_wait2_timeout
        self._finish()

    def abort(self, now: float) -> None:
        """ABORT: send RST (in synchronized states) and forget the connection."""
        self._now = now
        self._user_closed = True
        st = self.state
        if st == CLOSED:
            return
        if st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._send_rst(self.snd_max, now)
        self._set_state(CLOSED, "user abort", now)
        self._finish()

    def status(self) -> dict:
        """STATUS."""
        return {
            "state": self.state, "local": self.local, "remote": self.remote,
            "snd_una": self.snd_una, "snd_nxt": self.snd_nxt, "snd_max": self.snd_max,
            "snd_wnd": self.snd_wnd, "rcv_nxt": self.rcv_nxt,
            "rcv_wnd": max(seq_diff(self.rcv_adv, self.rcv_nxt), 0),
            "send_buffered": len(self._sndbuf), "recv_buffered": len(self._rcvbuf),
            "mss": self.mss, "cwnd": self.cc.cwnd, "ssthresh": self.cc.ssthresh,
            "srtt": self.srtt, "rttvar": self.rttvar, "rto": self.rto, "error": self.error,
            "congestion": self.cc.name, "in_recovery": self._in_recovery,
            "snd_wscale": self._snd_wscale if self._ws_ok else None,
            "rcv_wscale": self._rcv_wscale if self._ws_ok else None,
            "timestamps": self._ts_ok, "sack": self._sack_ok,
            "sacked": self._sb.sacked if self._sb is not None else 0,
        }

    def set_nodelay(self, on: bool) -> None:
        self.nodelay = bool(on)
        if on and self.state != CLOSED:
            self._output(self._now)
            self._finish()

    def set_congestion(self, name: str) -> None:
        """TCP_CONGESTION: ``"cubic"``, ``"newreno"`` or ``"reno"`` from now on,
        keeping cwnd and ssthresh. An unknown name is ENOENT, as Linux."""
        cls = ALGORITHMS.get(name)
        if cls is None:
            raise os_error(errno.ENOENT)
        old = self.cc
        if type(old) is not cls:
            cc = cls(self.mss, self._cfg.initial_cwnd)
            cc.cwnd, cc.ssthresh = old.cwnd, old.ssthresh
            self.cc = cc

    def set_keepalive(self, on: bool) -> None:
        self.keepalive = bool(on)
        if on and self._synced and self._keepalive_at is None:
            self._keepalive_at = self._now + self.keepalive_idle
        elif not on:
            self._keepalive_at = None
            self._ka_probes = 0
        if self.state != CLOSED:
            self._finish()

    def __repr__(self) -> str:
        return f"<TcpConnection {self.name} {self.state}>"
