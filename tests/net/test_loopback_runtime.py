"""Loopback and EHOSTUNREACH over the running stack (network thread, real clock).

Two stacks on an in-memory cable (``Stack.pair()``): everything here happens
inside ``a`` (192.0.2.1); ``b`` is only there to show that nothing for
127.0.0.0/8 crosses the cable.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest

from stack import Stack, control
from stack.cli import format_counters


@pytest.fixture
def pair():
    a, b = Stack.pair()
    for net in (a, b):
        net.events = []
        net.trace.subscribe(net.events.append)
    yield a, b
    a.close()
    b.close()


def echo_server(net: Stack, address: tuple[str, int]):
    srv = net.create_server(address)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_tcp_echo_over_127_0_0_1_in_one_stack(pair, tmp_path):
    a, b = pair
    b_before = b.stats().get("ip.packets_in", 0)
    srv, t = echo_server(a, ("0.0.0.0", 7000))
    data = bytes(i % 251 for i in range(1 << 20))
    with a.create_connection(("127.0.0.1", 7000), timeout=10) as c:
        assert c.getpeername() == ("127.0.0.1", 7000)
        c.sendall(data)
        c.shutdown(1)
        got = bytearray()
        while chunk := c.recv(1 << 20):
            got += chunk
    assert got == data
    t.join(timeout=10)
    srv.close()
    c = a.stats()
    assert c["link.lo.tx_bytes"] == c["link.lo.rx_bytes"] > 2 * len(data)
    assert c["link.lo.tx_packets"] == c["link.lo.rx_packets"]
    assert b.stats().get("ip.packets_in", 0) == b_before  # nothing crossed the cable
    lo = [e for e in a.events if e["layer"] == "link" and e.get("dev") == "lo"]
    assert {e["event"] for e in lo} == {"tx", "rx"}
    assert all(":7000" in e["conn"] for e in lo if "conn" in e)
    # `stack stats` shows lo like a link.
    path = str(tmp_path / "ctl")
    server = control.ControlServer(a, path, tap="mem0")
    try:
        text = format_counters(control.request(path, "stats")["counters"])
    finally:
        server.close()
    link = text.split("link:\n", 1)[1]
    assert "    lo.rx_packets: " in link and "    lo.tx_bytes: " in link


def test_udp_over_127_0_0_1_in_one_stack(pair):
    a, b = pair
    b_before = b.stats().get("ip.packets_in", 0)
    with a.socket(type=2) as srv, a.socket(type=2) as cli:
        srv.bind(("127.0.0.1", 5000))
        srv.settimeout(5)
        cli.settimeout(5)
        cli.sendto(b"ping", ("127.0.0.1", 5000))
        data, peer = srv.recvfrom(100)
        assert data == b"ping" and peer[0] == "127.0.0.1"
        srv.sendto(b"pong", peer)
        assert cli.recvfrom(100) == (b"pong", ("127.0.0.1", 5000))
    assert a.stats()["link.lo.rx_packets"] == 2
    assert b.stats().get("ip.packets_in", 0) == b_before
    assert not [e for e in b.events if e["layer"] == "udp"]


def test_a_listener_on_the_stack_address_refuses_127_0_0_1(pair):
    a, _ = pair
    with a.create_server(("192.0.2.1", 7001)):
        with pytest.raises(ConnectionRefusedError):
            a.create_connection(("127.0.0.1", 7001), timeout=5)


def test_ping_127_0_0_1(pair):
    a, _ = pair
    assert a.ping("127.0.0.1", size=20000, timeout=2) < 1.0
    assert a.stats().get("ip.fragmented", 0) == 0


def connect_result(net: Stack, timeout: float | None, out: dict, key: str) -> None:
    s = net.socket()
    s.settimeout(timeout)
    start = time.monotonic()
    try:
        s.connect(("192.0.2.77", 80))  # on-link; nobody answers ARP for it
        out[key] = (None, time.monotonic() - start)
    except OSError as e:
        out[key] = (e, time.monotonic() - start)
    finally:
        s.close()


def test_connect_to_a_silent_neighbour_blocking_timed_and_short(pair):
    a, _ = pair
    out: dict = {}
    threads = [threading.Thread(target=connect_result, args=(a, t, out, k))
               for k, t in (("blocking", None), ("timed", 10.0), ("short", 1.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    for key in ("blocking", "timed"):
        err, took = out[key]
        assert isinstance(err, OSError) and err.errno == errno.EHOSTUNREACH, (key, err)
        assert 2.8 < took < 4.0, (key, took)
    err, took = out["short"]
    assert isinstance(err, TimeoutError) and 0.9 < took < 1.5
