"""Datagram-socket contract: the same cases against Python's own socket module
(on loopback) and against the stack (two stacks on an in-memory link).

A case passes only if the stack behaves as the kernel does.
"""

from __future__ import annotations

import errno
import select
import selectors
import socket
import threading
import time

import pytest

import stack


class KernelWorld:
    name = "kernel"
    server_host = "127.0.0.1"
    foreign_addr = "192.0.2.77"  # not assigned to any interface in the test namespace

    def server(self):
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def client(self):
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def close(self):
        pass


class StackWorld:
    name = "stack"
    server_host = "192.0.2.1"
    foreign_addr = "192.0.2.77"

    def __init__(self):
        self.a, self.b = stack.Stack.pair()

    def server(self):
        return self.a.socket(stack.AF_INET, stack.SOCK_DGRAM)

    def client(self):
        return self.b.socket(stack.AF_INET, stack.SOCK_DGRAM)

    def close(self):
        self.a.close()
        self.b.close()


@pytest.fixture(params=["kernel", "stack"])
def world(request):
    w = KernelWorld() if request.param == "kernel" else StackWorld()
    yield w
    w.close()


def _pair(world):
    srv = world.server()
    srv.bind((world.server_host, 0))
    cli = world.client()
    for s in (srv, cli):
        s.settimeout(2)
    return srv, cli


def test_roundtrip_and_addresses(world):
    srv, cli = _pair(world)
    with srv, cli:
        port = srv.getsockname()[1]
        assert port > 0
        assert cli.getsockname() == ("0.0.0.0", 0)
        assert cli.sendto(b"ping", (world.server_host, port)) == 4
        data, addr = srv.recvfrom(100)
        assert data == b"ping"
        assert addr[1] == cli.getsockname()[1]
        srv.sendto(b"pong", addr)
        data, addr2 = cli.recvfrom(100)
        assert data == b"pong" and addr2 == (world.server_host, port)


def test_large_datagram_and_empty_datagram(world):
    srv, cli = _pair(world)
    with srv, cli:
        dst = srv.getsockname()
        payload = bytes(i % 256 for i in range(8000))
        cli.sendto(payload, dst)
        assert srv.recv(65535) == payload
        cli.sendto(b"", dst)
        assert srv.recv(10) == b""


def test_oversized_datagram_is_emsgsize(world):
    srv, cli = _pair(world)
    with srv, cli:
        with pytest.raises(OSError) as e:
            cli.sendto(b"x" * 65508, srv.getsockname())
        assert e.value.errno == errno.EMSGSIZE


def test_truncation_discards_rest(world):
    srv, cli = _pair(world)
    with srv, cli:
        dst = srv.getsockname()
        cli.sendto(b"0123456789", dst)
        cli.sendto(b"abc", dst)
        assert srv.recv(4) == b"0123"
        assert srv.recv(100) == b"abc"


def test_peek_leaves_datagram(world):
    srv, cli = _pair(world)
    with srv, cli:
        cli.sendto(b"peek", srv.getsockname())
        assert srv.recv(100, socket.MSG_PEEK) == b"peek"
        assert srv.recv(100) == b"peek"


def test_recv_into_and_recvfrom_into(world):
    srv, cli = _pair(world)
    with srv, cli:
        dst = srv.getsockname()
        cli.sendto(b"hello", dst)
        cli.sendto(b"world!", dst)
        buf = bytearray(10)
        assert srv.recv_into(buf) == 5 and buf[:5] == b"hello"
        n, addr = srv.recvfrom_into(buf, 3)
        assert n == 3 and buf[:3] == b"wor" and addr[1] == cli.getsockname()[1]


def test_bind_conflicts_and_bad_address(world):
    srv, cli = _pair(world)
    with srv, cli:
        same_host = world.server()
        with same_host, pytest.raises(OSError) as e:
            same_host.bind(srv.getsockname())
        assert e.value.errno == errno.EADDRINUSE
        other = world.server()
        with other, pytest.raises(OSError) as e:
            other.bind((world.foreign_addr, 0))
        assert e.value.errno == errno.EADDRNOTAVAIL


def test_timeout_and_nonblocking_modes(world):
    srv, cli = _pair(world)
    with srv, cli:
        srv.settimeout(0.1)
        assert srv.gettimeout() == 0.1 and srv.getblocking()
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            srv.recv(10)
        assert time.monotonic() - t >= 0.09
        srv.setblocking(False)
        assert srv.gettimeout() == 0.0 and not srv.getblocking()
        with pytest.raises(BlockingIOError) as e:
            srv.recv(10)
        assert e.value.errno == errno.EAGAIN
        srv.setblocking(True)
        assert srv.gettimeout() is None


def test_send_unconnected_and_getpeername(world):
    srv, cli = _pair(world)
    with srv, cli:
        with pytest.raises(OSError) as e:
            cli.send(b"x")
        assert e.value.errno == errno.EDESTADDRREQ
        with pytest.raises(OSError) as e:
            cli.getpeername()
        assert e.value.errno == errno.ENOTCONN
        cli.connect(srv.getsockname())
        assert cli.getpeername() == srv.getsockname()
        cli.send(b"connected")
        assert srv.recv(100) == b"connected"


def test_connected_to_closed_port_is_refused(world):
    srv, cli = _pair(world)
    with srv, cli:
        closed = srv.getsockname()
        srv.close()
        cli.connect(closed)
        cli.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            cli.recv(100)
        assert cli.connect_ex(closed) == 0


def test_closed_socket_raises_ebadf(world):
    srv, cli = _pair(world)
    srv.close()
    cli.close()
    assert srv.fileno() == -1
    with pytest.raises(OSError) as e:
        srv.recv(10)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError) as e:
        cli.sendto(b"x", ("127.0.0.1", 9))
    assert e.value.errno == errno.EBADF
    srv.close()  # closing twice is harmless


def test_select_and_selectors_wake_on_datagram(world):
    srv, cli = _pair(world)
    with srv, cli:
        assert select.select([srv], [], [], 0)[0] == []
        assert select.select([], [srv], [], 0)[1] == [srv]
        threading.Timer(0.05, lambda: cli.sendto(b"wake", srv.getsockname())).start()
        r, _, _ = select.select([srv], [], [], 2)
        assert r == [srv]
        assert srv.recv(10) == b"wake"
        assert select.select([srv], [], [], 0)[0] == []
        with selectors.DefaultSelector() as sel:
            sel.register(srv, selectors.EVENT_READ)
            cli.sendto(b"again", srv.getsockname())
            events = sel.select(2)
            assert [key.fileobj for key, _ in events] == [srv]
        assert srv.recv(10) == b"again"


def test_receive_buffer_bounds_queue(world):
    srv, cli = _pair(world)
    with srv, cli:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 8192
        dst = srv.getsockname()
        for _ in range(200):
            cli.sendto(b"z" * 1000, dst)
        time.sleep(0.3)
        srv.setblocking(False)
        got = 0
        try:
            while True:
                srv.recv(2000)
                got += 1
        except BlockingIOError:
            pass
        assert 0 < got < 200


def test_options_roundtrip(world):
    srv, cli = _pair(world)
    with srv, cli:
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM
        assert srv.type == socket.SOCK_DGRAM and srv.family == socket.AF_INET


# -- stack-only behaviour -----------------------------------------------------


def test_close_wakes_a_blocked_reader():
    a, b = stack.Stack.pair()
    with a, b:
        s = a.socket(stack.AF_INET, stack.SOCK_DGRAM)
        s.bind(("0.0.0.0", 7000))
        errors = []

        def reader():
            try:
                s.recv(100)
            except OSError as e:
                errors.append(e.errno)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.1)
        assert t.is_alive()
        s.close()
        t.join(2)
        assert not t.is_alive() and errors == [errno.EBADF]


def test_receive_queue_full_is_counted():
    a, b = stack.Stack.pair()
    with a, b:
        srv = a.socket(stack.AF_INET, stack.SOCK_DGRAM)
        srv.setsockopt(stack.SOL_SOCKET, stack.SO_RCVBUF, 1024)
        srv.bind(("0.0.0.0", 7001))
        cli = b.socket(stack.AF_INET, stack.SOCK_DGRAM)
        for _ in range(50):
            cli.sendto(b"q" * 500, ("192.0.2.1", 7001))
        def seen():
            st = a.stats()
            return st.get("udp.drop.receive_queue_full", 0) + st.get("udp.datagrams_in", 0)

        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and seen() < 50:
            time.sleep(0.01)
        drops = a.stats()["udp.drop.receive_queue_full"]
        delivered = a.stats()["udp.datagrams_in"]
        assert drops > 0 and delivered + drops == 50
        assert delivered * 500 <= 2048 + 500  # what SO_RCVBUF (doubled) lets in


def test_constants_mirror_socket_module():
    for name in ("AF_INET", "SOCK_STREAM", "SOCK_DGRAM", "SOL_SOCKET", "SO_REUSEADDR",
                 "SO_RCVBUF", "SO_SNDBUF", "SO_KEEPALIVE", "TCP_NODELAY", "IPPROTO_TCP",
                 "SHUT_RDWR"):
        assert getattr(stack, name) == getattr(socket, name)
