"""Stream sockets: timeouts, non-blocking mode, readiness (select, selectors) and wake-ups from other threads.

A case taking ``world`` runs against the kernel and against the stack
(tests/helpers/sockets.py) and passes only if both behave the same.
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
from tests.helpers.sockets import MB, connected, world_fixture

world = world_fixture()


# -- timeouts and non-blocking mode --------------------------------------------


def test_timeout_modes(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        assert cli.gettimeout() == 5
        conn.settimeout(0.1)
        assert conn.gettimeout() == 0.1 and conn.getblocking()
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.recv(10)
        assert 0.09 <= time.monotonic() - t < 1.0
        srv.settimeout(0.1)
        with pytest.raises(TimeoutError):
            srv.accept()
        conn.setblocking(False)
        assert conn.gettimeout() == 0.0 and not conn.getblocking()
        conn.setblocking(True)
        assert conn.gettimeout() is None and conn.getblocking()
        conn.settimeout(None)
        assert conn.gettimeout() is None
        with pytest.raises(ValueError):
            conn.settimeout(-1)


def test_sendall_times_out_when_peer_does_not_read(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        cli.settimeout(0.3)
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            cli.sendall(b"x" * (64 * MB))
        assert time.monotonic() - t < 3


def test_nonblocking_recv_and_accept(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        conn.setblocking(False)
        with pytest.raises(BlockingIOError) as e:
            conn.recv(10)
        assert e.value.errno == errno.EAGAIN
        with pytest.raises(BlockingIOError):
            conn.recv_into(bytearray(10))
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
        cli.sendall(b"now")
        assert select.select([conn], [], [], 5)[0] == [conn]
        assert conn.recv(10) == b"now"


def test_nonblocking_connect(world):
    with world.create_server((world.server_host, 0)) as srv:
        srv.settimeout(5)
        s = world.client_socket()
        with s:
            s.setblocking(False)
            with pytest.raises(BlockingIOError) as e:
                s.connect(srv.getsockname())
            assert e.value.errno == errno.EINPROGRESS
            _, w, _ = select.select([], [s], [], 5)
            assert w == [s]
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            assert s.getpeername() == srv.getsockname()
            conn, addr = srv.accept()
            with conn:
                assert addr == s.getsockname()
                s.send(b"hi")
                conn.settimeout(5)
                assert conn.recv(10) == b"hi"


def test_nonblocking_send_fills_then_blocks(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        assert select.select([], [cli], [], 0)[1] == [cli]
        cli.setblocking(False)
        sent = 0
        chunk = b"f" * 65536
        with pytest.raises(BlockingIOError):
            while True:
                sent += cli.send(chunk)
                assert sent < 256 * MB
        assert select.select([], [cli], [], 0)[1] == []
        # The peer drains it all; the sender becomes writable again.
        got = 0
        while got < sent:
            got += len(conn.recv(65536))
        assert select.select([], [cli], [], 5)[1] == [cli]
        assert cli.send(b"x") == 1


def test_msg_dontwait_and_msg_waitall(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        conn.settimeout(None)
        with pytest.raises(BlockingIOError):
            conn.recv(10, socket.MSG_DONTWAIT)
        with pytest.raises(BlockingIOError):
            conn.recv_into(bytearray(10), 0, socket.MSG_DONTWAIT)
        assert conn.gettimeout() is None  # the flag does not change the mode
        threading.Timer(0.05, lambda: cli.sendall(b"abc")).start()
        threading.Timer(0.2, lambda: cli.sendall(b"defg")).start()
        assert conn.recv(7, socket.MSG_WAITALL) == b"abcdefg"
        cli.sendall(b"xy")
        time.sleep(0.05)
        assert conn.recv(10, socket.MSG_DONTWAIT) == b"xy"
        cli.sendall(b"end")
        cli.shutdown(socket.SHUT_WR)
        assert conn.recv(10, socket.MSG_WAITALL) == b"end"  # EOF ends the wait
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:
                sent += conn.send(b"z" * 65536, socket.MSG_DONTWAIT)
                assert sent < 256 * MB
        assert sent > 0


# -- readiness -----------------------------------------------------------------


def test_select_readable_on_data_and_on_eof(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        assert select.select([conn], [], [], 0)[0] == []
        assert select.select([], [conn], [], 0)[1] == [conn]
        threading.Timer(0.05, lambda: cli.sendall(b"wake")).start()
        assert select.select([conn], [], [], 5)[0] == [conn]
        assert conn.recv(10) == b"wake"
        assert select.select([conn], [], [], 0)[0] == []
        with selectors.DefaultSelector() as sel:
            sel.register(conn, selectors.EVENT_READ)
            threading.Timer(0.05, cli.close).start()
            events = sel.select(5)
            assert [key.fileobj for key, _ in events] == [conn]
        assert conn.recv(10) == b""
        # EOF keeps the socket readable.
        assert select.select([conn], [], [], 0)[0] == [conn]


def test_select_readable_listener(world):
    with world.create_server((world.server_host, 0)) as srv:
        assert select.select([srv], [], [], 0)[0] == []
        cli = world.create_connection(srv.getsockname())
        with cli:
            assert select.select([srv], [], [], 5)[0] == [srv]
            conn, _ = srv.accept()
            conn.close()
            assert select.select([srv], [], [], 0)[0] == []


def test_selectors_echo_loop(world):
    with world.create_server((world.server_host, 0)) as srv:
        srv.setblocking(False)
        clients = [world.create_connection(srv.getsockname()) for _ in range(5)]
        sel = selectors.DefaultSelector()
        sel.register(srv, selectors.EVENT_READ, "listener")
        for i, c in enumerate(clients):
            c.sendall(f"client {i}\n".encode())
        replies = {}
        deadline = time.monotonic() + 5
        accepted = []
        while len(replies) < len(clients) and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                if key.data == "listener":
                    conn, _ = srv.accept()
                    conn.setblocking(False)
                    accepted.append(conn)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                else:
                    data = key.fileobj.recv(100)
                    key.fileobj.sendall(data.upper())
            for i, c in enumerate(clients):
                if i not in replies and select.select([c], [], [], 0)[0]:
                    replies[i] = c.recv(100)
        sel.close()
        for s in clients + accepted:
            s.close()
        assert replies == {i: f"CLIENT {i}\n".encode() for i in range(len(clients))}


def _blocked(call):
    """Run ``call`` in a thread; return (thread, list that gets its errno)."""
    errors = []

    def run():
        try:
            call()
            errors.append(None)
        except OSError as e:
            errors.append(e.errno)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


def test_close_from_another_thread_wakes_recv_and_accept():
    a, b = stack.Stack.pair()
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        cli1 = b.create_connection(srv.getsockname(), timeout=None)
        conn1, _ = srv.accept()
        cli2 = b.create_connection(srv.getsockname(), timeout=None)
        conn2, _ = srv.accept()
        # Blocked: a client's recv, the listener's accept, a server side's
        # recv_into; closing one never sends EOF to another of them.
        t1, e1 = _blocked(lambda: cli1.recv(10))
        t2, e2 = _blocked(lambda: srv.accept())
        t3, e3 = _blocked(lambda: conn2.recv_into(bytearray(10)))
        time.sleep(0.1)
        assert t1.is_alive() and t2.is_alive() and t3.is_alive()
        cli1.close()
        srv.close()
        conn2.close()
        for t in (t1, t2, t3):
            t.join(2)
            assert not t.is_alive()
        assert (e1, e2, e3) == ([errno.EBADF], [errno.EBADF], [errno.EBADF])
        conn1.close()
        cli2.close()


def test_close_from_another_thread_wakes_sendall():
    a, b = stack.Stack.pair()
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        cli = b.create_connection(srv.getsockname(), timeout=None)
        conn, _ = srv.accept()
        t, errors = _blocked(lambda: cli.sendall(b"x" * (8 * MB)))
        time.sleep(0.2)
        assert t.is_alive()
        cli.close()
        t.join(2)
        assert not t.is_alive() and errors == [errno.EBADF]
        conn.close()
        srv.close()
