"""One TCP connection: the RFC 9293 event processing (section 3.10) for
"segment arrives", the user calls OPEN/SEND/RECEIVE/CLOSE/ABORT/STATUS and
the timeouts.

A connection composes its parts, each the only writer of its own fields:

* :class:`~stack.tcp.handshake.Handshake`: opening, and the options the SYNs negotiated;
* :class:`~stack.tcp.sender.Sender`: the send sequence space, buffer and probes;
* :class:`~stack.tcp.receiver.Receiver`: the receive sequence space, buffer,
  out-of-order queue and ACK decisions;
* :class:`~stack.tcp.recovery.Recovery`: loss detection and recovery, with
  the congestion controller (``congestion.py``);
* :class:`~stack.tcp.rtt.Rtt` and :class:`~stack.tcp.timers.Timers`.

The connection owns the state (changed only by ``Endpoint.set_state``), the
error and what the user set. Every entry point takes ``now`` and is an
:func:`entry`: when it returns, the layer's timer is re-armed and the user
told of changes. Segments leave through the layer's ``Emitter``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Callable

from stack.tcp import timers as T
from stack.tcp.arrives import predicted, process
from stack.tcp.emit import conn_name
from stack.tcp.handshake import Handshake, rcv_cause
from stack.tcp.probes import keepalive_expired, persist_expired
from stack.tcp.receiver import Receiver
from stack.tcp.recovery import Recovery
from stack.tcp.rtt import Rtt
from stack.tcp.sender import Sender
from stack.tcp.seq import seq_add, seq_between, seq_lt, tsval
from stack.tcp.challenge import ChallengeBudget
from stack.tcp.status import status_of
from stack.tcp.states import (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
                              LAST_ACK, LISTEN, RECEIVING, SYN_RECEIVED, SYN_SENT,
                              SYNCHRONIZED, TIME_WAIT, Endpoint, KEEPALIVE_STATES, entry,
                              os_error)
from stack.tcp.timers import Timers
from stack.tcp.urgent import urgent_pointer
from stack.wire.icmp_errors import errno_for
from stack.wire.tcp import ACK, FIN, RST, URG, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.layer import TcpLayer
    from stack.tcp.listener import Listener


class TcpConnection(Endpoint):
    """One connection. Created by :class:`~stack.tcp.layer.TcpLayer`
    (``connect`` or a listener), never directly by users."""

    __slots__ = ("_close_deferred", "_dirty", "_fast_path", "_shut_wr", "cfg", "challenges",
                 "error", "handshake", "keepalive", "keepalive_count", "keepalive_idle",
                 "keepalive_interval", "last_rcv", "layer", "listener", "local", "name", "now",
                 "on_change", "passive", "read_shut", "receiver", "recovery", "remote",
                 "retrans_total", "rtt", "segs_in", "segs_out", "sender", "snd_up", "soft_error",
                 "timers", "ttl", "user_closed")

    def __init__(self, layer: TcpLayer, local: tuple[int, int], remote: tuple[int, int],
                 iss: int, now: float, listener: Listener | None = None) -> None:
        super().__init__(layer.trace, LISTEN if listener is not None else CLOSED)
        cfg = self.cfg = layer.config
        self.layer = layer
        self.local = local
        self.remote = remote
        self.name = conn_name(local[0], local[1], remote[0], remote[1])
        self.error: int | None = None
        self.ttl: int | None = None          # IP_TTL of its segments (None: IP's default)
        self.soft_error: int | None = None  # an ICMP error, reported if we time out
        self.on_change: Callable[[], None] | None = None
        self.listener = listener            # until accepted
        self.passive = listener is not None
        self.now = now
        self.last_rcv = now
        self.user_closed = False
        self._dirty = False
        self._shut_wr = False
        self.read_shut = False  # shutdown(SHUT_RD): later data in FIN_WAIT is reset
        self.snd_up: int | None = None  # send(MSG_OOB)'s urgent pointer (urgent.py)
        self._close_deferred = False
        self._fast_path = cfg.header_prediction
        self.challenges = ChallengeBudget(cfg.challenge_ack_limit, cfg.challenge_ack_interval)
        self.segs_in = self.segs_out = self.retrans_total = 0  # (ss -i's segs_in, segs_out, retrans)
        self.keepalive = cfg.keepalive      # SO_KEEPALIVE and its TCP_KEEP* options
        self.keepalive_idle = cfg.keepalive_idle
        self.keepalive_interval = cfg.keepalive_interval
        self.keepalive_count = cfg.keepalive_count
        # The parts (each refers to those it talks to).
        self.timers = Timers()
        self.rtt = Rtt(cfg, self.trace, self.name)
        self.handshake = Handshake(self, layer.ts_offset(*local, *remote), cfg.rcvbuf)
        self.recovery = Recovery(self, iss)
        self.sender = Sender(self, iss, cfg.sndbuf)
        self.receiver = Receiver(self, cfg.rcvbuf, now)
        self.recovery.snd = self.sender

    # ---- what the parts and the user ask --------------------------------------------

    @property
    def synchronized(self) -> bool:
        return self.state in SYNCHRONIZED

    @property
    def readable(self) -> bool:
        """recv() would return data, EOF or an error without waiting."""
        return (self.receiver.has_data or self.receiver.fin_received or self.error is not None
                or self.state == CLOSED)

    @property
    def writable(self) -> bool:
        """send() would accept data (free space at least half what is
        queued, as Linux) or fail at once."""
        st = self.state
        if self.error is not None or st == CLOSED or self._shut_wr:
            return True
        if st != ESTABLISHED and st != CLOSE_WAIT:
            return False
        return self.sender.can_write()

    @property
    def at_eof(self) -> bool:
        """Everything up to the peer's FIN has been read."""
        return self.receiver.fin_received and not self.receiver.has_data

    @property
    def sndbuf_size(self) -> int:
        return self.sender.bufsize

    @property
    def rcvbuf_size(self) -> int:
        return self.receiver.bufsize

    @property
    def congestion(self) -> str:
        return self.recovery.cc.name

    def accept_queue_full(self) -> bool:
        return self.listener is not None and self.listener.queue_full()

    def changed(self) -> None:
        """Something the user waits on changed (readable, writable, closed)."""
        self._dirty = True

    # ---- the state ----------------------------------------------------------------------

    def entered(self, old: str, new: str, now: float) -> None:
        self._dirty = True
        trace = self.trace
        if new == ESTABLISHED:
            trace.count("tcp", "passive_opens" if self.passive else "active_opens")
        if new != CLOSED and new != TIME_WAIT:
            return
        self.timers.stop_all()
        self.sender.discard()
        self.receiver.clear_queue()
        if new == TIME_WAIT:
            self.timers.start(T.TIME_WAIT, now + self.cfg.time_wait)
            return
        if old in (SYN_SENT, SYN_RECEIVED):
            trace.count("tcp", "attempt_fails")
        elif old in (ESTABLISHED, CLOSE_WAIT) and self.error is not None:
            trace.count("tcp", "estab_resets")
        if self.user_closed:
            self.receiver.discard()
        self.layer.release(self)

    def _finish(self) -> None:
        """End of every entry point: re-arm the layer's timer, tell the user."""
        if self.state != CLOSED:
            self.layer.schedule(self)
        if self._dirty:
            self._dirty = False
            cb = self.on_change
            if cb is not None:
                cb()

    def fail(self, err: int | None, cause: str, now: float, rst: bool = False) -> None:
        if rst and self.state not in (CLOSED, SYN_SENT, TIME_WAIT):
            self.send_rst(now)
        if err is not None:
            self.error = err
        self.set_state(CLOSED, cause, now)

    def established(self, now: float) -> None:
        """The handshake is over (called by it)."""
        if self.keepalive:
            self.timers.start(T.KEEPALIVE, now + self.keepalive_idle)
        if self.listener is not None:
            self.listener.established(self)
        if self._close_deferred:
            self._close_deferred = False
            self._begin_fin(now, "user close (deferred)")

    # ---- output ---------------------------------------------------------------------------

    def transmit(self, seq: int, flags: int, payload: bytes | memoryview, now: float,
                 syn: bool = False) -> None:
        """One segment: ACK and window from the receiver (cancelling a delayed
        ACK), timestamps once negotiated, SACK blocks while data waits out
        of order."""
        rcv = self.receiver
        hs = self.handshake
        ack = win = 0
        up = urgent_pointer(self.snd_up, seq) if self.snd_up is not None and not syn else 0
        if up:
            flags |= URG
        elif self.snd_up is not None and not seq_lt(self.sender.snd_una, self.snd_up):
            self.snd_up = None  # acknowledged: urgent mode ends
        if flags & ACK:
            ack, win = rcv.ack_fields(syn)
        elif syn:
            win = rcv.syn_window()
        # A segment of many MSS (the link cuts it: TSO, software GSO) counts
        # as the segments it becomes on the wire, as Linux counts them.
        n = len(payload)
        wire = 1 if n <= hs.mss else -(-n // hs.mss)
        self.segs_out += wire
        if payload:
            rcv.data_sent(now)
        laddr, lport = self.local
        raddr, rport = self.remote
        emit = self.layer.emitter.send
        if syn:
            emit(laddr, lport, raddr, rport, seq, ack, flags, win, payload, hs.offers(flags, now),
                 None, None, self.name, False, self.ttl)
            return
        ts = None
        room = 36
        if hs.ts_ok:
            ts = (tsval(hs.ts_base, now), rcv.ts_recent if flags & ACK else 0)
            room = 24
        blocks = None
        if hs.sack_ok and flags & ACK and rcv.sack_due:
            if payload:
                room = min(room, hs.mss_wire - (36 - room) - len(payload) - 4)
            blocks = rcv.sack_blocks(room >> 3)
        emit(laddr, lport, raddr, rport, seq, ack, flags, win, payload, None, ts, blocks,
             self.name, False, self.ttl, up, wire)

    def send_ack(self, now: float) -> None:
        self.transmit(self.sender.snd_max, ACK, b"", now)

    def send_rst(self, now: float) -> None:
        """An active reset (abort): RST,ACK at SND.NXT with our ACK and
        timestamps, as Linux's ``tcp_send_active_reset``."""
        self.transmit(self.sender.snd_max, RST | ACK, b"", now)

    def reset_reply(self, seg: TcpSegment) -> None:
        """Answer ``seg`` with the RST a closed port would send (no options)."""
        self.layer.send_rst_reply(self.remote[0], self.local[0], seg)

    def count_retransmit(self, reason: str, seq: int, n: int, **extra: object) -> None:
        """Count a segment sent again and trace it (the one place that does)."""
        self.trace.count("tcp", "retrans_segs")
        self.retrans_total += 1
        self.recovery.retransmitted(seq, n, self.now)
        if self.trace.on:
            self.trace.event("tcp", "retransmit", conn=self.name, reason=reason, seq=seq,
                             len=n, **extra)

    def trace_timer(self, timer: str, **fields: object) -> None:
        if self.trace.on:
            self.trace.event("tcp", "timer", conn=self.name, timer=timer, **fields)

    def challenge_ack(self, now: float, why: str) -> None:
        """RFC 5961: answer a suspicious RST/SYN/ACK with an ACK, within the
        connection's budget (``stack/tcp/challenge.py``)."""
        self.trace.drop("tcp", why, conn=self.name)
        if not self.challenges.take(now):
            self.trace.count("tcp", "challenge_ack_limited")
            return
        self.trace.count("tcp", "challenge_acks")
        self.send_ack(now)

    # ---- OPEN (called by the layer) ---------------------------------------------------------

    @entry
    def open_active(self, now: float) -> None:
        self.handshake.open_active(now)

    @entry
    def open_passive(self, seg: TcpSegment, now: float) -> None:
        self.segs_in += 1
        self.handshake.open_passive(seg, now)

    @entry
    def open_from_cookie(self, syn: TcpSegment, seg: TcpSegment, now: float) -> None:
        """A SYN cookie returned on ``seg`` (``syn``: the SYN it stands for)."""
        self.handshake.open_from_cookie(syn, seg, now)
        self.segment_arrives(seg, now)
        if self.state == SYN_RECEIVED:
            # The ACK did not complete the handshake after all: forget it, as
            # if the cookie had never matched (no timer would ever end it).
            self.set_state(CLOSED, "syncookie ack not accepted", now)

    # ---- SEGMENT ARRIVES (RFC 9293 3.10.7) ----------------------------------------------

    @entry
    def segment_arrives(self, seg: TcpSegment, now: float) -> None:
        """Entry from the layer for a segment demultiplexed to this connection."""
        self.now = now
        self.last_rcv = now
        self.segs_in += 1
        snd = self.sender
        if self.timers.at[T.KEEPALIVE] is not None or snd.ka_probes:
            snd.keepalive_answered()
            if self.keepalive and self.state in KEEPALIVE_STATES:
                self.timers.start(T.KEEPALIVE, now + self.keepalive_idle)
        st = self.state
        if st == ESTABLISHED and self._fast_path and predicted(self, seg, now):
            pass
        elif st == SYN_SENT:
            self.handshake.syn_sent_arrives(seg, now)
        else:
            process(self, seg, now)
        if self.state != CLOSED:
            snd.output(now)
            if self.receiver.ack_due(now):
                self.send_ack(now)

    def rcv_rst(self, seg: TcpSegment, now: float) -> None:
        st = self.state
        cause = rcv_cause(seg)
        self.trace.count("tcp", "in_rsts")
        if st == SYN_RECEIVED:
            if self.passive:
                self.set_state(CLOSED, cause, now)  # back to LISTEN: the listener remains
            else:
                self.fail(errno.ECONNREFUSED, cause, now)
        elif st == CLOSE_WAIT:
            self.fail(errno.EPIPE, cause, now)  # the peer had closed: as Linux (tcp_reset)
        elif st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2):
            self.fail(errno.ECONNRESET, cause, now)
        else:
            self.set_state(CLOSED, cause, now)

    def take_fin(self, seg: TcpSegment, now: float) -> None:
        """Eighth: the peer's FIN is in order."""
        st = self.state
        self.receiver.take_fin(closing_first=st == ESTABLISHED)
        cause = rcv_cause(seg)
        if not seg.flags & FIN:
            cause += " (fills the gap before a queued FIN)"
        if st in (SYN_RECEIVED, ESTABLISHED):
            self.set_state(CLOSE_WAIT, cause, now)
        elif st == FIN_WAIT_1:
            self.set_state(TIME_WAIT if self.sender.fin_acked() else CLOSING, cause, now)
        elif st == FIN_WAIT_2:
            self.set_state(TIME_WAIT, cause, now)

    # ---- timeouts -----------------------------------------------------------------------

    def deadline(self) -> float | None:
        return self.timers.deadline()

    @entry
    def on_timer(self, now: float) -> None:
        """Run whichever of this connection's timers are due."""
        self.now = now
        t = self.timers
        if t.due(T.TIME_WAIT, now):
            self.set_state(CLOSED, "timer 2MSL", now)
            return
        if t.due(T.FIN_WAIT_2, now):
            self.set_state(CLOSED, "timer FIN_WAIT_2", now)
            return
        if t.due(T.REO, now):
            self.recovery.on_reo_timeout(now)
        if t.due(T.PACE, now):
            t.stop(T.PACE)
            self.sender.output(now)
        if t.due(T.RTO, now):
            self.sender.on_rto(now)
        if t.due(T.PERSIST, now) and self.state != CLOSED:
            t.stop(T.PERSIST)
            persist_expired(self.sender, now)
        if t.due(T.DELACK, now) and self.state != CLOSED:
            t.stop(T.DELACK)
            self.receiver.delayed_ack_fired()
            self.send_ack(now)
        if t.due(T.KEEPALIVE, now) and self.state != CLOSED:
            t.stop(T.KEEPALIVE)
            if self.keepalive and self.state in KEEPALIVE_STATES:
                keepalive_expired(self.sender, now, self.keepalive_interval,
                                  self.keepalive_idle, self.keepalive_count)

    # ---- ICMP -----------------------------------------------------------------------------

    @entry
    def icmp_error(self, kind: str, seq: int, mtu: int | None, now: float) -> bool:
        """An ICMP error quoting one of our segments (RFC 1122 4.2.3.9, RFC 5927;
        errnos: stack/wire/icmp_errors.py); False for a sequence number not in flight."""
        snd = self.sender
        if seq != snd.snd_una and not (seq_between(seq, snd.snd_una, snd.snd_max) and seq != snd.snd_max):
            self.trace.drop("tcp", "icmp_stale", conn=self.name)
            return False
        if self.trace.on:  # the timeline shows every error that reached the connection
            self.trace.event("tcp", "icmp", conn=self.name, kind=kind, seq=seq,
                             **({"mtu": mtu} if mtu else {}))
        if kind == "frag_needed":
            if mtu and self.handshake.path_mtu(mtu) and self.synchronized:
                snd.go_back()
                snd.output(now, force=True)
            return True
        if self.state == SYN_SENT or (self.state == SYN_RECEIVED and not self.passive):
            self.fail(errno_for(kind), f"icmp {kind}", now)  # Linux aborts a connection attempt
        else:
            self.soft_error = errno_for(kind)
        return True

    # ---- user calls ------------------------------------------------------------------

    @entry
    def send(self, data: bytes | bytearray | memoryview, now: float, urgent: bool = False) -> int:
        """SEND: copy what fits into the send buffer (``urgent``: MSG_OOB); the count (0: full)."""
        self.now = now
        if self.error is not None:
            raise os_error(self.error)
        if self._shut_wr or self.state not in (SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            raise os_error(errno.EPIPE)
        n = self.sender.write(data)
        if n and urgent:
            self.snd_up = seq_add(self.sender.data_seq, len(self.sender.buf))
        if n:
            self.sender.output(now)
        return n

    def recv(self, n: int, now: float | None = None) -> bytes | None:
        """RECEIVE: up to ``n`` bytes; ``b""`` at EOF; None when nothing yet."""
        if self.receiver.has_data:
            out = self.receiver.read(n)
            self._after_read(now)
            return out
        if self.error is not None:
            raise os_error(self.error)
        if self.receiver.fin_received or self.state == CLOSED:
            return b""
        return None

    def recv_into(self, buffer: Any, nbytes: int = 0, now: float | None = None) -> int | None:
        """Like :meth:`recv` into a writable buffer; 0 at EOF, None when nothing yet."""
        mv = memoryview(buffer).cast("B")
        if self.receiver.has_data:
            k = self.receiver.read_into(mv, nbytes or len(mv))
            self._after_read(now)
            return k
        if self.error is not None:
            raise os_error(self.error)
        if self.receiver.fin_received or self.state == CLOSED:
            return 0
        return None

    def peek(self, n: int) -> bytes:
        """Up to ``n`` buffered bytes, left in the buffer (MSG_PEEK)."""
        return self.receiver.peek(n)

    def _after_read(self, now: float | None) -> None:
        if now is not None:
            self.now = now
        if self.state in RECEIVING and self.receiver.window_update_due():
            self._window_update(self.now)

    @entry
    def _window_update(self, now: float) -> None:
        self.send_ack(now)

    @entry
    def shutdown_write(self, now: float) -> None:
        """Half-close: send a FIN after the buffered data; keep receiving."""
        self.now = now
        if self.state == CLOSED:
            raise os_error(self.error or errno.ENOTCONN)
        self._shutdown_wr(now, "user shutdown")

    def shutdown_read(self) -> None:
        """Half-close the receiving side (the facade's SHUT_RD): what was
        received can still be read, as on Linux; data that comes once our
        FIN is out (FIN_WAIT_1/2) is answered with a reset."""
        self.read_shut = True

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
        self.sender.queue_fin()
        st = self.state
        if st == ESTABLISHED:
            self.set_state(FIN_WAIT_1, cause, now)
        elif st == CLOSE_WAIT:
            self.set_state(LAST_ACK, cause, now)
        self.sender.output(now)

    @entry
    def close(self, now: float) -> None:
        """CLOSE: no more sends or receives; buffered data goes out before the FIN.

        Unread received data makes it an abort (RST), as in Linux."""
        self.now = now
        st = self.state
        self.user_closed = True
        if st == CLOSED:
            return
        if st == SYN_SENT:
            self.set_state(CLOSED, "user close", now)
        elif self.receiver.buf and (st in RECEIVING or st == CLOSE_WAIT):
            self.fail(None, "user close (unread data)", now, rst=True)
        else:
            self._shutdown_wr(now, "user close")
            if self.state == FIN_WAIT_2:
                self.timers.start_if_idle(T.FIN_WAIT_2, now + self.cfg.fin_wait2_timeout)

    @entry
    def abort(self, now: float, cause: str = "user abort") -> None:
        """ABORT: send RST (in synchronized states) and forget the connection.
        ``cause`` is what the trace says (a timed-out connect says so)."""
        self.now = now
        self.user_closed = True
        st = self.state
        if st == CLOSED:
            return
        if st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self.send_rst(now)
        self.set_state(CLOSED, cause, now)

    @entry
    def drop(self, cause: str, now: float, orphan: bool = False) -> None:
        """Forget the connection without a word to the peer (a TIME_WAIT one
        taken over or recycled, a half-open one whose listener closed)."""
        if orphan:
            self.user_closed = True
        if self.state != CLOSED:
            self.set_state(CLOSED, cause, now)

    def accepted(self) -> None:
        """The listener handed the connection to the user."""
        self.listener = None

    def size_rcvbuf(self, size: int) -> None:
        """SO_RCVBUF before the SYN: it also picks the window scale we offer."""
        self.receiver.bufsize = size
        self.handshake.size_rcvbuf(size)

    def set_buffers(self, sndbuf: int | None = None, rcvbuf: int | None = None) -> None:
        """SO_SNDBUF / SO_RCVBUF on an open connection."""
        if sndbuf is not None:
            self.sender.set_bufsize(sndbuf)
        if rcvbuf is not None:
            self.receiver.bufsize = rcvbuf

    def status(self) -> dict[str, Any]:
        """STATUS: the sequence spaces, windows, options and timers (stack/tcp/status.py)."""
        return status_of(self)

    @entry
    def set_nodelay(self, on: bool) -> None:
        self.sender.nodelay = bool(on)
        if on and self.state != CLOSED:
            self.sender.output(self.now)

    def set_congestion(self, name: str) -> None:
        """TCP_CONGESTION: ``"cubic"``, ``"newreno"`` or ``"reno"`` from now on,
        keeping cwnd and ssthresh. An unknown name is ENOENT, as Linux."""
        if not self.recovery.set_congestion(name):
            raise os_error(errno.ENOENT)

    @entry
    def set_keepalive(self, on: bool, idle: float | None = None, interval: float | None = None,
                      count: int | None = None) -> None:
        """SO_KEEPALIVE, with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT."""
        if idle is not None and idle != self.keepalive_idle:
            # A new idle time starts keepalive over: the timer is re-armed
            # below and the probes count from zero again.
            self.keepalive_idle = idle
            self.timers.stop(T.KEEPALIVE)
            self.sender.keepalive_answered()
        if interval is not None:
            self.keepalive_interval = interval
        if count is not None:
            self.keepalive_count = count
        self.keepalive = bool(on)
        if on and self.state in KEEPALIVE_STATES:
            self.timers.start_if_idle(T.KEEPALIVE, self.now + self.keepalive_idle)
        elif not on:
            self.timers.stop(T.KEEPALIVE)
            self.sender.keepalive_answered()

    def __repr__(self) -> str:
        return f"<TcpConnection {self.name} {self.state}>"
