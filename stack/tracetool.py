"""``stack trace FILE``: read a ``jsonl`` trace and explain its TCP connections.

Reading (:func:`load`) turns the file into a list of event dicts;
:func:`connections` groups the TCP events by connection (the ``conn`` field
``LADDR:LPORT-RADDR:RPORT``; a listener is ``LADDR:LPORT-0.0.0.0:0``) and
splits a 4-tuple that is used again into one :class:`Connection` per
incarnation. Then, per connection:

* :func:`timeline` — the state transitions with their causes, and a summary
  (duration, bytes and segments each way, retransmissions, RTT, final state);
* :func:`ladder` — the two-column message-sequence chart of the handshake and
  teardown, data in between summarized;
* :func:`plot_data` / :func:`plot` — the time-sequence graph with ACKs,
  window and retransmissions, and cwnd, ssthresh and smoothed RTT beneath.

The functions return text or data; only :func:`main` writes to the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterable

MASK = 0xFFFFFFFF
LISTENER_REMOTE = "0.0.0.0:0"
# ssthresh starts "infinite" (a huge number); such values are not plotted.
HUGE_SSTHRESH = 1 << 30
_FLAG_NAMES = (("S", "SYN"), ("F", "FIN"), ("R", "RST"), ("P", "PSH"), (".", "ACK"),
               ("U", "URG"), ("E", "ECE"), ("W", "CWR"))


class TraceError(Exception):
    """The file cannot be read as a jsonl trace."""


# -- reading -----------------------------------------------------------------------


def parse_lines(lines: Iterable[str]) -> tuple[list[dict], int]:
    """Events from jsonl lines, and how many non-blank lines were not events.

    A line that is not a JSON object with ``t``, ``layer`` and ``event``
    (the text format, a line cut short when the stack was killed) is
    skipped and counted.
    """
    events = []
    bad = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if (not isinstance(ev, dict) or not {"t", "layer", "event"} <= ev.keys()
                or not isinstance(ev["t"], (int, float))):
            bad += 1
            continue
        events.append(ev)
    return events, bad


def load(path: str) -> tuple[list[dict], int]:
    """Read a jsonl trace (``-`` for stdin): ``(events, bad_lines)``.

    Raises TraceError when nothing in it is an event.
    """
    if path == "-":
        events, bad = parse_lines(sys.stdin)
    else:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                events, bad = parse_lines(f)
        except OSError as e:
            raise TraceError(f"cannot read {path}: {e.strerror or e}") from None
    if bad and not events:
        raise TraceError(f"{path} is not a jsonl trace (write one with "
                         "`stack up --trace FILE --trace-format jsonl`)")
    return events, bad


# -- connections -------------------------------------------------------------------


def split_conn(name: str) -> tuple[str, str]:
    """``"LADDR:LPORT-RADDR:RPORT"`` as ``("LADDR:LPORT", "RADDR:RPORT")``."""
    local, sep, remote = name.partition("-")
    return local, remote if sep else "?"


def flag_names(flags: str) -> str:
    """tcpdump's ``S.`` as ``SYN,ACK``."""
    names = [name for ch, name in _FLAG_NAMES if ch in flags]
    return ",".join(names) or "none"


@dataclass(frozen=True, slots=True)
class Transition:
    t: float
    frm: str
    to: str
    cause: str


@dataclass(eq=False)
class Connection:
    """Everything the trace says about one incarnation of a 4-tuple."""

    name: str
    incarnation: int = 1
    events: list[dict] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    @property
    def local(self) -> str:
        return split_conn(self.name)[0]

    @property
    def remote(self) -> str:
        return split_conn(self.name)[1]

    @property
    def is_listener(self) -> bool:
        return self.remote == LISTENER_REMOTE

    @property
    def state(self) -> str | None:
        """The last state the trace shows (None: no state change traced)."""
        return self.transitions[-1].to if self.transitions else None

    @property
    def opened(self) -> str | None:
        """``"passive"`` (from LISTEN), ``"active"`` (user connect) or None."""
        for tr in self.transitions:
            if tr.frm == "LISTEN" and tr.to == "SYN_RECEIVED":
                return "passive"
            if tr.to == "SYN_SENT":
                return "active"
        return None

    @property
    def label(self) -> str:
        suffix = f" #{self.incarnation}" if self.incarnation > 1 else ""
        return self.name + suffix

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e["event"] == event)

    def payload_bytes(self) -> int:
        return sum(e.get("len", 0) for e in self.events if e["event"] == "seg")


def _starts_incarnation(cur: Connection, ev: dict) -> bool:
    """Whether ``ev`` belongs to a new use of the 4-tuple after ``cur`` ended."""
    if cur.state != "CLOSED":
        return False
    if ev["event"] == "state":
        return ev.get("from") in ("CLOSED", "LISTEN")
    if ev["event"] == "seg" and ev.get("dir") == "in":
        flags = ev.get("flags", "")
        return "S" in flags and "." not in flags
    return False


def connections(events: Iterable[dict]) -> list[Connection]:
    """TCP connections (and listeners) in order of first appearance."""
    out: list[Connection] = []
    current: dict[str, Connection] = {}
    for ev in events:
        name = ev.get("conn")
        if name is None or ev.get("layer") != "tcp":
            continue
        cur = current.get(name)
        if cur is None or _starts_incarnation(cur, ev):
            cur = Connection(name, incarnation=cur.incarnation + 1 if cur else 1)
            current[name] = cur
            out.append(cur)
        cur.events.append(ev)
        if ev["event"] == "state":
            cur.transitions.append(Transition(float(ev["t"]), str(ev.get("from", "?")),
                                              str(ev.get("to", "?")), str(ev.get("cause", ""))))
    return out


def parse_endpoint(text: str) -> tuple[str | None, int]:
    """``ADDR:PORT``, ``:PORT`` or ``PORT`` as ``(addr or None, port)``."""
    addr, sep, port = text.rpartition(":")
    if not sep:
        addr, port = "", text
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--conn wants ADDR:PORT, not {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--conn: port {number} is out of range")
    return (addr or None), number


def matches(conn: Connection, endpoint: str) -> bool:
    """Whether ``endpoint`` (``ADDR:PORT``, ``:PORT``) is either side of ``conn``.

    A listener on 0.0.0.0 matches any address with its port.
    """
    addr, port = parse_endpoint(endpoint)
    for side in (conn.local, conn.remote):
        a, _, p = side.rpartition(":")
        if p != str(port):
            continue
        if addr is None or a == addr or (conn.is_listener and a == "0.0.0.0"):
            return True
    return False


def select(conns: list[Connection], endpoint: str | None) -> list[Connection]:
    if endpoint is None:
        return list(conns)
    return [c for c in conns if matches(c, endpoint)]


def busiest(conns: Iterable[Connection]) -> Connection | None:
    """The connection that carried the most payload bytes (None if none did)."""
    best = max(conns, key=lambda c: c.payload_bytes(), default=None)
    if best is None or best.payload_bytes() == 0:
        return None
    return best


# -- summary and timeline --------------------------------------------------------------


@dataclass
class Summary:
    start: float
    end: float
    bytes_out: int = 0
    bytes_in: int = 0
    segs_out: int = 0
    segs_in: int = 0
    retransmits: int = 0
    retransmit_bytes: int = 0
    retransmit_reasons: Counter = field(default_factory=Counter)
    rtt: list[float] = field(default_factory=list)
    srtt: float | None = None
    drops: Counter = field(default_factory=Counter)
    timers: Counter = field(default_factory=Counter)
    final_state: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def rtt_stats(self) -> tuple[float, float, float] | None:
        if not self.rtt:
            return None
        return min(self.rtt), sum(self.rtt) / len(self.rtt), max(self.rtt)


def summarize(conn: Connection) -> Summary:
    times = [float(e["t"]) for e in conn.events]
    s = Summary(start=min(times), end=max(times), final_state=conn.state)
    for e in conn.events:
        kind = e["event"]
        if kind == "seg":
            n = int(e.get("len", 0))
            if e.get("dir") == "out":
                s.segs_out += 1
                s.bytes_out += n
            else:
                s.segs_in += 1
                s.bytes_in += n
        elif kind == "retransmit":
            s.retransmits += 1
            s.retransmit_bytes += int(e.get("len", 0))
            s.retransmit_reasons[str(e.get("reason", "?"))] += 1
        elif kind == "rtt":
            if "sample" in e:
                s.rtt.append(float(e["sample"]))
            if "srtt" in e:
                s.srtt = float(e["srtt"])
        elif kind == "drop":
            s.drops[str(e.get("reason", "?"))] += 1
        elif kind == "timer":
            s.timers[str(e.get("timer", "?"))] += 1
    return s


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def timeline(conn: Connection) -> str:
    """The connection's state transitions (time, from -> to, cause) and its summary."""
    s = summarize(conn)
    lines = []
    if conn.is_listener:
        lines.append(f"listener {conn.local}" + (f" #{conn.incarnation}"
                                                 if conn.incarnation > 1 else ""))
    else:
        how = {"passive": f"passive open from {conn.remote}",
               "active": f"active open to {conn.remote}"}.get(conn.opened or "", "")
        lines.append(f"connection {conn.label}" + (f" ({how})" if how else ""))
    if conn.transitions:
        width = max(len(tr.frm) for tr in conn.transitions)
        tw = max(len(tr.to) for tr in conn.transitions)
        lines.append(f"  {'time (s)':>12}  {'from':<{width}}    {'to':<{tw}}  cause")
        for tr in conn.transitions:
            lines.append(f"  {tr.t:12.6f}  {tr.frm:<{width}} -> {tr.to:<{tw}}  {tr.cause}".rstrip())
    else:
        lines.append("  no state changes traced (segments to a closed port, or the trace "
                     "began mid-connection)")
    if conn.is_listener:
        lines.append(f"  summary: open {s.duration:.3f} s, final state {s.final_state or '?'}")
        if s.drops:
            lines.append(f"  drops: {_counts(s.drops)}")
        return "\n".join(lines)
    lines.append(f"  summary: {s.duration:.6f} s from {s.start:.6f} to {s.end:.6f}, "
                 f"final state {s.final_state or '?'}")
    rex = ""
    if s.retransmits:
        rex = (f", {_plural(s.retransmits, 'retransmission')} of {s.retransmit_bytes} bytes"
               f" ({_counts(s.retransmit_reasons)})")
    lines.append(f"    sent      {s.bytes_out:>10} bytes in {_plural(s.segs_out, 'segment')}{rex}")
    lines.append(f"    received  {s.bytes_in:>10} bytes in {_plural(s.segs_in, 'segment')}")
    stats = s.rtt_stats()
    if stats is not None:
        lo, avg, hi = stats
        lines.append(f"    rtt       min {_ms(lo)}, avg {_ms(avg)}, max {_ms(hi)} "
                     f"({_plural(len(s.rtt), 'sample')}), final srtt {_ms(s.srtt or 0.0)}")
    else:
        lines.append("    rtt       no samples")
    if s.timers:
        lines.append(f"    timers    {_counts(s.timers)}")
    if s.drops:
        lines.append(f"    drops     {_counts(s.drops)}")
    return "\n".join(lines)


def overview(events: list[dict], conns: list[Connection], path: str = "") -> str:
    """A few lines about the whole trace: span, link set-up, drops by layer."""
    lines = []
    if events:
        t0 = min(float(e["t"]) for e in events)
        t1 = max(float(e["t"]) for e in events)
        n_listen = sum(1 for c in conns if c.is_listener)
        name = f"trace {path}" if path else "trace"
        lines.append(f"{name}: {len(events)} events from {t0:.6f} to {t1:.6f} s, "
                     f"{_plural(len(conns) - n_listen, 'TCP connection')}, "
                     f"{_plural(n_listen, 'listener')}")
    for e in events:
        if e["layer"] == "link" and e["event"] in ("up", "impair"):
            rest = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "layer", "event"))
            lines.append(f"link {e['event']}: {rest}")
    drops = Counter(f"{e['layer']}.{e.get('reason', '?')}" for e in events
                    if e["event"] == "drop")
    if drops:
        lines.append(f"drops: {_counts(drops)}")
    return "\n".join(lines)


# -- ladder ---------------------------------------------------------------------------


def _seg_label(e: dict) -> str:
    flags = str(e.get("flags", ""))
    parts = [flag_names(flags), f"seq={e.get('seq', '?')}"]
    if "." in flags:
        parts.append(f"ack={e.get('ack', '?')}")
    if "S" in flags:
        parts.append(f"win={e.get('win', '?')}")
        opts = [_short_option(str(o)) for o in e.get("options") or []]
        if opts:
            parts.append("<" + ",".join(opts) + ">")
    n = int(e.get("len", 0))
    if n:
        parts.append(f"len={n}")
    return " ".join(parts)


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
            words.append(f"{_plural(len(data), 'data segment')}, {nbytes} bytes")
        if acks:
            words.append(_plural(acks, "ACK"))
        if d == "out" and retransmits:
            words.append(f"{len(retransmits)} retransmitted")
        rows.append(_Row(float(segs[0]["t"]), label="; ".join(words), direction=d, heavy=True))
    return rows


def ladder(conn: Connection) -> str:
    """A message-sequence chart: the opener on the left, this stack's states on
    its side, the peer's (inferred, in parentheses) on the other; data and
    ACKs between the handshake and the teardown summarized per direction."""
    peer = _PeerStates()
    rows: list[_Row] = []
    run: list[dict] = []
    run_rex: list[dict] = []
    events = conn.events

    def flush_run() -> None:
        if run:
            rows.extend(_data_rows(run, run_rex))
            run.clear()
            run_rex.clear()

    prev_seg: dict | None = None
    for i, e in enumerate(events):
        kind = e["event"]
        t = float(e["t"])
        if kind == "seg":
            incoming = e.get("dir") != "out"
            theirs = peer.theirs(e) if incoming else None
            if not incoming:
                peer.ours(e)
            answers_control = (not incoming and int(e.get("len", 0)) == 0
                               and prev_seg is not None and prev_seg.get("dir") != "out"
                               and _is_control(prev_seg))
            prev_seg = e
            if not (_is_control(e) or theirs or answers_control):
                run.append(e)
                continue
            flush_run()
            rows.append(_Row(t, theirs=f"({theirs})" if theirs else "", label=_seg_label(e),
                             direction="in" if incoming else "out"))
        elif kind == "retransmit":
            if run:
                run_rex.append(e)
            elif rows and rows[-1].direction == "out" and "(retransmission)" not in rows[-1].label:
                rows[-1].label += " (retransmission)"
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
    we_left = conn.opened == "active" or conn.opened is None
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


# -- plot ---------------------------------------------------------------------------


def _rel(seq: int, base: int) -> int:
    d = (seq - base) & MASK
    return d - (1 << 32) if d >= 1 << 31 else d


def _wscale(e: dict) -> int | None:
    for opt in e.get("options") or []:
        text = str(opt)
        if text.startswith("wscale "):
            try:
                return int(text.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def plot_data(events: Iterable[dict], conn: str, direction: str | None = None) -> dict:
    """The numbers behind :func:`plot` for connection ``conn`` (its name).

    ``direction`` is ``"out"`` (data this stack sent), ``"in"`` (data it
    received) or None: the one that carried more bytes. Sequence numbers are
    offsets from that direction's ISN (the SYN's sequence number; the first
    data byte is 1), times are seconds since the connection's first event.
    Returns lists of tuples: ``segments`` and ``retransmissions`` as
    ``(t, seq, len)``; ``acks`` and ``window`` (ack + window, the receiver's
    right edge) as ``(t, seq)``; ``cwnd``, ``ssthresh`` (bytes) and ``srtt``
    (seconds) as ``(t, value)``. For ``"out"`` the retransmissions are the
    trace's retransmit events; for ``"in"`` the stack does not know the
    peer's, so they are the segments that start below bytes already seen.
    """
    evs = [e for e in events if e.get("conn") == conn and e.get("layer") == "tcp"]
    segs = [e for e in evs if e["event"] == "seg"]
    if direction is None:
        out_bytes = sum(int(e.get("len", 0)) for e in segs if e.get("dir") == "out")
        in_bytes = sum(int(e.get("len", 0)) for e in segs if e.get("dir") == "in")
        direction = "in" if in_bytes > out_bytes else "out"
    if direction not in ("in", "out"):
        raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
    back = "in" if direction == "out" else "out"
    sent = [e for e in segs if e.get("dir") == direction]
    acks = [e for e in segs if e.get("dir") == back]
    t0 = min((float(e["t"]) for e in evs), default=0.0)
    syn = next((e for e in sent if "S" in str(e.get("flags", ""))), None)
    if syn is not None:
        isn = int(syn["seq"])
    else:
        data = [int(e["seq"]) for e in sent if int(e.get("len", 0)) > 0]
        isn = (data[0] - 1) & MASK if data else 0
    # Window scaling holds only when both SYNs offered it; SYN windows are never scaled.
    back_syn = next((e for e in acks if "S" in str(e.get("flags", ""))), None)
    scale = 0
    if syn is not None and back_syn is not None:
        mine, theirs = _wscale(syn), _wscale(back_syn)
        if mine is not None and theirs is not None:
            scale = theirs
    result: dict = {"conn": conn, "direction": direction, "t0": t0, "isn": isn,
                    "segments": [], "retransmissions": [], "acks": [], "window": [],
                    "cwnd": [], "ssthresh": [], "srtt": []}
    for e in sent:
        n = int(e.get("len", 0))
        if n > 0:
            result["segments"].append((float(e["t"]) - t0, _rel(int(e["seq"]), isn), n))
    for e in acks:
        flags = str(e.get("flags", ""))
        if "." not in flags or "R" in flags:
            continue
        t = float(e["t"]) - t0
        ack = _rel(int(e["ack"]), isn)
        win = int(e.get("win", 0)) << (0 if "S" in flags else scale)
        result["acks"].append((t, ack))
        result["window"].append((t, ack + win))
    if direction == "out":
        result["retransmissions_from"] = "retransmit events"
        for e in evs:
            if e["event"] == "retransmit":
                result["retransmissions"].append(
                    (float(e["t"]) - t0, _rel(int(e.get("seq", isn)), isn), int(e.get("len", 0))))
    else:
        result["retransmissions_from"] = "repeated sequence numbers"
        top = None
        for t, seq, n in result["segments"]:
            if top is not None and seq < top:
                result["retransmissions"].append((t, seq, n))
            top = seq + n if top is None else max(top, seq + n)
    for e in evs:
        t = float(e["t"]) - t0
        if e["event"] == "cwnd":
            if "cwnd" in e:
                result["cwnd"].append((t, int(e["cwnd"])))
            if "ssthresh" in e and int(e["ssthresh"]) < HUGE_SSTHRESH:
                result["ssthresh"].append((t, int(e["ssthresh"])))
        elif e["event"] == "rtt" and "srtt" in e:
            result["srtt"].append((t, float(e["srtt"])))
    return result


def plot(data: dict, out: str, title: str | None = None) -> None:
    """Draw :func:`plot_data`'s result into the PNG ``out`` (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(11, 8), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    segs = data["segments"]
    rex = data["retransmissions"]
    who = "this stack" if data["direction"] == "out" else "the peer"
    if segs:
        top.vlines([t for t, _, _ in segs], [s for _, s, _ in segs],
                   [s + n for _, s, n in segs], color="tab:blue", linewidth=1.2)
        top.plot([t for t, _, _ in segs], [s + n for _, s, n in segs], linestyle="none",
                 marker="_", markersize=4, color="tab:blue",
                 label=f"data sent by {who} ({len(segs)} segments)")
    if data["acks"]:
        top.step([t for t, _ in data["acks"]], [a for _, a in data["acks"]], where="post",
                 color="tab:green", linewidth=1, label="ACK (cumulative)")
    if data["window"]:
        top.step([t for t, _ in data["window"]], [w for _, w in data["window"]], where="post",
                 color="tab:orange", linewidth=1, label="receive window edge (ack + win)")
    if rex:
        top.vlines([t for t, _, _ in rex], [s for _, s, _ in rex],
                   [s + max(n, 1) for _, s, n in rex], color="tab:red", linewidth=2.5)
        top.plot([t for t, _, _ in rex], [s for _, s, _ in rex], linestyle="none", marker="x",
                 markersize=7, color="tab:red",
                 label=f"retransmission ({len(rex)}, from {data['retransmissions_from']})")
    top.set_ylabel("sequence offset from ISN")
    top.yaxis.set_major_formatter(EngFormatter(unit="B"))
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    total = sum(n for _, _, n in segs)
    top.set_title(title or f"{data['conn']}: {total} bytes sent by {who}, "
                  f"{len(rex)} retransmissions", fontsize="medium")
    if data["cwnd"]:
        bottom.step([t for t, _ in data["cwnd"]], [c / 1024 for _, c in data["cwnd"]],
                    where="post", color="tab:purple", label="cwnd")
    if data["ssthresh"]:
        bottom.step([t for t, _ in data["ssthresh"]], [c / 1024 for _, c in data["ssthresh"]],
                    where="post", color="tab:gray", linestyle="--", label="ssthresh")
    bottom.set_ylabel("KB")
    bottom.set_ylim(bottom=0)
    bottom.ticklabel_format(axis="y", useOffset=False, style="plain")
    bottom.set_xlabel("time since the connection's first event (s)")
    bottom.grid(True, alpha=0.3)
    rtt_ax = bottom.twinx()
    if data["srtt"]:
        rtt_ax.plot([t for t, _ in data["srtt"]], [r * 1000 for _, r in data["srtt"]],
                    color="tab:cyan", linewidth=1, label="smoothed RTT")
    rtt_ax.set_ylabel("srtt (ms)")
    rtt_ax.set_ylim(bottom=0)
    handles, labels = bottom.get_legend_handles_labels()
    h2, l2 = rtt_ax.get_legend_handles_labels()
    if handles or h2:
        bottom.legend(handles + h2, labels + l2, loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, format="png")


# -- the command ----------------------------------------------------------------------


def run(path: str, conn: str | None = None, plot_out: str | None = None,
        fmt: str = "timeline", out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``stack trace``: 0 on success, 1 when nothing matched, 2 on bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if conn is not None:
            parse_endpoint(conn)
        events, bad = load(path)
    except (TraceError, ValueError) as e:
        err.write(f"stack trace: {e}\n")
        return 2
    if bad:
        err.write(f"stack trace: skipped {_plural(bad, 'line')} that did not parse "
                  "as trace events\n")
    every = connections(events)
    chosen = select(every, conn)
    if fmt == "timeline":
        out.write(overview(events, every, path) + "\n")
    if not chosen:
        where = f" with endpoint {conn}" if conn else ""
        err.write(f"stack trace: no TCP connection{where} in {path}\n")
        return 1
    if fmt == "ladder":
        shown = [c for c in chosen if not c.is_listener and c.transitions]
        if not shown:
            err.write("stack trace: no connection with state changes to draw\n")
            return 1
        for c in shown:
            out.write(f"\n{c.label}\n{ladder(c)}\n")
    else:
        for c in chosen:
            out.write("\n" + timeline(c) + "\n")
    if plot_out:
        target = busiest(chosen)
        if target is None:
            err.write("stack trace: no connection carried data; nothing to plot\n")
            return 1
        try:
            data = plot_data(target.events, target.name)
            plot(data, plot_out)
        except ImportError:
            err.write("stack trace: --plot needs matplotlib (pip install 'stack[plot]')\n")
            return 2
        except OSError as e:
            err.write(f"stack trace: cannot write {plot_out}: {e.strerror or e}\n")
            return 2
        out.write(f"\nplot: {plot_out} ({target.label}, {len(data['segments'])} data segments "
                  f"{'sent' if data['direction'] == 'out' else 'received'}, "
                  f"{len(data['retransmissions'])} retransmissions)\n")
    out.flush()
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry from ``stack.cli`` with the parsed ``trace`` arguments."""
    return run(args.file, conn=args.conn, plot_out=args.plot, fmt=args.format)
