"""``stack lab``: run a lesson, list them, or open a shell in a topology.

The lab needs root and builds its namespaces inside a network and mount
namespace of its own: the command re-executes itself under ``unshare --net
--mount`` (``STACK_LAB_NETNS`` marks the namespace it made), so that when it
ends, by success, failure or signal, every bridge, veth and namespace it made
goes with it.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Protocol

from stack.cliargs import RESOURCE, CliError
from stack.lab.build import LabError

ENV = "STACK_LAB_NETNS"


class Subparsers(Protocol):
    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "lab", help="build a network of hosts and routers with the stack inside and run a lesson",
        description="Build, inside namespaces this command creates and removes, a network of "
                    "kernel hosts, routers and hosts running this stack (on Mininet), run a "
                    "lesson's scenario, print what happened and where to look, and leave the "
                    "traces, captures, timelines, ladders and plots in --out. Exits 0 when "
                    "the lesson's behaviour was seen.")
    p.add_argument("lesson", nargs="?", metavar="LESSON", help="the lesson to run (see --list)")
    p.add_argument("--list", action="store_true", help="name the lessons, one a line, and exit")
    p.add_argument("--out", metavar="DIR",
                   help="where to leave traces, captures, ladders and plots (default: a new "
                        "folder lab-LESSON-TIME under the current one)")
    p.add_argument("--topology", metavar="FILE", help="a topology file (TOML; README, Lessons)")
    p.add_argument("--shell", action="store_true",
                   help="with --topology: build it, start the stack in its stack hosts and "
                        "open a shell; 'lab NODE CMD...' runs a command in a node")


def run(args: argparse.Namespace) -> int:
    from stack.lab.lessons import load_all

    lessons = load_all()
    if args.list:
        width = max(len(n) for n in lessons)
        for lesson in lessons.values():
            print(f"{lesson.name:<{width}}  {lesson.title}")
        return 0
    if args.shell or args.topology:
        if not (args.shell and args.topology) or args.lesson:
            raise CliError("--topology and --shell go together, without a LESSON")
    elif args.lesson is None:
        raise CliError("LESSON: name a lesson (stack lab --list names them)")
    elif args.lesson not in lessons:
        raise CliError(f"LESSON: no lesson {args.lesson!r} (stack lab --list names them)")
    if os.geteuid() != 0:
        raise CliError("stack lab needs root: it makes network namespaces", RESOURCE)
    for tool in ("mnexec", "brctl", "nft", "tcpdump"):
        if shutil.which(tool) is None:
            raise CliError(f"stack lab needs {tool} (scripts/setup installs Mininet, "
                           "bridge-utils, nftables and tcpdump)", RESOURCE)
    if os.environ.get(ENV) != os.readlink("/proc/self/ns/net"):
        return _reexec()
    _stop_on_signals()
    try:
        if args.shell:
            return _shell(args.topology)
        return _lesson(lessons[args.lesson], args.out)
    except LabError as e:
        raise CliError(str(e), RESOURCE) from None


def _reexec() -> int:
    """This command again, in a network and mount namespace of its own; a
    SIGINT or SIGTERM here is passed on, so that the lab inside tears down."""
    inner = ("mount --make-rprivate / && ip link set lo up && "
             f'export {ENV}="$(readlink /proc/self/ns/net)" && exec "$@"')
    argv = ["unshare", "--net", "--mount", "--", "sh", "-c", inner, "sh",
            sys.executable, "-m", "stack", *sys.argv[1:]]
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:  # (a second Ctrl-C while the lab tears down)
            continue


def _stop_on_signals() -> None:
    """Inside: SIGTERM (and SIGINT) end the lesson like an error, so that
    ``with Lab`` tears everything down."""
    def stop(signum: int, _frame: object) -> None:
        # Once: a second Ctrl-C must not cut the teardown short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _lesson(lesson: Any, out: str | None) -> int:
    from stack.lab.lab import Lab
    from stack.lab.topology import parse

    out = out or f"lab-{lesson.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"lesson {lesson.name}: {lesson.title}")
    with Lab(parse(lesson.topology, f"lesson {lesson.name}"), out, lesson.stack_flags) as lab:
        report = lesson.scenario(lab)
    _views(out)
    print()
    print(_wrap(report.story))
    print("\nWhere to look (in " + out + "):")
    for line in report.look:
        print(f"  {line}")
    print("\nWhat was seen:")
    for c in report.checks:
        print(f"  {'yes' if c.ok else 'NO '}  {c.what}" + (f"  [{c.seen}]" if c.seen else ""))
    print("\n" + ("lesson seen." if report.ok else "the lesson's behaviour was NOT seen."))
    return 0 if report.ok else 1


def _views(out: str) -> None:
    """Beside every stack trace: its timeline, its ladder and, when a
    connection carried data, its plot."""
    from stack.tracetool.command import run as trace

    for name in sorted(os.listdir(out)):
        if not name.endswith(".jsonl"):
            continue
        path = os.path.join(out, name)
        base = path[:-len(".jsonl")]
        quiet = io.StringIO()
        with open(base + "-timeline.txt", "w") as f:
            trace(path, out=f, err=quiet)
        with open(base + "-ladder.txt", "w") as f:
            trace(path, fmt="ladder", out=f, err=quiet)
        trace(path, plot_out=base + ".png", out=io.StringIO(), err=quiet)


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, 88)


def _shell(path: str) -> int:
    from stack.lab.lab import Lab
    from stack.lab.topology import TopologyError, load

    try:
        topo = load(path)
    except TopologyError as e:
        raise CliError(f"--topology: {e}") from None
    out = f"lab-shell-{time.strftime('%Y%m%d-%H%M%S')}"
    with Lab(topo, out) as lab:
        for h in topo.hosts.values():
            if h.kind == "stack":
                lab.stack_up(h.name, h.name)
        nodes = {n.name: n.pid for n in lab.net.hosts}
        helper = os.path.join(out, "lab")
        with open(helper, "w") as f:
            f.write("#!/bin/sh\n# lab NODE [CMD...]: run CMD (default: a shell) in NODE\n"
                    'node="$1"; shift\n[ $# -gt 0 ] || set -- sh\ncase "$node" in\n')
            for name, pid in nodes.items():
                f.write(f'  {name}) exec mnexec -a {pid} "$@" ;;\n')
            f.write('  *) echo "nodes: ' + " ".join(nodes) + '" >&2; exit 2 ;;\nesac\n')
        os.chmod(helper, 0o755)
        print(f"lab: {', '.join(f'{n} ({topo.node(n).__class__.__name__.lower()})' for n in nodes)}")
        print(f"lab: '{helper} NODE CMD' runs CMD in NODE (stack ss in a stack host: "
              f"'{helper} client {sys.executable} -m stack ss'); exit the shell to tear down")
        env = dict(os.environ, PATH=os.path.abspath(out) + os.pathsep + os.environ["PATH"])
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the shell's
        subprocess.call([os.environ.get("SHELL", "/bin/sh")], env=env)
    return 0
