"""``stack trace FILE``: read a ``jsonl`` trace and explain its TCP connections.

This module reads and groups the events and writes the timelines; the
ladder is ``ladder.py``, the plot ``plot.py``, the command ``command.py``.

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

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

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


def plural(n: int, word: str) -> str:
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
        rex = (f", {plural(s.retransmits, 'retransmission')} of {s.retransmit_bytes} bytes"
               f" ({_counts(s.retransmit_reasons)})")
    lines.append(f"    sent      {s.bytes_out:>10} bytes in {plural(s.segs_out, 'segment')}{rex}")
    lines.append(f"    received  {s.bytes_in:>10} bytes in {plural(s.segs_in, 'segment')}")
    stats = s.rtt_stats()
    if stats is not None:
        lo, avg, hi = stats
        lines.append(f"    rtt       min {_ms(lo)}, avg {_ms(avg)}, max {_ms(hi)} "
                     f"({plural(len(s.rtt), 'sample')}), final srtt {_ms(s.srtt or 0.0)}")
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
                     f"{plural(len(conns) - n_listen, 'TCP connection')}, "
                     f"{plural(n_listen, 'listener')}")
    for e in events:
        if e["layer"] == "link" and e["event"] in ("up", "impair"):
            rest = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "layer", "event"))
            lines.append(f"link {e['event']}: {rest}")
    drops = Counter(f"{e['layer']}.{e.get('reason', '?')}" for e in events
                    if e["event"] == "drop")
    if drops:
        lines.append(f"drops: {_counts(drops)}")
    return "\n".join(lines)
