"""Urgent data through sockets: send(MSG_OOB), recv(MSG_OOB) and
SO_OOBINLINE, against the kernel and against the stack (tests/helpers/sockets.py)."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from tests.helpers.sockets import connected, recv_exactly, world_fixture

world = world_fixture()


def test_so_oobinline_is_a_flag(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 0
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 5)
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 0)
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 0


def test_the_last_byte_of_an_urgent_send_is_out_of_band(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        conn.setblocking(False)                 # (with a timeout CPython waits for data first)
        with pytest.raises(OSError) as e:
            conn.recv(1, socket.MSG_OOB)        # nothing urgent yet
        assert e.value.errno == errno.EINVAL
        conn.settimeout(5)
        assert cli.send(b"abc", socket.MSG_OOB) == 3
        assert recv_exactly(conn, 2) == b"ab"   # the read stops at the mark
        conn.setblocking(False)                 # (not readable: only "c" is left)
        assert conn.recv(1, socket.MSG_OOB | socket.MSG_PEEK) == b"c"
        assert conn.recv(1, socket.MSG_OOB) == b"c"
        with pytest.raises(OSError) as e:
            conn.recv(1, socket.MSG_OOB)        # read once
        assert e.value.errno == errno.EINVAL
        conn.settimeout(5)
        cli.sendall(b"def")
        assert recv_exactly(conn, 3) == b"def"  # "c" is not in the stream


def test_with_so_oobinline_the_urgent_byte_stays_in_the_stream(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        cli.send(b"abc", socket.MSG_OOB)
        assert recv_exactly(conn, 2) == b"ab"   # still stops at the mark
        conn.setblocking(False)
        with pytest.raises(OSError) as e:
            conn.recv(1, socket.MSG_OOB)
        assert e.value.errno == errno.EINVAL
        conn.settimeout(5)
        cli.sendall(b"de")
        assert recv_exactly(conn, 3) == b"cde"


def test_only_the_latest_urgent_byte_is_out_of_band(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cli.send(b"ab", socket.MSG_OOB)
        cli.send(b"cd", socket.MSG_OOB)
        time.sleep(0.3)                         # both marks have arrived
        assert conn.recv(1, socket.MSG_OOB) == b"d"
        assert conn.recv(10) == b"abc"
        conn.setblocking(False)
        with pytest.raises(BlockingIOError):
            conn.recv(10)                       # only the urgent byte is left
