"""Trace events and counters.

Every layer reports what happens through one :class:`Trace` object. An event
is data — time, layer, event name and fields — rendered as JSON lines or as
readable text. Counters (``netstat -s`` style) are kept whether tracing is on
or off; every drop is counted and, when tracing is on, written as an event
``{"event": "drop", "reason": ...}``.

Hot paths guard event construction with ``if trace.on:`` so a stack with
tracing off pays one attribute read per event site.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import IO, Callable, Iterable

LAYERS = ("link", "eth", "arp", "ip", "icmp", "udp", "tcp", "socket")

# Events written when the trace is at level "state": the ones a person reads
# to follow a connection's life. Everything else needs level "all".
STATE_EVENTS = frozenset({"state", "drop", "retransmit", "up", "down"})


class Trace:
    """Collects events and counters for one stack.

    ``clock`` returns seconds since the stack started. ``sink`` is a text
    file (or None for counters only). ``fmt`` is ``"jsonl"`` or ``"text"``.
    ``layers`` limits which layers write events (None: all). ``level`` is
    ``"all"`` or ``"state"`` (state transitions, drops, retransmissions).
    """

    def __init__(
        self,
        sink: IO[str] | None = None,
        fmt: str = "jsonl",
        clock: Callable[[], float] = lambda: 0.0,
        layers: Iterable[str] | None = None,
        level: str = "all",
    ) -> None:
        if fmt not in ("jsonl", "text"):
            raise ValueError(f"trace format must be jsonl or text, not {fmt!r}")
        if level not in ("all", "state"):
            raise ValueError(f"trace level must be all or state, not {level!r}")
        self.sink = sink
        self.fmt = fmt
        self.clock = clock
        self.layers = frozenset(layers) if layers is not None else None
        self.level = level
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.listeners: list[Callable[[dict], None]] = []
        self._update()

    def _update(self) -> None:
        # ``on`` is the one flag hot paths read before building an event.
        self.on = self.sink is not None or bool(self.listeners)

    def subscribe(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(event_dict)`` for every event written (tests use this)."""
        self.listeners.append(fn)
        self._update()

    def wants(self, layer: str, event: str) -> bool:
        if not self.on:
            return False
        if self.layers is not None and layer not in self.layers:
            return False
        return self.level == "all" or event in STATE_EVENTS

    def event(self, layer: str, event: str, **fields) -> None:
        if not self.wants(layer, event):
            return
        record = {"t": round(self.clock(), 6), "layer": layer, "event": event}
        record.update(fields)
        for fn in self.listeners:
            fn(record)
        if self.sink is not None:
            line = json.dumps(record, default=str) if self.fmt == "jsonl" else render_text(record)
            with self._lock:
                self.sink.write(line + "\n")

    def count(self, layer: str, name: str, n: int = 1) -> None:
        self.counters[f"{layer}.{name}"] += n

    def drop(self, layer: str, reason: str, **fields) -> None:
        """Count a dropped frame or segment and trace it."""
        self.counters[f"{layer}.drop.{reason}"] += 1
        if self.on:
            self.event(layer, "drop", reason=reason, **fields)

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.counters.items() if ".drop." in k}

    def flush(self) -> None:
        if self.sink is not None:
            with self._lock:
                self.sink.flush()


def render_text(record: dict) -> str:
    """One readable line: time, layer, event, then the fields."""
    t = record.get("t", 0.0)
    layer = record.get("layer", "?")
    event = record.get("event", "?")
    rest = {k: v for k, v in record.items() if k not in ("t", "layer", "event")}
    if layer == "tcp" and event == "state":
        body = f"{rest.pop('conn', '?')} {rest.pop('from', '?')} -> {rest.pop('to', '?')}"
        cause = rest.pop("cause", None)
        if cause:
            body += f" ({cause})"
    elif event == "drop":
        body = f"reason={rest.pop('reason', '?')}"
    else:
        body = ""
    extra = " ".join(f"{k}={v}" for k, v in rest.items())
    return f"{t:12.6f} {layer:<6} {event:<10} {body}{' ' if body and extra else ''}{extra}".rstrip()
