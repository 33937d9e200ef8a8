"""``net.traceroute()`` and ``stack traceroute HOST``: the IO around the
sans-IO :class:`stack.net.traceroute.Traceroute`.

``stack traceroute`` runs a stack of its own, with ``stack up``'s flags
(like ``stack run``), rather than asking a running ``stack up`` through its
control socket: the live commands there are read-only views answered in
milliseconds by one non-blocking thread, while a traceroute sends probes
and runs for seconds (``3 x timeout`` for each silent hop). It prints like
``traceroute -n``: the header on stderr, then one line a hop on stdout.
"""

from __future__ import annotations

import argparse
import errno
import sys
import threading
from typing import TYPE_CHECKING, Any

from stack.net.traceroute import Hop, Traceroute, format_hop
from stack.wire.ipv4 import int2ip, ip2int

if TYPE_CHECKING:
    from stack.runtime import Stack


def resolve(net: Stack, host: str) -> int:
    """``host`` as an address: a dotted quad, else a name the stack resolves."""
    try:
        return ip2int(host)
    except (ValueError, OSError):
        return ip2int(net.gethostbyname(host))


def traceroute(net: Stack, host: str, max_hops: int = 30, probes: int = 3, timeout: float = 5.0,
               port: int = 33434, on_hop: Any = None) -> list[Hop]:
    """Trace the route to ``host``: the hops in order, each with one
    :class:`~stack.net.traceroute.ProbeAnswer` per probe (address and RTT in
    seconds, both None for a probe nobody answered). ``on_hop(hop)`` is
    called as each hop completes (outside the stack's lock)."""
    dst = resolve(net, host)
    # typeshed lists only threading's own locks; Condition works with any
    cond = threading.Condition(net.lock)  # type: ignore[arg-type]
    done_hops = 0
    with net.lock:
        tr = Traceroute(net.udp, net.icmp, net.trace, dst, max_hops=max_hops, probes=probes,
                        timeout=timeout, port=port, on_change=cond.notify_all)
        tr.start(net.clock())
        net.kick()
        try:
            while True:
                complete = [h for h in tr.hops if len(h.probes) == probes or tr.done]
                if on_hop is not None and len(complete) > done_hops:
                    fresh = complete[done_hops:]
                    done_hops = len(complete)
                    net.lock.release()  # (on_hop prints: never under the lock)
                    try:
                        for hop in fresh:
                            on_hop(hop)
                    finally:
                        net.lock.acquire()
                    continue
                if tr.done:
                    break
                deadline, now = tr.next_deadline(), net.clock()
                if deadline is not None and deadline <= now:
                    tr.on_timer(now)
                    net.kick()
                    continue
                cond.wait(None if deadline is None else deadline - now)
        finally:
            tr.close()
    return tr.hops


# ---- the command line ----------------------------------------------------------------------

def add_parser(sub: Any) -> None:
    """``stack traceroute``: every ``stack up`` flag (its own stack), then HOST."""
    p = sub.add_parser(
        "traceroute", help="trace the route to a host with UDP probes (runs its own stack)",
        parents=[sub.choices["up"]], conflict_handler="resolve",
        usage="%(prog)s [stack up flags] [-m MAX] [-q N] [-w SECONDS] [-p PORT] HOST",
        description="Start a stack like 'stack up' and trace the route to HOST as traceroute -n "
                    "does: UDP probes to port 33434 and up with the IP TTL of each hop, the ICMP "
                    "time exceeded from each router and the port unreachable from HOST matched "
                    "to their probe by what they quote, '*' for a probe with no answer. It "
                    "sends packets (it is not a live view of a running stack: that one owns its "
                    "TAP).")
    p.add_argument("host", metavar="HOST", help="the destination: an IPv4 address or a name")
    p.add_argument("-m", "--max-hops", type=_count(1, 255), default=30, metavar="MAX",
                   help="the largest TTL probed (default: %(default)s)")
    p.add_argument("-q", "--queries", type=_count(1, 10), default=3, metavar="N",
                   help="probes per hop (default: %(default)s)")
    p.add_argument("-w", "--wait", type=_seconds, default=5.0, metavar="SECONDS",
                   help="how long to wait for each probe's answer (default: %(default)g)")
    p.add_argument("-p", "--port", type=_count(1, 65535), default=33434, metavar="PORT",
                   help="the first probe's destination port, one more per probe "
                        "(default: %(default)s)")


def _count(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is not in {lo}..{hi}")
        return n
    return parse


def _seconds(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < t <= 60:
        raise argparse.ArgumentTypeError(f"{t:g} is not in (0, 60] seconds")
    return t


def run(net: Stack, args: argparse.Namespace) -> int:
    """Trace, printing as traceroute does; the exit status (1: could not send)."""
    from stack.cliargs import CliError

    if args.port + args.max_hops * args.queries > 65535:
        raise CliError(f"--port {args.port}: {args.max_hops * args.queries} probes would pass "
                       "port 65535")
    try:
        dst = resolve(net, args.host)
    except OSError as e:
        raise CliError(f"HOST {args.host}: {e.strerror or e}", 2) from None
    print(f"traceroute to {args.host} ({int2ip(dst)}), {args.max_hops} hops max, 60 byte packets",
          file=sys.stderr, flush=True)
    try:
        traceroute(net, int2ip(dst), args.max_hops, args.queries, args.wait, args.port,
                   on_hop=lambda hop: print(format_hop(hop), flush=True))
    except OSError as e:
        raise CliError(f"HOST {args.host}: {e.strerror or errno.errorcode.get(e.errno or 0, e)}",
                       1) from None
    return 0
