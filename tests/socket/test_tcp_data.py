"""Stream sockets: moving data and closing (half-close, linger, resets, EOF).

A case taking ``world`` runs against the kernel and against the stack
(tests/helpers/sockets.py) and passes only if both behave the same.
"""

from __future__ import annotations

import errno
import hashlib
import select
import socket
import struct
import threading
import time

import pytest

from tests.helpers.sockets import MB, connected, pattern, recv_all, recv_exactly, world_fixture

world = world_fixture()


# -- data ----------------------------------------------------------------------


def test_sendall_and_recv_1mb_both_directions_at_once(world):
    srv, cli, conn = connected(world)
    up, down = pattern(MB, 1), pattern(MB, 2)
    got = {}

    def server():
        sender = threading.Thread(target=conn.sendall, args=(down,))
        sender.start()
        got["server"] = recv_exactly(conn, len(up))
        sender.join()

    t = threading.Thread(target=server)
    with srv, cli, conn:
        t.start()
        cli.sendall(up)
        got["client"] = recv_exactly(cli, len(down))
        t.join(10)
    assert got["server"] == up and got["client"] == down


def test_send_returns_a_count_and_sendall_returns_none(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        assert cli.send(b"hello") == 5
        assert cli.send(b"") == 0
        assert cli.sendall(b" world") is None
        assert recv_exactly(conn, 11) == b"hello world"
        assert conn.recv(0) == b""


def test_recv_into_and_peek(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        cli.sendall(b"0123456789")
        assert conn.recv(4, socket.MSG_PEEK) == b"0123"
        peek = bytearray(3)
        assert conn.recv_into(peek, 0, socket.MSG_PEEK) == 3 and peek == b"012"
        buf = bytearray(6)
        assert conn.recv_into(buf) == 6 and buf == b"012345"
        time.sleep(0.05)
        view = memoryview(bytearray(10))
        assert conn.recv_into(view, 3) == 3 and bytes(view[:3]) == b"678"
        with pytest.raises(ValueError):
            conn.recv_into(bytearray(2), 5)
        big = pattern(300_000, 3)
        cli.sendall(big)
        cli.shutdown(socket.SHUT_WR)
        out = bytearray(len(big) + 1)
        mv = memoryview(out)
        n = 0
        # "9" is still buffered in front of the new bytes.
        while True:
            k = conn.recv_into(mv[n:])
            if k == 0:
                break
            n += k
        assert out[:n] == b"9" + big
        assert conn.recv_into(bytearray(10)) == 0


def test_makefile_readline_and_write(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        wf = cli.makefile("wb")
        rf = conn.makefile("rb")
        lines = [b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"]
        for line in lines:
            wf.write(line)
        wf.write(pattern(100_000, 4))
        wf.flush()
        for line in lines:
            assert rf.readline() == line
        assert rf.read(100_000) == pattern(100_000, 4)
        wf.close()
        cli.shutdown(socket.SHUT_WR)
        assert rf.read() == b""
        rf.close()
        # The socket stays usable after its files are closed.
        conn.sendall(b"reply\n")
        tf = cli.makefile("r", encoding="ascii")
        assert tf.readline() == "reply\n"
        tf.close()


def test_makefile_keeps_socket_open_until_files_close(world):
    srv, cli, conn = connected(world)
    with srv, conn:
        rf = cli.makefile("rb")
        cli.close()
        conn.sendall(b"still here\n")
        assert rf.readline() == b"still here\n"
        rf.close()
        # Now the socket is closed for real: the peer sees EOF.
        assert conn.recv(10) == b""


def test_closing_twice_with_a_file_open_keeps_the_connection(world):
    # http.client closes its socket while the response still reads from
    # the socket's file; a second close() must not cut the file off either.
    srv, cli, conn = connected(world)
    with srv, conn:
        rf = cli.makefile("rb")
        wf = cli.makefile("wb")
        cli.close()
        cli.close()
        wf.write(b"ping\n")
        wf.close()
        assert conn.recv(10) == b"ping\n"
        conn.sendall(b"pong\n")
        assert rf.readline() == b"pong\n"
        rf.close()
        assert conn.recv(10) == b""


# -- closing -------------------------------------------------------------------


def test_half_close_peer_reads_eof_then_sends_back(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        cli.sendall(b"request")
        cli.shutdown(socket.SHUT_WR)
        assert recv_all(conn) == b"request"
        assert conn.recv(10) == b""  # EOF stays EOF
        reply = pattern(200_000, 5)
        conn.sendall(reply)
        conn.close()
        assert recv_all(cli) == reply
        with pytest.raises(BrokenPipeError):
            cli.send(b"more")


def test_close_gives_peer_eof(world):
    srv, cli, conn = connected(world)
    with srv, cli:
        conn.sendall(b"last words")
        conn.close()
        assert recv_all(cli) == b"last words"
        assert cli.recv(10) == b""


def test_shut_rd_makes_recv_return_eof(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        conn.shutdown(socket.SHUT_RD)
        assert conn.recv(10) == b""
        conn.sendall(b"can still send")
        assert recv_exactly(cli, 14) == b"can still send"


def test_linger_zero_close_resets_peer(world):
    srv, cli, conn = connected(world)
    with srv, cli:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert struct.unpack("ii", conn.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (
            1, 0)
        conn.close()
        with pytest.raises(ConnectionResetError) as e:
            cli.recv(10)
        assert e.value.errno == errno.ECONNRESET
        # The error is reported once; then the connection is simply gone.
        assert cli.recv(10) == b""


def test_send_after_peer_reset(world):
    srv, cli, conn = connected(world)
    with srv, cli:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        assert select.select([cli], [], [], 5)[0] == [cli]
        raised = []
        for _ in range(2):
            with pytest.raises(OSError) as e:
                cli.send(b"anyone?")
            raised.append(type(e.value))
        assert raised == [ConnectionResetError, BrokenPipeError]


def test_send_to_a_peer_that_closed(world):
    # The peer closed (FIN); our first send is answered by its RST. Linux
    # then reports EPIPE, not ECONNRESET, because the RST came in CLOSE_WAIT,
    # and recv keeps reporting the EOF that came before the RST.
    srv, cli, conn = connected(world)
    with srv, cli:
        conn.close()
        assert cli.recv(10) == b""
        assert cli.send(b"into the void") == 13
        time.sleep(0.3)
        assert cli.recv(10) == b""
        raised = []
        for _ in range(2):
            with pytest.raises(OSError) as e:
                cli.send(b"again")
            raised.append(type(e.value))
        assert raised == [BrokenPipeError, BrokenPipeError]
        assert cli.recv(10) == b""


def test_connection_reset_before_accept_is_still_accepted(world):
    with world.create_server((world.server_host, 0)) as srv:
        srv.settimeout(5)
        cli = world.create_connection(srv.getsockname())
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cli.sendall(b"hello")
        time.sleep(0.1)
        cli.close()
        time.sleep(0.1)
        conn, addr = srv.accept()
        with conn:
            assert addr[0] == world.client_host
            assert conn.recv(10) == b"hello"  # what came before the RST
            with pytest.raises(ConnectionResetError):
                conn.recv(10)


def test_closing_a_listener_resets_unaccepted_connections(world):
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    with cli:
        time.sleep(0.1)
        srv.close()
        with pytest.raises(ConnectionResetError):
            cli.recv(10)


def test_unread_data_at_close_resets_peer(world):
    srv, cli, conn = connected(world)
    with srv, cli:
        cli.sendall(b"never read")
        time.sleep(0.1)
        conn.close()
        with pytest.raises(ConnectionResetError):
            cli.recv(10)


def test_sendall_then_close_delivers_everything(world):
    srv, cli, conn = connected(world)
    data = pattern(2 * MB, 6)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("data", recv_all(cli)))
    with srv, cli:
        t.start()
        conn.sendall(data)
        conn.close()
        t.join(10)
    assert hashlib.sha256(got["data"]).digest() == hashlib.sha256(data).digest()


def test_buffer_kinds_for_send(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        cli.sendall(bytearray(b"ab"))
        cli.sendall(memoryview(b"xcdx")[1:3])
        cli.send(memoryview(bytearray(b"ef")))
        import array

        cli.sendall(array.array("H", [0x6867]))  # two bytes, host byte order
        assert recv_exactly(conn, 8)[:6] == b"abcdef"
