"""DHCP for tests: replies built by hand, and dnsmasq on a TAP.

:func:`reply` builds the bytes of a server's OFFER/ACK/NAK (any field or
option made wrong on request) for the client's unit tests.

:func:`dhcp_link` makes the TAP first (the kernel side at 198.51.100.1/24,
up), starts dnsmasq bound to it with a lease file and a log of every DHCP
message (``--log-dhcp``), waits until it listens, and yields a
:class:`Dnsmasq`. Afterwards dnsmasq is stopped by its PID and the TAP
deleted, also when the test failed. The stack then opens the TAP that
exists (``Stack.tap(name, address="dhcp")`` or ``stack up --tap name
--address dhcp``), so its first DISCOVER finds the server listening.
"""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import time
from dataclasses import dataclass

from stack.wire.dhcp import (
    BOOTREPLY, OPT_DNS, OPT_LEASE_TIME, OPT_ROUTER, OPT_SERVER_ID, OPT_SUBNET_MASK, OPT_T1,
    OPT_T2, DhcpMessage, build_dhcp,
)
from stack.wire.ipv4 import ip2int
from tests.helpers.dns import DNSMASQ
from tests.helpers.tap import stop

KERNEL = "198.51.100.1"
RANGE = ("198.51.100.50", "198.51.100.60")
MAC = bytes.fromhex("0253dc000001")   # the client's, in the unit tests
SERVER = "198.51.100.1"
OFFERED = "198.51.100.50"


def reply(kind: int | None, xid: int, yiaddr: str = OFFERED, server: str | None = SERVER,
          lease: int | None = 120, t1: int | None = None, t2: int | None = None,
          mask: str | None = "255.255.255.0", routers=(SERVER,), dns=(SERVER,),
          chaddr: bytes = MAC, op: int = BOOTREPLY, extra: dict | None = None) -> bytes:
    opts: dict[int, bytes] = {}
    if server is not None:
        opts[OPT_SERVER_ID] = ip2int(server).to_bytes(4, "big")
    if lease is not None:
        opts[OPT_LEASE_TIME] = lease.to_bytes(4, "big")
    if t1 is not None:
        opts[OPT_T1] = t1.to_bytes(4, "big")
    if t2 is not None:
        opts[OPT_T2] = t2.to_bytes(4, "big")
    if mask is not None:
        opts[OPT_SUBNET_MASK] = ip2int(mask).to_bytes(4, "big")
    if routers:
        opts[OPT_ROUTER] = b"".join(ip2int(r).to_bytes(4, "big") for r in routers)
    if dns:
        opts[OPT_DNS] = b"".join(ip2int(d).to_bytes(4, "big") for d in dns)
    opts.update(extra or {})
    return build_dhcp(DhcpMessage(op, xid, chaddr, kind, yiaddr=ip2int(yiaddr), options=opts))


@dataclass
class Dnsmasq:
    proc: subprocess.Popen
    leases: pathlib.Path
    log: pathlib.Path

    def lease_lines(self) -> list[str]:
        """The lease file: ``expiry MAC address hostname client-id`` a line."""
        return self.leases.read_text().splitlines() if self.leases.exists() else []

    def logged(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]


@contextlib.contextmanager
def dhcp_link(tap: str, tmp_path: pathlib.Path, lease: str = "2m", extra: tuple[str, ...] = (),
              dns: bool = False):
    """The TAP ``tap`` with dnsmasq serving 198.51.100.50-60 on it, router and
    DNS 198.51.100.1. ``dns``: also answer DNS (www.lab.test is 198.51.100.1)."""
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
    proc = None
    try:
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{tap}.disable_ipv6=1"],
                       capture_output=True)
        subprocess.run(["ip", "addr", "add", f"{KERNEL}/24", "dev", tap], check=True)
        subprocess.run(["ip", "link", "set", tap, "up"], check=True)
        leases, log = tmp_path / f"{tap}.leases", tmp_path / f"{tap}.log"
        args = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--interface={tap}", "--bind-interfaces", "--except-interface=lo",
                f"--dhcp-range={RANGE[0]},{RANGE[1]},255.255.255.0,{lease}",
                f"--dhcp-option=3,{KERNEL}", f"--dhcp-option=6,{KERNEL}",
                f"--dhcp-leasefile={leases}", "--pid-file=", "--user=root",
                "--no-ping",  # (its check that an address is free costs 3 s per lease)
                "--log-dhcp", f"--log-facility={log}"]
        args += ["--port=53", "--host-record=www.lab.test,198.51.100.1"] if dns else ["--port=0"]
        args += list(extra)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 10
        while not (log.exists() and "DHCP, sockets bound" in log.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.poll() is not None else "(still running)"
                raise AssertionError(f"dnsmasq did not start on {tap}: {err}")
            time.sleep(0.02)
        yield Dnsmasq(proc, leases, log)
    finally:
        if proc is not None:
            stop(proc)
        subprocess.run(["ip", "link", "del", tap], capture_output=True)
