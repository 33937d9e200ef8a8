"""Stream sockets: binding, socket options, keepalive and buffer sizes.

A case taking ``world`` runs against the kernel and against the stack
(tests/helpers/sockets.py) and passes only if both behave the same.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time

import pytest

import stack
from tests.helpers.sockets import StackWorld, connected, pattern, recv_exactly, world_fixture

world = world_fixture()


# -- binding and options -------------------------------------------------------


def test_bind_listening_port_is_in_use(world):
    with world.create_server((world.server_host, 0)) as srv:
        addr = srv.getsockname()
        for reuse in (0, 1):
            s = world.server_socket()
            with s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
                with pytest.raises(OSError) as e:
                    s.bind(addr)
                assert e.value.errno == errno.EADDRINUSE
        s = world.server_socket()
        with s:
            s.bind((world.server_host, 0))
            with pytest.raises(OSError) as e:
                s.bind((world.server_host, 0))
            assert e.value.errno == errno.EINVAL


def test_so_reuseaddr_rebinds_over_time_wait(world):
    srv, cli, conn = connected(world)
    addr = srv.getsockname()
    with cli:
        conn.close()  # the server side closes first: its port is now in TIME_WAIT
        assert cli.recv(10) == b""
        cli.close()
        srv.close()
        time.sleep(0.1)
        s = world.server_socket()
        with s:
            with pytest.raises(OSError) as e:
                s.bind(addr)
            assert e.value.errno == errno.EADDRINUSE
        s = world.server_socket()
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            s.listen()
            s.settimeout(5)
            with world.create_connection(addr) as c2:
                conn2, _ = s.accept()
                with conn2:
                    c2.sendall(b"again")
                    assert conn2.recv(10) == b"again"


def test_socket_options(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        for s in (cli, conn):
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 131072
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 131072
        # With TCP_NODELAY small writes still arrive promptly and in order.
        for i in range(20):
            cli.send(bytes([i]))
        assert recv_exactly(conn, 20) == bytes(range(20))
        with pytest.raises(OSError) as e:
            cli.setsockopt(socket.SOL_SOCKET, 0x7777, 1)
        assert e.value.errno == errno.ENOPROTOOPT


def test_tcp_congestion_reads_like_linux(world):
    """getsockopt(TCP_CONGESTION, n): the name padded with NULs to n bytes
    (at most 16); "reno" is a name both Linux and the stack know."""
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16) == b"reno" + b"\0" * 12
        assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 40) == b"reno" + b"\0" * 12
        assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 3) == b"ren"
        assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION) == int.from_bytes(
            b"reno", "little")
        with pytest.raises(OSError) as e:
            cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"no-such-algorithm")
        assert e.value.errno == errno.ENOENT
        assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)[:5] == b"reno\0"


def test_tcp_congestion_picks_the_connections_algorithm():
    """Stack only (Linux has no "newreno"): set on a connection it switches
    the algorithm at once; set before connect, or on a listener, the
    connection made later starts with it."""
    assert stack.TCP_CONGESTION == socket.TCP_CONGESTION
    w = StackWorld()
    try:
        srv = w.create_server((w.server_host, 0))
        srv.setsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, b"reno")
        cli = w.client_socket()
        assert cli.getsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, 16) == b"cubic" + b"\0" * 11
        cli.setsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, b"newreno")
        assert cli.getsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, 16) == b"newreno" + b"\0" * 9
        cli.settimeout(5)
        cli.connect(srv.getsockname())
        srv.settimeout(5)
        conn, _ = srv.accept()
        with srv, cli, conn:
            assert cli.status()["congestion"] == "newreno"
            assert conn.status()["congestion"] == "reno"
            assert conn.getsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, 16)[:5] == b"reno\0"
            cwnd = cli.status()["cwnd"]
            cli.setsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, b"cubic")
            st = cli.status()
            assert st["congestion"] == "cubic" and st["cwnd"] == cwnd
            with pytest.raises(OSError) as e:
                cli.setsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, b"vegas")
            assert e.value.errno == errno.ENOENT
            assert cli.status()["congestion"] == "cubic"
            cli.sendall(b"x" * 100000)
            assert recv_exactly(conn, 100000) == b"x" * 100000
            # BBR on the live connection: the window carries over, and the
            # next data brings its model (a bandwidth estimate, a pacing rate).
            cli.setsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, b"bbr")
            assert cli.getsockopt(stack.IPPROTO_TCP, stack.TCP_CONGESTION, 16)[:4] == b"bbr\0"
            cli.sendall(b"y" * 300000)
            assert recv_exactly(conn, 300000) == b"y" * 300000
            st = cli.status()
            assert st["congestion"] == "bbr" and st["bbr_bw"] > 0 and st["pacing_rate"] > 0
    finally:
        w.close()


def test_keepalive_tuning_options(world):
    srv, cli, conn = connected(world)
    with srv, cli, conn:
        tcp = socket.IPPROTO_TCP
        defaults = {socket.TCP_KEEPIDLE: 7200, socket.TCP_KEEPINTVL: 75, socket.TCP_KEEPCNT: 9}
        for opt, value in defaults.items():
            assert cli.getsockopt(tcp, opt) == value
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt in defaults:
            cli.setsockopt(tcp, opt, 3)
            assert cli.getsockopt(tcp, opt) == 3
            with pytest.raises(OSError) as e:
                cli.setsockopt(tcp, opt, 0)
            assert e.value.errno == errno.EINVAL
        # A listener's options are inherited by the connections it accepts.
        srv.setsockopt(tcp, socket.TCP_KEEPIDLE, 42)
        cli2 = world.create_connection(srv.getsockname())
        conn2, _ = srv.accept()
        with cli2, conn2:
            assert conn2.getsockopt(tcp, socket.TCP_KEEPIDLE) == 42


def test_small_buffers_still_carry_everything(world):
    srv = world.server_socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind((world.server_host, 0))
    srv.listen()
    srv.settimeout(5)
    cli = world.client_socket()
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cli.settimeout(10)
    cli.connect(srv.getsockname())
    conn, _ = srv.accept()
    data = pattern(300_000, 7)
    t = threading.Thread(target=lambda: (cli.sendall(data), cli.shutdown(socket.SHUT_WR)))
    with srv, cli, conn:
        conn.settimeout(10)
        t.start()
        got = bytearray()
        while True:
            chunk = conn.recv(1000)
            if not chunk:
                break
            got += chunk
        t.join(10)
    assert got == data


def test_keepalive_probes_keep_a_live_peer_and_detect_a_dead_one():
    a, b = stack.Stack.pair()
    events = []
    a.trace.subscribe(events.append)
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        cli = b.create_connection(srv.getsockname(), timeout=None)
        conn, _ = srv.accept()
        conn.setsockopt(stack.SOL_SOCKET, stack.SO_KEEPALIVE, 1)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        time.sleep(2.5)
        probes = [e for e in events if e["event"] == "timer" and e.get("timer") == "keepalive"]
        assert len(probes) >= 2  # every idle second, each answered
        conn.settimeout(0.1)
        with pytest.raises(TimeoutError):
            conn.recv(10)  # the connection is alive, just quiet
        b.link.send = lambda frame: None  # the peer vanishes without a word
        conn.settimeout(10)
        t = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            conn.recv(10)
        assert e.value.errno == errno.ETIMEDOUT
        assert time.monotonic() - t < 5
        cli.close()
        srv.close()


def test_error_is_reported_once_through_so_error(world):
    srv, cli, conn = connected(world)
    with srv, cli:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        assert select.select([cli], [], [], 5)[0] == [cli]
        assert select.select([], [cli], [], 0)[1] == [cli]  # readable and writable
        assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
        assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert cli.recv(10) == b""
        with pytest.raises(BrokenPipeError):
            cli.send(b"x")
        with pytest.raises(OSError) as e:
            cli.getpeername()
        assert e.value.errno == errno.ENOTCONN


def test_so_rcvbuf_before_connect_or_listen_bounds_the_syn_window():
    # Linux sizes the SYN's window and window scale from the socket's buffer
    # as it is at connect() or listen(); a peer must never be offered more
    # than the 4 KB the socket asked for.
    a, b = stack.Stack.pair()
    ev_a, ev_b = [], []
    a.trace.subscribe(ev_a.append)
    b.trace.subscribe(ev_b.append)
    with a, b:
        srv = a.socket(stack.AF_INET, stack.SOCK_STREAM)
        srv.setsockopt(stack.SOL_SOCKET, stack.SO_RCVBUF, 4096)
        srv.bind(("192.0.2.1", 0))
        srv.listen()
        cli = b.socket(stack.AF_INET, stack.SOCK_STREAM)
        cli.setsockopt(stack.SOL_SOCKET, stack.SO_RCVBUF, 4096)
        cli.connect(srv.getsockname())
        conn, _ = srv.accept()
        conn.sendall(b"x" * 100_000)
        assert len(recv_exactly(cli, 100_000)) == 100_000
        cli.sendall(b"y" * 100_000)
        assert len(recv_exactly(conn, 100_000)) == 100_000
        for s in (cli, conn, srv):
            s.close()
    for events in (ev_a, ev_b):
        out = [e for e in events if e.get("event") == "seg" and e["dir"] == "out"]
        syn = next(e for e in out if "S" in e["flags"])
        shift = int(next((o for o in syn["options"] if o.startswith("wscale")),
                         "wscale 0").split()[1])
        offered = [syn["win"]] + [e["win"] << shift for e in out
                                  if "S" not in e["flags"] and "R" not in e["flags"]]
        assert max(offered) <= 4096, (syn, offered[:3])
