"""``net.connections()``, ``net.neighbour_table()`` and ``net.routes()`` on a
stack pair: every state a user can put a socket in, the queues ss shows,
and the per-connection counters against what really went through."""

from __future__ import annotations

import json
import time

import pytest

from stack import SOCK_DGRAM, Stack
from tests.helpers import frames
from tests.helpers.tap import wait_for


@pytest.fixture
def pair():
    a, b = Stack.pair()
    yield a, b
    a.close(grace=0)
    b.close(grace=0)


def find(net, state=None, lport=None, rport=None, proto="tcp"):
    out = [s for s in net.connections() if s["proto"] == proto
           and (state is None or s["state"] == state)
           and (lport is None or s["local"][1] == lport)
           and (rport is None or s["remote"][1] == rport)]
    return out[0] if len(out) == 1 else None


def test_listener_established_and_the_queues(pair):
    a, b = pair
    srv = b.create_server(("0.0.0.0", 7000), backlog=3)
    c1 = a.create_connection(("192.0.2.2", 7000), timeout=5)
    c2 = a.create_connection(("192.0.2.2", 7000), timeout=5)
    lst = wait_for(lambda: (s := find(b, "LISTEN", 7000)) and s["recv_q"] == 2 and s)
    assert lst["send_q"] == 3 and lst["remote"] == ["0.0.0.0", 0] and lst["info"] is None
    s1, _ = srv.accept()
    c1.sendall(b"x" * 5000)
    port = c1.getsockname()[1]
    est = wait_for(lambda: (s := find(b, "ESTABLISHED", 7000, port)) and s["recv_q"] == 5000
                   and s)
    assert est["local"] == ["192.0.2.2", 7000] and est["remote"] == ["192.0.2.1", port]
    assert est["send_q"] == 0 and est["owner"]["pid"] > 0
    info = est["info"]
    assert info["bytes_received"] == 5000 and info["bytes_sent"] == 0
    assert info["bytes_acked"] == 1                      # our SYN
    assert info["recv_buffered"] == 5000 and info["state"] == "ESTABLISHED"
    sent = wait_for(lambda: (s := find(a, "ESTABLISHED", port, 7000))
                    and s["info"]["bytes_acked"] == 5001 and s)
    assert sent["info"]["bytes_sent"] == 5000 and sent["info"]["bytes_received"] == 0
    assert sent["info"]["segs_out"] >= 5 and sent["info"]["retrans"] == 0
    assert s1.recv(10000) and wait_for(lambda: find(b, "ESTABLISHED", 7000, port)["recv_q"] < 5000)
    json.dumps(b.connections())                          # plain data all the way down
    for s in (s1, c1, c2, srv):
        s.close()


def test_close_wait_and_time_wait(pair):
    a, b = pair
    srv = b.create_server(("0.0.0.0", 7001))
    c = a.create_connection(("192.0.2.2", 7001), timeout=5)
    s, _ = srv.accept()
    port = c.getsockname()[1]
    c.close()                                # a closes first; b's program never does
    cw = wait_for(lambda: find(b, "CLOSE_WAIT", 7001, port))
    fw2 = wait_for(lambda: find(a, "FIN_WAIT_2", port, 7001))
    assert cw and fw2 and cw["owner"] is not None and fw2["owner"] is None
    s.close()                                # now b closes: a goes to TIME_WAIT
    tw = wait_for(lambda: find(a, "TIME_WAIT", port, 7001))
    assert tw["timer"][0] == "timewait" and 55 < tw["timer"][1] <= 60 and tw["timer"][2] == 0
    assert tw["owner"] is None
    assert wait_for(lambda: find(b, lport=7001, rport=port) is None)   # LAST_ACK -> gone
    srv.close()


def test_syn_received_for_a_peer_that_never_answers(pair):
    """A SYN from 192.0.2.99, a host that is not there: the SYN,ACK waits on
    ARP and the connection stays half-open, with its retransmission timer."""
    a, b = pair
    srv = b.create_server(("0.0.0.0", 7002))
    syn = frames.tcp(frames.OTHER, frames.US, 40001, 7002, 1000, 0, frames.SYN,
                     frames.MSS_1460)
    frame = frames.eth(frames.ipv4(frames.OTHER, frames.US, 6, syn), src=frames.OTHER_MAC)
    with b.lock:
        b.receive_frame(frame, b.clock())
    half = find(b, "SYN_RECEIVED", 7002)
    assert half["remote"] == ["192.0.2.99", 40001] and half["owner"] is None
    assert half["timer"][0] == "on" and 0 < half["timer"][1] <= 1.0
    assert half["info"]["irs"] == 1000 and half["info"]["segs_in"] == 1
    assert find(b, "LISTEN", 7002)["recv_q"] == 0        # not in the accept queue yet
    srv.close()


def test_udp_sockets(pair):
    a, b = pair
    u = b.socket(type=SOCK_DGRAM)
    u.bind(("0.0.0.0", 5353))
    v = b.socket(type=SOCK_DGRAM)
    v.connect(("192.0.2.1", 9))
    x = a.socket(type=SOCK_DGRAM)
    x.sendto(b"hello", ("192.0.2.2", 5353))
    unconn = wait_for(lambda: (s := find(b, "UNCONN", 5353, proto="udp")) and s["recv_q"] and s)
    assert unconn["recv_q"] == 5 and unconn["remote"] == ["0.0.0.0", 0]
    conn = find(b, "ESTAB", proto="udp")
    assert conn["remote"] == ["192.0.2.1", 9]
    for s in (u, v, x):
        s.close()
    assert find(b, proto="udp") is None


def test_retransmit_timer_and_counters_on_a_lossy_link():
    a, b = Stack.pair(impair="loss=0.05,seed=3")
    try:
        srv = b.create_server(("0.0.0.0", 7003))
        c = a.create_connection(("192.0.2.2", 7003), timeout=10)
        s, _ = srv.accept()
        c.sendall(b"y" * 200_000)
        got = 0
        s.settimeout(20)
        while got < 200_000:
            got += len(s.recv(65536))
        port = c.getsockname()[1]
        info = find(a, "ESTABLISHED", port, 7003)["info"]
        assert info["retrans"] >= 1 and info["bytes_retrans"] > 0
        assert info["bytes_sent"] == 200_000 + info["bytes_retrans"]
        assert wait_for(lambda: find(a, "ESTABLISHED", port, 7003)["info"]["bytes_acked"]
                        == 200_001, timeout=20)
        assert find(b, "ESTABLISHED", 7003, port)["info"]["bytes_received"] == 200_000
        for x in (c, s, srv):
            x.close()
    finally:
        a.close(grace=0)
        b.close(grace=0)


def test_neighbours_and_routes():
    a, b = Stack.pair(gateway="192.0.2.254")
    try:
        assert b.routes() == [
            {"dst": "default", "via": "192.0.2.254", "dev": "mem0"},
            {"dst": "192.0.2.0/24", "dev": "mem0", "proto": "kernel", "scope": "link",
             "src": "192.0.2.2"},
            {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local",
             "proto": "kernel", "scope": "host", "src": "127.0.0.1"}]
        a.ping("192.0.2.2")
        assert b.neighbour_table() == [{"dst": "192.0.2.1", "dev": "mem0",
                                        "lladdr": "02:53:c0:00:02:01", "state": "REACHABLE"}]
        with pytest.raises(TimeoutError):
            b.ping("192.0.2.77", timeout=0.2)
        assert {"dst": "192.0.2.77", "dev": "mem0", "lladdr": None,
                "state": "INCOMPLETE"} in b.neighbour_table()
        assert b.neighbours() == {"192.0.2.1": "02:53:c0:00:02:01"}
    finally:
        a.close()
        b.close()


def test_stale_after_the_lifetime():
    from stack.net.arp import ArpConfig

    a, b = Stack.pair(arp_config=ArpConfig(entry_lifetime=0.3))
    try:
        a.ping("192.0.2.2")
        assert b.neighbour_table()[0]["state"] == "REACHABLE"
        time.sleep(0.4)
        assert b.neighbour_table()[0]["state"] == "STALE"
    finally:
        a.close()
        b.close()
