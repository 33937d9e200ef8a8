"""A connection's STATUS (RFC 9293 3.10.6): what ``TcpConnection.status()``
returns, read from its parts; ``stack ss``, ``TCP_INFO`` and the tests use it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection


def status_of(conn: TcpConnection) -> dict[str, Any]:
    """The sequence spaces, windows, options and timers of ``conn``."""
    snd, rcv, hs, rec = conn.sender, conn.receiver, conn.handshake, conn.recovery
    return {
        "state": conn.state, "local": conn.local, "remote": conn.remote,
        "iss": snd.iss, "irs": rcv.irs, "snd_una": snd.snd_una, "snd_nxt": snd.snd_nxt,
        "snd_max": snd.snd_max, "snd_wnd": snd.snd_wnd,
        "snd_wl1": snd.snd_wl1, "snd_wl2": snd.snd_wl2, "window_probes": snd.probes,
        "rcv_nxt": rcv.rcv_nxt, "rcv_wnd": rcv.window(),
        "send_buffered": len(snd.buf), "recv_buffered": len(rcv.buf),
        "ooo_ranges": rcv.ooo.ranges() if rcv.ooo is not None else [],
        "mss": hs.mss, "cwnd": rec.cc.cwnd, "ssthresh": rec.cc.ssthresh,
        "srtt": conn.rtt.srtt, "rttvar": conn.rtt.rttvar, "rto": conn.rtt.rto,
        "error": conn.error, "congestion": rec.cc.name, "in_recovery": rec.in_recovery,
        "dupacks": rec.dupacks, "retransmit_retries": snd.retries,
        "snd_wscale": hs.snd_wscale if hs.ws_ok else None,
        "rcv_wscale": hs.rcv_wscale if hs.ws_ok else None,
        "timestamps": hs.ts_ok, "ts_recent": rcv.ts_recent if hs.ts_ok else None,
        "sack": hs.sack_ok, "sacked": rec.sacked(), "timers": conn.timers.pending(),
        **rec.rack_status(), "pacing_rate": rec.cc.pacing_rate, **rec.cc.info(),
        "bytes_sent": snd.bytes_sent, "bytes_retrans": snd.bytes_retrans,
        "bytes_acked": snd.bytes_acked, "bytes_received": rcv.bytes_received,
        "segs_out": conn.segs_out, "segs_in": conn.segs_in, "retrans": conn.retrans_total,
    }
