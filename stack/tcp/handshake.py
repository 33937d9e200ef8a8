"""Opening a connection (RFC 9293 3.5): the active and passive OPEN, the
SYN_SENT and SYN_RECEIVED rules of "segment arrives", SYN retransmission, a
connection made from a SYN cookie, and the options the two SYNs negotiate.

:class:`Handshake` owns what the SYNs decided: the peer's MSS and the
segment size that follows from it and the path (RFC 6691), and whether
window scaling (with both shifts), timestamps (with our clock's offset) and
SACK are in use (RFC 7323 2.2 and 3.2, RFC 2018 2).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.tcp import timers as T
from stack.tcp.emit import SynOffers
from stack.tcp.seq import seq_add, seq_gt, seq_le, tsval
from stack.tcp.states import ESTABLISHED, SYN_RECEIVED, SYN_SENT
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpSegment, flags_names

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection

TS_OPT_LEN = 12                       # NOP, NOP, Timestamps on every segment once negotiated


SYN_RETRY_SOON = 0.002  # Linux's TCP_TIMEOUT_MIN (2 jiffies): a SYN resent "at once"


def wscale_for(rcvbuf: int) -> int:
    """The smallest shift (at most 14) that lets 65535 << shift cover ``rcvbuf``."""
    shift = 0
    while shift < 14 and 65535 << shift < rcvbuf:
        shift += 1
    return shift


def rcv_cause(seg: TcpSegment) -> str:
    """A trace cause naming an incoming segment."""
    if seg.flags & ACK:
        return f"rcv {flags_names(seg.flags)} seq={seg.seq} ack={seg.ack}"
    return f"rcv {flags_names(seg.flags)} seq={seg.seq}"


class Handshake:
    __slots__ = ("cfg", "conn", "mss", "mss_local", "mss_wire", "our_wscale", "peer_mss",
                 "peer_syn_seen", "pmtu_mss", "rcv_wscale", "sack_ok", "snd_wscale",
                 "syn_retransmitted", "ts_base", "ts_ok", "ws_ok")

    def __init__(self, conn: TcpConnection, ts_base: int, rcvbuf: int) -> None:
        self.conn = conn
        cfg = self.cfg = conn.cfg
        self.our_wscale = wscale_for(rcvbuf) if cfg.window_scaling else 0
        self.ws_ok = False
        self.ts_ok = False
        self.sack_ok = False
        self.snd_wscale = 0                   # the peer's shift
        self.rcv_wscale = 0                   # ours
        self.ts_base = ts_base                # our timestamp clock's offset (RFC 7323 7.1)
        self.mss_local: int = conn.layer.mss_for(conn.remote[0])  # the route's (lo's is larger)
        self.peer_mss = cfg.default_peer_mss
        self.pmtu_mss = self.mss_local
        self.mss_wire = min(self.peer_mss, self.mss_local)  # data plus options
        self.mss: int = self.mss_wire                        # data per full segment
        self.peer_syn_seen = False            # our SYN is a SYN,ACK from now on
        self.syn_retransmitted = False

    # ---- options ---------------------------------------------------------------------

    def size_rcvbuf(self, size: int) -> None:
        """SO_RCVBUF before the SYN picks the window scale we offer."""
        self.our_wscale = wscale_for(size) if self.cfg.window_scaling else 0

    def offers(self, flags: int, now: float) -> SynOffers:
        """What our SYN or SYN,ACK carries. A SYN offers what the
        configuration allows; a SYN,ACK only what the peer's SYN offered too."""
        cfg = self.cfg
        ts = tsval(self.ts_base, now)
        if flags & ACK:
            return SynOffers(self.mss_local, self.our_wscale if self.ws_ok else None,
                             self.sack_ok,
                             (ts, self.conn.receiver.ts_recent) if self.ts_ok else None)
        return SynOffers(self.mss_local, self.our_wscale if cfg.window_scaling else None,
                         cfg.sack, (ts, 0) if cfg.timestamps else None)

    def take_syn(self, seg: TcpSegment, now: float) -> None:
        """The peer's SYN (or SYN,ACK): its ISN, MSS, and which options both
        sides offered."""
        cfg = self.cfg
        self.peer_syn_seen = True
        if seg.mss is not None:
            self.peer_mss = max(seg.mss, 64)
        self.ws_ok = cfg.window_scaling and seg.wscale is not None
        if self.ws_ok and seg.wscale is not None:
            self.snd_wscale = min(seg.wscale, 14)  # RFC 7323 2.3: larger means 14
            self.rcv_wscale = self.our_wscale
        else:
            self.snd_wscale = self.rcv_wscale = 0
        ts = seg.timestamps
        self.ts_ok = cfg.timestamps and ts is not None
        self.sack_ok = cfg.sack and seg.sack_perm
        conn = self.conn
        conn.receiver.start(seg.seq, self.rcv_wscale,
                            ts[0] if ts is not None and self.ts_ok else None, now)
        conn.sender.set_wscale(self.snd_wscale)
        self._update_mss()

    def _update_mss(self) -> None:
        """Data per full segment: the smallest of the peer's MSS, ours and the
        path's, less the options every segment carries (RFC 6691)."""
        self.mss_wire = min(self.peer_mss, self.mss_local, self.pmtu_mss)
        self.mss = self.mss_wire - TS_OPT_LEN if self.ts_ok else self.mss_wire
        self.conn.recovery.cc.set_mss(self.mss)

    def path_mtu(self, mtu: int) -> bool:
        """An ICMP "fragmentation needed" with ``mtu``: True if segments shrink.

        RFC 1191 allows an MTU down to 68, but a forged ICMP could then cut
        every segment to 28 bytes of data. Like Linux (min_pmtu), an MTU
        below ``min_pmtu`` counts as ``min_pmtu`` (RFC 5927 7)."""
        if mtu < self.cfg.min_pmtu:
            mtu = self.cfg.min_pmtu
        if mtu - 40 >= self.mss_wire:
            return False
        self.pmtu_mss = mtu - 40
        self._update_mss()
        return True

    # ---- sending SYNs -----------------------------------------------------------------

    def send_syn(self, now: float) -> None:
        """SYN (active) or SYN,ACK (passive or simultaneous open) at ISS."""
        conn = self.conn
        conn.transmit(conn.sender.iss, SYN | ACK if self.peer_syn_seen else SYN, b"", now,
                      syn=True)
        conn.sender.syn_sent()

    def _first_syn(self, now: float) -> None:
        conn = self.conn
        conn.rtt.time(seq_add(conn.sender.iss, 1), now)
        self.send_syn(now)
        conn.timers.start(T.RTO, now + conn.rtt.rto)

    def resend_syn(self, now: float) -> None:
        """The RTO fired during the handshake (the caller backed it off)."""
        conn = self.conn
        conn.rtt.forget()
        self.syn_retransmitted = True
        self.send_syn(now)
        conn.count_retransmit("rto", conn.sender.iss, 0, rto=round(conn.rtt.rto, 6))

    # ---- OPEN ---------------------------------------------------------------------------

    def open_active(self, now: float) -> None:
        self.conn.set_state(SYN_SENT, "user connect", now)
        self._first_syn(now)

    def open_passive(self, seg: TcpSegment, now: float) -> None:
        """A listener hands over an acceptable SYN (RFC 9293 3.10.7.2)."""
        self.take_syn(seg, now)
        self.conn.set_state(SYN_RECEIVED, rcv_cause(seg), now)
        self._first_syn(now)

    def open_from_cookie(self, syn: TcpSegment, seg: TcpSegment, now: float) -> None:
        """A SYN cookie came back on ``seg``: ``syn`` is the SYN rebuilt from
        it, and our SYN,ACK is taken as sent."""
        self.take_syn(syn, now)
        self.conn.set_state(SYN_RECEIVED, "syncookie " + rcv_cause(seg), now)
        self.conn.sender.syn_sent()

    def established(self, now: float) -> None:
        conn = self.conn
        if self.syn_retransmitted:
            conn.rtt.syn_lost()
        conn.timers.stop(T.RTO)
        cc = conn.recovery.cc
        cc.restart(self.cfg.initial_cwnd)
        cc.start(conn.rtt.srtt)
        conn.established(now)

    # ---- segment arrives in SYN_SENT (RFC 9293 3.10.7.3) -------------------------------

    def syn_sent_arrives(self, seg: TcpSegment, now: float) -> None:
        conn = self.conn
        snd = conn.sender
        flags = seg.flags
        ack = seg.ack
        trace = conn.trace
        if flags & ACK:
            if seq_le(ack, snd.iss) or seq_gt(ack, snd.snd_max):
                trace.drop("tcp", "bad_ack", conn=conn.name)
                if not flags & RST:
                    conn.reset_reply(seg)
                if not self.syn_retransmitted:
                    # Whatever the peer holds is stale; as Linux, send the
                    # SYN again at once instead of after a full RTO.
                    conn.timers.start(T.RTO, now + SYN_RETRY_SOON)
                return
        if flags & RST:
            if flags & ACK:
                conn.fail(errno.ECONNREFUSED, rcv_cause(seg), now)
            else:
                trace.drop("tcp", "rst_without_ack", conn=conn.name)
            return
        if not flags & SYN:
            trace.drop("tcp", "no_syn", conn=conn.name)
            return
        self.take_syn(seg, now)
        if not flags & ACK:
            # Simultaneous open (RFC 9293 figure 8).
            conn.set_state(SYN_RECEIVED, rcv_cause(seg), now)
            self.send_syn(now)
            return
        conn.rtt.acked(ack, now)
        snd.synchronize(ack, seg.window, seg)  # a SYN's window is never scaled
        conn.set_state(ESTABLISHED, rcv_cause(seg), now)
        self.established(now)
        rcv = conn.receiver
        rcv.request_ack()
        payload = seg.payload
        fin = bool(flags & FIN)
        if payload or fin:
            room = rcv.window()
            if len(payload) > room:
                payload = payload[:room]
                fin = False
            if rcv.text(rcv.rcv_nxt, payload, fin):
                conn.take_fin(seg, now)

    # ---- segment arrives in SYN_RECEIVED -------------------------------------------------

    def syn_again(self, seg: TcpSegment, now: float) -> bool:
        """A segment carrying the peer's SYN again (``seq == IRS``) in
        SYN_RECEIVED. True: it was handled; False: go on with it as the
        ACK of a simultaneous open (its SYN is old, its ACK new)."""
        if seg.flags & RST:
            return True
        if not seg.flags & ACK:
            # The peer retransmitted its SYN: our SYN,ACK was lost.
            self.send_syn(now)
            self.conn.count_retransmit("syn", self.conn.sender.iss, 0)
            return True
        # The SYN,ACK of a simultaneous open: acknowledge its SYN (as Linux).
        self.conn.receiver.request_ack()
        return False

    def syn_received_ack(self, seg: TcpSegment, now: float) -> bool:
        """Step five in SYN_RECEIVED: an ACK of our SYN establishes the
        connection. False: the segment is done with (dropped or answered)."""
        conn = self.conn
        snd = conn.sender
        ack = seg.ack
        if not (seq_gt(ack, snd.snd_una) and seq_le(ack, snd.snd_max)):
            conn.trace.drop("tcp", "bad_ack", conn=conn.name)
            conn.reset_reply(seg)
            return False
        if conn.accept_queue_full():
            conn.trace.drop("tcp", "accept_queue_full", conn=conn.name)
            return False
        snd.synchronize(seq_add(snd.iss, 1), seg.window << self.snd_wscale, seg)
        conn.rtt.acked(ack, now)
        conn.set_state(ESTABLISHED, rcv_cause(seg), now)
        self.established(now)
        return True
