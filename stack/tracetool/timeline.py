"""``stack trace``'s default view of a TCP connection: its timeline.

Each state change with its time and cause; between them, as notes, what
other layers did to the connection (an ICMP error quoting one of its
segments, and what TCP made of it; an ARP failure for its peer's address);
then the summary: span, bytes and segments each way, retransmissions, RTT,
the time spent in each state, timers and drops, and for a BBR connection its
modes in order and its last model (``bbr.py``). A SYN to a closed port and
its RST show as a "refused" block with those two segments.
"""

from __future__ import annotations

from typing import Iterable

from stack.tracetool import bbr
from stack.tracetool.read import Connection, duration, flag_names, plural, summarize

_ms = duration


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def quote_text(q: object) -> str:
    """An ICMP error's quoted datagram (``describe_quote``'s dict) in one phrase."""
    if not isinstance(q, dict):
        return "?"
    words = [str(q.get("proto", "?")), f"{q.get('src', '?')} > {q.get('dst', '?')}"]
    if "seq" in q:
        words.append(f"seq={q['seq']}")
    if "id" in q:
        words.append(f"id={q['id']}")
    if "total_length" in q:
        words.append(f"len={q['total_length']}")
    return " ".join(words)


def related(conn: Connection, e: dict) -> bool:
    """Whether another layer's event ``e`` is about ``conn``: an ARP failure
    for its peer's address while it lived, an ICMP error quoting its segments."""
    whole = conn.whole
    if e["layer"] == "arp" and e["event"] == "failed":
        times = [float(x["t"]) for x in whole.events]
        return (e.get("ip") == conn.remote.rpartition(":")[0]
                and min(times) <= float(e["t"]) <= max(times))
    if e["layer"] == "icmp" and e["event"] == "in" and isinstance(e.get("quote"), dict):
        q = e["quote"]
        return q.get("proto") == "tcp" and q.get("src") == conn.local and q.get("dst") == conn.remote
    return False


def _next_cause(conn: Connection, t: float) -> str | None:
    """The cause of the connection's first state change at or after ``t``
    (an error that ends it is traced just before the change it makes)."""
    later = [tr for tr in conn.whole.transitions if tr.t >= t - 1e-6]
    return min(later, key=lambda tr: tr.t).cause if later else None


def _note(conn: Connection, e: dict) -> str | None:
    layer, kind = e["layer"], e["event"]
    if layer == "tcp" and kind == "icmp":
        k = str(e.get("kind", "?"))
        if e.get("mtu"):
            effect = f"path MTU {e['mtu']}: segments cut smaller and resent"
        elif _next_cause(conn, float(e["t"])) == f"icmp {k}":
            effect = "a hard error: the connection attempt ends"
        else:
            effect = "a soft error: kept for the socket, the connection goes on"
        return f"icmp {k} for seq={e.get('seq', '?')}: {effect}"
    if layer == "arp" and kind == "failed":
        return "arp: " + str(e.get("cause") or f"no ARP reply for {e.get('ip', '?')}")
    if layer == "icmp" and kind == "in":
        return (f"icmp in: {e.get('name', 'type ' + str(e.get('type')))} from {e.get('src', '?')}, "
                f"quoting {quote_text(e.get('quote'))}")
    if layer == "tcp" and kind == "seg" and conn.refused:
        verb = "rcv" if e.get("dir") == "in" else "sent"
        return f"{verb} {flag_names(str(e.get('flags', '')))} seq={e.get('seq')} ack={e.get('ack')}"
    if layer == "tcp" and kind == "drop" and e.get("reason") == "no_conn":
        return "drop no_conn: nothing listening on that port; answered with RST"
    return None


def _header(conn: Connection) -> str:
    if conn.is_listener:
        return f"listener {conn.local}" + (f" #{conn.incarnation}" if conn.incarnation > 1 else "")
    if conn.refused:
        return (f"connection {conn.label} (refused: nothing listening on "
                f"{conn.local}; a SYN from {conn.remote} answered with RST)")
    how = {"passive": f"passive open from {conn.remote}",
           "active": f"active open to {conn.remote}"}.get(conn.opened or "", "")
    if conn.refused_by_peer:
        how += "; refused by the peer: nothing listening"
    return f"connection {conn.label}" + (f" ({how})" if how else "")


def timeline(conn: Connection, context: Iterable[dict] = ()) -> str:
    """The connection's state transitions (time, from -> to, cause), notes
    from the events of other layers in ``context`` that concern it, and its
    summary."""
    s = summarize(conn)
    lines = [_header(conn)]
    lo, hi = conn.window
    if conn.origin is not None:
        start = lo if lo is not None else s.start
        lines.append(f"  window {start:.6f} to {hi if hi is not None else s.end:.6f} s; "
                     f"in {conn.state_at(start) or 'no state yet'} at its start")
    rows: list[tuple[float, int, str, str, str]] = []   # t, order, from, to, text
    trs = iter(conn.transitions)
    for i, e in enumerate(conn.events):
        if e["event"] == "state":
            tr = next(trs)
            rows.append((tr.t, i, tr.frm, tr.to, tr.cause))
            continue
        text = _note(conn, e)
        if text:
            rows.append((float(e["t"]), i, "", "", text))
    extra = [e for e in context if related(conn, e) and (
        (lo is None or float(e["t"]) >= lo) and (hi is None or float(e["t"]) <= hi))]
    for e in extra:
        text = _note(conn, e)
        if text:
            rows.append((float(e["t"]), -1, "", "", text))
    rows.sort(key=lambda r: (r[0], r[1] if r[1] >= 0 else -1))
    if conn.transitions:
        width = max(len(tr.frm) for tr in conn.transitions)
        tw = max(len(tr.to) for tr in conn.transitions)
    else:
        width, tw = 4, 2
    if rows:
        lines.append(f"  {'time (s)':>12}  {'from':<{width}}    {'to':<{tw}}  cause")
        for t, _, frm, to, text in rows:
            if frm:
                lines.append(f"  {t:12.6f}  {frm:<{width}} -> {to:<{tw}}  {text}".rstrip())
            else:
                lines.append(f"  {t:12.6f}  {'':<{width}}  · {'':<{tw}}  {text}".rstrip())
    if not conn.transitions and not conn.refused:
        lines.append("  no state changes traced (the trace began mid-connection, or the "
                     "window holds none)")
    if conn.is_listener:
        lines.append(f"  summary: open {_ms(s.duration)}, final state {s.final_state or '?'}")
        if s.drops:
            lines.append(f"  drops: {_counts(s.drops)}")
        return "\n".join(lines)
    arp = [e for e in extra if e["layer"] == "arp"]
    why = f" ({arp[-1].get('cause')})" if arp and s.final_state == "CLOSED" else ""
    lines.append(f"  summary: {_ms(s.duration)} from {s.start:.6f} to {s.end:.6f}, "
                 f"final state {s.final_state or '?'}{why}")
    rex = ""
    if s.retransmits:
        rex = (f", {plural(s.retransmits, 'retransmission')} of {s.retransmit_bytes} bytes"
               f" ({_counts(s.retransmit_reasons)})")
    lines.append(f"    sent      {s.bytes_out:>10} bytes in {plural(s.segs_out, 'segment')}{rex}")
    lines.append(f"    received  {s.bytes_in:>10} bytes in {plural(s.segs_in, 'segment')}")
    stats = s.rtt_stats()
    if stats is not None:
        rlo, avg, rhi = stats
        if s.rtt:
            n = plural(len(s.rtt), "sample")
            if s.rtt_ticks:
                n += f"; {len(s.rtt_ticks)} more from timestamps, in whole ms, left out"
        else:
            n = f"{plural(len(s.rtt_ticks), 'sample')} from timestamps, in whole ms"
        lines.append(f"    rtt       min {_ms(rlo)}, avg {_ms(avg)}, max {_ms(rhi)} "
                     f"({n}), final srtt {_ms(s.srtt or 0.0)}")
    else:
        lines.append("    rtt       no samples")
    if s.states:
        lines.append("    states    " + ", ".join(f"{k} {_ms(v)}" for k, v in s.states.items()))
    if s.timers:
        lines.append(f"    timers    {_counts(s.timers)}")
    if s.drops:
        lines.append(f"    drops     {_counts(s.drops)}")
    t0 = min(float(e["t"]) for e in conn.whole.events)
    lines.extend("    " + line for line in bbr.summary_lines(conn.events, t0))
    return "\n".join(lines)
