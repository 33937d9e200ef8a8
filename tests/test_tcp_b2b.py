"""Two TcpLayers back to back through a lossy, duplicating, reordering and
corrupting queue on a manual clock: bulk data arrives byte-exact both ways and
both connections walk the full RFC state sequence."""

from __future__ import annotations

import hashlib

import pytest

from stack.tcp import TcpConfig

from tcp_harness import LossyNet


def pattern(n: int, salt: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{salt}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


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
