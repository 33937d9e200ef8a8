"""Trace events and counters.

Every layer reports what happens through one :class:`Trace` object. An event
is data — time, layer, event name and fields — rendered as JSON lines or as
readable text. Counters (``netstat -s`` style) are kept whether tracing is on
or off; every drop is counted and, when tracing is on, written as an event
``{"event": "drop", "reason": ...}``.

Hot paths guard event construction with ``if trace.on:`` so a stack with
tracing off pays one attribute read per event site. ``on`` only says that
someone listens; which events are written is decided by :meth:`Trace.wants`
(the ``layers`` and ``level`` filters), once per (layer, event) pair and then
remembered, so a filtered-out event costs a dictionary lookup.

``stack trace FILE`` (:mod:`stack.tracetool`) reads the ``jsonl`` form back.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import IO, Callable, Iterable, overload

# A written event reaches the file within this many seconds: the runtime's
# loop asks next_flush() when to wake and calls flush_due() (no flush per event).
FLUSH_DELAY = 0.1

LAYERS = ("link", "eth", "arp", "ip", "icmp", "udp", "tcp", "socket", "dns", "dhcp")
LEVELS = ("all", "state")

# Events written when the trace is at level "state": the ones a person reads
# to follow a connection's life (state changes, drops, retransmissions) and
# the link's own state (up, down, the impairment and its seed, a DHCP lease
# bound or given up). Everything else (segments, RTT and cwnd samples,
# timers, ARP, ...) needs level "all".
STATE_EVENTS = frozenset({"state", "drop", "retransmit", "up", "down", "impair", "bound",
                          "unbound"})

# One encoder for every line: json.dumps(..., default=str) would build a new
# encoder per call.
_encode = json.JSONEncoder(default=str).encode


@overload
def parse_layers(text: str | Iterable[str]) -> frozenset[str]: ...
@overload
def parse_layers(text: None) -> None: ...
def parse_layers(text: str | Iterable[str] | None) -> frozenset[str] | None:
    """``"tcp,ip"`` (or an iterable of names) as a set of layers; None for all.

    Raises ValueError naming an unknown layer.
    """
    if text is None:
        return None
    names = text.split(",") if isinstance(text, str) else list(text)
    out = set()
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in LAYERS:
            raise ValueError(f"unknown trace layer {name!r} (layers: {', '.join(LAYERS)})")
        out.add(name)
    if not out:
        raise ValueError("no trace layer given")
    return frozenset(out)


class Trace:
    """Collects events and counters for one stack.

    ``clock`` returns seconds since the stack started. ``sink`` is a text
    file (or None for counters only). ``fmt`` is ``"jsonl"`` or ``"text"``.
    ``layers`` limits which layers write events (None: all; a set of names
    or a string ``"tcp,ip"``). ``level`` is ``"all"`` or ``"state"`` (state
    transitions, drops, retransmissions, link up/down/impair). Filters
    choose events only: counters count everything.
    """

    def __init__(
        self,
        sink: IO[str] | None = None,
        fmt: str = "jsonl",
        clock: Callable[[], float] = lambda: 0.0,
        layers: Iterable[str] | str | None = None,
        level: str = "all",
    ) -> None:
        if fmt not in ("jsonl", "text"):
            raise ValueError(f"trace format must be jsonl or text, not {fmt!r}")
        if level not in LEVELS:
            raise ValueError(f"trace level must be all or state, not {level!r}")
        self.sink = sink
        self.fmt = fmt
        self.clock = clock
        self.layers = parse_layers(layers)
        self.level = level
        self.counters: Counter[str] = Counter()
        self.written = 0  # events written or handed to listeners
        self._lock = threading.Lock()
        self.listeners: list[Callable[[dict], None]] = []
        # (layer, event) -> bool, filled by wants(); None when nothing is filtered.
        self._wanted: dict[tuple[str, str], bool] | None = (
            None if self.layers is None and level == "all" else {})
        self._render = _encode if fmt == "jsonl" else render_text
        # Trace time of the oldest event written to the sink and not flushed.
        self._unflushed: float | None = None
        # Called (from whatever thread wrote it) when an event becomes the
        # oldest unflushed one: the runtime wakes its loop to flush in time.
        self.on_unflushed: Callable[[], None] | None = None
        self._update()

    def _update(self) -> None:
        # ``on`` is the one flag hot paths read before building an event.
        self.on = self.sink is not None or bool(self.listeners)

    def subscribe(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(event_dict)`` for every event written (tests use this)."""
        self.listeners.append(fn)
        self._update()

    def unsubscribe(self, fn: Callable[[dict], None]) -> None:
        self.listeners.remove(fn)
        self._update()

    def wants(self, layer: str, event: str) -> bool:
        """Whether an event ``layer``/``event`` would be written now.

        Cheap enough (a cached lookup) to guard an event whose fields cost
        something to build, where ``trace.on`` alone would build them for a
        trace that filters them out.
        """
        if not self.on:
            return False
        wanted = self._wanted
        if wanted is None:
            return True
        key = (layer, event)
        ok = wanted.get(key)
        if ok is None:
            ok = wanted[key] = self._passes(layer, event)
        return ok

    def _passes(self, layer: str, event: str) -> bool:
        if self.layers is not None and layer not in self.layers:
            return False
        return self.level == "all" or event in STATE_EVENTS

    def event(self, layer: str, event: str, **fields: object) -> None:
        if not self.on:
            return
        wanted = self._wanted
        if wanted is not None:
            key = (layer, event)
            ok = wanted.get(key)
            if ok is None:
                ok = wanted[key] = self._passes(layer, event)
            if not ok:
                return
        t = round(self.clock(), 6)
        record = {"t": t, "layer": layer, "event": event}
        record.update(fields)
        self.written += 1
        for fn in self.listeners:
            fn(record)
        sink = self.sink
        if sink is not None:
            line = self._render(record)
            with self._lock:
                sink.write(line + "\n")
                first = self._unflushed is None
                if first:
                    self._unflushed = t
            if first and self.on_unflushed is not None:
                self.on_unflushed()

    def count(self, layer: str, name: str, n: int = 1) -> None:
        self.counters[f"{layer}.{name}"] += n

    def drop(self, layer: str, reason: str, **fields: object) -> None:
        """Count a dropped frame or segment and trace it."""
        self.counters[f"{layer}.drop.{reason}"] += 1
        if self.on:
            self.event(layer, "drop", reason=reason, **fields)

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.counters.items() if ".drop." in k}

    def flush(self) -> None:
        """Push what was written to the file (a sink already closed is left alone)."""
        if self.sink is not None:
            with self._lock:
                self._unflushed = None
                if not getattr(self.sink, "closed", False):
                    self.sink.flush()

    def next_flush(self) -> float | None:
        """When (trace time, like an event's ``t``) the sink must next be
        flushed: ``FLUSH_DELAY`` after the oldest unflushed event; None when
        everything written is flushed."""
        first = self._unflushed
        return None if first is None else first + FLUSH_DELAY

    def flush_due(self, t: float) -> None:
        """Flush if the oldest unflushed event is ``FLUSH_DELAY`` old at trace time ``t``."""
        first = self._unflushed
        if first is not None and t >= first + FLUSH_DELAY:
            try:
                self.flush()
            except (OSError, ValueError):
                self._unflushed = None  # a closed or broken sink: nothing to wait for


# -- counters ------------------------------------------------------------------


def group_counters(counters: dict[str, int]) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    """Counters ``"layer.name"`` grouped by layer: ``{layer: (counts, drops)}``.

    ``drops`` maps each drop reason to its count. Layers come in stack order
    (link first), unknown ones after; names and reasons are sorted; zero
    counts are left out.
    """
    groups: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    for key in sorted(counters):
        value = counters[key]
        if not value:
            continue
        layer, _, name = key.partition(".")
        counts, drops = groups.setdefault(layer, ({}, {}))
        if name.startswith("drop."):
            drops[name[5:]] = value
        else:
            counts[name] = value
    order = {name: i for i, name in enumerate(LAYERS)}
    return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


# -- text rendering ------------------------------------------------------------------

_HEAD = ("t", "layer", "event")


def _value(v: object) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def _tcp_seg(rest: dict) -> str:
    flags = rest.pop("flags", "?")
    parts = [rest.pop("dir", "?"), f"[{flags}]", f"seq {rest.pop('seq', '?')}"]
    ack = rest.pop("ack", None)
    if "." in flags and ack is not None:
        parts.append(f"ack {ack}")
    parts.append(f"win {rest.pop('win', '?')}")
    parts.append(f"len {rest.pop('len', '?')}")
    opts = rest.pop("options", None)
    if opts:
        parts.append(f"<{_value(opts)}>")
    return " ".join(parts)


def render_text(record: dict) -> str:
    """One readable line: time, layer, event, then what happened.

    TCP state changes read ``CONN FROM -> TO (cause)``, segments read like
    tcpdump (``CONN in [S.] seq 1 ack 2 win 3 len 0 <mss 1460>``), drops put
    the reason first; other fields follow as ``key=value``.
    """
    t = record.get("t", 0.0)
    layer = record.get("layer", "?")
    event = record.get("event", "?")
    rest = {k: v for k, v in record.items() if k not in _HEAD}
    words = []
    conn = rest.pop("conn", None)
    if conn is not None:
        words.append(str(conn))
    if layer == "tcp" and event == "state":
        words.append(f"{rest.pop('from', '?')} -> {rest.pop('to', '?')}")
        cause = rest.pop("cause", None)
        if cause:
            words.append(f"({cause})")
    elif layer == "tcp" and event == "seg":
        words.append(_tcp_seg(rest))
    elif event == "drop":
        words.append(f"reason={rest.pop('reason', '?')}")
    words.extend(f"{k}={_value(v)}" for k, v in rest.items())
    try:
        stamp = f"{float(t):12.6f}"
    except (TypeError, ValueError):
        stamp = f"{t!s:>12}"
    return f"{stamp} {layer:<6} {event:<10} {' '.join(words)}".rstrip()
