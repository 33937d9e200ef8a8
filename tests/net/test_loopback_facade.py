"""Loopback through the socket facade as on Linux (needs the facade to use
net.is_local, net.source_for, net.ip.check_route and net.udp.connect)."""

from __future__ import annotations

import errno
import socket

import pytest

from stack import Stack


@pytest.fixture
def net():
    a, b = Stack.pair()
    yield a
    a.close()
    b.close()


def test_tcp_to_127_0_0_1_from_an_unbound_socket_leaves_from_127_0_0_1(net):
    with net.create_server(("0.0.0.0", 7100)) as srv:
        with net.create_connection(("127.0.0.1", 7100), timeout=5) as c:
            peer, addr = srv.accept()
            with peer:
                assert c.getsockname()[0] == "127.0.0.1" and addr == c.getsockname()
                assert peer.getsockname() == ("127.0.0.1", 7100)


def test_tcp_bind_127_0_0_5_and_connect_to_0_0_0_0(net):
    with net.socket() as srv:
        srv.bind(("127.0.0.5", 7101))
        srv.listen()
        with net.create_connection(("127.0.0.5", 7101), timeout=5) as c:
            assert c.getpeername() == ("127.0.0.5", 7101)
            srv.accept()[0].close()
    with net.create_server(("0.0.0.0", 7102)):
        with net.create_connection(("0.0.0.0", 7102), timeout=5) as c:
            assert c.getpeername() == ("127.0.0.1", 7102)  # Linux: 0.0.0.0 is lo


def test_tcp_from_127_0_0_1_to_elsewhere_is_einval(net):
    with net.socket() as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as e:
            s.connect(("192.0.2.2", 80))
        assert e.value.errno == errno.EINVAL


def test_udp_connect_to_127_0_0_1_names_127_0_0_1(net):
    with net.socket(type=socket.SOCK_DGRAM) as u:
        u.connect(("127.0.0.1", 5300))
        assert u.getsockname()[0] == "127.0.0.1" and u.getpeername() == ("127.0.0.1", 5300)
