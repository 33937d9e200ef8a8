"""StackSelector over two stacks on an in-memory link (no TAP, no root):
the selectors interface, level-triggered readiness, and the services run on
it with no descriptor per client."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time

import pytest

import stack
from stack.selector import StackSelector
from stack.services import start_service

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


@pytest.fixture
def pair():
    a, b = stack.Stack.pair()
    yield a, b
    a.close()
    b.close()


def _connected(a, b, port):
    listener = a.create_server(("192.0.2.1", port))
    client = b.create_connection(("192.0.2.1", port), timeout=5)
    server, _ = listener.accept()
    return listener, client, server


def test_registration_rules(pair):
    a, b = pair
    listener, client, server = _connected(a, b, 7100)
    with StackSelector.for_socket(server) as sel:
        with pytest.raises(ValueError):
            sel.register(socket.socket(), R)  # a kernel socket: not ours to watch
        with pytest.raises(ValueError):
            sel.register(server, 0)
        with pytest.raises(ValueError):
            sel.register(server, 8)
        key = sel.register(server, R, "s")
        assert (key.fileobj, key.fd, key.events, key.data) == (server, -1, R, "s")
        with pytest.raises(KeyError):
            sel.register(server, W)
        with pytest.raises(KeyError):
            sel.register(server.dup(), R)  # the same endpoint under another socket
        assert len(sel.get_map()) == 1 and sel.get_key(server) is key
        with pytest.raises(KeyError):
            sel.modify(client, R)
        with pytest.raises(KeyError):
            sel.unregister(client)
        assert sel.unregister(server) is key
        assert len(sel.get_map()) == 0
    # Closed: the socket is free for another selector.
    with StackSelector.for_socket(server) as other:
        other.register(server, R)
    for s in (listener, client, server):
        s.close()


def test_level_triggered_readiness_and_eof(pair):
    a, b = pair
    listener, client, server = _connected(a, b, 7101)
    server.setblocking(False)
    sel = StackSelector.for_socket(server)
    sel.register(server, R | W, "s")
    assert sel.select(1) == [(sel.get_key(server), W)]  # room to send, nothing to read
    sel.modify(server, R, "s")
    assert sel.select(0.05) == []
    client.sendall(b"abc")
    for _ in range(2):  # level-triggered: reported until read
        [(key, mask)] = sel.select(5)
        assert (key.data, mask) == ("s", R)
    assert server.recv(10) == b"abc"
    assert sel.select(0.05) == []
    client.close()
    assert [m for _, m in sel.select(5)] == [R]  # EOF is readable
    assert server.recv(10) == b""
    # A socket closed while registered is reported (its calls then fail at once).
    server.close()
    assert [m for _, m in sel.select(1)] == [R]
    sel.close()
    listener.close()


def test_wake_ends_a_select_in_another_thread(pair):
    a, _ = pair
    listener = a.create_server(("192.0.2.1", 7102))
    sel = StackSelector.for_socket(listener)
    sel.register(listener, R)
    got = []
    waiter = threading.Thread(target=lambda: got.append(sel.select(30)))
    waiter.start()
    time.sleep(0.1)
    started = time.monotonic()
    sel.wake()
    waiter.join(5)
    assert got == [[]] and time.monotonic() - started < 1
    sel.close()
    listener.close()


def test_services_on_a_stack_open_no_descriptor_per_client(pair):
    a, b = pair
    fds = len(os.listdir("/proc/self/fd"))
    svc = start_service(a, "echo:7")
    clients = [b.create_connection(("192.0.2.1", 7), timeout=5) for _ in range(50)]
    try:
        for k, c in enumerate(clients):
            c.sendall(b"%d" % k)
        for k, c in enumerate(clients):
            assert c.recv(10) == b"%d" % k
        assert svc.active_clients == 50
        # Neither side of 50 stack connections made a descriptor (a readiness
        # socketpair each would be 200; the slack is for other tests' leftovers
        # closing or opening meanwhile in this process).
        assert len(os.listdir("/proc/self/fd")) - fds < 10
    finally:
        for c in clients:
            c.close()
        svc.close()
