"""``stack trace``: the command."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import IO

from stack.tracetool.ladder import ladder
from stack.tracetool.layers import VIEWS, has_events, layer_view, summary
from stack.tracetool.plot import plot, plot_data
from stack.trace import render_text
from stack.tracetool.read import (Connection, TraceError, busiest, connections, in_window, load, matches,
                                  overview, parse_endpoint, plural, select, windowed)
from stack.tracetool.timeline import related, timeline


# -- the command ----------------------------------------------------------------------


def _window_text(lo: float | None, hi: float | None) -> str:
    if lo is None and hi is None:
        return ""
    return f" from {lo if lo is not None else 0:.6f}" + (f" to {hi:.6f}" if hi is not None else "")


def run(path: str, conn: str | None = None, plot_out: str | None = None,
        fmt: str = "timeline", out: IO[str] | None = None, err: IO[str] | None = None,
        layer: str | None = None, t_from: float | None = None,
        t_to: float | None = None) -> int:
    """``stack trace``: 0 on success, 1 when nothing matched, 2 on bad input."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if conn is not None:
            parse_endpoint(conn)
        if layer is not None and layer not in VIEWS:
            raise ValueError(f"--layer wants one of {', '.join(VIEWS)}, not {layer!r}")
        if t_from is not None and t_to is not None and t_to < t_from:
            raise ValueError(f"--to {t_to} is before --from {t_from}")
        events, bad = load(path)
    except (TraceError, ValueError) as e:
        err.write(f"stack: error: {e}\n")
        return 2
    if bad:
        err.write(f"stack: warning: skipped {plural(bad, 'line')} that did not parse "
                  "as trace events\n")
    inside = [e for e in events if in_window(float(e["t"]), t_from, t_to)]
    if layer is not None:
        if not has_events(inside, layer):
            err.write(f"stack trace: no {layer} events{_window_text(t_from, t_to)} in {path}\n")
            return 1
        out.write(layer_view(inside, layer) + "\n")
        out.flush()
        return 0
    if fmt == "text":
        for ev in inside:
            if conn is None or ("conn" in ev and matches(Connection(str(ev["conn"])), conn)):
                out.write(render_text(ev) + "\n")
        out.flush()
        return 0
    every = connections(events)
    chosen = windowed(select(every, conn), t_from, t_to)
    context = [e for e in events if e["layer"] in ("arp", "icmp")]
    if fmt == "timeline":
        out.write(overview(events, every, path) + "\n")
    if not chosen:
        where = f" with endpoint {conn}" if conn else ""
        others = [name for name in VIEWS if has_events(inside, name)]
        if fmt == "timeline" and others and conn is None:
            out.write("no TCP connection" + _window_text(t_from, t_to) + "; other layers:\n")
            out.write("".join(f"  {summary(inside, name)}\n" for name in others))
            return 0
        err.write(f"stack trace: no TCP connection{where}{_window_text(t_from, t_to)} in {path}\n")
        return 1
    windowed_view = t_from is not None or t_to is not None
    if fmt == "ladder":
        shown = [c for c in chosen if not c.is_listener and (c.whole.transitions or c.refused)]
        if not shown:
            err.write("stack trace: no connection with state changes to draw\n")
            return 1
        for c in shown:
            note = (" (refused: nothing listening)" if c.refused
                    else " (refused by the peer: nothing listening)" if c.refused_by_peer else "")
            out.write(f"\n{c.label}{note}{_window_text(t_from, t_to)}\n"
                      f"{ladder(c, every=windowed_view)}\n")
    else:
        for c in chosen:
            out.write("\n" + timeline(c, [e for e in context if related(c, e)]) + "\n")
        others = [name for name in VIEWS if has_events(inside, name)]
        if others and conn is None:
            out.write("\nother layers (stack trace --layer NAME for each):\n")
            out.write("".join(f"  {summary(inside, name)}\n" for name in others))
    if plot_out:
        target = busiest(chosen)
        if target is None:
            err.write("stack trace: no connection carried data; nothing to plot\n")
            return 1
        try:
            data = plot_data(target.whole.events, target.name, t_from=t_from, t_to=t_to)
            plot(data, plot_out)
        except ImportError:
            err.write("stack: error: --plot needs matplotlib (pip install 'stack[plot]')\n")
            return 1
        except OSError as e:
            err.write(f"stack: error: --plot: cannot write {plot_out}: {e.strerror or e}\n")
            return 1
        out.write(f"\nplot: {plot_out} ({target.label}{_window_text(t_from, t_to)}, "
                  f"{len(data['segments'])} data segments "
                  f"{'sent' if data['direction'] == 'out' else 'received'}, "
                  f"{len(data['retransmissions'])} retransmissions)\n")
    out.flush()
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry from ``stack.cli`` with the parsed ``trace`` arguments."""
    t_from = getattr(args, "t_from", None)
    t_to = getattr(args, "t_to", None)
    if getattr(args, "follow", False):
        from stack.tracetool.follow import follow

        # Ctrl-C ends it, and so does SIGTERM (a script's background job has SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        return follow(args.file, fmt=args.format, conn=args.conn)
    return run(args.file, conn=args.conn, plot_out=args.plot, fmt=args.format,
               layer=getattr(args, "layer", None), t_from=t_from, t_to=t_to)
