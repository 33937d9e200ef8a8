"""The one way out: every TCP segment the layer sends goes through
:meth:`Emitter.send` (connections, RSTs for closed ports, SYN cookie answers).

It builds the options from what the caller says the segment carries (the
SYN's offers, the timestamp pair, SACK blocks), builds the header with the
checksum, hands it to IP, counts it and traces it. Callers decide the
numbers (sequence, acknowledgment, window); the emitter decides the bytes.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from stack.trace import Trace
from stack.wire.ipv4 import int2ip
from stack.wire.tcp import (PROTO_TCP, RST, build_options, build_tcp, flags_str, sack_option,
                            syn_options_list, ts_option)

IpSend = Callable[..., None]  # (src, dst, proto, payload[, ttl]); OSError: no route


class SynOffers(NamedTuple):
    """What a SYN or SYN,ACK carries: MSS, window scale, SACK permitted, timestamps."""

    mss: int | None
    wscale: int | None
    sack_perm: bool
    timestamps: tuple[int, int] | None


def conn_name(laddr: int, lport: int, raddr: int, rport: int) -> str:
    """``LADDR:LPORT-RADDR:RPORT``, as trace events name a connection."""
    return f"{int2ip(laddr)}:{lport}-{int2ip(raddr)}:{rport}"


class Emitter:
    """Builds, counts and traces outgoing segments for one layer."""

    def __init__(self, ip_send: IpSend, trace: Trace) -> None:
        self.ip_send = ip_send
        self.trace = trace

    def send(self, laddr: int, lport: int, raddr: int, rport: int, seq: int, ack: int,
             flags: int, win: int, payload: bytes | memoryview = b"",
             syn: SynOffers | None = None, ts: tuple[int, int] | None = None,
             sack: list[tuple[int, int]] | None = None, name: str | None = None,
             cookie: bool = False, ttl: int | None = None, urgent: int = 0,
             wire: int = 1) -> None:
        """One segment from ``(laddr, lport)`` to ``(raddr, rport)``.

        ``syn``: the options of a SYN (then ``ts`` and ``sack`` are not
        used); otherwise ``ts`` is the (TSval, TSecr) pair and ``sack`` the
        SACK blocks, when the segment carries them. ``name`` (the
        connection's) and ``cookie`` (a SYN cookie answer) are for the trace;
        ``ttl`` is the connection's IP_TTL (None: IP's default); ``urgent``
        the urgent pointer of a segment with URG; ``wire`` the segments it
        becomes on the wire (a super-segment the link cuts: counted as those,
        as Linux counts OutSegs).
        Positional arguments only on the hot path: the connection calls
        this for every segment."""
        if syn is not None:
            options = build_options(*syn)
        elif ts is not None:
            options = ts_option(ts[0], ts[1])
            if sack:
                options += sack_option(sack)
        elif sack:
            options = sack_option(sack)
        else:
            options = b""
        trace = self.trace
        try:
            segment = build_tcp(laddr, raddr, lport, rport, seq, ack, flags, win, payload,
                                options=options, urgent=urgent)
            if ttl is None:
                self.ip_send(laddr, raddr, PROTO_TCP, segment)
            else:
                self.ip_send(laddr, raddr, PROTO_TCP, segment, ttl)
        except OSError as e:
            # The route went away: the segment is lost, and TCP's timers
            # handle that like any loss (connect() checks the route first).
            trace.drop("tcp", "unroutable", dst=int2ip(raddr), error=e.errno)
            return
        counters = trace.counters  # (per segment: no key formatting)
        counters["tcp.out_segs"] += wire
        if flags & RST:
            counters["tcp.out_rsts"] += 1
        if trace.on and trace.wants("tcp", "seg"):
            if syn is not None:
                opts = syn_options_list(*syn)
            else:
                opts = [f"TS val {ts[0]} ecr {ts[1]}"] if ts is not None else []
                if sack:
                    opts.append("sack " + " ".join(f"{a}:{b}" for a, b in sack))
            trace.event("tcp", "seg", conn=name or conn_name(laddr, lport, raddr, rport),
                        dir="out", flags=flags_str(flags), seq=seq, ack=ack, win=win,
                        len=len(payload), options=opts, **({"cookie": True} if cookie else {}),
                        **({"urg": urgent} if urgent else {}), **({"gso": wire} if wire > 1 else {}))
