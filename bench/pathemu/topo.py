"""The namespaces a run builds around one emulator, deleted when it ends
(``with`` block: also on error; a run killed outright leaves them, and the next
``Path`` with the same tag deletes them first).

Kernel path (``Path(tag)``), three namespaces joined by two veth pairs::

    TAG-c: c0 198.51.100.2/24 --- TAG-e: ea [pathemu] eb --- TAG-s: s0 198.51.100.1/24

Stack path (``Path(tag, stack=True)``), two namespaces::

    TAG-e: tap0 (a persistent TAP, no address) [pathemu] eb --- TAG-s: s0 203.0.113.1/24

The stack runs in ``TAG-e`` on ``tap0`` with 203.0.113.2/24 (``stack up --tap
tap0 --address 203.0.113.2/24`` under ``ip netns exec TAG-e``, or
``Stack.tap("tap0", address=...)`` inside ``path.inside("e")``); the emulator
reads and writes the TAP's kernel side with an AF_PACKET socket, as it does
the veth: what the stack writes arrives there, and what the emulator sends
there reaches the stack. The TAP's kernel side has no address and the
emulator's namespace no IP configuration at all (IPv6 off), so that kernel
never answers for the stack. No bridge is needed, and because the helper
creates the TAP persistent, the emulator can start before the stack and
outlive a restart of it. The stack must run without ``offload`` (frames of
at most the MTU).

Every veth end and the TAP have TSO, GSO, GRO and checksum offload turned off
(``ethtool``), so every frame the relay reads is whole and at most MTU-sized.
On the kernel path the two hosts get permanent neighbour entries, so no ARP
crosses the emulator (its loss then hits only the traffic under test).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath

from bench.pathemu.core import Profile

CLONE_NEWNET = 0x40000000
ROOT = FsPath(__file__).resolve().parents[2]
KERNEL = {"client": "198.51.100.2", "server": "198.51.100.1"}
STACK = {"stack": "203.0.113.2", "server": "203.0.113.1"}

_libc = ctypes.CDLL(None, use_errno=True)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Emulator:
    """One running ``python -m bench.pathemu`` (in the emulator's namespace)."""

    def __init__(self, ns: str, a: str, b: str, profile: Profile) -> None:
        p = profile
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.pathemu",
               "--a", a, "--b", b, "--delay", str(p.delay), "--jitter", str(p.jitter),
               "--distribution", p.distribution, "--loss", str(p.loss),
               "--reorder", str(p.reorder), "--reorder-hold", str(p.reorder_hold),
               "--rate", str(p.rate), "--queue", str(p.queue), "--burst", str(p.burst),
               "--seed", str(p.seed)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], 10)
        line = self.proc.stderr.readline() if ready else ""
        if "forwarding" not in line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"pathemu did not start: {line.strip() or 'no answer in 10 s'}")
        self.result: dict | None = None

    def stop(self) -> dict:
        """SIGTERM it; its counters (the JSON line it prints at exit)."""
        if self.result is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            out, err = self.proc.communicate(timeout=10)
            lines = out.strip().splitlines()
            if self.proc.returncode != 0 or not lines:
                raise RuntimeError(f"pathemu exit {self.proc.returncode}: {err.strip()}")
            self.result = json.loads(lines[-1])
        return self.result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Path:
    """The namespaces and links of one path, see the module docstring."""

    def __init__(self, tag: str, stack: bool = False) -> None:
        self.tag = tag
        self.stack = stack
        self.ns = {"e": f"{tag}-e", "s": f"{tag}-s"}
        if not stack:
            self.ns["c"] = f"{tag}-c"
        self.ports = ("tap0", "eb") if stack else ("ea", "eb")
        self.addresses = STACK if stack else KERNEL
        self.emulators: list[Emulator] = []
        self._made: list[str] = []

    # -- building and removing ---------------------------------------------------------

    def __enter__(self) -> "Path":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, key: str) -> str:
        name = self.ns[key]
        _run("ip", "netns", "del", name, check=False)          # (a leftover)
        _run("ip", "netns", "add", name)
        self._made.append(name)
        self.at(key, "ip", "link", "set", "lo", "up")
        self.at(key, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.at(key, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        return name

    def _plain(self, key: str, dev: str) -> None:
        """No offloads on ``dev``: whole frames of at most the MTU."""
        self.at(key, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
        self.at(key, "ip", "link", "set", dev, "up")

    def _build(self) -> None:
        e, s = self._netns("e"), self._netns("s")
        _run("ip", "link", "add", "eb", "netns", e, "type", "veth", "peer", "name", "s0",
             "netns", s)
        self._plain("e", "eb")
        self._plain("s", "s0")
        self.at("s", "ip", "addr", "add", f"{self.addresses['server']}/24", "dev", "s0")
        if self.stack:
            self.at("e", "ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
            self._plain("e", "tap0")
            return
        c = self._netns("c")
        _run("ip", "link", "add", "ea", "netns", e, "type", "veth", "peer", "name", "c0",
             "netns", c)
        self._plain("e", "ea")
        self._plain("c", "c0")
        self.at("c", "ip", "addr", "add", f"{self.addresses['client']}/24", "dev", "c0")
        mac_c, mac_s = self._mac("c", "c0"), self._mac("s", "s0")
        self.at("c", "ip", "neigh", "replace", self.addresses["server"], "lladdr", mac_s,
                "dev", "c0", "nud", "permanent")
        self.at("s", "ip", "neigh", "replace", self.addresses["client"], "lladdr", mac_c,
                "dev", "s0", "nud", "permanent")

    def _mac(self, key: str, dev: str) -> str:
        return self.at(key, "cat", f"/sys/class/net/{dev}/address").stdout.strip()

    def close(self) -> None:
        for emu in self.emulators:
            emu.kill()
        for name in reversed(self._made):
            _run("ip", "netns", "del", name, check=False)
        self._made.clear()

    # -- using -------------------------------------------------------------------------

    def at(self, key: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` in namespace ``key`` ("c", "e" or "s") and wait for it."""
        return _run("ip", "netns", "exec", self.ns[key], *cmd, check=check)

    def popen(self, key: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns[key], *cmd], **kw)

    @contextmanager
    def inside(self, key: str) -> Iterator[None]:
        """The calling thread in namespace ``key`` for the block: sockets (and
        threads) it creates there stay there."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(f"/run/netns/{self.ns[key]}")
            try:
                yield
            finally:
                if _libc.setns(back, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(back)

    def start(self, profile: Profile) -> Emulator:
        """The emulator between the two ports, with ``profile``."""
        emu = Emulator(self.ns["e"], *self.ports, profile)
        self.emulators.append(emu)
        return emu


def wait_for(test, timeout: float = 5.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if test():
            return True
        time.sleep(step)
    return bool(test())
