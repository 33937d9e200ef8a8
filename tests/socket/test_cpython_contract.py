"""The facade against CPython's own ``socket`` on the same calls: argument
checks, construction, repr, option answers, makefile objects, sendmsg and
recvmsg, sendfile, TCP_MAXSEG and TCP_INFO, readiness after a failed
non-blocking connect.

Each case runs the call on a kernel socket and on a stack socket and
compares what comes out (the result, or the exception's type and errno,
and its message where CPython's C code fixes one). Nothing here sends a
packet outside loopback or the in-memory link.
"""

from __future__ import annotations

import errno
import math
import re
import select
import socket
import struct
import time

import pytest

import stack
from tests.helpers.sockets import world_fixture

world = world_fixture()


def outcome(fn):
    """What a call does: ("ok", result) or (exception type, errno or message)."""
    try:
        return ("ok", fn())
    except socket.gaierror as e:
        return ("gaierror", e.errno)
    except OSError as e:
        return (type(e).__name__, e.errno if e.errno is not None else str(e))
    except (TypeError, ValueError, OverflowError) as e:
        return (type(e).__name__, str(e))
    except AttributeError:  # (the message names the class)
        return ("AttributeError", None)


@pytest.fixture
def net():
    a, b = stack.Stack.pair()
    yield a
    a.close()
    b.close()


def both(net, kind, call):
    """``call(sock)`` on a fresh kernel socket and a fresh stack socket."""
    with socket.socket(socket.AF_INET, kind) as k, net.socket(socket.AF_INET, kind) as s:
        return outcome(lambda: call(k)), outcome(lambda: call(s))


STREAM_CASES = {
    "settimeout str": lambda s: s.settimeout("x"),
    "settimeout negative": lambda s: s.settimeout(-1),
    "settimeout nan": lambda s: s.settimeout(math.nan),
    "settimeout huge": lambda s: s.settimeout(1e300),
    "settimeout global default": lambda s: s.settimeout(socket._GLOBAL_DEFAULT_TIMEOUT),
    "settimeout then get": lambda s: (s.settimeout(2), s.gettimeout(), s.timeout)[1:],
    "timeout is read only": lambda s: setattr(s, "timeout", 3),
    "setblocking str": lambda s: s.setblocking("x"),
    "recv negative": lambda s: s.recv(-1),
    "recv float": lambda s: s.recv(1.5),
    "recv overflow": lambda s: s.recv(2 ** 63),
    "recv flags str": lambda s: s.recv(10, "x"),
    "recv unconnected": lambda s: s.recv(10),
    "recvfrom unconnected": lambda s: s.recvfrom(10),
    "recvmsg unconnected": lambda s: s.recvmsg(10),
    "recvmsg negative ancbuf": lambda s: s.recvmsg(10, -1),
    "send str": lambda s: s.send("x"),
    "sendall str": lambda s: s.sendall("x"),
    "send flags str": lambda s: s.send(b"x", "a"),
    "send unconnected": lambda s: s.send(b"x"),
    "sendmsg unconnected": lambda s: s.sendmsg([b"x"]),
    "sendmsg bytes": lambda s: s.sendmsg(b"x"),
    "sendmsg str item": lambda s: s.sendmsg(["x"]),
    "bind port range": lambda s: s.bind(("", 70000)),
    "bind port str": lambda s: s.bind(("", "80")),
    "bind host int": lambda s: s.bind((1, 80)),
    "bind list": lambda s: s.bind(["", 80]),
    "bind short tuple": lambda s: s.bind(("",)),
    "bind str": lambda s: s.bind("x"),
    "bind nul": lambda s: s.bind(("1.2.3.4\0", 80)),
    "bind bad dotted": lambda s: s.bind(("256.1.1.1", 80)),
    "connect port negative": lambda s: s.connect(("", -1)),
    "setsockopt int overflow": lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                                      2 ** 32),
    "setsockopt str": lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, "x"),
    "setsockopt level str": lambda s: s.setsockopt("1", socket.SO_REUSEADDR, 1),
    "setsockopt None": lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, None),
    "setsockopt unknown": lambda s: s.setsockopt(socket.SOL_SOCKET, 12345, 1),
    "setsockopt short buffer": lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,
                                                      b"\1"),
    "linger as int": lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 1),
    "linger short": lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0"),
    "linger round trip": lambda s: (
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5)),
        s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8),
        s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER))[1:],
    "linger default": lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8),
    "ttl default": lambda s: s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL),
    "ttl zero": lambda s: s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 0),
    "ttl 256": lambda s: s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 256),
    "ttl set and reset": lambda s: (
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 9),
        s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL),
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, -1),
        s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL))[1::2],
    "getsockopt buflen negative": lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, -1),
    "getsockopt buflen huge": lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 2000),
    "getsockopt buflen zero": lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 0),
    "getsockopt as bytes": lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 4),
    "reuseport read": lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
    "maxseg unconnected": lambda s: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
    "tcp_info unconnected": lambda s: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1),
    "listen str": lambda s: s.listen("x"),
    "listen overflow": lambda s: s.listen(2 ** 40),
    "shutdown bad how": lambda s: s.shutdown(5),
    "shutdown str": lambda s: s.shutdown("x"),
    "shutdown unconnected": lambda s: s.shutdown(socket.SHUT_RDWR),
    "recv_into too small": lambda s: s.recv_into(bytearray(2), 5),
    "recv_into negative": lambda s: s.recv_into(bytearray(2), -1),
    "recv_into bytes": lambda s: s.recv_into(b"xx"),
    "recvfrom_into too small": lambda s: s.recvfrom_into(bytearray(2), 5),
    "getpeername unconnected": lambda s: s.getpeername(),
    "type and proto kinds": lambda s: (s.type, s.family, s.getsockopt(socket.SOL_SOCKET,
                                                                      socket.SO_TYPE)),
    "inheritable default": lambda s: s.get_inheritable(),
    "sendfile text file": lambda s: s.sendfile(open(__file__)),  # noqa: SIM115
}


@pytest.mark.parametrize("case", STREAM_CASES)
def test_stream_socket_calls_answer_as_cpython(net, case):
    kernel, ours = both(net, socket.SOCK_STREAM, STREAM_CASES[case])
    assert ours == kernel


DGRAM_CASES = {
    "send unconnected": lambda s: s.send(b"x"),
    "sendto str": lambda s: s.sendto("x", ("192.0.2.1", 9)),
    "sendto short address": lambda s: s.sendto(b"x", ("192.0.2.1",)),
    "sendmsg ancillary": lambda s: s.sendmsg([b"x"], [(0, 1, b"")], 0, ("127.0.0.1", 9)),
    "sendmsg ancillary not triples": lambda s: s.sendmsg([b"x"], [1]),
    "sendmsg ancillary pair": lambda s: s.sendmsg([b"x"], [(1, 2)]),
    "tcp option on udp": lambda s: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    "maxseg on udp": lambda s: s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
    "listen on udp": lambda s: s.listen(),
    "accept on udp": lambda s: s.accept(),
    "sendfile on udp": lambda s: s.sendfile(open(__file__, "rb")),  # noqa: SIM115
    "broadcast option": lambda s: (s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1),
                                   s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))[1],
}


@pytest.mark.parametrize("case", DGRAM_CASES)
def test_datagram_socket_calls_answer_as_cpython(net, case):
    kernel, ours = both(net, socket.SOCK_DGRAM, DGRAM_CASES[case])
    assert ours == kernel


def test_broadcast_needs_so_broadcast(net):
    """EACCES without SO_BROADCAST, as Linux (the kernel's own case is the
    loopback's directed broadcast: the namespace may have no route to
    255.255.255.255). Nothing is sent in any of them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as k:
        kernel = outcome(lambda: k.sendto(b"x", ("127.255.255.255", 9)))
    assert kernel == ("PermissionError", errno.EACCES)
    for dst in ("255.255.255.255", "<broadcast>", "192.0.2.255"):
        with net.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            assert outcome(lambda s=s, dst=dst: s.sendto(b"x", (dst, 9))) == kernel


@pytest.mark.parametrize("args", [
    (socket.AF_INET, 99), (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_UDP),
    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_TCP), (99, socket.SOCK_STREAM),
    ("x", socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK),
    (socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC),
    (socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC),
    (-1, -1, -1), (socket.AF_INET, socket.SOCK_DGRAM, -1), (socket.AF_INET, socket.SOCK_SEQPACKET),
])
def test_construction_answers_as_cpython(net, args):
    def make(factory):
        s = factory(*args)
        try:
            return s.type, s.family, s.gettimeout(), s.getblocking()
        finally:
            s.close()

    assert outcome(lambda: make(net.socket)) == outcome(lambda: make(socket.socket))


def test_repr_reads_like_cpythons(world):
    """Same shape as CPython's repr (ours names stack.Socket, fills in proto
    and shows fd=-1 until fileno() made the readiness descriptor)."""
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    with srv, cli, conn:
        fd = cli.fileno()
        text = repr(cli)
        local, peer = cli.getsockname(), cli.getpeername()
        assert text.endswith(f"fd={fd}, family=2, type=1, proto={cli.proto}, laddr={local}, "
                             f"raddr={peer}>")
        assert re.match(r"<(socket\.socket|stack\.Socket) fd=", text)
    closed = repr(cli)
    assert re.match(r"<(socket\.socket|stack\.Socket) \[closed\] fd=-1, family=2, type=1, "
                    r"proto=\d+>$", closed)


def test_a_fresh_stack_socket_repr_makes_no_descriptor(net):
    with net.socket() as s:
        assert repr(s) == "<stack.Socket fd=-1, family=2, type=1, proto=6, laddr=('0.0.0.0', 0)>"
        fd = s.fileno()
        assert repr(s).startswith(f"<stack.Socket fd={fd}, ")


MODES = [("r", None), ("rb", None), ("w", None), ("wb", None), ("rwb", None), ("rb", 0),
         ("wb", 0), ("rw", None)]


@pytest.mark.parametrize("mode, buffering", MODES)
def test_makefile_objects_have_cpythons_attributes(world, mode, buffering):
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    with srv, conn:
        f = cli.makefile(mode, buffering)
        seen = {"type": type(f).__name__, "closed": f.closed,
                "readable": f.readable(), "writable": f.writable(),
                "mode": getattr(f, "mode", None), "fileno": outcome(f.fileno),
                "name is the fileno": getattr(f, "name", cli.fileno()) == cli.fileno()}
        raw = f if buffering == 0 else getattr(f, "buffer", f)
        raw = getattr(raw, "raw", raw)
        if type(raw).__name__ == "SocketIO":
            seen["raw mode"] = raw.mode
        cli.close()  # the file keeps the socket open
        assert not f.closed
        f.close()
        seen["closed after"] = f.closed
        seen["socket closed with its file"] = cli.fileno() == -1
        if type(raw).__name__ == "SocketIO":
            seen["raw name after"] = raw.name
            seen["raw readable after"] = outcome(raw.readable)
    expect = {
        "r": ("TextIOWrapper", "r", True, False), "rb": ("BufferedReader", "rb", True, False),
        "w": ("TextIOWrapper", "w", False, True), "wb": ("BufferedWriter", "wb", False, True),
        "rwb": ("BufferedRWPair", None, True, True), "rw": ("TextIOWrapper", "rw", True, True),
    }[mode]
    if buffering == 0:
        expect = ("SocketIO", mode, "r" in mode, "w" in mode)
    assert (seen["type"], seen["mode"], seen["readable"], seen["writable"]) == expect
    assert seen["closed after"] and seen["socket closed with its file"]
    assert seen["name is the fileno"]
    # BufferedRWPair has no fileno (in CPython's makefile too).
    assert seen["fileno"] == (("UnsupportedOperation", "fileno") if mode in ("rwb", "rw")
                              else ("ok", seen["fileno"][1]))
    if "raw mode" in seen:
        assert seen["raw mode"] == mode.replace("b", "") + "b"
        assert seen["raw name after"] == -1
        assert seen["raw readable after"] == ("ValueError", "I/O operation on closed socket.")


def test_recvfrom_and_recvmsg_on_a_stream_have_no_address(world):
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    with srv, cli, conn:
        conn.settimeout(5)
        cli.sendall(b"abcdef")
        assert conn.recvfrom(2) == (b"ab", None)
        assert conn.recvmsg(2) == (b"cd", [], 0, None)
        a, b = bytearray(1), bytearray(4)
        assert conn.recvmsg_into([a, b]) == (2, [], 0, None)
        assert (a, b[:1]) == (b"e", b"f")
        assert cli.sendmsg([b"12", memoryview(b"34")]) == 4
        assert conn.recv(10) == b"1234"


def test_sendfile_sends_the_range_and_moves_the_file_position(world, tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "data"
    path.write_bytes(data)
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    with srv, cli, conn, open(path, "rb") as f:
        conn.settimeout(5)
        assert cli.sendfile(f, 1000, 70000) == 70000
        assert f.tell() == 71000
        assert cli.sendfile(f) == len(data)  # offset 0 is the default
        assert f.tell() == len(data)
        cli.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := conn.recv(65536):
            got += chunk
        assert bytes(got) == data[1000:71000] + data
        assert outcome(lambda: cli.sendfile(f, 0, 0)) == \
            ("ValueError", "count must be a positive integer (got 0)")
        cli.setblocking(False)
        assert outcome(lambda: cli.sendfile(f)) == \
            ("ValueError", "non-blocking sockets are not supported")


def test_tcp_maxseg_and_tcp_info_once_connected(world):
    srv = world.create_server((world.server_host, 0))
    cli = world.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    with srv, cli, conn:
        conn.settimeout(5)
        cli.sendall(b"x" * 1000)
        got = 0
        while got < 1000:
            got += len(conn.recv(4096))
        if world.name == "stack":  # the peer's ACK may still be on its way
            deadline = time.monotonic() + 5
            while cli.status()["bytes_acked"] < 1000 and time.monotonic() < deadline:
                time.sleep(0.01)
        mss = cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        info = cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 300)
        assert len(info) == len(socket.socket().getsockopt(socket.IPPROTO_TCP,
                                                           socket.TCP_INFO, 300))
        state, _ca, _r, _p, _b, options = struct.unpack_from("6B", info)
        snd_mss, = struct.unpack_from("I", info, 16)
        bytes_received, = struct.unpack_from("Q", info, 128)
        assert state == 1  # TCP_ESTABLISHED
        assert options & 1 and options & 2  # timestamps and SACK, both ways
        assert snd_mss == mss
        assert bytes_received == 0
        listener_state = srv.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        assert listener_state == 10  # TCP_LISTEN
        if world.name == "stack":
            st = cli.status()
            assert st["state"] == "ESTABLISHED" and mss == st["mss"] == 1460 - 12
            assert struct.unpack_from("Q", info, 120)[0] == st["bytes_acked"] >= 1000
            assert srv.status()["state"] == "LISTEN"


def test_failed_nonblocking_connect_is_writable_then_so_error(world):
    """What asyncio does: connect non-blocking, wait writable, read SO_ERROR."""
    with world.server_socket() as closed:
        closed.bind((world.server_host, 0))
        addr = closed.getsockname()  # bound, not listening: refused
        s = world.client_socket()
        with s:
            s.setblocking(False)
            assert s.connect_ex(addr) in (errno.EINPROGRESS, errno.ECONNREFUSED)
            _, w, _ = select.select([], [s], [], 5)
            assert w == [s]
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            r, _, _ = select.select([s], [], [], 0)
            assert r == [s]
