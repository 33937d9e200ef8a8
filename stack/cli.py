"""Command line: ``stack up`` runs a host on a TAP; ``stack trace`` studies a trace.

Bad input and failures to start end as one ``stack: error:`` line on stderr
with exit 2 (usage) or 1 (a resource), never a traceback: the values are
checked by :mod:`stack.cliargs`, what spans flags or touches the system by
:mod:`stack.cli_checks`, and :func:`main` turns their ``CliError`` into the
line. Output into a pipe that closes (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from stack import cli_checks, cliargs, livecmd, native, traceroute
from stack.lab import command as lab_command
from stack.cliargs import RESOURCE, CliError, report
from stack.dhcp import DHCP_TIMEOUT
from stack.services import MAX_CLIENTS
from stack.trace import LAYERS, Trace, group_counters, parse_layers

if TYPE_CHECKING:
    from stack.control import ControlServer
    from stack.runtime import Stack

# Exit status after a write to a closed pipe (as a tool killed by SIGPIPE).
EXIT_PIPE = 128 + signal.SIGPIPE
EXIT_INTERRUPTED = 128 + signal.SIGINT

DESCRIPTION = """\
A userspace TCP/IP stack that owns a Linux TAP device and speaks Ethernet
with the kernel on the other side."""

# A short example for every command, shown at the end of its --help.
EXAMPLES = {
    "up": """\
example, in a network namespace of your own (unshare --net, then ip link set lo up):
  stack up --host-address 192.0.2.1/24 --serve http:80 --serve echo:7 --trace trace.jsonl
  curl http://192.0.2.2/bytes/1000          # from the kernel side, in the same namespace""",
    "run": """\
examples, in a network namespace of your own:
  stack run --host-address 192.0.2.1/24 --trace trace.jsonl -- -m http.server 8000 --bind 192.0.2.2
  stack run --host-address 192.0.2.1/24 -- fetch.py http://192.0.2.1:8000/
  stack run --host-address 192.0.2.1/24 -- -c 'raise SystemExit(3)'   # exits 3""",
    "trace": """\
examples:
  stack trace trace.jsonl                      # every TCP connection's timeline, then the others
  stack trace trace.jsonl --conn :80 --format ladder --from 1.2 --to 1.3
  stack trace trace.jsonl --layer ip           # fragments and reassembly
  stack trace --follow trace.jsonl             # while the stack runs""",
    "lab": """\
examples (as root; the lab makes its own namespaces):
  stack lab --list
  stack lab handshake --out handshake     # then read handshake/handshake-ladder.txt
  stack lab --topology my.toml --shell    # README, "Lessons", shows a topology file""",
}


class Subparsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as far as we use it."""

    @property
    def choices(self) -> Mapping[str, argparse.ArgumentParser]: ...

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _up_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "up", help="run the stack as a host on a TAP link",
        description="Run the stack as a host on a TAP link until SIGINT or SIGTERM. It answers "
                    "ARP and ping, serves the --serve services, and prints 'stack: up ...' on "
                    "stderr when ready.")
    p.add_argument("--tap", default="tap0", type=cliargs.tap_name, metavar="NAME",
                   help="TAP device, opened if it exists, else created (default: %(default)s)")
    p.add_argument("--address", default="192.0.2.2/24", type=cliargs.address, metavar="CIDR",
                   help="the stack's IPv4 address/prefix, or 'dhcp': lease one (with its "
                        "gateway and DNS servers) from a DHCP server on the link "
                        "(default: %(default)s)")
    p.add_argument("--dhcp-timeout", type=cliargs.seconds, default=DHCP_TIMEOUT,
                   metavar="SECONDS",
                   help="with --address dhcp: give up when no lease came within this time "
                        "(default: %(default)g)")
    p.add_argument("--host-address", type=cliargs.cidr, metavar="CIDR",
                   help="give the kernel side of the TAP this address/prefix and bring it up "
                        "(default: leave the kernel side as it is)")
    p.add_argument("--gateway", type=cliargs.ipv4, metavar="IP",
                   help="default gateway, on the stack's subnet (default: none, on-link only)")
    p.add_argument("--mac", type=cliargs.mac,
                   help="the stack's unicast MAC (default: 02:53 and the address's four bytes)")
    p.add_argument("--mtu", type=cliargs.mtu, default=1500, metavar="N",
                   help=f"link MTU, {cliargs.MTU_MIN}-{cliargs.MTU_MAX} (default: %(default)s)")
    p.add_argument("--serve", action="append", default=[], metavar="SERVICE",
                   type=cliargs.service,
                   help="http:PORT[:DIR], echo:PORT, discard:PORT, chargen:PORT or "
                        "udp-echo:PORT; repeatable (default: no services)")
    p.add_argument("--max-clients", type=cliargs.max_clients, default=MAX_CLIENTS, metavar="N",
                   help="TCP clients each service serves at once; HTTP answers more with 503, "
                        "the others close them (default: %(default)s)")
    p.add_argument("--trace", metavar="FILE",
                   help="write trace events to FILE, '-' for stderr (default: no trace)")
    p.add_argument("--trace-format", choices=("text", "jsonl"), default="jsonl",
                   help="trace format (default: %(default)s)")
    p.add_argument("--trace-level", choices=("all", "state"), default="all",
                   help="all events, or only state changes, drops and retransmissions "
                        "(default: %(default)s)")
    p.add_argument("--trace-layers", metavar="LAYER,...", type=_layers,
                   help=f"only these layers' events ({','.join(LAYERS)}); counters count all "
                        "(default: every layer)")
    p.add_argument("--pcap", metavar="FILE", help="capture frames to a pcap file (default: none)")
    p.add_argument("--impair", metavar="SPEC", type=cliargs.impair,
                   help="fault injection on the link, both ways: "
                        "loss=P,dup=P,reorder=P,corrupt=P,delay=MS,seed=N (default: none)")
    p.add_argument("--congestion", type=cliargs.congestion, default="cubic", metavar="NAME",
                   help="congestion control for every connection: cubic, bbr, newreno or reno "
                        "(default: %(default)s)")
    p.add_argument("--loss-window", choices=("cwnd", "flight"), default="cwnd",
                   help="what a loss's new window is a fraction of: cwnd (Linux, RFC 9438 "
                        "4.6) or the bytes in flight (RFC 5681, RFC 6675) (default: %(default)s)")
    p.add_argument("--pacing", action="store_true",
                   help="pace every congestion control, not only BBR (as Linux under fq) "
                        "(default: off)")
    p.add_argument("--msl", type=cliargs.msl, default=30.0, metavar="SECONDS",
                   help="maximum segment lifetime; TIME_WAIT lasts twice that "
                        "(default: %(default)g)")
    p.add_argument("--busy-poll", type=cliargs.busy_poll, default=0, metavar="USEC",
                   help="keep polling the TAP for USEC microseconds after each frame "
                        "before sleeping (lower latency, more CPU; like net.core.busy_poll) "
                        "(default: %(default)s, off)")
    p.add_argument("--offload", action="store_true",
                   help="virtio-net header with checksum and TSO/GSO offloads on the TAP "
                        "(default: off)")
    p.add_argument("--dns", action="append", type=cliargs.ipv4, metavar="IP",
                   help="a DNS server for the stack's name resolution, asked over the stack's "
                        "own UDP (repeatable: tried in order) (default: none)")
    p.add_argument("--hosts", type=cliargs.hosts_file, metavar="FILE",
                   help="extra hosts-file entries, answered before /etc/hosts and DNS "
                        "(default: none)")
    p.add_argument("--control", metavar="PATH",  # (stack ss & co.; stack/control.py)
                   help="serve the live views on this socket path (default: the abstract "
                        "name @stack/TAP, found by --tap in this network namespace)")


def _run_parser(sub: Subparsers) -> None:
    """``stack run``: every ``stack up`` flag (copied from its parser, so flags
    added there reach this command too), then the program after ``--``."""
    p = sub.add_parser(
        "run", help="run an unmodified Python program over the stack",
        parents=[sub.choices["up"]], conflict_handler="resolve",
        usage="%(prog)s [stack up flags] -- PYTHON-ARGS...",
        description="Start the stack like 'stack up' (it prints the same 'stack: up ...' line), "
                    "patch the socket module over it (the drop-in) and run 'python "
                    "PYTHON-ARGS...' in this process: -m MODULE, -c CODE or a script path, then "
                    "its arguments. The program's exit status is the command's; after it the "
                    "stack delivers what the program sent and shuts down.")
    p.add_argument("program", nargs="*", metavar="PYTHON-ARGS",
                   help="after '--': -m MODULE, -c CODE or SCRIPT, then the program's arguments")


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
                    "summaries.")
    p.add_argument("file", help="the jsonl trace ('-' for stdin)")
    p.add_argument("--conn", metavar="ADDR:PORT", type=cliargs.endpoint,
                   help="only connections with this endpoint on either side (ADDR may be "
                        "left out) (default: every connection)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="time-sequence graph, cwnd and RTT of the busiest connection left "
                        "(default: no plot)")
    p.add_argument("--format", choices=("timeline", "ladder", "text"), default="timeline",
                   help="timeline (default), a two-column message-sequence chart, or the "
                        "events as the text format's lines")
    p.add_argument("--layer", choices=("ip", "arp", "icmp", "udp", "dhcp"),
                   help="that layer's view instead of TCP's: fragments and reassembly, ARP "
                        "resolutions, ICMP messages by name, UDP datagrams per socket, the "
                        "DHCP client's messages and leases (default: TCP's)")
    p.add_argument("--from", dest="t_from", type=float, metavar="T",
                   help="only events from T (seconds since the stack started); the ladder then "
                        "draws every segment (default: from the start)")
    p.add_argument("--to", dest="t_to", type=float, metavar="T",
                   help="only events up to T (default: to the end)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep reading FILE as the stack writes it and print each event's "
                        "line as it arrives (Ctrl-C ends) (default: read it once)")


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


def _quietly(fn: Any, *args: Any) -> None:
    """``fn(*args)``, which writes to stderr; a reader that went away is no error."""
    try:
        fn(*args)
    except BrokenPipeError:
        pass


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _open_trace(args: argparse.Namespace) -> Trace | None:
    """The Trace ``stack up`` writes (None without --trace)."""
    if not args.trace:
        return None
    if args.trace == "-":  # a person watching: the readable lines on stderr
        return Trace(sys.stderr, "text", level=args.trace_level, layers=args.trace_layers)
    try:
        sink = open(args.trace, "w", buffering=1 << 16)
    except OSError as e:
        raise CliError(f"--trace {args.trace}: cannot write: {e.strerror or e}", RESOURCE) from None
    return Trace(sink, args.trace_format, level=args.trace_level, layers=args.trace_layers)


class StopSignals:
    """Installs handlers for ``signals``; :meth:`wait` returns once one arrived
    (also one that came before the call).

    The signals are seen through the interpreter's wakeup fd, a pipe its C
    handler writes each signal's number to. A Python handler alone is not
    enough: one the kernel delivers to another thread (the network thread)
    runs only when the main thread next runs bytecode, which it never does
    while it sleeps in ``select``. Nor is setting a ``threading.Event`` from a
    handler: the handler runs in the main thread, which may at that moment
    hold the Event's own lock inside ``Event.wait``."""

    def __init__(self, *signals: int) -> None:
        self._signals = frozenset(signals)
        self._stopped = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)  # many signals waiting: the rest are dropped
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._arrived)

    def _arrived(self, signum: int, frame: object) -> None:
        """Nothing to do: the byte in the pipe is the news (the handler only
        replaces the default action, which would end the process at once)."""

    def wait(self) -> None:
        """Until one of the signals arrives (others, SIGUSR1's report, run their
        handlers and the wait goes on)."""
        while not self.arrived(None):
            pass

    def arrived(self, timeout: float | None = 0.0) -> bool:
        """Has one of the signals come (waiting up to ``timeout`` seconds for
        news, None: until some signal comes)? Once true, always true."""
        if not self._stopped and select.select([self._r], [], [], timeout)[0]:
            try:
                self._stopped = bool(self._signals.intersection(os.read(self._r, 512)))
            except BlockingIOError:
                pass
        return self._stopped


def _open_stack(args: argparse.Namespace, trace: Trace | None) -> Stack:
    """``Stack.tap`` with the flags; a TAP that cannot be had is a ``CliError``."""
    from stack.runtime import Stack
    from stack.tcp.config import TcpConfig

    config = TcpConfig(msl=args.msl, congestion=args.congestion, loss_window=args.loss_window,
                       pacing=args.pacing)
    try:
        return Stack.tap(args.tap, address=args.address, gateway=args.gateway,
                         host_address=args.host_address, mtu=args.mtu, mac=args.mac,
                         trace_obj=trace, pcap=args.pcap, impair=args.impair,
                         offload=args.offload, busy_poll=args.busy_poll / 1e6,
                         tcp_config=config, dns=args.dns, hosts=args.hosts)
    except ImportError as e:
        raise CliError(f"--tap {args.tap}: python-pytun is not installed ({e})",
                       RESOURCE) from None
    except OSError as e:
        raise cli_checks.tap_failure(e, args.tap, args.mtu, args.host_address) from None
    except ValueError as e:  # what the checks before should have caught
        raise CliError(str(e)) from None


def _open_control(args: argparse.Namespace, net: Stack) -> ControlServer:
    """The control socket (stack ss, stats, neigh, route); one in use is a ``CliError``."""
    from stack.control import ControlServer, abstract_name, describe

    address = args.control or abstract_name(args.tap)
    try:
        return ControlServer(net, address, tap=args.tap)
    except OSError as e:
        raise CliError(f"--control {describe(address)}: {e.strerror or e} (another stack on "
                       "this TAP?)", RESOURCE) from None


def _start(args: argparse.Namespace,
           stop: StopSignals | None = None) -> tuple[Stack, ControlServer, list]:
    """What ``stack up`` and ``stack run`` start: the checks, the trace, the
    stack, its control socket and services. A failure closes what was opened
    (before the one error line, and without the exit report)."""
    cli_checks.check_addresses(args.address, args.host_address, args.gateway)
    cli_checks.check_services(args.serve)
    cli_checks.check_writable("--pcap", args.pcap)
    net = _open_stack(args, _open_trace(args))
    try:
        if net.dhcp is not None:
            _wait_for_lease(args, net, stop)
        ctl = _open_control(args, net)
        try:
            return net, ctl, cli_checks.start_services(net, args.serve, args.max_clients)
        except BaseException:
            ctl.close()
            raise
    except BaseException:
        net.close()
        raise


class Stopped(Exception):
    """SIGINT or SIGTERM came while ``stack up`` was still starting."""


def _wait_for_lease(args: argparse.Namespace, net: Stack, stop: StopSignals | None) -> None:
    """``--address dhcp``: until the lease is bound (its address is then
    ``args.address``), or a ``CliError`` after ``--dhcp-timeout``; ``Stopped``
    if a stop signal comes first."""
    assert net.dhcp is not None
    end = time.monotonic() + args.dhcp_timeout
    lease = None
    while lease is None and time.monotonic() < end:
        lease = net.dhcp.wait(min(0.1, max(0.0, end - time.monotonic())))
        if lease is None and stop is not None and stop.arrived():
            raise Stopped
    if lease is None:
        raise CliError(f"--address dhcp: no DHCP lease on {args.tap} within "
                       f"{args.dhcp_timeout:g} s (is a DHCP server on the link?)", RESOURCE)
    args.address = f"{net.address_str}/{net.prefix_len}"


def cmd_up(args: argparse.Namespace) -> int:
    stop = StopSignals(signal.SIGINT, signal.SIGTERM)
    try:
        net, ctl, services = _start(args, stop)
    except Stopped:  # (still waiting for a DHCP lease): closed, as a stop after up is
        return 0
    try:
        signal.signal(signal.SIGUSR1, lambda *_: _quietly(_print_counters, net, "now", True))
        print(_up_line(args, net), file=sys.stderr, flush=True)
        warning = cli_checks.kernel_side_warning(args.tap, args.address, args.host_address)
        if warning is not None:
            report(warning, "warning")
        stop.wait()
    finally:
        for svc in services:
            svc.close()
        ctl.close()
        net.close()
        _quietly(_say, "stack: down")
        _quietly(_print_counters, net, "at exit")
    return 0


def _up_line(args: argparse.Namespace, net: Stack) -> str:
    """The ``stack: up ...`` line (``stack up``'s format)."""
    seed = net.injector.seed if net.injector is not None else None
    extra = f" impair={args.impair} seed={seed}" if args.impair else ""
    served = f" serve={','.join(map(str, args.serve))}" if args.serve else ""
    lease = net.dhcp.lease if net.dhcp is not None else None
    leased = "" if lease is None else " dhcp " + " ".join(
        f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in lease.describe().items()
        if k in ("router", "dns", "server", "lease"))
    return (f"stack: up tap={args.tap} address={args.address} mac={_mac(net.mac)} "
            f"mtu={args.mtu} checksum={native.IMPL}{served}{extra}{leased}")


def cmd_run(args: argparse.Namespace) -> int:
    """``stack run``: the stack as ``stack up`` starts it, the program over the
    drop-in (stack/program.py), the program's exit status."""
    from stack import program

    try:
        prog = program.parse(args.program)
    except ValueError as e:
        raise CliError(f"PYTHON-ARGS: {e}") from None
    with program.signals_blocked():  # the stack's threads leave them to this one
        net, ctl, services = _start(args)
    try:
        _say(_up_line(args, net))
        code = program.run(prog, net)
    finally:
        for svc in services:
            svc.close()
        ctl.close()
        program.shut_down(net)
        _quietly(_say, "stack: down")
    return code


def cmd_traceroute(args: argparse.Namespace) -> int:
    """``stack traceroute``: a stack of its own (stack/traceroute.py says why), the trace."""
    for flag, given in (("--serve", args.serve), ("--control", args.control)):
        if given:
            raise CliError(f"{flag}: stack traceroute serves nothing (use stack up)")
    cli_checks.check_addresses(args.address, args.host_address, args.gateway)
    cli_checks.check_writable("--pcap", args.pcap)
    net = _open_stack(args, _open_trace(args))
    try:
        return traceroute.run(net, args)
    finally:
        net.close()


def _mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def cmd_trace(args: argparse.Namespace) -> int:
    from stack import tracetool

    if args.follow and args.file == "-":
        raise CliError("--follow needs a file the stack writes, not stdin")
    cli_checks.check_readable("trace file", args.file)
    cli_checks.check_writable("--plot", args.plot)
    return tracetool.main(args)


def _finish_help(sub: Subparsers) -> None:
    """Every command's description wrapped to the terminal, and its example after the flags."""
    width = min(shutil.get_terminal_size().columns, 100) - 2
    for name, p in sub.choices.items():
        if p.description and "\n" not in p.description:
            p.description = textwrap.fill(p.description, width)
        if p.epilog is None and name in EXAMPLES:
            p.epilog = EXAMPLES[name]


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.Parser(prog="stack", description=DESCRIPTION,
                            epilog="'stack COMMAND --help' shows a command's flags, their "
                                   "defaults and an example.")
    parser.add_argument("--version", action="version", version=f"stack {cliargs.version()}",
                        help="print the version (stack X.Y.Z) and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _up_parser(sub)
    _run_parser(sub)
    _trace_parser(sub)
    livecmd.add_parsers(sub)  # stack ss, stats, neigh, route (stack/livecmd.py)
    lab_command.add_parser(sub)  # stack lab (stack/lab/command.py)
    traceroute.add_parser(sub)
    _finish_help(sub)
    try:
        args = parser.parse_args(argv)
        if args.command == "up":
            code = cmd_up(args)
        elif args.command == "run":
            code = cmd_run(args)
        elif args.command in livecmd.COMMANDS:
            code = livecmd.run(args)
        elif args.command == "lab":
            code = lab_command.run(args)
        elif args.command == "traceroute":
            code = cmd_traceroute(args)
        else:
            code = cmd_trace(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except CliError as e:
        report(e.message)
        return e.code
    except BrokenPipeError:
        cli_checks.silence_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
