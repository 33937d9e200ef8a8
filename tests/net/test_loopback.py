"""Loopback (127.0.0.0/8 and our own address) as Linux's ``lo``, on a manual clock.

The stack (192.0.2.2/24) is on a capture link, so every frame it puts on the
link is seen: nothing addressed to ourselves may be among them. TCP and UDP
are driven through their layers (``net.tcp``, ``net.udp``) with the source
address the stack picks (``net.source_for``), the way a socket that chose
none gets one.
"""

from __future__ import annotations

import errno

import pytest

from stack.net.udp import UdpEndpoint
from stack.wire.ipv4 import int2ip, ip2int
from tests.helpers.frames import PEER, US, echo, eth, ipv4
from tests.helpers.hosts import IpHost, host_fixture

host = host_fixture(IpHost)

LO = ip2int("127.0.0.1")


def settle(x: IpHost, rounds: int = 50) -> list[bytes]:
    """Step until nothing waits on lo; return the frames put on the link meanwhile."""
    sent: list[bytes] = []
    for _ in range(rounds):
        sent += x.at(x.t)
        if not x.net.ip.local:
            break
    return sent


def events(x: IpHost) -> list[dict]:
    got: list[dict] = []
    x.net.trace.subscribe(got.append)
    return got


# ------------------------------------------------------------------ addresses


def test_local_addresses_are_ours_and_all_of_127_8(host):
    net = host().net
    for a in ("192.0.2.2", "127.0.0.1", "127.0.0.5", "127.255.255.254"):
        assert net.is_local(ip2int(a)), a
    for a in ("192.0.2.1", "128.0.0.1", "126.255.255.255", "0.0.0.0"):
        assert not net.is_local(ip2int(a)), a


def test_source_is_127_0_0_1_towards_127_8_and_ours_elsewhere(host):
    net = host().net
    assert int2ip(net.source_for(ip2int("127.0.0.1"))) == "127.0.0.1"
    assert int2ip(net.source_for(ip2int("127.9.8.7"))) == "127.0.0.1"
    assert int2ip(net.source_for(US)) == "192.0.2.2"
    assert int2ip(net.source_for(PEER)) == "192.0.2.2"


def test_127_8_has_a_route_without_a_gateway(host):
    ip = host().net.ip
    assert ip.next_hop(LO) == LO
    assert ip.has_route(LO) and ip.has_route(ip2int("127.1.2.3"))
    with pytest.raises(OSError) as e:
        ip.next_hop(ip2int("198.51.100.7"))
    assert e.value.errno == errno.ENETUNREACH


def test_check_route_says_what_connect_would(host):
    ip = host().net.ip

    def err(src: str, dst: str) -> int | None:
        try:
            ip.check_route(ip2int(src), ip2int(dst))
        except OSError as e:
            return e.errno
        return None

    assert err("0.0.0.0", "127.0.0.1") is None and err("127.0.0.1", "192.0.2.2") is None
    assert err("0.0.0.0", "192.0.2.1") is None and err("192.0.2.2", "127.0.0.9") is None
    assert err("127.0.0.1", "192.0.2.1") == errno.EINVAL  # lo's addresses never leave lo
    assert err("0.0.0.0", "198.51.100.7") == errno.ENETUNREACH  # no gateway
    assert err("192.0.2.9", "192.0.2.1") == errno.EADDRNOTAVAIL


def test_routes_show_lo(host):
    routes = host().net.routes()
    assert routes[-1] == {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local",
                          "proto": "kernel", "scope": "host", "src": "127.0.0.1"}
    assert routes[0]["dev"] == "mem0"


# ------------------------------------------------------------------ TCP over lo


def test_tcp_echo_over_127_0_0_1_stays_off_the_link(host):
    x = host()
    ev = events(x)
    frames_in = x.counter("eth.frames_in")  # (the peer's ARP, at the start)
    tcp = x.net.tcp
    lst = tcp.listen((0, 7), 5, x.t)
    client = tcp.connect(x.net.source_for(LO), (LO, 7), x.t)
    assert settle(x) == []
    server = lst.accept()
    assert server is not None and client.state == server.state == "ESTABLISHED"
    assert (int2ip(client.local[0]), client.remote) == ("127.0.0.1", (LO, 7))
    assert server.local == (LO, 7) and server.remote == client.local
    data = bytes(range(256)) * 1000
    assert client.send(data, x.t) == len(data)
    got = bytearray()
    for _ in range(50):
        assert settle(x) == []
        got += server.recv(1 << 20)
        if len(got) == len(data):
            break
    assert got == data
    server.send(bytes(got), x.t)
    back = bytearray()
    for _ in range(50):
        assert settle(x) == []
        back += client.recv(1 << 20)
        if len(back) == len(data):
            break
    assert back == data
    # lo's MTU (65536) gives the MSS Linux uses on lo: 65495, less timestamps.
    assert client.status()["mss"] == server.status()["mss"] == 65483
    c = x.net.stats()
    assert c["link.lo.tx_packets"] == c["link.lo.rx_packets"] > 6
    assert c["link.lo.tx_bytes"] == c["link.lo.rx_bytes"] > 2 * len(data)
    assert c["eth.frames_in"] == frames_in and c["ip.packets_in"] == c["link.lo.rx_packets"]
    lo_events = [e for e in ev if e["layer"] == "link"]
    assert {e["event"] for e in lo_events} == {"tx", "rx"}
    assert all(e["dev"] == "lo" for e in lo_events)
    name = f"127.0.0.1:{client.local[1]}-127.0.0.1:7"
    syn = next(e for e in lo_events if e["event"] == "tx")
    assert syn["conn"] == name and syn["len"] == 0 and syn["length"] == 60
    assert sum(e["len"] for e in lo_events if e["event"] == "rx") == 2 * len(data)


def test_a_listener_on_our_address_does_not_get_127_0_0_1(host):
    x = host()
    tcp = x.net.tcp
    tcp.listen((US, 8080), 5, x.t)
    conn = tcp.connect(x.net.source_for(LO), (LO, 8080), x.t)
    assert settle(x) == []
    assert conn.state == "CLOSED" and conn.error == errno.ECONNREFUSED
    assert x.counter("tcp.out_rsts") == 1


def test_a_listener_on_127_0_0_5_takes_connections_from_127_0_0_1(host):
    x = host()
    tcp = x.net.tcp
    lo5 = ip2int("127.0.0.5")
    lst = tcp.listen((lo5, 9000), 5, x.t)
    conn = tcp.connect(x.net.source_for(lo5), (lo5, 9000), x.t)
    assert settle(x) == []
    server = lst.accept()
    assert server is not None and server.remote == conn.local
    assert conn.state == "ESTABLISHED" and int2ip(conn.local[0]) == "127.0.0.1"


def test_our_own_address_goes_through_lo_too(host):
    x = host()
    tcp = x.net.tcp
    lst = tcp.listen((0, 25), 5, x.t)
    conn = tcp.connect(x.net.source_for(US), (US, 25), x.t)
    assert settle(x) == []
    assert lst.accept() is not None and conn.state == "ESTABLISHED"
    assert conn.local[0] == US and conn.status()["mss"] == 65483
    assert x.counter("link.lo.rx_packets") >= 3


# ------------------------------------------------------------------ UDP over lo


def test_udp_over_127_0_0_1(host):
    x = host()
    udp = x.net.udp
    server, client = UdpEndpoint(), UdpEndpoint()
    udp.bind(server, ip2int("127.0.0.5"), 5353)
    udp.send(client, b"question" * 1000, (ip2int("127.0.0.5"), 5353), x.t)  # one 8 KB datagram
    assert settle(x) == []
    data, src = server.pop()
    assert data == b"question" * 1000 and int2ip(src[0]) == "127.0.0.1"
    assert src == (LO, client.local[1])
    udp.send(server, b"answer", src, x.t)
    assert settle(x) == []
    data, back = client.pop()
    assert data == b"answer" and int2ip(back[0]) == "127.0.0.5"
    assert x.counter("ip.fragmented") == 0 and x.counter("link.lo.rx_packets") == 2


def test_udp_port_unreachable_over_lo_reaches_a_connected_socket(host):
    x = host()
    udp = x.net.udp
    ep = UdpEndpoint()
    udp.bind(ep, 0, 0)
    ep.remote = (LO, 9)  # connected; nobody listens on 9
    udp.send(ep, b"x", ep.remote, x.t)
    assert settle(x) == []
    assert ep.error == errno.ECONNREFUSED
    assert x.counter("icmp.out.type3") == x.counter("icmp.in.type3") == 1


def test_udp_from_a_127_8_address_cannot_leave_lo(host):
    x = host()
    ep = UdpEndpoint()
    x.net.udp.bind(ep, LO, 0)
    with pytest.raises(OSError) as e:
        x.net.udp.send(ep, b"x", (PEER, 53), x.t)
    assert e.value.errno == errno.EINVAL  # as Linux
    assert settle(x) == []
    assert x.counter("ip.drop.loopback_source_out") == 1


def test_bind_takes_127_8_and_refuses_others(host):
    udp = host().net.udp
    udp.bind(UdpEndpoint(), ip2int("127.3.2.1"), 4000)
    with pytest.raises(OSError) as e:
        udp.bind(UdpEndpoint(), ip2int("192.0.2.9"), 4000)
    assert e.value.errno == errno.EADDRNOTAVAIL


# ------------------------------------------------------------------ the wire


def test_127_8_destination_from_the_wire_is_a_martian(host):
    x = host()
    assert x.feed(eth(ipv4(PEER, LO, 1, echo()))) == []
    assert x.counter("ip.drop.martian_destination") == 1
    assert x.counter("icmp.in.type8") == 0


def test_127_8_source_from_the_wire_is_a_martian(host):
    x = host()
    assert x.feed(eth(ipv4(LO, US, 1, echo()))) == []
    assert x.counter("ip.drop.martian_source") == 1
    assert x.counter("link.lo.rx_packets") == 0


def test_echo_to_127_0_0_1_is_answered_from_127_0_0_1(host):
    x = host()
    got = []
    x.net.icmp.echo_waiters[(LO, 77)] = lambda seq, data, now: got.append((seq, data))
    x.net.icmp.send_echo(LO, 77, 1, b"ping" * 10000, x.t)  # 40 KB: one packet on lo
    assert settle(x) == []
    assert got == [(1, b"ping" * 10000)]
    assert x.counter("ip.fragmented") == 0 and x.counter("icmp.out.type0") == 1


def test_a_full_lo_backlog_drops_and_counts(host):
    x = host()
    ip = x.net.ip
    for _ in range(1005):
        ip.send(LO, LO, 253, b"p", x.t)
    assert x.counter("link.drop.lo_backlog_full") == 5
    assert x.counter("link.lo.tx_packets") == 1000
    settle(x)
    assert len(x.got) == 1000 and not ip.local


def test_udp_connect_takes_the_route_s_source_as_linux(host):
    x = host()
    udp = x.net.udp
    to_lo, to_peer, to_any = UdpEndpoint(), UdpEndpoint(), UdpEndpoint()
    udp.connect(to_lo, (ip2int("127.0.0.9"), 53))
    udp.connect(to_peer, (PEER, 53))
    udp.connect(to_any, (0, 53))                        # 0.0.0.0: ourselves
    assert int2ip(to_lo.local[0]) == "127.0.0.1" and to_peer.local[0] == US
    assert to_any.remote == (LO, 53) and to_any.local[0] == LO
    # Only datagrams to the address it was given arrive (Linux rehashes the socket).
    peer = UdpEndpoint()
    udp.bind(peer, ip2int("127.0.0.9"), 53)
    udp.send(peer, b"to us", (US, to_lo.local[1]), x.t)
    udp.send(peer, b"to lo", (LO, to_lo.local[1]), x.t)
    assert settle(x) == []
    assert to_lo.pop() == (b"to lo", (ip2int("127.0.0.9"), 53)) and to_lo.pop() is None
    assert x.counter("udp.drop.port_closed") == 1
    bound = UdpEndpoint()
    udp.bind(bound, LO, 0)
    for ep, dst, code in ((bound, PEER, errno.EINVAL),
                          (UdpEndpoint(), ip2int("198.51.100.7"), errno.ENETUNREACH)):
        with pytest.raises(OSError) as e:
            udp.connect(ep, (dst, 53))
        assert e.value.errno == code
