"""Command line: ``stack up`` runs a host on a TAP; ``stack trace`` studies a trace."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Protocol

from stack import livecmd, native
from stack.trace import LAYERS, Trace, group_counters, parse_layers

if TYPE_CHECKING:
    from stack.runtime import Stack


class Subparsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as far as we use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _up_parser(sub: Subparsers) -> None:
    p = sub.add_parser("up", help="run the stack as a host on a TAP link")
    p.add_argument("--tap", default="tap0", help="TAP device (opened if it exists, else created)")
    p.add_argument("--address", default="192.0.2.2/24", help="the stack's IPv4 address/prefix")
    p.add_argument("--host-address", help="address/prefix for the kernel side of the TAP")
    p.add_argument("--gateway", help="default gateway")
    p.add_argument("--mac", help="the stack's MAC (default: derived from the address)")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--serve", action="append", default=[], metavar="SERVICE",
                   help="http:PORT[:DIR], echo:PORT, discard:PORT, chargen:PORT, udp-echo:PORT")
    p.add_argument("--trace", metavar="FILE", help="write trace events to FILE ('-' for stderr)")
    p.add_argument("--trace-format", choices=("text", "jsonl"), default="jsonl")
    p.add_argument("--trace-level", choices=("all", "state"), default="all",
                   help="all events, or only state changes, drops and retransmissions")
    p.add_argument("--trace-layers", metavar="LAYER,...", type=_layers,
                   help=f"only these layers' events ({','.join(LAYERS)}); counters count all")
    p.add_argument("--pcap", metavar="FILE", help="capture frames to a pcap file")
    p.add_argument("--busy-poll", type=int, default=0, metavar="USEC",
                   help="keep polling the TAP for USEC microseconds after each frame "
                        "before sleeping (lower latency, more CPU; like net.core.busy_poll)")
    p.add_argument("--offload", action="store_true",
                   help="virtio-net header with checksum and TSO/GSO offloads on the TAP")
    p.add_argument("--impair", metavar="SPEC",
                   help="fault injection: loss=P,dup=P,reorder=P,corrupt=P,delay=MS,seed=N")
    p.add_argument("--control", metavar="PATH",  # (stack ss & co.; stack/control.py)
                   help="serve the live views on this socket path (default: the abstract "
                        "name @stack/TAP, found by --tap in this network namespace)")


def _layers(text: str) -> frozenset[str]:
    try:
        return parse_layers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _trace_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "trace", help="per-connection timelines, ladder charts and plots from a jsonl trace",
        description="Read a jsonl trace (stack up --trace FILE) and print, per TCP connection, "
                    "its state transitions with causes and a summary, then the other layers' "
                    "summaries. Example: stack trace t.jsonl --conn :80 --format ladder "
                    "--from 1.2 --to 1.3; stack trace --follow t.jsonl while the stack runs.")
    p.add_argument("file", help="the jsonl trace ('-' for stdin)")
    p.add_argument("--conn", metavar="ADDR:PORT",
                   help="only connections with this endpoint on either side (ADDR may be left out)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="time-sequence graph, cwnd and RTT of the busiest connection left")
    p.add_argument("--format", choices=("timeline", "ladder", "text"), default="timeline",
                   help="timeline (default), a two-column message-sequence chart, or the "
                        "events as the text format's lines")
    p.add_argument("--layer", choices=("ip", "arp", "icmp", "udp"),
                   help="that layer's view instead of TCP's: fragments and reassembly, ARP "
                        "resolutions, ICMP messages by name, UDP datagrams per socket")
    p.add_argument("--from", dest="t_from", type=float, metavar="T",
                   help="only events from T (seconds since the stack started); the ladder then "
                        "draws every segment")
    p.add_argument("--to", dest="t_to", type=float, metavar="T", help="only events up to T")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep reading FILE as the stack writes it and print each event's "
                        "line as it arrives (Ctrl-C ends)")


def format_counters(counters: dict[str, int]) -> str:
    """Counters grouped by layer (stack order); each layer's drops listed by reason."""
    lines = []
    for layer, (counts, drops) in group_counters(counters).items():
        lines.append(f"{layer}:")
        lines.extend(f"    {name}: {value}" for name, value in counts.items())
        if drops:
            lines.append(f"    drops: {sum(drops.values())}")
            lines.extend(f"        {reason}: {value}" for reason, value in drops.items())
    return "\n".join(lines) if lines else "(no counters)"


def _print_counters(net: Stack, when: str, table: bool = False) -> None:
    net.trace.flush()
    print(f"stack: counters {when} (t={net.clock() - net.started:.3f}s)", file=sys.stderr)
    print(format_counters(net.stats()), file=sys.stderr, flush=True)
    if table:  # SIGUSR1: the connection table too, ss-style (stack/livecmd.py)
        livecmd.print_table(net)


def _open_trace(args: argparse.Namespace) -> Trace | None:
    """The Trace ``stack up`` writes (None without --trace); raises OSError."""
    if not args.trace:
        return None
    if args.trace == "-":  # a person watching: the readable lines on stderr
        return Trace(sys.stderr, "text", level=args.trace_level, layers=args.trace_layers)
    sink = open(args.trace, "w", buffering=1 << 16)
    return Trace(sink, args.trace_format, level=args.trace_level, layers=args.trace_layers)


def cmd_up(args: argparse.Namespace) -> int:
    from stack.control import ControlServer, abstract_name, describe
    from stack.runtime import Stack
    from stack.services import parse_service, start_service

    try:
        specs = [parse_service(s) for s in args.serve]
    except ValueError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 2
    try:
        trace = _open_trace(args)
    except OSError as e:
        print(f"stack: cannot write the trace {args.trace}: {e.strerror or e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    net = Stack.tap(args.tap, address=args.address, gateway=args.gateway,
                    host_address=args.host_address, mtu=args.mtu, mac=args.mac,
                    trace_obj=trace, pcap=args.pcap, impair=args.impair, offload=args.offload,
                    busy_poll=args.busy_poll / 1e6)
    services = []
    # -- the control socket (stack ss, stats, neigh, route) --
    try:
        ctl = ControlServer(net, args.control or abstract_name(args.tap), tap=args.tap)
    except OSError as e:
        net.close()
        print(f"stack: error: --control {describe(args.control or abstract_name(args.tap))}: "
              f"{e.strerror or e} (another stack on this TAP?)", file=sys.stderr)
        return 1
    # --
    try:
        for spec in specs:
            services.append(start_service(net, spec))
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGUSR1, lambda *_: _print_counters(net, "now", table=True))
        seed = net.injector.seed if net.injector is not None else None
        extra = f" impair={args.impair} seed={seed}" if args.impair else ""
        served = f" serve={','.join(args.serve)}" if args.serve else ""
        print(f"stack: up tap={args.tap} address={args.address} mac={_mac(net.mac)} "
              f"mtu={args.mtu} checksum={native.IMPL}{served}{extra}", file=sys.stderr, flush=True)
        while not stop.wait(3600):
            pass
    finally:
        for svc in services:
            svc.close()
        ctl.close()
        net.close()
        print("stack: down", file=sys.stderr)
        _print_counters(net, "at exit")
    return 0


def _mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def cmd_trace(args: argparse.Namespace) -> int:
    from stack import tracetool

    return tracetool.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _up_parser(sub)
    _trace_parser(sub)
    livecmd.add_parsers(sub)  # stack ss, stats, neigh, route (stack/livecmd.py)
    args = parser.parse_args(argv)
    if args.command == "up":
        return cmd_up(args)
    if args.command in livecmd.COMMANDS:
        return livecmd.run(args)
    return cmd_trace(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
