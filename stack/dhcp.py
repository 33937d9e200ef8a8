"""The DHCP client (:mod:`stack.net.dhcp`) wired to a stack: ``address="dhcp"``.

The stack starts without an address (0.0.0.0/32). :class:`DhcpAgent` binds
a UDP endpoint to port 68 on every address, sends the client's messages
from it to port 67 (broadcasts from 0.0.0.0 before a lease, unicast from
the leased address when renewing), takes the broadcast replies and, while
the stack has no address, the unicast ones sent to the address on offer
(``Ipv4Layer.accept_unconfigured``). When the client binds, the stack gets
the address, prefix and default gateway, and the resolver the lease's DNS
servers unless the user gave some (``dns=`` / ``--dns`` win); when the
lease ends (expiry, NAK, RELEASE at close) they go again.

Everything here runs under ``net.lock``: datagrams arrive through the
endpoint's ``on_change`` in the network thread, and the runtime's loop
runs the client's timers (:meth:`next_deadline`, :meth:`on_timer`).
:meth:`wait` blocks a user thread until a lease is bound.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from typing import TYPE_CHECKING

from stack.net.dhcp import DhcpClient, DhcpConfig, Lease
from stack.net.udp import UdpEndpoint
from stack.wire.dhcp import CLIENT_PORT, SERVER_PORT
from stack.wire.ipv4 import PROTO_UDP, Ipv4Header, int2ip

if TYPE_CHECKING:
    from stack.runtime import Stack

DHCP_TIMEOUT = 30.0  # seconds ``stack up --address dhcp`` waits for a lease by default
NO_ADDRESS = "0.0.0.0/32"


def dhcp_mac(name: str) -> str:
    """A stable, locally administered MAC for a DHCP host on the TAP ``name``
    (the same lease comes back after a restart; two TAPs differ)."""
    tail = hashlib.sha256(name.encode()).digest()[:3]
    return ":".join(f"{b:02x}" for b in bytes([0x02, 0x53, 0xDC]) + tail)


def _to_port_68(h: Ipv4Header, payload: memoryview) -> bool:
    return (h.proto == PROTO_UDP and len(payload) >= 4
            and (payload[2] << 8 | payload[3]) == CLIENT_PORT)


class DhcpAgent:
    """A stack's DHCP client, its UDP endpoint and what a lease configures."""

    def __init__(self, net: Stack, config: DhcpConfig | None = None) -> None:
        self.net = net
        self.cond = threading.Condition(net.lock)  # type: ignore[arg-type]
        self.user_dns = bool(net.names.servers)
        self.endpoint = UdpEndpoint()
        self.endpoint.broadcast = True
        self.client = DhcpClient(net.mac, self._send, net.trace,
                                 random.Random(net.rng.getrandbits(64)), config,
                                 on_bound=self._bound, on_unbound=self._unbound)
        with net.lock:
            net.udp.bind(self.endpoint, 0, CLIENT_PORT)
            self.endpoint.on_change = self._arrived
            net.ip.accept_unconfigured = _to_port_68
            self.client.start(net.clock())
            net.kick()

    # -- the runtime's hooks ----------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.client.next_deadline()

    def on_timer(self, now: float) -> None:
        self.client.on_timer(now)

    def release(self, now: float, linger: float = 0.0) -> None:
        """RELEASE the lease (at close); the address goes at once. With a
        network thread running, wait up to ``linger`` seconds for ARP to find
        the server's MAC, so that the RELEASE leaves before the link closes."""
        net = self.net
        with net.lock:
            self.client.release(now)
            net.udp.unbind(self.endpoint)
            net.ip.accept_unconfigured = None
            net.kick()
        end = time.monotonic() + linger
        while time.monotonic() < end:
            with net.lock:
                if not net.eth.pending:
                    return
            time.sleep(0.01)

    # -- for users ----------------------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        return self.client.lease

    def wait(self, timeout: float = DHCP_TIMEOUT) -> Lease | None:
        """Block until a lease is bound (None if none came within ``timeout``
        seconds of the real clock)."""
        end = time.monotonic() + timeout
        with self.net.lock:
            while self.client.lease is None:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))
            return self.client.lease

    def status(self) -> dict[str, object]:
        with self.net.lock:
            return self.client.status(self.net.clock())

    # -- datagrams ----------------------------------------------------------------------

    def _arrived(self) -> None:
        """Datagrams for port 68 (network thread, lock held)."""
        now = self.net.clock()
        while (item := self.endpoint.pop()) is not None:
            data, (src, port) = item
            if port != SERVER_PORT:
                self.net.trace.drop("dhcp", "wrong_port", src=f"{int2ip(src)}:{port}")
                continue
            self.client.receive(data, now)

    def _send(self, payload: bytes, dst: int) -> None:
        try:
            self.net.udp.send(self.endpoint, payload, (dst, SERVER_PORT), self.net.clock())
        except OSError as e:  # no route to a server that is off-link, ...
            self.net.trace.drop("dhcp", "send_failed", dst=int2ip(dst), error=e.strerror or str(e))
        self.net.kick()

    # -- what a lease configures ----------------------------------------------------------

    def _bound(self, lease: Lease) -> None:
        net = self.net
        fresh = net.ip.address != lease.address
        net.ip.configure(lease.address, lease.prefix_len, lease.router)
        if not self.user_dns:
            net.names.dns.resolver.set_servers(list(lease.dns))
        if fresh:
            net.eth.announce()
        self.cond.notify_all()

    def _unbound(self, lease: Lease, reason: str) -> None:
        net = self.net
        net.ip.configure(0, 32, None)
        if not self.user_dns:
            net.names.dns.resolver.set_servers([])
        self.cond.notify_all()

