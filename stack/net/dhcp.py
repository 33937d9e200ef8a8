"""The DHCP client (RFC 2131 sections 3.1, 4.1 and 4.4), sans IO.

States: INIT -> SELECTING (DISCOVER sent, waiting for an OFFER) ->
REQUESTING (REQUEST broadcast for the first usable offer) -> BOUND (ACK:
the lease is ours) -> RENEWING at T1 (REQUEST unicast to the server) ->
REBINDING at T2 (REQUEST broadcast to any server) -> the lease expires: the
address is given up and the client starts again from INIT. A NAK gives the
address up too, and after ``restart_delay`` the client asks again. RELEASE
(at exit) ends in STOPPED. INIT-REBOOT and DECLINE are not implemented.

Retransmissions (4.1): the n-th wait is ``first_timeout * 2**n`` seconds,
at most ``max_timeout``, plus a uniform jitter of +-``jitter`` seconds
from the injected rng. In RENEWING and REBINDING the wait is half of the
time left to T2 (to the lease's end), at least ``renew_min_wait`` (4.4.5).
The lease's times count from when the REQUEST that got it was first sent.

The caller feeds it ``receive(payload, now)`` with the UDP payloads for
port 68 and ``on_timer(now)`` at :meth:`next_deadline`; the client hands
its messages to ``send(payload, dst)`` (``dst`` 255.255.255.255 for a
broadcast; the source is the bound address, or 0.0.0.0 before one) and
tells ``on_bound(lease)`` / ``on_unbound(lease, reason)``. Every reply it
cannot use is dropped, counted and traced under layer ``dhcp``; it keeps
one lease and one exchange, whatever arrives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from stack.trace import Trace
from stack.wire.dhcp import (
    ACK, BOOTREPLY, BOOTREQUEST, DISCOVER, FLAG_BROADCAST, NAK, OFFER, OPT_CLIENT_ID, OPT_DNS,
    OPT_HOST_NAME, OPT_LEASE_TIME, OPT_MAX_SIZE, OPT_MESSAGE, OPT_PARAMETER_LIST,
    OPT_REQUESTED_IP, OPT_ROUTER, OPT_SERVER_ID, OPT_SUBNET_MASK, OPT_T1, OPT_T2, RELEASE,
    REQUEST, TYPE_NAMES, DhcpError, DhcpMessage, build_dhcp, parse_dhcp,
)
from stack.wire.ipv4 import int2ip

INIT, SELECTING, REQUESTING, BOUND = "INIT", "SELECTING", "REQUESTING", "BOUND"
RENEWING, REBINDING, STOPPED = "RENEWING", "REBINDING", "STOPPED"
BROADCAST = 0xFFFFFFFF
INFINITE = 0xFFFFFFFF  # a lease time that never ends (RFC 2132 9.2)
MAX_DNS = 3            # name servers kept from a lease (as resolv.conf's MAXNS)
PARAMETERS = bytes([OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOST_NAME, OPT_LEASE_TIME,
                    OPT_T1, OPT_T2])

Send = Callable[[bytes, int], None]


@dataclass(frozen=True)
class DhcpConfig:
    first_timeout: float = 4.0     # seconds before the first retransmission (RFC 2131 4.1)
    max_timeout: float = 64.0      # the longest wait between retransmissions
    jitter: float = 1.0            # +- seconds of randomness on each wait
    request_tries: int = 4         # REQUESTs sent in REQUESTING before going back to INIT
    renew_min_wait: float = 60.0   # the shortest wait in RENEWING/REBINDING (4.4.5)
    restart_delay: float = 1.0     # after a NAK or a lost lease, before the next DISCOVER
    host_name: str | None = None   # option 12, when given
    broadcast_flag: bool = True    # ask servers to broadcast replies while we have no address


@dataclass(frozen=True)
class Lease:
    address: int
    prefix_len: int
    server: int
    router: int | None
    dns: tuple[int, ...]
    lease_time: int | None         # seconds; None: never ends
    t1: float | None               # seconds after start
    t2: float | None
    start: float                   # when the REQUEST that got it was first sent

    @property
    def expires(self) -> float | None:
        return None if self.lease_time is None else self.start + self.lease_time

    def describe(self) -> dict[str, object]:
        return {"address": f"{int2ip(self.address)}/{self.prefix_len}",
                "router": int2ip(self.router) if self.router is not None else None,
                "dns": [int2ip(d) for d in self.dns], "server": int2ip(self.server),
                "lease": self.lease_time, "t1": self.t1, "t2": self.t2}


def usable_address(addr: int) -> bool:
    """Could a host be given ``addr``? Not 0.0.0.0/8, 127/8, multicast,
    class E or the limited broadcast."""
    top = addr >> 24
    return top not in (0, 127) and top < 224


def mask_prefix(mask: int) -> int | None:
    """The prefix length of a contiguous netmask, None for any other."""
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1):
        return None
    return 32 - inverted.bit_length()


def classful_prefix(addr: int) -> int:
    """The prefix when a server sends no mask (RFC 2131 leaves it to the client)."""
    top = addr >> 24
    return 8 if top < 128 else 16 if top < 192 else 24


class DhcpClient:
    """One interface's DHCP client."""

    def __init__(self, mac: bytes, send: Send, trace: Trace, rng: random.Random,
                 config: DhcpConfig | None = None,
                 on_bound: Callable[[Lease], None] | None = None,
                 on_unbound: Callable[[Lease, str], None] | None = None) -> None:
        self.mac = bytes(mac)
        self.send = send
        self.trace = trace
        self.rng = rng
        self.config = config or DhcpConfig()
        self.on_bound = on_bound
        self.on_unbound = on_unbound
        self.state = INIT
        self.lease: Lease | None = None
        self.xid = 0
        self.deadline: float | None = None
        self.tries = 0               # messages sent in this exchange
        self.began = 0.0             # when the exchange began (for ``secs``)
        self.asked_at = 0.0          # when this exchange's first REQUEST left
        self.offer: DhcpMessage | None = None   # the offer we asked for (REQUESTING)

    # -- the caller's entry points ------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: DISCOVER now."""
        self._discover(now, "start")

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        state = self.state
        if state == INIT:
            self._discover(now, "timer")
        elif state == SELECTING:
            self._send(DISCOVER, BROADCAST, now)
            self.deadline = now + self._backoff()
        elif state == REQUESTING:
            if self.tries >= self.config.request_tries:
                self._to(INIT, f"no ACK after {self.tries} REQUESTs")
                self._discover(now, "timer")
                return
            self._send_request(now)
            self.deadline = now + self._backoff()
        elif state == BOUND:
            self._renew(now, RENEWING, "T1")
        elif state in (RENEWING, REBINDING):
            self._renewal_timer(now)

    def receive(self, payload: bytes | memoryview, now: float) -> None:
        """One UDP payload that arrived for port 68."""
        try:
            m = parse_dhcp(payload)
        except DhcpError as e:
            self.trace.drop("dhcp", "malformed", field=e.field, detail=str(e))
            return
        why = self._unusable(m)
        if why is not None:
            self.trace.drop("dhcp", why, xid=f"0x{m.xid:08x}", message=m.type_name,
                            state=self.state)
            return
        self.trace.count("dhcp", f"{m.type_name.lower()}_in")
        if self.trace.on:
            self.trace.event("dhcp", "receive", message=m.type_name, xid=f"0x{m.xid:08x}",
                             yiaddr=int2ip(m.yiaddr),
                             server=int2ip(m.server_id) if m.server_id is not None else None)
        if m.msg_type == NAK:
            text = "".join(c if c.isprintable() else "?"  # (it goes into the trace's lines)
                           for c in m.options.get(OPT_MESSAGE, b"").decode("utf-8", "replace"))
            self._lost(now, "NAK" + (f": {text}" if text else ""))
        elif m.msg_type == OFFER:
            self.offer = m
            self.tries = 0
            self.asked_at = now
            self._to(REQUESTING, f"OFFER of {int2ip(m.yiaddr)} from {int2ip(m.server_id or 0)}")
            self._send_request(now)
            self.deadline = now + self._backoff()
        else:
            self._bind(m, now)

    def release(self, now: float) -> None:
        """Give the lease back (RELEASE to its server) and stop."""
        lease = self.lease
        if lease is not None:
            self.xid = self.rng.getrandbits(32)
            self.tries = 0
            self._send(RELEASE, lease.server, now, ciaddr=lease.address,
                       options={OPT_SERVER_ID: lease.server.to_bytes(4, "big")})
            self.lease = None
            self._unbound(lease, "released")
        self.deadline = None
        self._to(STOPPED, "release")

    def status(self, now: float) -> dict[str, object]:
        """The state and the lease (times left in seconds), for ``stack stats``."""
        out: dict[str, object] = {"state": self.state}
        lease = self.lease
        if lease is not None:
            out.update(lease.describe())
            if lease.lease_time is not None and lease.t1 is not None and lease.t2 is not None:
                out["renew_in"] = round(lease.start + lease.t1 - now, 3)
                out["rebind_in"] = round(lease.start + lease.t2 - now, 3)
                out["expires_in"] = round(lease.start + lease.lease_time - now, 3)
        if self.deadline is not None:
            out["next_in"] = round(self.deadline - now, 3)
        return out

    # -- checking replies -------------------------------------------------------------

    def _unusable(self, m: DhcpMessage) -> str | None:
        """Why ``m`` cannot be used now (the drop reason), or None."""
        if m.op != BOOTREPLY:
            return "not_reply"
        if m.chaddr != self.mac:
            return "wrong_chaddr"
        if self.state in (INIT, STOPPED, BOUND) or m.xid != self.xid:
            return "wrong_xid" if self.state not in (INIT, STOPPED, BOUND) else "unexpected"
        if m.msg_type is None:
            return "no_message_type"
        wanted = {SELECTING: (OFFER,), REQUESTING: (ACK, NAK)}.get(self.state, (ACK, NAK))
        if m.msg_type not in wanted:
            return "unexpected"
        server = m.server_id
        if server is None and m.msg_type != NAK:
            return "no_server_id"
        if self.state == REQUESTING and self.offer is not None and server is not None \
                and server != self.offer.server_id:
            return "wrong_server"
        if m.msg_type == NAK:
            return None
        if server is not None and not usable_address(server):
            return "bad_server_id"
        if not usable_address(m.yiaddr):
            return "bad_address"
        mask = m.address(OPT_SUBNET_MASK)
        prefix = classful_prefix(m.yiaddr) if mask is None else mask_prefix(mask)
        if prefix is None or prefix == 0:
            return "bad_subnet_mask"
        host = m.yiaddr & ~((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF)
        if prefix <= 30 and host in (0, (1 << (32 - prefix)) - 1):
            return "bad_address"  # the subnet's network or broadcast address
        if m.msg_type == ACK:
            lease = m.seconds(OPT_LEASE_TIME)
            if lease is None or lease == 0:
                return "no_lease"
            if self.state in (RENEWING, REBINDING) and self.lease is not None \
                    and m.yiaddr != self.lease.address:
                return "bad_address"  # a renewal is for the address we have
        return None

    # -- binding ------------------------------------------------------------------------

    def _bind(self, m: DhcpMessage, now: float) -> None:
        mask = m.address(OPT_SUBNET_MASK)
        prefix = classful_prefix(m.yiaddr) if mask is None else mask_prefix(mask)
        assert prefix is not None and m.server_id is not None  # (checked by _unusable)
        net_mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        routers = [r for r in m.addresses(OPT_ROUTER)
                   if usable_address(r) and (r & net_mask) == (m.yiaddr & net_mask)
                   and r != m.yiaddr]
        if len(routers) != len(m.addresses(OPT_ROUTER)):
            self.trace.count("dhcp", "routers_ignored", len(m.addresses(OPT_ROUTER)) - len(routers))
        dns = tuple(d for d in m.addresses(OPT_DNS) if usable_address(d))[:MAX_DNS]
        seconds = m.seconds(OPT_LEASE_TIME)
        assert seconds is not None
        if seconds == INFINITE:
            lease_time, t1, t2 = None, None, None
        else:
            lease_time = seconds
            t2_opt, t1_opt = m.seconds(OPT_T2), m.seconds(OPT_T1)
            t2 = float(t2_opt) if t2_opt is not None and 0 < t2_opt < seconds else 0.875 * seconds
            half = 0.5 * seconds
            t1 = (float(t1_opt) if t1_opt is not None and 0 < t1_opt < t2
                  else half if half < t2 else t2 / 2)
        lease = Lease(m.yiaddr, prefix, m.server_id, routers[0] if routers else None, dns,
                      lease_time, t1, t2, self.asked_at)
        renewal = self.lease is not None
        self.lease = lease
        self.offer = None
        self._to(BOUND, f"ACK from {int2ip(m.server_id)}")
        self.deadline = None if t1 is None else lease.start + t1
        self.trace.count("dhcp", "renewals" if renewal else "leases")
        if self.trace.on:
            self.trace.event("dhcp", "bound", renewal=renewal, **lease.describe())
        if self.on_bound is not None:
            self.on_bound(lease)

    def _lost(self, now: float, cause: str) -> None:
        """NAK (or lease expiry): the address goes; ask again after a pause."""
        lease, self.lease = self.lease, None
        self.offer = None
        self._to(INIT, cause)
        self.deadline = now + self.config.restart_delay
        if lease is not None:
            self._unbound(lease, cause)

    def _unbound(self, lease: Lease, reason: str) -> None:
        self.trace.count("dhcp", "addresses_given_up")
        if self.trace.on:
            self.trace.event("dhcp", "unbound", reason=reason,
                             address=f"{int2ip(lease.address)}/{lease.prefix_len}")
        if self.on_unbound is not None:
            self.on_unbound(lease, reason)

    # -- renewing and rebinding -----------------------------------------------------

    def _renew(self, now: float, state: str, cause: str) -> None:
        self.xid = self.rng.getrandbits(32)
        self.tries = 0
        self.began = self.asked_at = now
        self._to(state, cause)
        self._send_renewal(now)

    def _send_renewal(self, now: float) -> None:
        lease = self.lease
        assert lease is not None and lease.expires is not None and lease.t2 is not None
        if self.state == RENEWING:
            self._send(REQUEST, lease.server, now, ciaddr=lease.address)
            end = lease.start + lease.t2
        else:
            self._send(REQUEST, BROADCAST, now, ciaddr=lease.address)
            end = lease.expires
        wait = max((end - now) / 2, self.config.renew_min_wait)
        self.deadline = min(now + wait, end)

    def _renewal_timer(self, now: float) -> None:
        lease = self.lease
        assert lease is not None and lease.expires is not None and lease.t2 is not None
        if now >= lease.expires:
            self._lost(now, "lease expired")
            self._discover(now, "lease expired")  # no pause: the address is gone, find one
        elif self.state == RENEWING and now >= lease.start + lease.t2:
            self._renew(now, REBINDING, "T2")
        else:
            self._send_renewal(now)

    # -- sending ------------------------------------------------------------------------

    def _discover(self, now: float, cause: str) -> None:
        self.xid = self.rng.getrandbits(32)
        self.tries = 0
        self.began = now
        self.offer = None
        self._to(SELECTING, cause)
        self._send(DISCOVER, BROADCAST, now)
        self.deadline = now + self._backoff()

    def _send_request(self, now: float) -> None:
        offer = self.offer
        assert offer is not None and offer.server_id is not None
        self._send(REQUEST, BROADCAST, now, options={
            OPT_REQUESTED_IP: offer.yiaddr.to_bytes(4, "big"),
            OPT_SERVER_ID: offer.server_id.to_bytes(4, "big")})

    def _backoff(self) -> float:
        """The wait after the ``tries``-th message of this exchange (4 s, 8 s, ... +- jitter)."""
        c = self.config
        base = min(c.first_timeout * 2 ** max(self.tries - 1, 0), c.max_timeout)
        return max(0.0, base + self.rng.uniform(-c.jitter, c.jitter))

    def _send(self, kind: int, dst: int, now: float, ciaddr: int = 0,
              options: dict[int, bytes] | None = None) -> None:
        opts = dict(options or {})
        opts[OPT_CLIENT_ID] = b"\x01" + self.mac
        if kind != RELEASE:
            opts[OPT_PARAMETER_LIST] = PARAMETERS
            opts[OPT_MAX_SIZE] = (1500 - 28).to_bytes(2, "big")
            if self.config.host_name:
                opts[OPT_HOST_NAME] = self.config.host_name.encode()[:255]
        flags = FLAG_BROADCAST if self.config.broadcast_flag and not ciaddr else 0
        m = DhcpMessage(BOOTREQUEST, self.xid, self.mac, kind, flags=flags, ciaddr=ciaddr,
                        secs=min(int(now - self.began), 0xFFFF) if kind != RELEASE else 0,
                        options=opts)
        self.tries += 1
        self.trace.count("dhcp", f"{TYPE_NAMES[kind].lower()}_out")
        if self.trace.on:
            fields: dict[str, object] = {}
            if OPT_REQUESTED_IP in opts:
                fields["requested"] = int2ip(int.from_bytes(opts[OPT_REQUESTED_IP], "big"))
            if OPT_SERVER_ID in opts:
                fields["server"] = int2ip(int.from_bytes(opts[OPT_SERVER_ID], "big"))
            self.trace.event("dhcp", "send", message=TYPE_NAMES[kind], xid=f"0x{self.xid:08x}",
                             dst=int2ip(dst), ciaddr=int2ip(ciaddr), attempt=self.tries,
                             **fields)
        self.send(build_dhcp(m), dst)

    def _to(self, state: str, cause: str) -> None:
        if state == self.state:
            return
        if self.trace.on:
            self.trace.event("dhcp", "state", **{"from": self.state, "to": state, "cause": cause})
        self.state = state

