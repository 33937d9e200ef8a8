"""Kernel routers and hosts in network namespaces of the test's own, joined by veth pairs.

The test process already runs in a private network namespace (conftest);
the TAP's kernel side lives there, and with ``forward()`` that namespace is
the first router. Every namespace made here is named ``stk<pid>-NAME`` and
removed by :meth:`Lab.close` (the fixture from :func:`lab_fixture` calls it
however the test ends), which also deletes the veth pairs left in the test namespace and
kills the processes started through :meth:`Lab.popen`. Only TEST-NET
addresses are used by the tests that call this.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers.tap import kill


class Lab:
    def __init__(self) -> None:
        self.prefix = f"stk{os.getpid()}-"
        self.namespaces: list[str] = []
        self.links: list[str] = []          # veth ends in the test namespace
        self.procs: list[subprocess.Popen] = []

    # -- building ----------------------------------------------------------------------

    def netns(self, name: str, forward: bool = False) -> str:
        """A new namespace (``lo`` up; ``forward``: a router); its full name."""
        full = self.prefix + name
        subprocess.run(["ip", "netns", "del", full], capture_output=True)  # (a leftover)
        _run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        self.ns(full, "ip", "link", "set", "lo", "up")
        self.ns(full, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        if forward:
            self.ns(full, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return full

    def veth(self, a: str | None, a_name: str, a_addr: str, b: str | None, b_name: str,
             b_addr: str, mtu: int | None = None) -> None:
        """A veth pair from namespace ``a`` to ``b`` (None: the test's own),
        with an address (CIDR) on each end, both up (``mtu`` on both)."""
        _run(["ip", "link", "del", a_name], check=False)
        _run(["ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name])
        self.links.append(a_name)
        for ns, name, addr in ((a, a_name, a_addr), (b, b_name, b_addr)):
            if ns is not None:
                _run(["ip", "link", "set", name, "netns", ns])
            if mtu is not None:
                self.at(ns, "ip", "link", "set", name, "mtu", str(mtu))
            self.at(ns, "ip", "addr", "add", addr, "dev", name)
            self.at(ns, "ip", "link", "set", name, "up")

    def route(self, ns: str | None, dst: str, via: str) -> None:
        self.at(ns, "ip", "route", "add", dst, "via", via)

    def nft(self, ns: str | None, script: str) -> None:
        """Load an nftables ruleset (``nft -f -``) in namespace ``ns``."""
        cmd = ["nft", "-f", "-"] if ns is None else ["ip", "netns", "exec", ns, "nft", "-f", "-"]
        r = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"nft in {ns}: {r.stderr}\n{script}")

    # -- running ------------------------------------------------------------------------

    def at(self, ns: str | None, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` in namespace ``ns`` (None: the test's own)."""
        return _run(list(cmd) if ns is None else ["ip", "netns", "exec", ns, *cmd], check=check)

    def ns(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.at(ns, *cmd, check=check)

    def popen(self, ns: str, *cmd: str) -> subprocess.Popen:
        """Start ``cmd`` in ``ns``; it is killed by :meth:`close` if still running."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    # -- taking it down -------------------------------------------------------------------

    def close(self) -> None:
        """Kill our processes, delete our namespaces (their veth ends go with
        them) and our veth ends in the test namespace. Safe to call twice."""
        kill(*self.procs)
        self.procs.clear()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        self.links.clear()

    def left_over(self) -> list[str]:
        """Namespaces of ours that still exist (empty after close)."""
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        return [line.split()[0] for line in r.stdout.splitlines()
                if line.startswith(self.prefix)]


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def lab_fixture():
    """A fixture giving a :class:`Lab`, taken down however the test ends
    (the test namespace's nftables ruleset and forwarding are reset too);
    a module takes it with ``lab = lab_fixture()``."""

    @pytest.fixture
    def lab(netns) -> Iterator[Lab]:
        made = Lab()
        try:
            yield made
        finally:
            made.close()
            subprocess.run(["nft", "flush", "ruleset"], capture_output=True)
            subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], capture_output=True)
            assert made.left_over() == []

    return lab
