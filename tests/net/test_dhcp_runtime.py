"""``Stack(..., address="dhcp")`` on a capture link and a manual clock, with a
DHCP server played by hand-built frames: the stack starts without an
address, broadcasts from 0.0.0.0:68, takes broadcast and unicast replies
before it has an address, and when bound answers ARP and ping for the
leased address, routes through the lease's router and asks its DNS server;
a NAK takes it all away again, and close() sends RELEASE."""

from __future__ import annotations

import pytest

from stack.link.memory import CaptureLink
from stack.runtime import Stack
from stack.wire.dhcp import (ACK, DISCOVER, NAK, OFFER, RELEASE, REQUEST, DhcpMessage,
                             build_dhcp, parse_dhcp)
from stack.wire.ipv4 import int2ip, ip2int
from tests.helpers.frames import BCAST, arp, echo, eth, ipv4, split, udp
from tests.helpers.dhcp import MAC, reply

SERVER_MAC = bytes.fromhex("525400000001")
SERVER, OFFERED = ip2int("198.51.100.1"), ip2int("198.51.100.50")


class DhcpHost:
    def __init__(self, **kw) -> None:
        self.t = 100.0
        self.link = CaptureLink()
        self.net = Stack(self.link, address="dhcp", mac=MAC, thread=False, clock=lambda: self.t,
                         seed=3, **kw)

    def sent(self) -> list[bytes]:
        return self.link.take_sent()

    def feed(self, frame: bytes) -> list[bytes]:
        self.net.receive_frame(frame, self.t)
        return self.sent()

    def at(self, t: float) -> list[bytes]:
        self.t = t
        self.net.step(t)
        return self.sent()

    def from_server(self, data: bytes, dst: int = 0xFFFFFFFF, sport: int = 67) -> list[bytes]:
        """A datagram from the server's port 67 to our port 68 (broadcast by default)."""
        packet = ipv4(SERVER, dst, 17, udp(SERVER, dst, sport, 68, data))
        return self.feed(eth(packet, BCAST if dst == 0xFFFFFFFF else MAC, SERVER_MAC))

    def bind(self, **kw) -> DhcpMessage:
        """DISCOVER, OFFER (broadcast), REQUEST, ACK (unicast to the offered address)."""
        (discover,) = dhcp_out(self.sent())
        (request,) = dhcp_out(self.from_server(reply(OFFER, discover[0].xid)))
        assert request[0].msg_type == REQUEST
        assert self.from_server(reply(ACK, discover[0].xid, **kw), dst=OFFERED) != []  # (ARP)
        return discover[0]

    def stat(self, name: str) -> int:
        return self.net.stats().get(name, 0)


def dhcp_out(frames: list[bytes]) -> list[tuple[DhcpMessage, dict, bytes]]:
    """The DHCP messages among ``frames``: (message, IP header fields, Ethernet dst)."""
    out = []
    for f in frames:
        if f[12:14] != b"\x08\x00":
            continue
        ip = split(f[14:])
        seg = ip["payload"]
        if ip["proto"] == 17 and seg[0:4] == (68).to_bytes(2, "big") + (67).to_bytes(2, "big"):
            out.append((parse_dhcp(seg[8:]), ip, f[0:6]))
    return out


def arps(frames: list[bytes]) -> list[tuple[int, str]]:
    """(op, target address) of the ARP frames among ``frames``."""
    return [(int.from_bytes(f[20:22], "big"), int2ip(int.from_bytes(f[38:42], "big")))
            for f in frames if f[12:14] == b"\x08\x06"]


@pytest.fixture
def host():
    made = []

    def make(**kw):
        made.append(DhcpHost(**kw))
        return made[-1]

    yield make
    for h in made:
        h.net.close()


def test_it_starts_without_an_address_and_broadcasts_a_discover_from_0_0_0_0(host):
    h = host()
    frames = h.sent()
    assert arps(frames) == []  # no gratuitous ARP for an address it does not have
    ((m, ip, dst),) = dhcp_out(frames)
    assert m.msg_type == DISCOVER and m.chaddr == MAC
    assert (ip["src"], ip["dst"], dst) == (0, 0xFFFFFFFF, BCAST)
    assert h.net.address_str == "0.0.0.0"
    assert h.net.dhcp.status()["state"] == "SELECTING"
    # The retransmission comes from the runtime's timers.
    assert h.at(103.0) == []
    assert [x[0].msg_type for x in dhcp_out(h.at(105.0))] == [DISCOVER]


def test_a_lease_configures_address_gateway_and_answers_arp_and_ping(host):
    h = host()
    h.bind()
    assert h.net.address_str == "198.51.100.50" and h.net.prefix_len == 24
    routes = h.net.routes()
    assert {"dst": "default", "via": "198.51.100.1", "dev": routes[0]["dev"]} == routes[0]
    assert routes[1]["dst"] == "198.51.100.0/24"
    status = h.net.dhcp.status()
    assert status["state"] == "BOUND" and status["address"] == "198.51.100.50/24"
    # ARP for the leased address is answered, and so is a ping to it.
    replies = h.feed(arp(1, SERVER_MAC, SERVER, b"\x00" * 6, OFFERED))
    assert arps(replies) == [(2, "198.51.100.1")]
    out = h.feed(eth(ipv4(SERVER, OFFERED, 1, echo()), MAC, SERVER_MAC))
    (pong,) = [split(f[14:]) for f in out]
    assert (pong["src"], pong["dst"], pong["payload"][0]) == (OFFERED, SERVER, 0)


def test_before_the_lease_only_port_68_takes_unicast_to_other_addresses(host):
    h = host()
    (discover,) = dhcp_out(h.sent())
    stray = eth(ipv4(SERVER, OFFERED, 17, udp(SERVER, OFFERED, 67, 7, b"x")), MAC, SERVER_MAC)
    assert h.feed(stray) == []
    assert h.stat("ip.drop.not_for_us") == 1
    # The offer sent unicast to the offered address arrives.
    (request,) = dhcp_out(h.from_server(reply(OFFER, discover[0].xid), dst=OFFERED))
    assert request[0].msg_type == REQUEST


def test_the_lease_dns_server_is_asked(host):
    h = host()
    h.bind(dns=("198.51.100.53",))
    h.net.names.dns.start("www.example.test", lambda result: None)
    assert arps(h.at(h.t)) == [(1, "198.51.100.53")]


def test_dns_servers_given_by_the_user_win_over_the_lease(host):
    h = host(dns=["198.51.100.77"])
    h.bind(dns=("198.51.100.53",))
    h.net.names.dns.start("www.example.test", lambda result: None)
    assert arps(h.at(h.t)) == [(1, "198.51.100.77")]


def test_renewal_is_unicast_to_the_server_from_the_leased_address(host):
    h = host()
    h.bind(t1=30)
    sent = h.at(130.0)
    assert arps(sent) == [(1, "198.51.100.1")]  # the server's MAC first
    out = h.feed(arp(2, SERVER_MAC, SERVER, MAC, OFFERED, dst=MAC))
    ((m, ip, dst),) = dhcp_out(out)
    assert (m.msg_type, m.ciaddr, ip["src"], ip["dst"], dst) == (REQUEST, OFFERED, OFFERED,
                                                                  SERVER, SERVER_MAC)
    assert h.net.dhcp.status()["state"] == "RENEWING"
    h.from_server(reply(ACK, m.xid, t1=30), dst=OFFERED)
    assert h.net.dhcp.status()["state"] == "BOUND" and h.stat("dhcp.renewals") == 1
    assert h.net.address_str == "198.51.100.50"


def test_a_nak_takes_the_address_and_gateway_away(host):
    h = host()
    h.bind(t1=30)
    h.feed(arp(1, SERVER_MAC, SERVER, b"\x00" * 6, OFFERED))  # (learn the server)
    ((m, _, _),) = dhcp_out(h.at(130.0))
    h.from_server(reply(NAK, m.xid, lease=None), dst=OFFERED)
    assert h.net.address_str == "0.0.0.0"
    assert "default" not in [r["dst"] for r in h.net.routes()]
    assert h.feed(eth(ipv4(SERVER, OFFERED, 1, echo()), MAC, SERVER_MAC)) == []
    assert [x[0].msg_type for x in dhcp_out(h.at(131.0))] == [DISCOVER]


def test_close_releases_the_lease(host):
    h = host()
    h.bind()
    h.feed(arp(1, SERVER_MAC, SERVER, b"\x00" * 6, OFFERED))
    h.net.close()
    ((m, ip, dst),) = dhcp_out(h.sent())
    assert (m.msg_type, m.ciaddr, ip["dst"], dst) == (RELEASE, OFFERED, SERVER, SERVER_MAC)
    assert h.stat("dhcp.addresses_given_up") == 1


def test_hostile_replies_through_the_stack_are_counted(host):
    h = host()
    (discover,) = dhcp_out(h.sent())
    xid = discover[0].xid
    assert h.from_server(reply(OFFER, xid, yiaddr="224.0.0.1")) == []
    assert h.from_server(reply(OFFER, xid), sport=6767) == []
    assert h.from_server(reply(OFFER, xid)[:100]) == []
    assert h.from_server(build_dhcp(DhcpMessage(1, xid, MAC, DISCOVER))) == []
    assert (h.stat("dhcp.drop.bad_address"), h.stat("dhcp.drop.wrong_port"),
            h.stat("dhcp.drop.malformed"), h.stat("dhcp.drop.not_reply")) == (1, 1, 1, 1)
    assert h.net.dhcp.status()["state"] == "SELECTING" and h.net.address_str == "0.0.0.0"


def test_an_expired_lease_takes_the_address_away_and_discovery_starts_again(host):
    h = host()
    h.bind(lease=40, t1=10, t2=20)
    assert h.net.address_str == "198.51.100.50"
    h.at(110.0)                                   # T1: renewing (the server never answers)
    rebind = dhcp_out(h.at(120.0))                # T2: a broadcast REQUEST
    assert [(m.msg_type, ip["dst"], m.ciaddr) for m, ip, _ in rebind] == [
        (REQUEST, 0xFFFFFFFF, OFFERED)]
    assert h.net.dhcp.status()["state"] == "REBINDING"
    assert h.net.address_str == "198.51.100.50"
    out = dhcp_out(h.at(140.0))                   # the lease's end
    assert h.net.address_str == "0.0.0.0"
    assert [(m.msg_type, ip["src"]) for m, ip, _ in out] == [(DISCOVER, 0)]
    assert "default" not in [r["dst"] for r in h.net.routes()]
