"""``stack trace --follow FILE``: the views of a trace that is still being written.

The file is read from its start and then polled (like ``tail -f``); only
whole lines are taken, so a line the stack is in the middle of writing waits
for its end. Each new event is shown as it arrives:

* ``timeline`` — every TCP state change as a line naming its connection,
  the notes of the timeline (ICMP errors, ARP failures, refused SYNs) and a
  connection's summary once it is CLOSED;
* ``ladder`` — every segment of every connection as a ladder row of fixed
  width (the live ladder cannot summarize what has not happened yet);
* ``text`` — each event as the text format's line (a text trace's own
  lines are copied).

It runs until interrupted; Ctrl-C ends it quietly with exit status 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Callable, Iterator

from stack.trace import render_text
from stack.tracetool.ladder import sack_blocks
from stack.tracetool.read import Connection, connections, flag_names, matches, parse_endpoint
from stack.tracetool.timeline import timeline

POLL = 0.05  # seconds between looks at a file that has not grown


def tail(path: str, stop: Callable[[], bool], poll: float = POLL) -> Iterator[str]:
    """The file's whole lines, then each new one as it is written, until ``stop()``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        part = ""
        while not stop():
            chunk = f.readline()
            if not chunk:
                time.sleep(poll)
                try:
                    if os.stat(path).st_size < f.tell():   # truncated: the stack started again
                        f.seek(0)
                        part = ""
                except OSError:
                    pass
                continue
            part += chunk
            if part.endswith("\n"):
                line, part = part, ""
                yield line


class Follower:
    """Turns events, one at a time, into the lines of a live view."""

    def __init__(self, fmt: str = "timeline", conn: str | None = None) -> None:
        self.fmt = fmt
        self.conn = conn
        self.events: list[dict] = []
        self.dup: dict[tuple[str, str], tuple[int, int]] = {}  # (conn, dir) -> (ack, dups)

    def _wanted(self, e: dict) -> bool:
        if self.conn is None:
            return True
        return "conn" in e and matches(Connection(str(e["conn"])), self.conn)

    def line(self, raw: str) -> list[str]:
        """The lines to print for one line of the trace file."""
        try:
            e = json.loads(raw)
        except ValueError:
            e = None
        if not isinstance(e, dict) or not {"t", "layer", "event"} <= e.keys():
            return [raw.rstrip("\n")] if self.fmt == "text" and raw.strip() else []
        return self.event(e)

    def event(self, e: dict) -> list[str]:
        if not self._wanted(e):
            return []
        self.events.append(e)
        if self.fmt == "text":
            return [render_text(e)]
        if self.fmt == "ladder":
            return self._ladder_row(e)
        return self._timeline(e)

    def _timeline(self, e: dict) -> list[str]:
        t = float(e["t"])
        layer, kind = e["layer"], e["event"]
        if layer == "tcp" and kind == "state":
            out = [f"{t:12.6f}  {e.get('conn')}  {e.get('from', '?')} -> {e.get('to', '?')}"
                   f"  {e.get('cause', '')}".rstrip()]
            if e.get("to") == "CLOSED" and e.get("from") != "LISTEN":
                conn = [c for c in connections(self.events) if c.name == e.get("conn")]
                if conn:
                    block = timeline(conn[-1]).splitlines()
                    start = next(i for i, ln in enumerate(block) if ln.startswith("  summary:"))
                    out.extend("      " + ln for ln in block[start:])
            return out
        if layer == "tcp" and kind == "drop" and e.get("reason") == "no_conn":
            return [f"{t:12.6f}  {e.get('conn')}  refused: nothing listening (RST sent)"]
        if layer == "tcp" and kind == "icmp":
            return [f"{t:12.6f}  {e.get('conn')}  · icmp {e.get('kind')} for seq={e.get('seq')}"]
        if layer == "arp" and kind == "failed":
            return [f"{t:12.6f}  arp  · {e.get('cause') or 'no ARP reply for ' + str(e.get('ip'))}"]
        if layer == "icmp" and kind == "in" and "quote" in e:
            return [f"{t:12.6f}  icmp · {e.get('name')} from {e.get('src')}"]
        return []

    def _ladder_row(self, e: dict) -> list[str]:
        t = float(e["t"])
        if e["layer"] != "tcp":
            return []
        name = str(e.get("conn", "?"))
        if e["event"] == "state":
            return [f"{t:12.6f}  {name}  [{e.get('to')}]"]
        if e["event"] == "retransmit":
            return [f"{t:12.6f}  {name}      ^ retransmission: {e.get('reason', '?')}"]
        if e["event"] != "seg":
            return []
        flags = str(e.get("flags", ""))
        d = str(e.get("dir", "in"))
        words = [flag_names(flags), f"seq={e.get('seq')}"]
        if "." in flags:
            words.append(f"ack={e.get('ack')}")
        words.append(f"win={e.get('win')}")
        if int(e.get("len", 0)):
            words.append(f"len={e.get('len')}")
        blocks = sack_blocks(e)
        if blocks:
            words.append("SACK " + " ".join(f"{a}-{b}" for a, b in blocks))
        ack = int(e.get("ack", 0))
        last, n = self.dup.get((name, d), (None, 0))
        pure = "." in flags and not int(e.get("len", 0)) and not any(c in flags for c in "SFR")
        n = n + 1 if pure and last == ack else 0
        self.dup[(name, d)] = (ack, n)
        if n:
            words.insert(0, f"dup ACK #{n}:")
        label = " ".join(words)
        arrow = f"<--- {label} ----" if d == "in" else f"---- {label} --->"
        local, _, remote = name.partition("-")
        side = f"{local} {'<-' if d == 'in' else '->'} {remote}"
        return [f"{t:12.6f}  {side}  {arrow}"]


def follow(path: str, fmt: str = "timeline", conn: str | None = None,
           out: IO[str] | None = None, err: IO[str] | None = None,
           stop: Callable[[], bool] = lambda: False) -> int:
    """``stack trace --follow``: 0 when interrupted (or ``stop()``), 2 on bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if conn is not None:
            parse_endpoint(conn)
        if path == "-":
            raise ValueError("--follow needs a file, not stdin")
        open(path, "rb").close()
    except (OSError, ValueError) as e:
        err.write(f"stack: error: {e.strerror if isinstance(e, OSError) else e}"
                  + (f": {path}" if isinstance(e, OSError) else "") + "\n")
        return 2
    f = Follower(fmt, conn)
    try:
        for raw in tail(path, stop):
            lines = f.line(raw)
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
    except KeyboardInterrupt:
        pass
    return 0
