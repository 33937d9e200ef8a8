"""EHOSTUNREACH when the next hop never answers ARP, with Linux's timing, on a manual clock.

Linux sends mcast_solicit=3 ARP requests retrans_time=1 s apart; 3 s after
the first the neighbour is FAILED and every packet that waited for it is
answered with a host unreachable from us to us (arp_error_report →
icmp_send, over lo). A connection attempt ends with EHOSTUNREACH; an
established connection keeps it as its soft error (retransmissions go on,
and a timeout then reports EHOSTUNREACH instead of ETIMEDOUT); a UDP socket
is not told (host unreachable is soft: Linux's udp_err without IP_RECVERR).
"""

from __future__ import annotations

import errno
import socket

from stack import Stack
from stack.link.memory import CaptureLink
from stack.net.arp import ArpConfig
from stack.tcp import TcpConfig
from stack.wire.ipv4 import ip2int

SILENT = "192.0.2.77"  # on-link, nobody has it


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lone_stack(clock: Clock, **kw) -> tuple[Stack, CaptureLink, list[dict]]:
    link = CaptureLink()
    net = Stack(link, address="192.0.2.2/24", thread=False, clock=clock, seed=3, **kw)
    events: list[dict] = []
    net.trace.subscribe(events.append)
    link.take_sent()
    return net, link, events


def run_until(clock: Clock, nets: list[Stack], done, limit: float) -> None:
    """Step the stacks at each deadline, exactly, until ``done()`` or ``limit``
    (frames between them are handled at once: the link takes no time)."""
    while not done() and clock.t < limit:
        for n in nets:
            n.step(clock.t)
        if any(n.link.pending() for n in nets) or done():
            continue
        due = [d for d in (n.next_deadline() for n in nets) if d is not None]
        clock.t = min(limit, max(clock.t, min(due))) if due else limit
        for n in nets:
            n.step(clock.t)


def test_arp_defaults_are_linux_s():
    cfg = ArpConfig()
    assert (cfg.retry_interval, cfg.max_tries) == (1.0, 3)  # retrans_time_ms, mcast_solicit


def test_connect_to_a_silent_neighbour_fails_with_ehostunreach_after_3_s():
    clock = Clock()
    net, link, events = lone_stack(clock)
    start = clock.t
    conn = net.tcp.connect(net.source_for(ip2int(SILENT)), (ip2int(SILENT), 80), start)
    run_until(clock, [net], lambda: conn.state == "CLOSED", start + 30)
    assert conn.state == "CLOSED" and conn.error == errno.EHOSTUNREACH
    assert clock.t - start == 3.0
    sent = link.take_sent()
    assert sent and all(f[12:14] == b"\x08\x06" for f in sent)  # ARP only: no SYN left
    name = conn.name
    closed = [e for e in events if e.get("event") == "state" and e.get("conn") == name][-1]
    assert closed["from"] == "SYN_SENT" and closed["cause"] == "icmp host_unreachable"
    failed = next(e for e in events if e["layer"] == "arp" and e["event"] == "failed")
    assert failed["ip"] == SILENT and failed["tries"] == 3 and failed["t"] == 3.0
    report = next(e for e in events if e["layer"] == "icmp" and e["event"] == "error_out")
    assert report["cause"] == "arp failed" and report["name"].endswith("host unreachable")
    assert report["dst"] == "192.0.2.2" and report["quote"]["dst"] == f"{SILENT}:80"
    c = net.stats()
    assert c["icmp.out.type3"] == c["icmp.in.type3"] == c["arp.drop.unresolved"] >= 1
    assert c["icmp.neighbour_unreachable"] == c["arp.drop.unresolved"]
    assert c["tcp.attempt_fails"] == 1
    net.close()


def test_a_non_blocking_connect_reports_ehostunreach_in_so_error():
    clock = Clock()
    net, _, _ = lone_stack(clock)
    s = net.socket()
    s.setblocking(False)
    assert s.connect_ex((SILENT, 80)) == errno.EINPROGRESS
    start = clock.t
    run_until(clock, [net], lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0,
              start + 2.9)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # not yet at 2.9 s
    run_until(clock, [net], lambda: False, start + 3.0)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EHOSTUNREACH
    s.close()
    net.close()


def test_a_udp_socket_is_not_told_a_soft_host_unreachable():
    """Host unreachable is soft (icmp_err_convert), and Linux's udp_err tells
    a connected socket only hard errors without IP_RECVERR: a kernel UDP
    socket connected to a silent neighbour goes on sending without an error."""
    clock = Clock()
    net, _, events = lone_stack(clock)
    connected = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connected.connect((SILENT, 9))
    connected.send(b"hello")
    loose = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loose.sendto(b"hello", (SILENT, 9))
    run_until(clock, [net], lambda: False, clock.t + 3.0)
    assert connected.send(b"again") == 5
    assert loose.sendto(b"again", (SILENT, 9)) == 5
    assert net.stats()["udp.drop.icmp_error_soft"] == 1
    assert net.stats()["udp.drop.icmp_error_unconnected"] == 1
    assert [e["kind"] for e in events if e["layer"] == "udp" and e["event"] == "drop"
            and e["reason"] in ("icmp_error_soft", "icmp_error_unconnected")] \
        == ["host_unreachable", "host_unreachable"]
    connected.close()
    loose.close()
    net.close()


def test_an_established_connection_keeps_it_as_a_soft_error():
    clock = Clock()
    # ARP entries go stale after 5 s; TCP gives up after 6 retransmissions.
    a, b = Stack.pair(thread=False, clock=clock, seed=5, arp_config=ArpConfig(entry_lifetime=5),
                      tcp_config=TcpConfig(max_retries=6))
    events: list[dict] = []
    a.trace.subscribe(events.append)
    srv = b.socket()
    srv.setblocking(False)
    srv.bind(("0.0.0.0", 7))
    srv.listen()
    c = a.socket()
    c.setblocking(False)
    assert c.connect_ex(("192.0.2.2", 7)) == errno.EINPROGRESS
    run_until(clock, [a, b], lambda: [x["state"] for x in a.connections()] == ["ESTABLISHED"],
              clock.t + 1)
    assert c.send(b"one") == 3
    peer, _ = srv.accept()
    peer.setblocking(False)
    run_until(clock, [a, b], lambda: False, clock.t + 0.5)
    assert peer.recv(10) == b"one"
    # b goes silent (its stack stops running); a writes after its ARP entry went stale.
    clock.t += 10
    assert c.send(b"two") == 3
    name = next(e["conn"] for e in events if e.get("event") == "state")
    soft = lambda: any(e["layer"] == "tcp" and e["event"] == "icmp"  # noqa: E731
                       for e in events)
    run_until(clock, [a], soft, clock.t + 30)
    icmp = next(e for e in events if e["layer"] == "tcp" and e["event"] == "icmp")
    assert icmp["conn"] == name and icmp["kind"] == "host_unreachable"
    assert a.connections()[0]["state"] == "ESTABLISHED"  # soft: the connection goes on
    assert c.send(b"three") == 5
    run_until(clock, [a], lambda: not a.connections(), clock.t + 600)
    try:
        c.recv(10)
    except OSError as e:
        assert e.errno == errno.EHOSTUNREACH  # not ETIMEDOUT
    else:
        raise AssertionError("the connection did not fail")
    closed = [e for e in events if e.get("event") == "state" and e["to"] == "CLOSED"]
    assert closed[-1]["from"] == "ESTABLISHED"
    assert closed[-1]["cause"] == "timer retransmit (retries exhausted)"
    for s in (c, peer, srv):
        s.close()
    a.close(grace=0)
    b.close(grace=0)
