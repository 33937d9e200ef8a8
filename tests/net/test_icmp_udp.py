"""ICMP and UDP as conversations: a frame in, exactly the frame expected out (or none).

Packets are built by hand (``tests.helpers.frames``) and checksums come from
the reference in ``tests.helpers.checksum``. The IPv4 identification of what the stack
sends is its own counter, so expected frames take that one field from the
frame actually sent; every other byte is spelled out.
"""

from __future__ import annotations

import errno
import random

import pytest

from stack.net.udp import UdpEndpoint
from stack.wire.ipv4 import Ipv4Header
from tests.helpers.checksum import ref_checksum
from tests.helpers.frames import (BCAST, OTHER, OTHER_MAC, PEER, PEER_MAC, SUBNET_BCAST, US, US_MAC, echo, eth,
                                  fragment, icmp, ipv4, reassemble, split, udp)
from tests.helpers.hosts import IpHost, host_fixture

host = host_fixture(IpHost)


def reply_frame(sent: bytes, proto: int, payload: bytes, tos: int = 0) -> bytes:
    """The frame the stack should send the peer, with the IPv4 id the stack chose."""
    ident = int.from_bytes(sent[14 + 4:14 + 6], "big")
    return PEER_MAC + US_MAC + b"\x08\x00" + ipv4(US, PEER, proto, payload, ident=ident, tos=tos)


# ------------------------------------------------------------------ echo


def test_echo_reply_is_exact(host):
    x = host()
    data = bytes(range(56))
    request = eth(ipv4(PEER, US, 1, icmp(8, 0, bytes.fromhex("0bad0007"), data), ident=0x3333))
    [sent] = x.feed(request)
    assert sent == reply_frame(sent, 1, icmp(0, 0, bytes.fromhex("0bad0007"), data))
    assert x.counter("icmp.in.type8") == 1 and x.counter("icmp.out.type0") == 1


@pytest.mark.parametrize("data", [b"", b"x", b"odd", bytes(1472)])
def test_echo_reply_matches_any_data(host, data):
    x = host()
    [sent] = x.feed(eth(ipv4(PEER, US, 1, icmp(8, 0, b"\xff\xff\xff\xfe", data))))
    assert sent == reply_frame(sent, 1, icmp(0, 0, b"\xff\xff\xff\xfe", data))


def test_echo_reply_keeps_the_tos(host):
    x = host()
    [sent] = x.feed(eth(ipv4(PEER, US, 1, icmp(8, 0, b"\x00\x01\x00\x02", b"tos"), tos=0x10)))
    assert sent == reply_frame(sent, 1, icmp(0, 0, b"\x00\x01\x00\x02", b"tos"), tos=0x10)


def test_largest_echo_is_fragmented_in_and_out(host):
    x = host()
    data = random.Random(65507).randbytes(65507)
    request = icmp(8, 0, b"\x12\x34\x00\x2a", data)
    assert 20 + len(request) == 65535
    parts = fragment(PEER, US, 1, request, 0x7777, 1480)
    assert len(parts) == 45
    random.Random(1).shuffle(parts)
    out = x.feed_ip(*parts)
    assert len(out) == 45
    head, reply = reassemble(out)
    assert (head["src"], head["dst"], head["proto"]) == (US, PEER, 1)
    assert reply == icmp(0, 0, b"\x12\x34\x00\x2a", data)
    assert ref_checksum(reply) == 0


@pytest.mark.parametrize("dst", [SUBNET_BCAST, 0xFFFFFFFF])
def test_no_reply_to_broadcast_echo(host, dst):
    x = host()
    assert x.feed(eth(ipv4(PEER, dst, 1, echo()), dst=BCAST)) == []
    assert x.counter("icmp.drop.broadcast_echo") == 1


def test_bad_icmp_checksum_is_dropped(host):
    x = host()
    msg = bytearray(echo(data=b"corrupt"))
    msg[-1] ^= 0x01
    assert x.feed(eth(ipv4(PEER, US, 1, bytes(msg)))) == []
    assert x.counter("icmp.drop.malformed") == 1


@pytest.mark.parametrize("n", [0, 4, 7])
def test_truncated_icmp_is_dropped(host, n):
    x = host()
    assert x.feed(eth(ipv4(PEER, US, 1, echo()[:n]))) == []
    assert x.counter("icmp.drop.malformed") == 1


def test_unsupported_type_is_dropped(host):
    x = host()
    assert x.feed(eth(ipv4(PEER, US, 1, icmp(15, 0, bytes(4), bytes(12))))) == []  # info request
    assert x.counter("icmp.drop.unsupported_type") == 1


def test_timestamp_request_is_answered_in_ms_since_midnight_ut(host):
    # RFC 792, as Linux: the originate timestamp back, receive = transmit.
    x = host()
    x.net.icmp.utc_offset = 86400 * 20000 + 3600 - x.t   # "now" is 01:00:00.000 UT
    [sent] = x.feed(eth(ipv4(PEER, US, 1, icmp(13, 0, b"\x12\x34\x00\x07",
                                                (1234).to_bytes(4, "big") + bytes(8)))))
    ms = (3600 * 1000).to_bytes(4, "big")
    assert sent == reply_frame(sent, 1, icmp(14, 0, b"\x12\x34\x00\x07",
                                             (1234).to_bytes(4, "big") + ms + ms))
    assert x.feed(eth(ipv4(PEER, US, 1, icmp(13, 0, bytes(4), bytes(4))))) == []  # too short
    assert x.counter("icmp.drop.bad_timestamp") == 1


def test_echo_we_send_and_the_reply_we_get(host):
    x = host()
    seen = []
    x.net.icmp.echo_waiters[(PEER, 0x0101)] = lambda seq, data, now: seen.append((seq, data, now))
    x.net.icmp.send_echo(PEER, 0x0101, 5, b"are you there", x.t)
    [sent] = x.link.take_sent()
    assert sent == reply_frame(sent, 1, icmp(8, 0, b"\x01\x01\x00\x05", b"are you there"))
    x.t += 0.25
    assert x.feed(eth(ipv4(PEER, US, 1, icmp(0, 0, b"\x01\x01\x00\x05", b"are you there")))) == []
    assert seen == [(5, b"are you there", 100.25)]
    # A reply nobody waits for is counted, not delivered.
    x.feed(eth(ipv4(PEER, US, 1, icmp(0, 0, b"\x01\x02\x00\x05", b"?"))))
    assert x.counter("icmp.drop.unexpected_echo_reply") == 1 and len(seen) == 1


# ------------------------------------------------------------------ errors we send


def test_port_unreachable_quotes_as_much_as_576_bytes_hold(host):
    # RFC 1812 4.3.2.3 (RFC 792's minimum is the header and 8 bytes), as Linux.
    x = host()
    original = ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"knock knock"), ident=0x2222)
    [sent] = x.feed(eth(original))
    assert sent == reply_frame(sent, 1, icmp(3, 3, bytes(4), original))
    assert x.counter("udp.drop.port_closed") == 1
    assert x.counter("icmp.out.type3") == 1


def test_port_unreachable_for_a_reassembled_datagram_quotes_the_whole(host):
    x = host()
    payload = udp(PEER, US, 5555, 9, bytes(3000))
    [sent] = x.feed_ip(*fragment(PEER, US, 17, payload, 0x2323, 1480))
    whole = ipv4(PEER, US, 17, payload, ident=0x2323)
    icmp_msg = split(sent)["payload"]
    assert icmp_msg == icmp(3, 3, bytes(4), whole[:548])  # the error is 576 bytes long


def test_protocol_unreachable(host):
    x = host()
    original = ipv4(PEER, US, 99, b"unknown protocol data", ident=0x0909)
    [sent] = x.feed(eth(original))
    assert sent == reply_frame(sent, 1, icmp(3, 2, bytes(4), original))
    assert x.counter("ip.drop.unknown_protocol") == 1


def test_no_protocol_unreachable_for_a_broadcast(host):
    x = host()
    assert x.feed(eth(ipv4(PEER, SUBNET_BCAST, 99, b"x" * 8), dst=BCAST)) == []
    assert x.counter("ip.drop.unknown_protocol") == 1


def test_no_port_unreachable_for_a_broadcast(host):
    x = host()
    for dst in (SUBNET_BCAST, 0xFFFFFFFF):
        assert x.feed(eth(ipv4(PEER, dst, 17, udp(PEER, dst, 68, 67, b"dhcp?")), dst=BCAST)) == []
    assert x.counter("udp.drop.port_closed") == 2
    assert x.counter("icmp.out.type3") == 0


def test_errors_to_one_host_are_rate_limited_per_host(host):
    """Linux's icmp_ratelimit: 6 at once to a host, then one a second."""
    x = host()
    sent = []
    for i in range(10):
        sent += x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 10000 + i, b"x"), ident=i)))
    assert len(sent) == 6
    assert x.counter("icmp.drop.rate_limited") == 4
    x.t += 0.5
    assert len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"))))) == 0
    x.t += 0.5
    assert len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"))))) == 1
    assert len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"))))) == 0
    # Another host has its own budget.
    x.learn(OTHER, OTHER_MAC)
    out = [x.feed(eth(ipv4(OTHER, US, 17, udp(OTHER, US, 5555, 9, b"x")), src=OTHER_MAC))
           for _ in range(7)]
    assert [len(o) for o in out] == [1] * 6 + [0]
    # A host unheard of for 6 s has its whole burst again, no more.
    x.t += 10.0
    n = sum(len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"))))) for _ in range(10))
    assert n == 6


def test_the_hosts_remembered_for_the_rate_limit_are_bounded(host):
    x = host()
    x.net.icmp.config.max_peers = 4
    for i in range(10):  # to addresses it cannot reach: budgets without frames
        x.net.icmp.send_error(3, 3, Ipv4Header(src=0xC6336400 + i, dst=US, proto=17), b"x" * 8, x.t)
    assert len(x.net.icmp.error_budgets) <= 4


def test_errors_are_rate_limited(host):
    x = host()
    x.net.icmp.config.peer_interval = 0  # (the global limit alone)
    sent = []
    for i in range(60):
        sent += x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 10000 + i, b"x"), ident=i)))
    assert len(sent) == 50                         # the burst
    assert x.counter("icmp.drop.rate_limited") == 10
    x.t += 0.001                                   # 1000/s: one more token
    assert len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"))))) == 1
    assert len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"))))) == 0
    assert x.counter("icmp.drop.rate_limited") == 11
    # Echo replies are not errors: never rate limited.
    assert len(x.feed(eth(ipv4(PEER, US, 1, echo())))) == 1
    x.t += 1.0                                     # the bucket refills to the burst, no further
    n = sum(len(x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x")))))
            for _ in range(60))
    assert n == 50


def _header(proto: int, frag_offset: int = 0, mf: bool = False, dst: int = US, src: int = PEER) -> Ipv4Header:
    return Ipv4Header(src=src, dst=dst, proto=proto, ident=1, frag_offset=frag_offset, mf=mf,
                      total_length=48, header_length=20)


@pytest.mark.parametrize("error_type", [3, 4, 5, 11, 12])
def test_never_an_error_about_an_icmp_error(host, error_type):
    x = host()
    x.net.icmp.port_unreachable(_header(1), icmp(error_type, 0, bytes(4), bytes(20)), x.t)
    assert x.link.take_sent() == []
    # ...but about an echo request, yes.
    x.net.icmp.port_unreachable(_header(1), echo(), x.t)
    assert len(x.link.take_sent()) == 1


def test_no_time_exceeded_for_a_fragmented_icmp_error(host):
    x = host()
    error = icmp(3, 1, bytes(4), ipv4(US, PEER, 17, bytes(3000)))
    first = fragment(PEER, US, 1, error, 0x5151, 1480)[0]
    x.feed_ip(first)
    assert x.at(130.0) == []
    assert x.counter("ip.drop.reassembly_timeout") == 1


@pytest.mark.parametrize("offset", [8, 1480, 65000])
def test_never_an_error_about_a_non_first_fragment(host, offset):
    x = host()
    x.net.icmp.port_unreachable(_header(17, frag_offset=offset), bytes(16), x.t)
    x.net.icmp.port_unreachable(_header(17, frag_offset=offset, mf=True), bytes(16), x.t)
    assert x.link.take_sent() == []
    x.net.icmp.port_unreachable(_header(17, mf=True), bytes(16), x.t)   # the first: yes
    assert len(x.link.take_sent()) == 1


@pytest.mark.parametrize("src", [0, 0xE0000001, 0xFFFFFFFF, SUBNET_BCAST, 0x7F000001])
def test_never_an_error_to_a_source_that_is_not_a_host(host, src):
    x = host()
    x.net.icmp.port_unreachable(_header(17, src=src), bytes(16), x.t)
    assert x.link.take_sent() == []


# ------------------------------------------------------------------ errors we hear


def _bound(x, port: int, remote: tuple[int, int] | None = None, addr: int = 0) -> UdpEndpoint:
    ep = UdpEndpoint()
    x.net.udp.bind(ep, addr, port)
    ep.remote = remote
    return ep


def _unreachable_about(sport: int, dport: int, src: int = US, code: int = 3, ident: int = 0x0A0A) -> bytes:
    """ICMP port unreachable quoting a datagram US:sport > PEER:dport."""
    quoted = ipv4(src, PEER, 17, udp(src, PEER, sport, dport, b"question"), ident=ident)[:28]
    return eth(ipv4(PEER, US, 1, icmp(3, code, bytes(4), quoted)))


def test_port_unreachable_is_econnrefused_on_a_connected_endpoint(host):
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    changed = []
    ep.on_change = lambda: changed.append(True)
    assert x.feed(_unreachable_about(40000, 53)) == []
    assert ep.error == errno.ECONNREFUSED
    assert ep.readable and changed == [True]


def test_port_unreachable_is_not_delivered_to_an_unconnected_endpoint(host):
    x = host()
    ep = _bound(x, 40000)
    x.feed(_unreachable_about(40000, 53))
    assert ep.error is None
    assert x.counter("udp.drop.icmp_error_unconnected") == 1


def test_port_unreachable_for_another_peer_port_is_not_delivered(host):
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 54))
    x.feed(_unreachable_about(40000, 53))
    assert ep.error is None
    assert x.counter("udp.drop.icmp_error_unmatched") == 1


def test_error_quoting_someone_elses_datagram_is_dropped(host):
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    x.feed(_unreachable_about(40000, 53, src=0xC0000209))
    assert ep.error is None
    assert x.counter("icmp.drop.bad_quote") == 1


def test_error_with_a_short_quote_is_dropped(host):
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    quoted = ipv4(US, PEER, 17, udp(US, PEER, 40000, 53, b""))[:27]
    x.feed(eth(ipv4(PEER, US, 1, icmp(3, 3, bytes(4), quoted))))
    assert ep.error is None
    assert x.counter("icmp.drop.short_quote") == 1


@pytest.mark.parametrize("type_,code,err", [(3, 2, errno.ENOPROTOOPT), (3, 13, errno.EHOSTUNREACH),
                                            (3, 10, errno.EHOSTUNREACH), (3, 7, errno.EHOSTDOWN),
                                            (3, 4, errno.EMSGSIZE), (12, 0, errno.EPROTO)])
def test_hard_errors_map_to_errno(host, type_, code, err):
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    quoted = ipv4(US, PEER, 17, udp(US, PEER, 40000, 53, b"q"))[:28]
    x.feed(eth(ipv4(PEER, US, 1, icmp(type_, code, bytes.fromhex("00000240"), quoted))))
    assert ep.error == err


@pytest.mark.parametrize("type_,code", [(3, 0), (3, 1), (3, 5), (3, 11), (3, 12), (11, 0)])
def test_soft_errors_are_not_reported_to_a_connected_endpoint(host, type_, code):
    """Linux's udp_err without IP_RECVERR: only a fatal error reaches the socket."""
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    quoted = ipv4(US, PEER, 17, udp(US, PEER, 40000, 53, b"q"))[:28]
    x.feed(eth(ipv4(PEER, US, 1, icmp(type_, code, bytes(4), quoted))))
    assert ep.error is None
    assert x.counter("udp.drop.icmp_error_soft") == 1


def test_an_unreachable_code_above_15_is_ignored(host):
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    quoted = ipv4(US, PEER, 17, udp(US, PEER, 40000, 53, b"q"))[:28]
    x.feed(eth(ipv4(PEER, US, 1, icmp(3, 16, bytes(4), quoted))))
    assert ep.error is None
    assert x.counter("icmp.drop.unknown_code") == 1


# ------------------------------------------------------------------ UDP


def test_udp_demux_to_the_bound_endpoint(host):
    x = host()
    a, b = _bound(x, 7000), _bound(x, 7001, addr=US)
    assert x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7001, b"to b")))) == []
    assert x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5556, 7000, b"to a")))) == []
    assert a.pop() == (b"to a", (PEER, 5556)) and a.pop() is None
    assert b.pop() == (b"to b", (PEER, 5555)) and b.pop() is None
    assert x.counter("udp.datagrams_in") == 2


def test_udp_broadcast_reaches_a_wildcard_endpoint(host):
    x = host()
    ep = _bound(x, 6000)
    x.feed(eth(ipv4(PEER, SUBNET_BCAST, 17, udp(PEER, SUBNET_BCAST, 6001, 6000, b"all")), dst=BCAST))
    assert ep.pop() == (b"all", (PEER, 6001))


def test_udp_connected_endpoint_takes_only_its_peer(host):
    x = host()
    ep = _bound(x, 7000, remote=(PEER, 5555))
    assert x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7000, b"yes")))) == []
    [sent] = x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5556, 7000, b"no"))))
    assert split(sent[14:])["payload"][:2] == b"\x03\x03"
    assert ep.pop() == (b"yes", (PEER, 5555)) and ep.pop() is None


def test_udp_zero_checksum_accepted(host):
    x = host()
    ep = _bound(x, 7000)
    x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7000, b"no checksum", csum=0))))
    assert ep.pop() == (b"no checksum", (PEER, 5555))


def test_udp_bad_checksum_dropped_and_counted(host):
    x = host()
    ep = _bound(x, 7000)
    good = udp(PEER, US, 5555, 7000, b"payload")
    bad = good[:6] + (int.from_bytes(good[6:8], "big") ^ 0x0100).to_bytes(2, "big") + good[8:]
    assert x.feed(eth(ipv4(PEER, US, 17, bad))) == []        # no ICMP either
    assert ep.pop() is None
    assert x.counter("udp.drop.malformed") == 1


@pytest.mark.parametrize("length", [0, 7, 16, 100])
def test_udp_length_field_wrong(host, length):
    x = host()
    ep = _bound(x, 7000)
    assert x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7000, b"abcdefg", length=length)))) == []
    assert ep.pop() is None
    assert x.counter("udp.drop.malformed") == 1


def test_udp_bytes_beyond_its_length_are_ignored(host):
    x = host()
    ep = _bound(x, 7000)
    x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7000, b"abc") + b"trailing")))
    assert ep.pop() == (b"abc", (PEER, 5555))


def test_udp_receive_queue_is_bounded(host):
    x = host()
    ep = _bound(x, 7000)
    ep.rcvbuf = 1000
    for i in range(3):
        x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7000, bytes([i]) * 600))))
    assert x.counter("udp.drop.receive_queue_full") == 2
    assert ep.pop() == (bytes(600), (PEER, 5555)) and ep.pop() is None
    # Room again; and one datagram larger than the buffer fits an empty queue.
    x.feed(eth(ipv4(PEER, US, 17, udp(PEER, US, 5555, 7000, b"\x07" * 1200))))
    assert ep.pop() == (b"\x07" * 1200, (PEER, 5555))


def test_udp_send_builds_the_exact_datagram(host):
    x = host()
    ep = _bound(x, 7000)
    assert x.net.udp.send(ep, b"hello", (PEER, 9), x.t) == 5
    [sent] = x.link.take_sent()
    assert sent == reply_frame(sent, 17, udp(US, PEER, 7000, 9, b"hello"))


def test_udp_send_too_big(host):
    x = host()
    ep = _bound(x, 7000)
    with pytest.raises(OSError) as e:
        x.net.udp.send(ep, bytes(65508), (PEER, 9), x.t)
    assert e.value.errno == errno.EMSGSIZE
    x.net.udp.send(ep, bytes(65507), (PEER, 9), x.t)
    head, data = reassemble(x.ip_out(x.link.take_sent()))
    assert data == udp(US, PEER, 7000, 9, bytes(65507))


@pytest.mark.parametrize("type_,code", [(4, 0), (5, 0), (5, 1)])
def test_source_quench_and_redirect_are_not_socket_errors(host, type_, code):
    # RFC 6633: ignore source quench. A redirect changes a route, never a socket's
    # fate; a spoofed one must not fail a connected endpoint.
    x = host()
    ep = _bound(x, 40000, remote=(PEER, 53))
    quoted = ipv4(US, PEER, 17, udp(US, PEER, 40000, 53, b"q"))[:28]
    assert x.feed(eth(ipv4(PEER, US, 1, icmp(type_, code, bytes.fromhex("c00002fe"), quoted)))) == []
    assert ep.error is None
    assert x.counter("icmp.drop.ignored_type") == 1


def test_no_icmp_error_for_a_packet_in_an_ethernet_broadcast_frame():
    """RFC 1122 3.2.2: no ICMP error about a datagram sent as a link-layer broadcast."""
    from stack.link.memory import CaptureLink
    from stack.runtime import Stack
    from stack.wire.icmp import parse_icmp
    from stack.wire.ipv4 import Ipv4Header, build_ipv4, ip2int, parse_ipv4
    from stack.wire.udp import build_udp

    link = CaptureLink()
    net = Stack(link, address="192.0.2.2/24", thread=False, clock=lambda: 1.0)
    peer_mac = b"\x02\x00\x00\x00\x00\x01"
    src, dst = ip2int("192.0.2.1"), ip2int("192.0.2.2")
    # Teach the stack the peer's MAC so an ICMP error would leave at once.
    net.eth._learn(src, peer_mac, 1.0)
    link.take_sent()
    pkt = build_ipv4(Ipv4Header(src, dst, 17), build_udp(src, dst, 1234, 9, b"x"))
    net.receive_frame(b"\xff" * 6 + peer_mac + b"\x08\x00" + pkt, 1.0)
    assert link.take_sent() == []
    net.receive_frame(net.mac + peer_mac + b"\x08\x00" + pkt, 1.0)
    sent = link.take_sent()
    assert len(sent) == 1
    h, payload = parse_ipv4(memoryview(sent[0])[14:])
    msg = parse_icmp(payload)
    assert (h.dst, msg.type, msg.code) == (src, 3, 3)
