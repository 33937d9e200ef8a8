"""A stack behind a router on a manual clock, and ICMP errors from that router."""

from __future__ import annotations

from tests.helpers.frames import GATEWAY, GW_MAC, US, eth, icmp, ipv4
from tests.helpers.hosts import IpHost

FAR_STR = "198.51.100.7"  # off-link: through the router


def routed_host(mtu: int = 1500) -> IpHost:
    """A stack whose route to FAR (198.51.100.7) goes through GATEWAY
    (192.0.2.254), the router; its trace events are kept in ``events``."""
    x = IpHost(mtu=mtu, gateway="192.0.2.254")
    x.learn(GATEWAY, GW_MAC)
    x.events = []
    x.net.trace.subscribe(x.events.append)
    return x


def from_router(x: IpHost, type_: int, code: int, about: bytes, rest: bytes = bytes(4),
                src: int = GATEWAY) -> list[bytes]:
    """An ICMP error from the router quoting ``about`` (an IP packet), its
    header and first 8 bytes (under the stack's lock, as its thread would);
    the frames the stack sent at once."""
    with x.net.lock:
        sent = x.feed(eth(ipv4(src, US, 1, icmp(type_, code, rest, about[:28])), src=GW_MAC))
    assert "eth.drop.internal_error" not in x.net.stats()
    return sent


def frag_needed(x: IpHost, about: bytes, mtu: int) -> None:
    from_router(x, 3, 4, about, rest=mtu.to_bytes(4, "big"))


def sent_ip(x: IpHost, proto: int | None = None) -> list[bytes]:
    """The IP packets the stack sends now (after a step at the current time)."""
    return [f[14:] for f in x.at(x.t) if f[12:14] == b"\x08\x00"
            and (proto is None or f[14 + 9] == proto)]
