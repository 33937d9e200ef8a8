"""``stack trace --format ladder``: the message-sequence chart of a connection."""

from __future__ import annotations

from dataclasses import dataclass
from stack.tracetool.read import Connection, MASK, flag_names, plural


# -- ladder ---------------------------------------------------------------------------


def _seg_label(e: dict, every: bool = False) -> str:
    flags = str(e.get("flags", ""))
    parts = [flag_names(flags), f"seq={e.get('seq', '?')}"]
    if "." in flags:
        parts.append(f"ack={e.get('ack', '?')}")
    if "S" in flags or every:
        parts.append(f"win={e.get('win', '?')}")
    if "S" in flags:
        opts = [_short_option(str(o)) for o in e.get("options") or []]
        if opts:
            parts.append("<" + ",".join(opts) + ">")
    n = int(e.get("len", 0))
    if n:
        parts.append(f"len={n}")
    if every:
        blocks = sack_blocks(e)
        if blocks:
            parts.append("SACK " + " ".join(f"{a}-{b}" for a, b in blocks))
    return " ".join(parts)


def sack_blocks(e: dict) -> list[tuple[int, int]]:
    """A segment's SACK blocks (``options`` ``"sack A:B C:D"``) as (start, end) pairs."""
    for opt in e.get("options") or []:
        text = str(opt)
        if text.startswith("sack "):
            out = []
            for pair in text.split()[1:]:
                a, _, b = pair.partition(":")
                try:
                    out.append((int(a), int(b)))
                except ValueError:
                    continue
            return out
    return []


class _DupAcks:
    """Counts duplicate ACKs per direction (RFC 5681: no data, no SYN/FIN, the
    same ACK number as the last one from that side; window changes aside)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.dups: dict[str, int] = {}

    def see(self, e: dict) -> int:
        """0, or which duplicate this segment is (1, 2, 3, ...)."""
        flags = str(e.get("flags", ""))
        d = str(e.get("dir", "in"))
        if "." not in flags:
            return 0
        ack = int(e.get("ack", 0))
        pure = int(e.get("len", 0)) == 0 and not any(ch in flags for ch in "SFR")
        if pure and self.last.get(d) == ack:
            self.dups[d] = self.dups.get(d, 0) + 1
            return self.dups[d]
        self.last[d] = ack
        self.dups[d] = 0
        return 0


def _short_option(text: str) -> str:
    """``TS val 1 ecr 2`` as ``TS``, ``sack 1:2 3:4`` as ``sack``; others as they are."""
    if text.startswith("TS val") or text.startswith("sack "):
        return text.split()[0]
    return text


def _is_control(e: dict) -> bool:
    flags = str(e.get("flags", ""))
    return any(ch in flags for ch in "SFR")


class _PeerStates:
    """What the peer's state must have been when it sent each segment.

    Only segments the peer sent are evidence: a SYN means SYN_SENT, a SYN,ACK
    SYN_RECEIVED, the first ACK of our SYN ESTABLISHED, a FIN FIN_WAIT_1 (or
    LAST_ACK once it acknowledges our FIN), acknowledging our FIN CLOSE_WAIT
    (or TIME_WAIT after its own FIN), a RST CLOSED.
    """

    def __init__(self) -> None:
        self.state: str | None = None
        self.our_syn: int | None = None
        self.our_fin_end: int | None = None
        self.fin_sent = False

    def ours(self, e: dict) -> None:
        flags = str(e.get("flags", ""))
        if "S" in flags:
            self.our_syn = int(e["seq"])
        if "F" in flags:
            self.our_fin_end = (int(e["seq"]) + int(e.get("len", 0)) + 1) & MASK

    def theirs(self, e: dict) -> str | None:
        """The peer's state if this segment changes what we know, else None."""
        flags = str(e.get("flags", ""))
        ack = int(e.get("ack", 0)) if "." in flags else None
        new = self.state
        if "R" in flags:
            new = "CLOSED"
        elif "S" in flags:
            new = "SYN_RECEIVED" if ack is not None else "SYN_SENT"
        elif "F" in flags:
            self.fin_sent = True
            acks_our_fin = self.our_fin_end is not None and ack == self.our_fin_end
            new = "LAST_ACK" if acks_our_fin else "FIN_WAIT_1"
        elif ack is not None and self.our_fin_end is not None and ack == self.our_fin_end:
            new = "TIME_WAIT" if self.fin_sent else "CLOSE_WAIT"
        elif ack is not None and self.state in ("SYN_SENT", "SYN_RECEIVED"):
            new = "ESTABLISHED"  # an ACK without SYN: the handshake is over for the peer
        if new == self.state:
            return None
        self.state = new
        return new


@dataclass
class _Row:
    t: float
    ours: str = ""
    theirs: str = ""
    label: str = ""
    direction: str = ""  # "out" (from us), "in" (to us) or "" (a state-only row)
    heavy: bool = False  # a summary of data, drawn with "="


def _data_rows(run: list[dict], retransmits: list[dict]) -> list[_Row]:
    """One row per direction summarizing a run of data and ACK segments."""
    rows = []
    order = []
    for e in run:
        d = e.get("dir", "in")
        if d not in order:
            order.append(d)
    for d in order:
        segs = [e for e in run if e.get("dir") == d]
        data = [e for e in segs if int(e.get("len", 0)) > 0]
        acks = len(segs) - len(data)
        nbytes = sum(int(e.get("len", 0)) for e in data)
        words = []
        if data:
            words.append(f"{plural(len(data), 'data segment')}, {nbytes} bytes")
        if acks:
            words.append(plural(acks, "ACK"))
        if d == "out" and retransmits:
            words.append(f"{len(retransmits)} retransmitted")
        rows.append(_Row(float(segs[0]["t"]), label="; ".join(words), direction=d, heavy=True))
    return rows


def ladder(conn: Connection, every: bool = False) -> str:
    """A message-sequence chart: the opener on the left, this stack's states on
    its side, the peer's (inferred, in parentheses) on the other; data and
    ACKs between the handshake and the teardown summarized per direction.

    With ``every`` (the view of a time window) each segment gets its own row,
    with its window, SACK blocks, which duplicate ACK it is, and the reason
    of each retransmission. When ``conn`` is a window of a connection, the
    peer's states are inferred from the whole connection and only the rows
    inside the window are drawn."""
    peer = _PeerStates()
    dups = _DupAcks()
    rows: list[_Row] = []
    run: list[dict] = []
    run_rex: list[dict] = []
    events = conn.whole.events
    lo, hi = conn.window
    refused = conn.refused

    def flush_run() -> None:
        if run:
            rows.extend(_data_rows(run, run_rex))
            run.clear()
            run_rex.clear()

    prev_seg: dict | None = None
    for i, e in enumerate(events):
        kind = e["event"]
        t = float(e["t"])
        inside = (lo is None or t >= lo) and (hi is None or t <= hi)
        if kind == "seg":
            incoming = e.get("dir") != "out"
            theirs = peer.theirs(e) if incoming else None
            if not incoming:
                peer.ours(e)
            dup = dups.see(e)
            answers_control = (not incoming and int(e.get("len", 0)) == 0
                               and prev_seg is not None and prev_seg.get("dir") != "out"
                               and _is_control(prev_seg))
            prev_seg = e
            if not inside:
                continue
            if not (_is_control(e) or theirs or answers_control or every):
                run.append(e)
                continue
            flush_run()
            label = _seg_label(e, every)
            if dup:
                label = f"dup ACK #{dup}: {label}"
            ours = "CLOSED" if refused and not incoming else ""
            rows.append(_Row(t, ours=ours, theirs=f"({theirs})" if theirs else "", label=label,
                             direction="in" if incoming else "out"))
        elif kind == "retransmit":
            if not inside:
                continue
            why = f" (retransmission: {e['reason']})" if every and e.get("reason") else \
                " (retransmission)"
            if run:
                run_rex.append(e)
            elif rows and rows[-1].direction == "out" and "(retransmission" not in rows[-1].label:
                rows[-1].label += why
        elif kind == "state" and not inside:
            continue
        elif kind == "state":
            to = str(e.get("to", "?"))
            cause = str(e.get("cause", ""))
            if (cause.startswith("rcv") and not run and rows and rows[-1].direction == "in"
                    and not rows[-1].ours):
                rows[-1].ours = to
                continue
            flush_run()
            nxt = next((x for x in events[i + 1:] if x["event"] in ("seg", "state")), None)
            pending = (not cause.startswith("rcv") and nxt is not None and nxt["event"] == "seg"
                       and nxt.get("dir") == "out" and _is_control(nxt))
            rows.append(_Row(t, ours=to, direction="pending" if pending else ""))
    flush_run()
    # A state set by a user call or timer shares the row of the segment it sends.
    merged: list[_Row] = []
    for row in rows:
        if merged and merged[-1].direction == "pending" and row.direction == "out":
            row.ours = merged.pop().ours
        merged.append(row)
    for row in merged:
        if row.direction == "pending":
            row.direction = ""
    return _draw_ladder(conn, merged)


def _draw_ladder(conn: Connection, rows: list[_Row]) -> str:
    we_left = (conn.opened == "active" or conn.opened is None) and not conn.refused
    left_name = f"{conn.local} (this stack)" if we_left else f"{conn.remote} (peer)"
    right_name = f"{conn.remote} (peer)" if we_left else f"{conn.local} (this stack)"
    side = max([14] + [len(r.ours) for r in rows] + [len(r.theirs) for r in rows])
    width = max([24] + [len(r.label) + 12 for r in rows if r.direction])
    out = [f"{'time (s)':>10}  {left_name:<{side + width + 2}}{right_name}",
           f"{'':>10}  {'-' * (side * 2 + width + 2)}"]
    for r in rows:
        left, right = (r.ours, r.theirs) if we_left else (r.theirs, r.ours)
        if r.direction:
            to_right = (r.direction == "out") == we_left
            line = "=" if r.heavy else "-"
            body = f" {r.label} "
            pad = width - len(body) - 1
            a = line * (pad // 2)
            b = line * (pad - pad // 2)
            arrow = f"{a}{body}{b}>" if to_right else f"<{a}{body}{b}"
        else:
            arrow = " " * width
        out.append(f"{r.t:10.6f}  {left:<{side}} {arrow} {right}".rstrip())
    return "\n".join(out)
