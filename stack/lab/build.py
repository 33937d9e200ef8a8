"""A topology built on Mininet, with this stack inside some of its hosts.

Mininet (Debian's package) makes each host and router a process in its own
network namespace and each link a Linux bridge joining veth pairs; it runs
without a controller (``LinuxBridge`` switches). :class:`StackHost` is the
node class that puts this stack in a host: a TAP (``tap0``) in the host's
namespace, bridged to the host's Mininet interface, whose kernel side has no
address, so the kernel there never answers for the stack. Mininet users can
put it in their own topologies::

    from stack.lab.build import StackHost, mininet
    net = mininet().net.Mininet(switch=..., controller=None)
    h = net.addHost("h1", cls=StackHost, ip=None)
    ...; net.start(); h.stack_up("198.51.100.2/24", gateway="198.51.100.1")

:class:`Lab` builds a whole :class:`~stack.lab.topology.Topology`: kernel
hosts (addresses, a default route, dnsmasq when they serve names or
leases), routers (forwarding, nftables rules, NAT, MSS clamping, random loss
on a link), MTUs, and captures on every router interface. Everything it
starts it stops, by PID, in :meth:`Lab.stop`, also when a lesson fails.

Only call this inside a network and mount namespace of its own (``stack
lab`` re-executes itself under ``unshare --net --mount``): Mininet's bridges
and veths then live and die with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import ModuleType
from typing import Any


DIST_PACKAGES = "/usr/lib/python3/dist-packages"   # where Debian puts Mininet
TAP = "tap0"


class LabError(RuntimeError):
    """A lab that could not be built or run (``stack lab`` reports it in one line)."""


def must(node: Any, cmd: str) -> str:
    """Run a set-up command in a node; a failure is a :class:`LabError` with its output."""
    out = node.cmd(f"{cmd} 2>&1; echo lab-status=$?")
    text, _, status = out.rpartition("lab-status=")
    if status.strip() != "0":
        raise LabError(f"{node.name}: {cmd!r} failed: {text.strip()[-300:]}")
    return text


def mininet() -> ModuleType:
    """The ``mininet`` package (Debian's, outside the virtual environment)."""
    import importlib

    if DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)
    try:
        mn = importlib.import_module("mininet")
        for sub in ("log", "net", "node", "nodelib", "topo"):  # nodelib: LinuxBridge
            importlib.import_module(f"mininet.{sub}")
    except ImportError:
        raise LabError("Mininet is not installed (apt-get install mininet "
                       "bridge-utils; scripts/setup does)") from None
    mn.log.setLogLevel("error")
    return mn


def _host_class() -> type:
    return mininet().node.Host


class Stopper:
    """Processes started in nodes, stopped in reverse order by PID."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def add(self, what: str, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.procs.append((what, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [(w, p) for w, p in self.procs if p is not proc]
        return proc.returncode

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)


def make_stack_host_class() -> type:
    """:class:`StackHost`, made once Mininet is importable."""
    Base = _host_class()

    class StackHost(Base):  # type: ignore[misc, valid-type]
        """A Mininet host whose network stack is this one (module docstring)."""

        def __init__(self, name: str, **params: Any) -> None:
            super().__init__(name, **params)
            self.stopper = Stopper()
            self.stack_proc: subprocess.Popen[bytes] | None = None
            self.bridged = False

        def bridge(self, mtu: int) -> None:
            """tap0 and the Mininet interface on one bridge, no address on either."""
            if self.bridged:
                return
            intf = self.defaultIntf().name
            for cmd in (f"ip addr flush dev {intf}",
                        "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done",
                        f"ip tuntap add dev {TAP} mode tap",
                        "ip link add stkbr type bridge",
                        f"ip link set {intf} master stkbr",
                        f"ip link set {TAP} master stkbr",
                        f"ip link set {intf} mtu {mtu}",
                        f"ip link set {TAP} mtu {mtu}",
                        f"ip link set {TAP} up",
                        "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done",
                        "ip link set stkbr up"):
                must(self, cmd)
            self.bridged = True

        def stack_command(self, command: str, address: str, gateway: str | None = None,
                          mtu: int = 1500, flags: list[str] | None = None,
                          program: list[str] | None = None) -> list[str]:
            argv = [sys.executable, "-m", "stack", command, "--tap", TAP, "--address", address,
                    "--mtu", str(mtu)]
            if gateway:
                argv += ["--gateway", gateway]
            argv += flags or []
            if program is not None:
                argv += ["--", *program]
            return argv

        def stack_up(self, address: str, log: str, gateway: str | None = None,
                     mtu: int = 1500, flags: list[str] | None = None,
                     program: list[str] | None = None, timeout: float = 15.0) -> None:
            """``stack up`` in this host (``stack run -- PROGRAM`` with a
            program), in the background, its output to ``log``; returns once
            it printed ``stack: up``."""
            self.stack_down()
            self.bridge(mtu)
            argv = self.stack_command("up" if program is None else "run", address, gateway, mtu,
                                      flags, program)
            with open(log, "wb") as f:
                proc = self.popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
            self.stack_proc = self.stopper.add(f"stack in {self.name}", proc)
            wait_for_line(proc, log, "stack: up", timeout, f"the stack in {self.name}")

        def stack_run(self, address: str, program: list[str], gateway: str | None = None,
                      mtu: int = 1500, flags: list[str] | None = None,
                      timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
            """``stack run ... -- PROGRAM`` in this host, to its end (killed
            after ``timeout``)."""
            self.stack_down()
            self.bridge(mtu)
            argv = self.stack_command("run", address, gateway, mtu, flags, program)
            proc = self.stopper.add(f"stack run in {self.name}",
                                    self.popen(argv, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            result = finish(proc, argv, timeout)
            self.stopper.stop(proc)
            return result

        def stack_down(self) -> int | None:
            proc, self.stack_proc = self.stack_proc, None
            return self.stopper.stop(proc) if proc is not None else None

        def terminate(self) -> None:
            self.stopper.stop_all()
            super().terminate()

    return StackHost


def wait_for_line(proc: subprocess.Popen[bytes], log: str, marker: str, timeout: float,
                  what: str) -> str:
    """Wait until ``log`` has a line starting with ``marker``; a process that
    ends first, or a timeout, is an error that quotes the log's end."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        with open(log, errors="replace") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith(marker):
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise LabError(f"{what} did not start: {text.strip()[-400:] or '(no output)'}")


def finish(proc: subprocess.Popen[bytes], argv: list[str], timeout: float
           ) -> subprocess.CompletedProcess[str]:
    """``proc``'s output to its end, its whole process group killed after ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(errors="replace"),
                                       (err or b"").decode(errors="replace"))


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` and whatever it started: Mininet's ``mnexec -d`` makes
    every program run in a node the leader of a process group of its own."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
