"""Segment arrives (RFC 9293 3.10.7.4) for the synchronized states and
SYN_RECEIVED: header prediction, then the general path in the RFC's order
(sequence number, RST, SYN, ACK, text, FIN), each step a short function.

SYN_SENT is the handshake's (``handshake.py``); LISTEN the listener's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.tcp import timers as T
from stack.tcp.handshake import rcv_cause
from stack.tcp.seq import seq_add, seq_between, seq_diff, seq_gt, seq_in, seq_le, seq_lt
from stack.tcp.states import CLOSED, CLOSING, FIN_WAIT_1, LAST_ACK, RECEIVING, SYN_RECEIVED
from stack.tcp.states import FIN_WAIT_2, TIME_WAIT

from stack.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection

# States where data that arrives after shutdown(SHUT_RD) is answered with a
# reset (Linux's tcp_rcv_state_process: FIN_WAIT_1 and FIN_WAIT_2).
SHUT_RESETS = (FIN_WAIT_1, FIN_WAIT_2)


def predicted(conn: TcpConnection, seg: TcpSegment, now: float) -> bool:
    """Header prediction (RFC 7323 appendix D): the two segments of a bulk
    transfer, handled with what :func:`process` would do, in fewer steps.

    In ESTABLISHED, the next in-order segment with only ACK (and PSH)
    set, no SACK blocks and a timestamp that PAWS lets through, that is
    either data acknowledging nothing new under an unchanged window (while
    no window probe is due), or a pure ACK. Anything else returns False and
    takes the general path. ``tests/tcp/test_fastpath.py`` checks that both
    paths give the same segments, state and timers."""
    rcv = conn.receiver
    if seg.flags & ~PSH != ACK or seg.seq != rcv.rcv_nxt or seg.sack:
        return False
    ts = seg.timestamps
    ts_ok = conn.handshake.ts_ok
    if ts_ok and (ts is None or seq_lt(ts[0], rcv.ts_recent)):
        return False
    snd = conn.sender
    ack = seg.ack
    payload = seg.payload
    n = len(payload)
    if n:
        if (ack != snd.snd_una or rcv.ooo is not None or rcv.ooo_fin is not None
                or rcv.urgent is not None or conn.user_closed or seg.window << snd.wscale != snd.snd_wnd
                or n > seq_diff(rcv.rcv_adv, rcv.rcv_nxt)
                or conn.timers.at[T.PERSIST] is not None):  # (its window update restarts it)
            return False
    elif not seq_between(ack, snd.snd_una, snd.snd_max):
        return False
    rcv.fast_path(payload, ts[0] if ts is not None and ts_ok else None, now)
    if n:
        snd.fast_path_data(seg)
    else:
        snd.peer_alive()
        snd.on_ack(seg, ack, True, now)
    return True


def process(conn: TcpConnection, seg: TcpSegment, now: float) -> None:
    """RFC 9293 3.10.7.4, "Otherwise": the steps in order."""
    flags = seg.flags
    seq = seg.seq
    if conn.state == SYN_RECEIVED and flags & SYN and seq == conn.receiver.irs:
        if conn.handshake.syn_again(seg, now):
            return
        flags &= ~SYN  # the SYN,ACK of a simultaneous open: its SYN is old
        seq = seq_add(seq, 1)
    ts_invalid = _paws(conn, seg, seq, flags, now)
    if ts_invalid is None:
        return
    trimmed = _acceptable(conn, seq, flags, seg.payload, now)
    if trimmed is None:
        return
    seq, flags, payload = trimmed
    if flags & RST:  # second (RFC 5961 3: an exact match resets, in-window is challenged)
        if seg.seq == conn.receiver.rcv_nxt:
            conn.rcv_rst(seg, now)
        else:
            conn.challenge_ack(now, "rst_not_exact")
        return
    if flags & SYN:  # fourth (RFC 5961 4)
        if conn.state == SYN_RECEIVED and conn.passive:
            # Back to LISTEN (RFC 9293), telling the peer as Linux does.
            conn.reset_reply(seg)
            conn.set_state(CLOSED, rcv_cause(seg) + " (SYN in window)", now)
        else:
            conn.challenge_ack(now, "syn_in_window")
        return
    if not flags & ACK:  # fifth
        conn.trace.drop("tcp", "no_ack", conn=conn.name)
        return
    if not _ack(conn, seg, now, ts_invalid):
        return
    rcv = conn.receiver
    if (seg.flags & URG or rcv.urgent is not None) and conn.state in RECEIVING:
        # Sixth: the urgent mark and its byte (urgent.py), from the whole segment.
        rcv.urgent_arrives(seg.seq, seg.urgent if seg.flags & URG else None,
                           seq_add(seg.seq, 1) if seg.flags & SYN else seg.seq, seg.payload)
    # Seventh: text. Eighth: FIN.
    fin = flags & FIN
    if payload or fin:
        if conn.state in RECEIVING:
            if payload and (conn.user_closed or (conn.read_shut and conn.state in SHUT_RESETS)):
                # Nobody will read it (RFC 2525 2.17, Linux): reset, with the
                # RST that answers this segment (Linux's tcp_reset + send_reset).
                conn.reset_reply(seg)
                conn.fail(None, rcv_cause(seg) + " (data after close)", now)
            elif conn.receiver.text(seq, payload, bool(fin)):
                conn.take_fin(seg, now)
        elif payload:
            conn.trace.drop("tcp", "data_after_fin", conn=conn.name)
            if conn.state == TIME_WAIT:
                conn.receiver.request_ack()  # as Linux (tcp_timewait_state_process: TCP_TW_ACK)


def _paws(conn: TcpConnection, seg: TcpSegment, seq: int, flags: int, now: float) -> bool | None:
    """PAWS (RFC 7323 5.3 R1): once timestamps are on, a segment whose
    TSval is older than TS.Recent is an old duplicate, dropped (None).
    RSTs are exempt, and a TS.Recent idle for more than 24 days is no
    longer trusted (5.5): the segment is accepted and its TSval kept (True).

    What the dropped segment earns follows Linux 6.14 and later
    (``tcp_validate_incoming``, ``tcp_disordered_ack_check``,
    ``tcp_oow_rate_limited`` in net/ipv4/tcp_input.c): a SYN a challenge
    ACK; an old pure ACK (below RCV.NXT) nothing (``PAWSOldAck``); a
    segment with data or a FIN its duplicate ACK every time (D-SACKing
    what we hold already); any other
    (a pure ACK at RCV.NXT, mostly ACKs reordered on the path) a
    duplicate ACK at most once per ``challenge_ack_interval`` (500 ms),
    a budget it shares with the challenge ACKs as Linux shares
    ``last_oow_ack_time`` (``TCPACKSkippedPAWS`` counts the rest). A
    duplicate ACK reordered within about an RTO, under the same window, is
    not dropped at all (False): Linux takes it (``_disordered_ack``)."""
    if not conn.handshake.ts_ok or flags & RST:
        return False
    ts = seg.timestamps
    if ts is None:
        # RFC 7323 3.2 says SHOULD drop; Linux and FreeBSD take it (no
        # PAWS test possible), and so do we: counted, not dropped.
        conn.trace.count("tcp", "no_timestamp")
        return False
    rcv = conn.receiver
    old = rcv.paws_rejects(ts[0], now)
    if not old:
        return old is None
    trace = conn.trace
    pure_ack = flags & (ACK | SYN | FIN) == ACK and not seg.payload
    if pure_ack and conn.state not in (SYN_RECEIVED, TIME_WAIT):
        # (Linux's request and timewait socks only rate-limit: tcp_check_req,
        # tcp_timewait_state_process.)
        if seq_lt(seq, rcv.rcv_nxt):
            trace.drop("tcp", "paws", conn=conn.name)
            trace.count("tcp", "paws_old_ack")
            return None
        if _disordered_ack(conn, seg, seq, ts[0]):
            trace.count("tcp", "paws_disordered_ack")
            return False
    trace.drop("tcp", "paws", conn=conn.name)
    if flags & SYN:
        if conn.challenges.take(now):
            trace.count("tcp", "challenge_acks")
            rcv.request_ack()
        else:
            trace.count("tcp", "challenge_ack_limited")
    elif not pure_ack and (seg.payload or flags & FIN):
        # Data is no ACK loop: never limited. Bytes we hold already are
        # D-SACKed, as Linux's tcp_send_dupack does.
        nxt = rcv.rcv_nxt
        if seq_lt(seq, nxt):
            end = seq_add(seq, len(seg.payload) + (1 if flags & FIN else 0))
            rcv.duplicate(seq, end if seq_le(end, nxt) else nxt)
        else:
            rcv.request_ack()
    elif conn.challenges.out_of_window(now):
        rcv.request_ack()
    else:
        trace.count("tcp", "paws_ack_skipped")
    return None


def _disordered_ack(conn: TcpConnection, seg: TcpSegment, seq: int, tsval: int) -> bool:
    """A pure ACK at RCV.NXT that acknowledges nothing new, moves no window
    and whose TSval is behind TS.Recent by no more than 1.2 RTOs of a 1 ms
    clock: a duplicate ACK the path reordered, which Linux lets through PAWS
    (``tcp_disordered_ack_check``, its replay window ``tcp_tsval_replay``).

    Linux takes one whose window is smaller than SND.WND too, and then does
    not apply it (``tcp_may_update_window``). Our sender follows RFC 9293
    3.10.7.4 and would: a reordered ACK from up to an RTO ago would shrink
    the window to what the peer offered then (on the reordering profile of
    ``bench/pathemu`` that cost about a third of the goodput). So such a one
    stays a PAWS failure here; one with the same window changes nothing but
    what Linux's changes."""
    snd = conn.sender
    if seq != conn.receiver.rcv_nxt or seg.ack != snd.snd_una:
        return False
    win = seg.window << snd.wscale
    wl1 = snd.snd_wl1
    if seq_gt(seq, wl1) or (seq == wl1 and (win != snd.snd_wnd or not win)):
        return False  # it could update the window
    return seq_diff(conn.receiver.ts_recent, tsval) <= conn.rtt.rto * 1200


def _acceptable(conn: TcpConnection, seq: int, flags: int, payload: bytes | memoryview,
                now: float) -> tuple[int, int, bytes | memoryview] | None:
    """First: is the sequence number acceptable? The segment trimmed to
    the window, or None when it is dropped (and ACKed if it was not a RST)."""
    rcv = conn.receiver
    trace = conn.trace
    fin = flags & FIN
    n = len(payload)
    seg_len = n + (1 if flags & SYN else 0) + (1 if fin else 0)
    nxt = rcv.rcv_nxt
    wnd = rcv.window()
    if seg_len == 0:
        ok = seq == nxt if wnd == 0 else seq_in(seq, nxt, wnd)
    else:
        ok = wnd > 0 and (seq_in(seq, nxt, wnd)
                              or seq_in(seq_add(seq, seg_len - 1), nxt, wnd))
    if not ok:
        if flags & RST:
            trace.drop("tcp", "rst_out_of_window", conn=conn.name)
            return None
        rcv.request_ack()
        if wnd == 0 and seq == nxt and not flags & SYN:
            # Zero window: keep the ACK (and a bare FIN), drop the text.
            if n:
                trace.drop("tcp", "zero_window", conn=conn.name)
                return seq, flags & ~FIN, b""
            return seq, flags, payload
        trace.drop("tcp", "out_of_window", conn=conn.name)
        if n and seq_le(seq_add(seq, n), nxt):
            rcv.duplicate(seq, seq_add(seq, n))  # all of it held already
        if conn.state == TIME_WAIT and fin:
            # A retransmitted FIN: ACK it again and restart 2MSL.
            conn.timers.start(T.TIME_WAIT, now + conn.cfg.time_wait)
        return None
    # Trim to the window: old bytes (and an old SYN) on the left, bytes
    # beyond the window (and the FIN) on the right.
    if seq_lt(seq, nxt):
        # Partly old: our ACK was probably lost, so ACK at once.
        rcv.request_ack()
        skip = seq_diff(nxt, seq)
        if n and (skip > 1 or not flags & SYN):
            rcv.duplicate(seq_add(seq, 1) if flags & SYN else seq, nxt)
        if flags & SYN:
            flags &= ~SYN
            skip -= 1
        if skip:
            payload = payload[skip:]
        seq = nxt
    room = wnd - seq_diff(seq, nxt)
    if len(payload) > room:
        payload = payload[:room]
        flags &= ~FIN
        rcv.request_ack()
    return seq, flags, payload


def _ack(conn: TcpConnection, seg: TcpSegment, now: float, ts_invalid: bool) -> bool:
    """Fifth: the ACK field. False when the segment is done with.

    TS.Recent takes the segment's TSval only once its ACK is acceptable
    too (RFC 7323 5.3 R3 comes after the checks; Linux updates it inside
    ``tcp_ack``): a blind segment that only earns a challenge ACK, or an
    ACK of data never sent, must not move it, or a forged far-future TSval
    would make PAWS drop every later segment of the real peer."""
    ack = seg.ack
    snd = conn.sender
    if conn.state == SYN_RECEIVED and not conn.handshake.syn_received_ack(seg, now):
        return False
    if seq_gt(ack, snd.snd_max):
        # ACK for data never sent: ACK back, drop.
        conn.trace.drop("tcp", "ack_unsent", conn=conn.name)
        conn.receiver.request_ack()
        return False
    st = conn.state
    if seq_lt(ack, seq_add(snd.snd_una, -snd.max_snd_wnd)):
        conn.challenge_ack(now, "ack_too_old")
        return False
    ts = seg.timestamps
    if ts is not None and conn.handshake.ts_ok and st != TIME_WAIT:
        # (TIME_WAIT keeps the TSval of the FIN, as Linux's timewait sock does.)
        conn.receiver.update_ts_recent(ts[0], seg.seq, now, force=ts_invalid)
    una_before = snd.snd_una
    snd.peer_alive()
    snd.on_ack(seg, ack, not seg.payload and not seg.flags & (SYN | FIN), now)
    if conn.state == CLOSED:
        return False
    if snd.snd_una != una_before and snd.fin_acked():
        if st == FIN_WAIT_1:
            conn.set_state(FIN_WAIT_2, rcv_cause(seg), now)
            if conn.user_closed:
                conn.timers.start(T.FIN_WAIT_2, now + conn.cfg.fin_wait2_timeout)
        elif st == CLOSING:
            conn.set_state(TIME_WAIT, rcv_cause(seg), now)
            return False
        elif st == LAST_ACK:
            conn.set_state(CLOSED, rcv_cause(seg), now)
            return False
    return True
