"""The probes that keep a stalled sender going: the persist timer's window
probes (RFC 9293 3.8.6.1) and keepalives (RFC 1122 4.2.3.6). They run when
the connection's timers fire, on the sender's state."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.tcp import timers as T
from stack.tcp.seq import seq_add, seq_diff
from stack.wire.tcp import ACK

if TYPE_CHECKING:
    from stack.tcp.sender import Sender


def persist_expired(snd: Sender, now: float) -> None:
    """The persist timer fired: a window probe, or give up (RFC 9293 3.8.6.1)."""
    snd.probes += 1
    cfg = snd.cfg
    conn = snd.conn
    if snd.probes > cfg.max_retries:
        conn.fail(errno.ETIMEDOUT, "timer persist (probes unanswered)", now)
        return
    if conn.user_closed and snd.persist_backoff >= cfg.orphan_retries:
        # An orphan (closed by the application) whose peer keeps its
        # window shut while answering every probe: nobody waits for the
        # data, so give up like Linux (tcp_orphan_retries), counting the
        # backoffs, which the peer's answers do not reset. RFC 9293
        # 3.8.6.1 forbids this only while a user owns the connection.
        conn.trace.count("tcp", "orphan_aborts")
        conn.fail(errno.ETIMEDOUT, "timer persist (orphan retries exhausted)", now,
                  rst=True)
        return
    conn.trace_timer("persist", probes=snd.probes)
    usable = snd.snd_wnd - seq_diff(snd.snd_nxt, snd.snd_una)
    if usable > 0:
        # The window is open but too small for SWS avoidance: send anyway.
        snd.output(now, force=True)
    else:
        # Zero-window probe, as Linux sends it: an empty segment with an
        # old sequence number (una - 1), which any receiver must answer
        # with an ACK carrying its current window. Unlike a probe byte
        # past the window it puts nothing in flight, so it never meets
        # the retransmission timer.
        conn.transmit(seq_add(snd.snd_una, -1), ACK, b"", now)
    timers = snd.timers
    if not timers.armed(T.RTO) and not timers.armed(T.PERSIST):
        if seq_diff(snd.snd_nxt, snd.data_seq) < len(snd.buf):
            snd.persist_backoff += 1
            timers.start(T.PERSIST, now + snd.persist_interval())

def keepalive_expired(snd: Sender, now: float, interval: float, idle: float, count: int) -> None:
    """The keepalive timer fired (RFC 1122 4.2.3.6): a probe, or give up."""
    conn = snd.conn
    if snd.snd_max != snd.snd_una or snd.buf:
        # Data outstanding: the retransmission timer watches the peer.
        snd.timers.start(T.KEEPALIVE, now + idle)
        return
    if snd.ka_probes >= count:
        conn.fail(errno.ETIMEDOUT, "timer keepalive (probes unanswered)", now, rst=True)
        return
    snd.ka_probes += 1
    conn.trace_timer("keepalive", probes=snd.ka_probes)
    # seq = una - 1: an old byte, which makes the peer answer with an ACK.
    conn.transmit(seq_add(snd.snd_una, -1), ACK, b"", now)
    snd.timers.start(T.KEEPALIVE, now + interval)
