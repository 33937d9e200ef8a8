"""The live commands: ``stack ss``, ``stack stats``, ``stack neigh``, ``stack route``.

Each asks a running stack through its control socket (``stack.control``):
the one on ``--tap NAME`` (default ``tap0``) in this network namespace, or
the one listening on ``--control PATH``. When nothing listens there, one
``stack: error: no stack on tap X (...)`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, TYPE_CHECKING, Any, Protocol

from stack import control, ss

if TYPE_CHECKING:
    from stack.runtime import Stack

COMMANDS = ("ss", "stats", "neigh", "route")


class Subparsers(Protocol):
    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _target(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--tap", default="tap0",
                       help="ask the stack on this TAP, in this network namespace (default: tap0)")
    where.add_argument("--control", metavar="PATH",
                       help="ask the stack whose control socket is PATH (stack up --control)")


def add_parsers(sub: Subparsers) -> None:
    """Register the four commands on ``stack``'s subparsers."""
    p = sub.add_parser(
        "ss", help="a running stack's sockets, like iproute2's ss",
        description="List a running stack's sockets the way ss does. Without -l/-a: "
                    "connected sockets; -l: listening; -a: all; 'state NAME' (repeatable: "
                    "established, syn-recv, time-wait, close-wait, listening, connected, ...).",
        epilog="example: stack ss -tan state time-wait")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP sockets")
    p.add_argument("-u", "--udp", action="store_true", help="UDP sockets")
    p.add_argument("-l", "--listening", action="store_true", help="listening sockets only")
    p.add_argument("-a", "--all", action="store_true", help="listening and connected sockets")
    p.add_argument("-n", "--numeric", action="store_true", help="port numbers, not service names")
    p.add_argument("-i", "--info", action="store_true", help="TCP internals, on a second line")
    p.add_argument("-o", "--options", action="store_true", help="timer information")
    p.add_argument("-e", "--extended", action="store_true", help="the owning program")
    p.add_argument("-p", "--processes", action="store_true", help="the owning program")
    p.add_argument("filter", nargs="*", metavar="state STATE",
                   help="only sockets in STATE (ss's names, or RFC 9293 names such as TIME_WAIT)")
    _target(p)
    for name, text in (("stats", "a running stack's counters, like nstat / netstat -s"),
                       ("neigh", "a running stack's ARP cache, like ip neigh"),
                       ("route", "a running stack's routes, like ip route")):
        q = sub.add_parser(name, help=text, description=text.capitalize() + ".",
                           epilog=f"example: stack {name} --tap tap0")
        _target(q)


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else "-" if v is None else str(v)


def _address(args: argparse.Namespace) -> tuple[str, str]:
    if args.control:
        return args.control, f"at {args.control}"
    return control.abstract_name(args.tap), f"on tap {args.tap}"


def _error(text: str, code: int) -> int:
    print(f"stack: error: {text}", file=sys.stderr)
    return code


def ss_options(args: argparse.Namespace) -> ss.Options:
    """The ss.Options for ``stack ss``'s arguments; ValueError names a bad filter."""
    words = list(args.filter)
    states = []
    while words:
        if words[0] != "state" or len(words) < 2:
            raise ValueError(f"expected 'state NAME', got {' '.join(words)!r}")
        ss.state_filter(words[1])
        states.append(words[1])
        words = words[2:]
    return ss.Options(tcp=args.tcp, udp=args.udp, listening=args.listening, all=args.all,
                      numeric=args.numeric, info=args.info, timers=args.options,
                      process=args.extended or args.processes, states=states)


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; the exit status."""
    opt = None
    if args.command == "ss":
        try:
            opt = ss_options(args)
        except ValueError as e:
            return _error(f"state: {e}", 2)
    address, where = _address(args)
    try:
        answer = control.request(address, args.command)
    except control.NoStack as e:
        return _error(f"no stack {where} ({control.describe(address)}: {e})", 1)
    except control.ControlError as e:
        return _error(f"the stack {where} ({control.describe(address)}): {e}", 1)
    if opt is not None:
        lines = ss.format_table(answer["sockets"], opt)
    elif args.command == "stats":
        from stack.cli import format_counters

        lines = [format_counters(answer["counters"])]
        if answer.get("dhcp"):  # --address dhcp: the lease and its timers
            lines += ["dhcp lease:"] + [f"    {k}: {_value(v)}" for k, v in answer["dhcp"].items()]
    elif args.command == "neigh":
        lines = [neigh_line(n) for n in answer["neighbours"]]
    else:
        lines = [route_line(r) for r in answer["routes"]]
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # (| head): end quietly, also at exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def neigh_line(n: dict[str, Any]) -> str:
    """One ARP cache entry as ``ip neigh`` prints it."""
    mac = f" lladdr {n['lladdr']}" if n.get("lladdr") else ""
    return f"{n['dst']} dev {n['dev']}{mac} {n['state']}"


def route_line(r: dict[str, Any]) -> str:
    """One route as ``ip route`` prints it (``local`` routes as ``ip route
    show table all`` does)."""
    out = [r["type"], r["dst"]] if r.get("type") else [r["dst"]]
    for key in ("via", "dev", "table", "proto", "scope", "src"):
        if r.get(key):
            out.append(f"{key} {r[key]}")
    if r.get("cache"):
        out.append(f"cache expires {r['cache']['expires']}sec mtu {r['cache']['mtu']}")
    return " ".join(out)


def print_table(net: Stack, file: IO[str] | None = None) -> None:
    """The connection table, ``ss -tuan`` style, on ``file`` (stderr): what
    ``stack up`` adds to its counters on SIGUSR1."""
    out = file if file is not None else sys.stderr
    lines = ss.format_table(net.connections(), ss.Options(all=True, numeric=True))
    print("stack: sockets now", file=out)
    print("\n".join(lines), file=out, flush=True)
