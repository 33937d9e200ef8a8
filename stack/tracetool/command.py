"""``stack trace``: the command."""

from __future__ import annotations

import argparse
import sys
from typing import IO

from stack.tracetool.ladder import ladder
from stack.tracetool.plot import plot, plot_data
from stack.tracetool.read import TraceError, busiest, connections, load, overview, parse_endpoint, plural, select, timeline


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
        err.write(f"stack trace: skipped {plural(bad, 'line')} that did not parse "
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
