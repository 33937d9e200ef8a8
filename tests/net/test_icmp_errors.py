"""ICMP errors on sockets as Linux maps them (icmp_err_convert, tcp_v4_err,
udp_err), one code at a time, on a manual clock: a hand-built error from a
router quoting the segment or datagram the stack really sent.

The expected errnos are spelled out here, from Linux's table, not read
from the stack's.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from stack.tcp import TcpConfig
from tests.helpers.hosts import IpHost
from tests.helpers.icmp import from_router, routed_host
from tests.helpers.tcp import PEER, PEER_PORT, US_PORT, Conversation
from tests.helpers.tcp import US as TCP_US

# Destination unreachable code: (errno, fatal), as Linux's icmp_err_convert.
LINUX = {
    0: (errno.ENETUNREACH, False), 1: (errno.EHOSTUNREACH, False),
    2: (errno.ENOPROTOOPT, True), 3: (errno.ECONNREFUSED, True),
    4: (errno.EMSGSIZE, False), 5: (errno.EOPNOTSUPP, False),
    6: (errno.ENETUNREACH, True), 7: (errno.EHOSTDOWN, True),
    8: (errno.ENONET, True), 9: (errno.ENETUNREACH, True),
    10: (errno.EHOSTUNREACH, True), 11: (errno.ENETUNREACH, False),
    12: (errno.EHOSTUNREACH, False), 13: (errno.EHOSTUNREACH, True),
    14: (errno.EHOSTUNREACH, True), 15: (errno.EHOSTUNREACH, True),
}
KINDS = ["net_unreachable", "host_unreachable", "protocol_unreachable", "port_unreachable",
         "frag_needed", "source_route_failed", "net_unknown", "host_unknown", "host_isolated",
         "net_prohibited", "host_prohibited", "net_tos_unreachable", "host_tos_unreachable",
         "admin_prohibited", "host_precedence_violation", "precedence_cutoff"]
NOT_FRAG = [c for c in LINUX if c != 4]


def quote(src: int, dst: int, sport: int, dport: int, seq: int) -> bytes:
    """What an error quotes of a TCP segment: its IP header and first 8 bytes."""
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst)
    return ip + struct.pack("!HHI", sport, dport, seq)


def syn_sent(x: IpHost):
    s = x.net.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    assert s.connect_ex(("198.51.100.7", 80)) == errno.EINPROGRESS
    [syn] = [f[14:] for f in x.at(x.t) if f[12:14] == b"\x08\x00" and f[14 + 9] == 6]
    return s, syn


@pytest.mark.parametrize("code", NOT_FRAG)
def test_any_unreachable_aborts_a_connect_at_once_with_linux_s_errno(code):
    x = routed_host()
    s, syn = syn_sent(x)
    from_router(x, 3, code, syn)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == LINUX[code][0]
    closed = [e for e in x.events if e.get("event") == "state" and e.get("to") == "CLOSED"]
    assert closed and closed[-1]["from"] == "SYN_SENT"
    assert closed[-1]["cause"] == f"icmp {KINDS[code]}"


@pytest.mark.parametrize("type_,code,err", [(11, 0, errno.EHOSTUNREACH), (11, 1, errno.EHOSTUNREACH),
                                            (12, 0, errno.EPROTO)])
def test_time_exceeded_and_parameter_problem_abort_a_connect_too(type_, code, err):
    x = routed_host()
    s, syn = syn_sent(x)
    from_router(x, type_, code, syn)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == err


def test_frag_needed_does_not_abort_a_connect():
    x = routed_host()
    s, syn = syn_sent(x)
    from_router(x, 3, 4, syn, rest=bytes.fromhex("00000578"))
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert [c["state"] for c in x.net.connections() if c.get("proto", "tcp") == "tcp"] == ["SYN_SENT"]


@pytest.mark.parametrize("code", [16, 255])
def test_an_unreachable_code_linux_does_not_know_is_dropped_and_counted(code):
    x = routed_host()
    s, syn = syn_sent(x)
    from_router(x, 3, code, syn)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert x.counter("icmp.drop.unknown_code") == 1


def test_an_error_quoting_another_sequence_number_is_ignored():
    x = routed_host()
    s, syn = syn_sent(x)
    forged = syn[:24] + bytes(4) + syn[28:]
    from_router(x, 3, 13, forged)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert x.counter("tcp.drop.icmp_stale") == 1


@pytest.mark.parametrize("kind,err", [(KINDS[c], LINUX[c][0]) for c in NOT_FRAG]
                         + [("time_exceeded", errno.EHOSTUNREACH), ("parameter_problem", errno.EPROTO)])
def test_an_established_connection_keeps_it_as_the_soft_error_a_timeout_reports(kind, err):
    c = Conversation(TcpConfig(max_retries=2))
    conn = c.open_active()
    conn.send(b"x", c.now)
    c.layer.icmp_error(kind, PEER, TCP_US, quote(TCP_US, PEER, US_PORT, PEER_PORT, 1001), c.now)
    assert conn.status()["state"] == "ESTABLISHED"
    c.run_until(100.0)
    assert conn.status()["state"] == "CLOSED" and conn.error == err


@pytest.mark.parametrize("code", list(LINUX))
def test_a_connected_udp_socket_hears_only_the_hard_ones(code):
    x = routed_host()
    s = x.net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("198.51.100.7", 53))
    s.send(b"question")
    [dgram] = [f[14:] for f in x.at(x.t) if f[12:14] == b"\x08\x00"]
    from_router(x, 3, code, dgram, rest=bytes.fromhex("00000578"))
    err, fatal = LINUX[code]
    if fatal or code == 4:  # (frag needed: EMSGSIZE, UDP's IP_PMTUDISC_WANT is not DONT)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == err
    else:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert x.counter("udp.drop.icmp_error_soft") == 1
    assert s.send(b"again") == 5


def test_an_unconnected_udp_socket_hears_nothing():
    x = routed_host()
    s = x.net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"question", ("198.51.100.7", 53))
    [dgram] = [f[14:] for f in x.at(x.t) if f[12:14] == b"\x08\x00"]
    from_router(x, 3, 3, dgram)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert x.counter("udp.drop.icmp_error_unconnected") == 1


def half_open():
    c = Conversation()
    listener = c.layer.listen((0, US_PORT), 5, c.now)
    c.feed("S", 7000)
    [synack] = c.sent_segments()
    return c, listener, synack.seq


@pytest.mark.parametrize("kind", ["net_unreachable", "host_unreachable", "time_exceeded",
                                  "parameter_problem"])
def test_a_half_open_passive_connection_is_dropped_for_these_as_linux_s_tcp_req_err(kind):
    c, listener, iss = half_open()
    c.layer.icmp_error(kind, PEER, TCP_US, quote(TCP_US, PEER, US_PORT, PEER_PORT, iss), c.now)
    assert c.states(f"198.51.100.1:{US_PORT}-198.51.100.2:{PEER_PORT}")[-1] == ("SYN_RECEIVED", "CLOSED")
    assert c.trace.counters["tcp.listen_drops"] == 1
    c.feed(".", 7001, iss + 1)  # the handshake's ACK now finds no connection
    assert listener.accept() is None


@pytest.mark.parametrize("kind", ["port_unreachable", "admin_prohibited", "protocol_unreachable"])
def test_a_half_open_passive_connection_ignores_the_others(kind):
    c, listener, iss = half_open()
    c.layer.icmp_error(kind, PEER, TCP_US, quote(TCP_US, PEER, US_PORT, PEER_PORT, iss), c.now)
    assert c.drops()["tcp.drop.icmp_half_open_ignored"] == 1
    c.feed(".", 7001, iss + 1)
    conn = listener.accept()
    assert conn is not None and conn.status()["state"] == "ESTABLISHED" and conn.error is None


def test_a_half_open_connection_ignores_an_error_quoting_another_sequence_number():
    c, listener, iss = half_open()
    c.layer.icmp_error("host_unreachable", PEER, TCP_US,
                       quote(TCP_US, PEER, US_PORT, PEER_PORT, iss + 1), c.now)
    assert c.drops()["tcp.drop.icmp_stale"] == 1
    c.feed(".", 7001, iss + 1)
    assert listener.accept() is not None
