"""``python -m bench.pathemu --a IF1 --b IF2 [impairments] [--duration S]``:
relay frames between two interfaces until SIGTERM/SIGINT (or ``--duration``),
then print the counters as one JSON line. Bad flags: one ``pathemu: error:``
line, exit 2."""

from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import subprocess
import sys

from bench.pathemu.core import DISTRIBUTIONS, Profile
from bench.pathemu.relay import Relay


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        fail(message)


def fail(message: str, code: int = 2):
    print(f"pathemu: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pathemu", description="A netem-like relay between two interfaces.")
    p.add_argument("--a", required=True, metavar="IF", help="one interface")
    p.add_argument("--b", required=True, metavar="IF", help="the other interface")
    p.add_argument("--delay", type=float, default=0.0, help="added delay, ms (each way)")
    p.add_argument("--jitter", type=float, default=0.0, help="± jitter, ms")
    p.add_argument("--distribution", choices=DISTRIBUTIONS, default="uniform",
                   help="jitter: uniform in ±jitter, or normal with sd jitter")
    p.add_argument("--loss", type=float, default=0.0, help="loss probability")
    p.add_argument("--reorder", type=float, default=0.0,
                   help="probability that a frame is held back and overtaken")
    p.add_argument("--reorder-hold", type=float, default=10.0,
                   help="longest hold of a reordered frame, ms")
    p.add_argument("--rate", type=float, default=0.0, help="rate limit, Mbit/s (0: none)")
    p.add_argument("--burst", type=int, default=3028, help="token bucket depth, bytes")
    p.add_argument("--queue", type=int, default=1000, help="queue limit, packets (tail drop)")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    return p


def peers(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are the two ends of one veth pair (in this namespace)."""
    try:
        done = subprocess.run(["ip", "-j", "link", "show", "dev", a], capture_output=True,
                              text=True, timeout=10, check=False)
        return any(link.get("link") == b for link in json.loads(done.stdout or "[]"))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.a == args.b:
        fail("--a and --b must be different interfaces")
    if args.duration is not None and not args.duration > 0:
        fail(f"--duration must be > 0, got {args.duration:g}")
    try:
        profile = Profile(delay=args.delay, jitter=args.jitter, distribution=args.distribution,
                          loss=args.loss, reorder=args.reorder, reorder_hold=args.reorder_hold,
                          rate=args.rate, queue=args.queue, burst=args.burst, seed=args.seed)
    except ValueError as e:
        fail(str(e))
    for name in (args.a, args.b):
        try:
            socket.if_nametoindex(name)
        except OSError:
            fail(f"no such interface: {name}")
    if peers(args.a, args.b):
        fail(f"--a {args.a} and --b {args.b} are the two ends of one veth pair: a loop")
    try:
        relay = Relay(args.a, args.b, profile)
    except OSError as e:
        if e.errno == errno.ENODEV:
            fail(f"no such interface: {args.a} or {args.b}")       # (gone since the check)
        fail(f"cannot open the interfaces: {e.strerror or e}", 1)

    def stop(_sig, _frame):
        relay.stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"pathemu: forwarding {args.a} <-> {args.b}", file=sys.stderr, flush=True)
    try:
        relay.run(args.duration)
    finally:
        relay.close()
        print(json.dumps(relay.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
