"""What a socket user expects beyond the basics: dup, detach, inheritable,
the ResourceWarning of a socket never closed, SO_LINGER with a time, IP_TTL
on the wire, SO_BROADCAST, create_server's refusals and backlog,
create_connection through getaddrinfo (each address in turn, all_errors,
_GLOBAL_DEFAULT_TIMEOUT), and the readiness descriptor with poll/epoll.

Cases with a kernel counterpart run in both worlds (tests/helpers/sockets.py).
"""

from __future__ import annotations

import errno
import gc
import os
import select
import socket
import struct
import time

import pytest

import stack
from stack.link.base import LinkWrapper
from stack.link.memory import MemoryLink
from tests.helpers.sockets import world_fixture

world = world_fixture()


def connected(world):
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    conn.settimeout(5)
    cli.settimeout(5)
    return srv, cli, conn


def read_all(sock) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def test_dup_shares_the_connection_until_the_last_close(world):
    srv, cli, conn = connected(world)
    with srv, conn:
        twin = cli.dup()
        assert twin.getsockname() == cli.getsockname()
        assert twin.gettimeout() == cli.gettimeout()
        cli.close()
        assert cli.fileno() == -1
        twin.sendall(b"still open")
        assert conn.recv(100) == b"still open"
        twin.close()
        assert read_all(conn) == b""  # the last close sent the FIN


def test_inheritable_is_off_by_default_and_settable(world):
    with world.client_socket() as s:
        assert s.get_inheritable() is False
        assert os.get_inheritable(s.fileno()) is False
        s.set_inheritable(True)
        assert s.get_inheritable() is True and os.get_inheritable(s.fileno()) is True


def test_detach_is_refused_and_the_socket_stays_usable():
    a, b = stack.Stack.pair()
    with a, b, a.create_server(("192.0.2.1", 0)) as srv:
        cli = b.create_connection(srv.getsockname(), timeout=5)
        conn, _ = srv.accept()
        with cli, conn:
            with pytest.raises(OSError) as e:
                cli.detach()
            assert e.value.errno == errno.EOPNOTSUPP
            cli.sendall(b"after detach")
            conn.settimeout(5)
            assert conn.recv(100) == b"after detach"


def test_a_socket_never_closed_warns_and_is_closed():
    a, b = stack.Stack.pair()
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        port = srv.getsockname()[1]
        with pytest.warns(ResourceWarning, match=r"unclosed <stack\.Socket fd=-1, family=2, "
                                                 r"type=1, proto=6, laddr=\('192\.0\.2\.1'"):
            del srv
            gc.collect()
        assert not [c for c in a.connections() if c["state"] == "LISTEN"]
        with a.create_server(("192.0.2.1", port)) as again:  # the port is free again
            assert again.getsockname()[1] == port


def test_a_socket_collected_under_the_stack_lock_is_closed_once_it_is_free():
    """The collector may run in the middle of protocol work (which holds the
    lock): the close waits for the lock instead of re-entering that work."""
    a, b = stack.Stack.pair()
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        with a.lock, pytest.warns(ResourceWarning, match="unclosed <stack.Socket"):
            del srv
            gc.collect()
            time.sleep(0.1)
            assert [c for c in a.connections() if c["state"] == "LISTEN"]
        deadline = time.monotonic() + 5
        while [c for c in a.connections() if c["state"] == "LISTEN"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_linger_with_a_time_waits_for_the_fin_to_be_acknowledged():
    """Each way 150 ms: a lingering close returns once the peer acknowledged
    the FIN (about 300 ms); without linger, or with linger 0 (a reset), at once."""
    a, b = stack.Stack.pair(impair="delay=150,seed=1")
    with a, b, b.create_server(("192.0.2.2", 0)) as srv:
        def close_time(linger: tuple[int, int]) -> tuple[float, str]:
            cli = a.create_connection(srv.getsockname(), timeout=5)
            conn, _ = srv.accept()
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", *linger))
            start = time.monotonic()
            cli.close()
            took = time.monotonic() - start
            conn.close()
            states = {c["state"] for c in a.connections() if c["proto"] == "tcp"
                      and c["local"] != srv.getsockname()}
            return took, ",".join(sorted(states))

        took, states = close_time((1, 5))
        assert 0.25 < took < 1.5
        assert "FIN_WAIT_1" not in states
        took, states = close_time((0, 0))
        assert took < 0.1 and "FIN_WAIT_1" in states
        took, _ = close_time((1, 0))  # linger 0: reset, no wait
        assert took < 0.1


def test_linger_shorter_than_the_round_trip_gives_up_after_it():
    """Each way 700 ms: a 1 s linger returns after about 1 s, the FIN still
    unacknowledged, and the close goes on by itself (as Linux)."""
    a, b = stack.Stack.pair(impair="delay=700,seed=1")
    with a, b, b.create_server(("192.0.2.2", 0)) as srv:
        cli = a.create_connection(srv.getsockname(), timeout=10)
        conn, _ = srv.accept()
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 1))
        start = time.monotonic()
        cli.close()
        assert 0.9 < time.monotonic() - start < 1.3

        def client_states():
            return {c["state"] for c in a.connections() if c["proto"] == "tcp"}

        assert client_states() == {"FIN_WAIT_1"}
        deadline = time.monotonic() + 5
        while "FIN_WAIT_1" in client_states() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client_states() <= {"FIN_WAIT_2", "TIME_WAIT"}
        conn.close()


class Recording(LinkWrapper):
    """Keeps every frame the stack sends (to read their IP headers)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(bytes(frame))
        super().send(frame)


def ip_packets(frames, proto):
    """(ttl, payload length) of the IPv4 packets of ``proto`` in ``frames``."""
    return [f[22] for f in frames if f[12:14] == b"\x08\x00" and f[23] == proto]


def test_ip_ttl_is_the_ttl_of_the_sockets_packets():
    la, lb = MemoryLink.pair()
    rec = Recording(la)
    a = stack.Stack(rec, address="192.0.2.1/24")
    b = stack.Stack(lb, address="192.0.2.2/24")
    with a, b, b.create_server(("192.0.2.2", 0)) as srv:
        s = a.socket()
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 7)
        s.settimeout(5)
        s.connect(srv.getsockname())
        conn, _ = srv.accept()
        with s, conn:
            s.sendall(b"x" * 3000)
            conn.settimeout(5)
            got = 0
            while got < 3000:
                got += len(conn.recv(65536))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 99)  # also on an open connection
            s.sendall(b"y")
            assert conn.recv(10) == b"y"
        ttls = ip_packets(rec.sent, 6)
        assert ttls[0] == 7 and set(ttls) == {7, 99}  # the SYN first
        with a.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                b.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("192.0.2.2", 0))
            u.sendto(b"default", peer.getsockname())
            u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3)
            u.sendto(b"three", peer.getsockname())
            peer.settimeout(5)
            assert [peer.recv(10), peer.recv(10)] == [b"default", b"three"]
        assert ip_packets(rec.sent, 17)[-2:] == [64, 3]


def test_so_broadcast_lets_a_datagram_reach_the_link():
    a, b = stack.Stack.pair()
    with a, b, a.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
            b.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("", 0))
        port = peer.getsockname()[1]
        with pytest.raises(PermissionError):
            u.sendto(b"x", ("255.255.255.255", port))
        u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert u.sendto(b"hello all", ("<broadcast>", port)) == 9
        assert u.sendto(b"hello subnet", ("192.0.2.255", port)) == 12
        peer.settimeout(5)
        assert peer.recvfrom(100) == (b"hello all", ("192.0.2.1", u.getsockname()[1]))
        assert peer.recv(100) == b"hello subnet"


def test_create_server_refuses_what_the_stack_lacks_as_cpython_does():
    a, b = stack.Stack.pair()
    with a, b:
        with pytest.raises(ValueError, match="^SO_REUSEPORT not supported on this platform$"):
            a.create_server(("192.0.2.1", 0), reuse_port=True)
        with pytest.raises(ValueError, match="^dualstack_ipv6 not supported on this platform$"):
            a.create_server(("192.0.2.1", 0), dualstack_ipv6=True)
        with pytest.raises(OSError) as e:
            a.create_server(("192.0.2.1", 0), family=socket.AF_INET6)
        assert e.value.errno == errno.EAFNOSUPPORT
        with pytest.raises(OSError) as e, a.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        assert e.value.errno == errno.ENOPROTOOPT
        with a.create_server(("192.0.2.1", 0), backlog=3) as srv:
            assert srv.status()["backlog"] == 3
            with pytest.raises(OSError) as e:
                a.create_server(srv.getsockname())
            assert e.value.errno == errno.EADDRINUSE
            assert "while attempting to bind on address" in e.value.strerror
        with a.create_server(("192.0.2.1", 0)) as srv:
            assert srv.status()["backlog"] == min(socket.SOMAXCONN, 128)  # listen()'s default


def test_create_connection_takes_the_global_default_timeout():
    a, b = stack.Stack.pair()
    with a, b, a.create_server(("192.0.2.1", 0)) as srv:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(7.5)
        try:
            with b.create_connection(srv.getsockname(), socket._GLOBAL_DEFAULT_TIMEOUT) as s:
                assert s.gettimeout() == 7.5
        finally:
            socket.setdefaulttimeout(old)
        with b.create_connection(srv.getsockname()) as s:
            assert s.gettimeout() is None


def test_create_connection_tries_each_address_in_turn():
    a, b = stack.Stack.pair()
    with a, b, a.create_server(("192.0.2.1", 0)) as srv:
        port = srv.getsockname()[1]
        refused = ("192.0.2.1", port + 1 if port < 65535 else port - 1)
        answers = {"many": [refused, ("192.0.2.1", port)], "none": [refused, refused]}
        asked = []

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            asked.append((host, port, family, type))
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", sa) for sa in answers[host]]

        b.getaddrinfo = getaddrinfo  # the name service the facade asks
        with b.create_connection(("many", port), timeout=5) as s:
            assert s.getpeername() == ("192.0.2.1", port)
        assert asked == [("many", port, 0, socket.SOCK_STREAM)]
        with pytest.raises(ConnectionRefusedError):
            b.create_connection(("none", port), timeout=5)
        with pytest.raises(ExceptionGroup) as group:
            b.create_connection(("none", port), timeout=5, all_errors=True)
        assert [type(e) for e in group.value.exceptions] == [ConnectionRefusedError] * 2
        assert not [c for c in b.connections() if c["proto"] == "tcp"
                    and c["state"] not in ("TIME_WAIT",) and c["owner"]]


@pytest.mark.parametrize("waiter", ["poll", "epoll"])
def test_readiness_with_poll_and_epoll(world, waiter):
    """Readable when data, EOF or a connection waits; writable once a
    non-blocking connect completes (what asyncio and urllib3 wait on)."""
    def ready(sock, events, timeout=5.0):
        if waiter == "poll":
            p = select.poll()
            p.register(sock.fileno(), events)
            return [ev for _, ev in p.poll(timeout * 1000)]
        with select.epoll() as ep:
            ep.register(sock.fileno(), events)
            return [ev for _, ev in ep.poll(timeout)]

    srv = world.create_server((world.server_host, 0))
    with srv:
        assert ready(srv, select.POLLIN, 0) == []
        cli = world.client_socket()
        cli.setblocking(False)
        assert cli.connect_ex(srv.getsockname()) in (0, errno.EINPROGRESS)
        assert ready(cli, select.POLLOUT)[0] & select.POLLOUT
        assert ready(srv, select.POLLIN)[0] & select.POLLIN
        conn, _ = srv.accept()
        with cli, conn:
            assert ready(conn, select.POLLIN, 0) == []
            cli.send(b"x")
            assert ready(conn, select.POLLIN)[0] & select.POLLIN
            assert conn.recv(10) == b"x"
            assert ready(conn, select.POLLIN, 0) == []
            cli.shutdown(socket.SHUT_WR)
            assert ready(conn, select.POLLIN)[0] & select.POLLIN
            assert conn.recv(10) == b""


def test_readiness_of_a_fresh_socket_and_a_listener(world):
    """A socket neither connected nor listening is readable and writable
    (its calls fail at once); a listener is neither until a connection waits."""
    with world.client_socket() as s:
        assert select.select([s], [s], [], 0)[:2] == ([s], [s])
        s.bind((world.client_host, 0))
        assert select.select([s], [s], [], 0)[:2] == ([s], [s])
        s.listen()
        assert select.select([s], [s], [], 0)[:2] == ([], [])


def test_a_socket_closed_after_its_stack_and_trace_file_raises_nothing(tmp_path):
    # urllib3's pool finalizers close sockets at interpreter exit, after the stack.
    import stack

    path = tmp_path / "t.jsonl"
    a, b = stack.Stack.pair(trace=stack.Trace(open(path, "w"), "jsonl"))
    s = a.socket()
    s.bind(("0.0.0.0", 0))
    a.close()
    b.close()
    s.close()
    assert path.read_text().count('"event": "bind"') == 1
