"""Stream sockets for the contract tests (tests/socket/test_tcp_*.py): the same case runs
against Python's own socket module on 127.0.0.1 (``KernelWorld``) and against two
stacks joined by an in-memory link (``StackWorld``: server on 192.0.2.1, client on
192.0.2.2), and must behave the same way.
"""

from __future__ import annotations

import socket

import pytest

import stack

MB = 1 << 20


class KernelWorld:
    name = "kernel"
    server_host = "127.0.0.1"
    client_host = "127.0.0.1"

    def server_socket(self):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def client_socket(self):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def create_server(self, address, **kw):
        return socket.create_server(address, **kw)

    def create_connection(self, address, timeout=5):
        return socket.create_connection(address, timeout=timeout)

    def same_host_connection(self, address, timeout=5):
        return socket.create_connection(address, timeout=timeout)

    def close(self):
        pass


class StackWorld:
    name = "stack"
    server_host = "192.0.2.1"
    client_host = "192.0.2.2"

    def __init__(self):
        self.a, self.b = stack.Stack.pair()

    def server_socket(self):
        return self.a.socket(stack.AF_INET, stack.SOCK_STREAM)

    def client_socket(self):
        return self.b.socket(stack.AF_INET, stack.SOCK_STREAM)

    def create_server(self, address, **kw):
        return self.a.create_server(address, **kw)

    def create_connection(self, address, timeout=5):
        return self.b.create_connection(address, timeout=timeout)

    def same_host_connection(self, address, timeout=5):
        return self.a.create_connection(address, timeout=timeout)

    def close(self):
        self.a.close()
        self.b.close()


def world_fixture():
    """A pytest fixture: each test runs once against the kernel and once against the stack."""

    @pytest.fixture(params=["kernel", "stack"])
    def world(request):
        w = KernelWorld() if request.param == "kernel" else StackWorld()
        yield w
        w.close()

    return world


def connected(world, timeout=5):
    """A listener, a client connected to it and the accepted socket."""
    srv = world.create_server((world.server_host, 0))
    srv.settimeout(timeout)
    cli = world.create_connection(srv.getsockname(), timeout=timeout)
    conn, _ = srv.accept()
    conn.settimeout(timeout)
    return srv, cli, conn


def closed_port(world):
    """A port on the server host that nothing listens on."""
    s = world.server_socket()
    s.bind((world.server_host, 0))
    port = s.getsockname()[1]
    s.close()
    return (world.server_host, port)


def recv_exactly(s, n):
    chunks = []
    while n:
        data = s.recv(min(n, 65536))
        assert data, f"EOF with {n} bytes missing"
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def recv_all(s):
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def pattern(n, salt=0):
    block = bytes((i * 7 + salt) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]
