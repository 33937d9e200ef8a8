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
  window and retransmissions, and cwnd, ssthresh and smoothed RTT beneath
  (and BBR's model, for a BBR connection).

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
    # The whole connection when this one is a time window of it.
    origin: Connection | None = None
    window: tuple[float | None, float | None] = (None, None)

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
    def whole(self) -> Connection:
        """The connection itself, or the one this is a window of."""
        return self.origin or self

    @property
    def refused(self) -> bool:
        """A SYN to a closed port of this stack, answered by RST: no state
        changes, a SYN in (or a ``no_conn`` drop) and a RST out."""
        evs = self.whole.events
        if self.whole.transitions:
            return False
        syn = any(e["event"] == "seg" and e.get("dir") == "in" and "S" in str(e.get("flags", ""))
                  for e in evs) or any(e["event"] == "drop" and e.get("reason") == "no_conn"
                                       for e in evs)
        rst = any(e["event"] == "seg" and e.get("dir") == "out" and "R" in str(e.get("flags", ""))
                  for e in evs)
        return syn and rst

    @property
    def refused_by_peer(self) -> bool:
        """Our SYN answered by the peer's RST (nothing listening there)."""
        return any(tr.frm == "SYN_SENT" and tr.to == "CLOSED" and tr.cause.startswith("rcv RST")
                   for tr in self.whole.transitions)

    def state_at(self, t: float) -> str | None:
        """The state the whole connection was in at time ``t`` (None before its first)."""
        state = None
        for tr in self.whole.transitions:
            if tr.t > t:
                break
            state = tr.to
        return state

    @property
    def opened(self) -> str | None:
        """``"passive"`` (from LISTEN), ``"active"`` (user connect) or None."""
        if self.origin is not None:
            return self.origin.opened
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


def in_window(t: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or t >= lo) and (hi is None or t <= hi)


def windowed(conns: Iterable[Connection], lo: float | None, hi: float | None) -> list[Connection]:
    """Each connection cut to the events from ``lo`` to ``hi`` (seconds since the
    stack started; None: open-ended); connections with nothing in it are left out."""
    if lo is None and hi is None:
        return list(conns)
    out = []
    for c in conns:
        evs = [e for e in c.events if in_window(float(e["t"]), lo, hi)]
        if not evs:
            continue
        trs = [tr for tr in c.transitions if in_window(tr.t, lo, hi)]
        out.append(Connection(c.name, c.incarnation, evs, trs, origin=c, window=(lo, hi)))
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
    rtt: list[float] = field(default_factory=list)          # timed segments (µs clock)
    rtt_ticks: list[float] = field(default_factory=list)    # from timestamps (ms ticks)
    srtt: float | None = None
    states: dict[str, float] = field(default_factory=dict)  # seconds spent in each state
    drops: Counter = field(default_factory=Counter)
    timers: Counter = field(default_factory=Counter)
    final_state: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def rtt_stats(self) -> tuple[float, float, float] | None:
        """min, average, max of the samples: the timed ones when there are any
        (timestamp samples count whole milliseconds)."""
        samples = self.rtt or self.rtt_ticks
        if not samples:
            return None
        return min(samples), sum(samples) / len(samples), max(samples)


def time_in_states(conn: Connection) -> dict[str, float]:
    """Seconds spent in each state (like bcc's tcpstates), within the
    connection's window; the state it ends in counts until its last event."""
    times = [float(e["t"]) for e in conn.events]
    end = max(float(e["t"]) for e in conn.whole.events)
    lo = min(times) if conn.window[0] is None else conn.window[0]
    hi = end if conn.window[1] is None else min(conn.window[1], end)
    trs = conn.whole.transitions
    out: dict[str, float] = {}
    for i, tr in enumerate(trs):
        last = i + 1 == len(trs)
        if last and tr.to == "CLOSED":
            continue
        a, b = max(tr.t, lo), min(end if last else trs[i + 1].t, hi)
        if b >= a:
            out[tr.to] = out.get(tr.to, 0.0) + (b - a)
    return out


def summarize(conn: Connection) -> Summary:
    times = [float(e["t"]) for e in conn.events]
    s = Summary(start=min(times), end=max(times), final_state=conn.state or conn.state_at(max(times)))
    s.states = time_in_states(conn)
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
                (s.rtt_ticks if e.get("source") == "ts" else s.rtt).append(float(e["sample"]))
            if "srtt" in e:
                s.srtt = float(e["srtt"])
        elif kind == "drop":
            s.drops[str(e.get("reason", "?"))] += 1
        elif kind == "timer":
            s.timers[str(e.get("timer", "?"))] += 1
    return s


def duration(seconds: float) -> str:
    """A span with µs precision: ``87 µs`` below a millisecond, ``1.234 ms``
    below a second, ``2.500000 s`` above."""
    a = abs(seconds)
    if a < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if a < 1.0:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.6f} s"


_ms = duration


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
