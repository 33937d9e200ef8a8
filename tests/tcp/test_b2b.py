"""Two TcpLayers back to back through a lossy, duplicating, reordering and
corrupting queue on a manual clock: bulk data arrives byte-exact both ways and
both connections walk the full RFC state sequence."""

from __future__ import annotations

import random

import pytest

from stack.tcp import TcpConfig

from tests.helpers.tcp import LossyNet


def pattern(n: int, salt: int) -> bytes:
    return random.Random(salt).randbytes(n)


def run_transfer(net: LossyNet, size: int, limit_time: float = 3600.0):
    lst = net.b.listen((0, 80), 8, net.now)
    client = net.a.connect(net.A, (net.B, 80), net.now)
    data_a = pattern(size, 1)
    data_b = pattern(size, 2)
    got_a = bytearray()  # what the client received
    got_b = bytearray()  # what the server received
    server = None
    sent = {"a": 0, "b": 0}
    closed = {"a": False, "b": False}
    eof = {"a": False, "b": False}

    def pump(conn, key, data, got):
        if conn is None:
            return
        if conn.state in ("ESTABLISHED", "CLOSE_WAIT") and sent[key] < len(data):
            n = conn.send(memoryview(data)[sent[key]:sent[key] + 65536], net.now)
            sent[key] += n
        if sent[key] == len(data) and not closed[key] and conn.state in ("ESTABLISHED",
                                                                          "CLOSE_WAIT"):
            conn.shutdown_write(net.now)
            closed[key] = True
        while True:
            chunk = conn.recv(1 << 20)
            if not chunk:
                if chunk == b"":
                    eof[key] = True
                break
            got += chunk
        if eof[key] and closed[key] and conn.state not in ("CLOSED",):
            pass

    while net.now < limit_time:
        if server is None:
            server = lst.accept()
        pump(client, "a", data_a, got_a)
        pump(server, "b", data_b, got_b)
        if eof["a"] and eof["b"] and closed["a"] and closed["b"]:
            # Both halves done: let the closes finish (TIME_WAIT included).
            if client.state == "CLOSED" and server.state == "CLOSED":
                break
        if not net.step():
            break
    return client, server, data_a, data_b, got_a, got_b


@pytest.mark.parametrize("seed", [1, 2])
def test_bulk_both_ways_over_a_bad_network(seed):
    net = LossyNet(seed, loss=0.02, dup=0.01, corrupt=0.01, delay=0.005, jitter=0.004)
    client, server, data_a, data_b, got_a, got_b = run_transfer(net, 2 * 1024 * 1024)
    info = f"seed={seed} stats={net.stats}"
    assert bytes(got_b) == data_a, info
    assert bytes(got_a) == data_b, info
    assert client.state == "CLOSED" and server.state == "CLOSED", info
    assert client.error is None and server.error is None, info
    # Corrupted segments were caught by the checksum and dropped, counted.
    if net.stats["corrupt"]:
        drops = sum(tr.drops().get("tcp.drop.bad_checksum", 0) for tr in net.traces.values())
        assert drops > 0, info


def state_path(net: LossyNet, node: str, conn_name: str) -> list[str]:
    evs = [e for e in net.events if e["event"] == "state" and e["node"] == node
           and e["conn"] == conn_name]
    return [evs[0]["from"]] + [e["to"] for e in evs] if evs else []


@pytest.mark.parametrize("seed,loss", [(3, 0.0), (4, 0.05)])
def test_active_and_passive_close_state_sequences(seed, loss):
    net = LossyNet(seed, loss=loss, delay=0.002, jitter=0.001)
    lst = net.b.listen((0, 80), 8, net.now)
    client = net.a.connect(net.A, (net.B, 80), net.now)
    msg = pattern(100_000, 3)
    sent = 0
    server = None
    received = bytearray()
    server_closed = False
    while net.now < 600:
        if server is None:
            server = lst.accept()
        if client.state == "ESTABLISHED" and sent < len(msg):
            sent += client.send(memoryview(msg)[sent:], net.now)
            if sent == len(msg):
                client.close(net.now)   # active close, data still buffered
        if server is not None and not server_closed:
            while True:
                chunk = server.recv(65536)
                if not chunk:
                    break
                received += chunk
            if chunk == b"":
                server.close(net.now)   # passive close after EOF
                server_closed = True
        if client.state == "CLOSED" and server is not None and server.state == "CLOSED":
            break
        if not net.step():
            break
    info = f"seed={seed} stats={net.stats}"
    assert bytes(received) == msg, info
    assert state_path(net, "a", client.name) == [
        "CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT",
        "CLOSED"], info
    assert state_path(net, "b", server.name) == [
        "LISTEN", "SYN_RECEIVED", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"], info
    assert net.a.next_deadline() is None and net.b.next_deadline() is None, info
    assert net.a.connections() == [] and net.b.connections() == [], info


@pytest.mark.parametrize("seed", range(5, 11))
def test_smaller_transfers_many_seeds_heavy_impairment(seed):
    cfg = TcpConfig(rcvbuf=32768, sndbuf=32768)
    net = LossyNet(seed, loss=0.1, dup=0.05, corrupt=0.05, delay=0.003, jitter=0.006,
                   config=cfg, trace_events=False)
    client, server, data_a, data_b, got_a, got_b = run_transfer(net, 200_000)
    info = f"seed={seed} stats={net.stats}"
    assert bytes(got_b) == data_a and bytes(got_a) == data_b, info
    assert client.state == server.state == "CLOSED", info


@pytest.mark.parametrize("seed", range(20, 28))
def test_slow_reader_tiny_buffers_small_mss(seed):
    """Zero windows, persist probes, SWS avoidance and retransmissions into a
    closing window, with random write sizes and a reader that lags."""
    cfg = TcpConfig(rcvbuf=3000, sndbuf=5000, mss=700, nodelay=seed % 3 == 0)
    net = LossyNet(seed, loss=0.1 if seed % 2 else 0.0, dup=0.03, delay=0.002, jitter=0.003,
                   config=cfg, trace_events=False)
    lst = net.b.listen((0, 80), 8, 0.0)
    client = net.a.connect(net.A, (net.B, 80), 0.0)
    data = pattern(60000, seed)
    rng = random.Random(seed + 1000)
    sent, got, server, closed = 0, bytearray(), None, False

    def read():
        while True:
            chunk = server.recv(rng.randrange(1, 2000))
            if not chunk:
                if chunk == b"" and server.state == "CLOSE_WAIT":
                    server.close(net.now)
                return chunk
            got.extend(chunk)

    while net.now < 100000:
        if server is None:
            server = lst.accept()
        if client.state == "ESTABLISHED" and sent < len(data):
            sent += client.send(data[sent:sent + rng.randrange(1, 3000)], net.now)
        if sent == len(data) and not closed and client.state == "ESTABLISHED":
            client.close(net.now)
            closed = True
        if server is not None and rng.random() < 0.3:
            read()
        if client.state == "CLOSED" and server is not None and server.state == "CLOSED":
            break
        if not net.step() and (server is None or read() is None):
            break
    info = f"seed={seed} stats={net.stats}"
    assert bytes(got) == data, info
    assert client.state == server.state == "CLOSED" and client.error is None, info
