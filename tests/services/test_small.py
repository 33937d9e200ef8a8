"""The echo, discard, chargen and udp-echo services, and stopping services.

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from stack.services import (
    ServiceSpec,
    start_service,
)
from tests.helpers.services import HOST, NET, Client, wait_until


# --- echo, discard, chargen, udp-echo -----------------------------------------


def test_echo_1mb_round_trip(serve):
    echo = serve("echo")
    data = random.Random(5).randbytes(1_000_000)
    received = bytearray()
    with socket.create_connection((HOST, echo.port), timeout=10) as s:

        def send() -> None:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while chunk := s.recv(65536):
            received += chunk
        sender.join()
    assert bytes(received) == data
    assert wait_until(lambda: echo.active_clients == 0)


def test_echo_interactive(serve):
    echo = serve("echo")
    with socket.create_connection((HOST, echo.port), timeout=5) as s:
        for line in (b"one\r\n", b"two\r\n", b"x"):
            s.sendall(line)
            assert s.recv(100) == line


def test_discard(serve):
    discard = serve("discard")
    with socket.create_connection((HOST, discard.port), timeout=10) as s:
        s.sendall(random.Random(9).randbytes(1_000_000))
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""  # nothing came back, and the server closed
    assert wait_until(lambda: discard.active_clients == 0)


def test_chargen_lines(serve):
    chargen = serve("chargen")
    ring = bytes(range(32, 127)) * 2
    data = bytearray()
    with socket.create_connection((HOST, chargen.port), timeout=5) as s:
        while len(data) < 74 * 300:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        assert chargen.active_clients == 1
    lines = bytes(data).split(b"\r\n")[:-1]  # the last one may be cut off
    assert len(lines) >= 300
    for k, line in enumerate(lines):
        assert len(line) == 72
        assert line == ring[k % 95 : k % 95 + 72], f"line {k}"
    assert lines[0].startswith(b" !\"#$%&'()*+,-./0123456789")
    # The client closed: the server notices on its next sends and stops.
    assert wait_until(lambda: chargen.active_clients == 0)


@pytest.mark.parametrize("size", [0, 1, 1472, 9000, 65507])
def test_udp_echo(serve, size):
    udp = serve("udp-echo")
    payload = random.Random(size).randbytes(size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(payload, (HOST, udp.port))
        data, peer = s.recvfrom(65535)
    assert data == payload
    assert peer == (HOST, udp.port)


def test_udp_echo_answers_each_sender(serve):
    udp = serve("udp-echo")
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    try:
        for i, s in enumerate(socks):
            s.settimeout(5)
            s.sendto(b"from %d" % i, (HOST, udp.port))
        for i, s in enumerate(socks):
            assert s.recvfrom(100)[0] == b"from %d" % i
    finally:
        for s in socks:
            s.close()


# --- stopping -----------------------------------------------------------------


def service_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stack-")]


def test_close_stops_everything_quickly_and_frees_the_port():
    assert service_threads() == []
    services = {
        kind: start_service(NET, ServiceSpec(kind, 0), HOST)
        for kind in ("http", "echo", "discard", "chargen", "udp-echo")
    }
    clients = []
    try:
        idle = Client(services["http"].port)  # keep-alive connection waiting for a request
        assert idle.request("GET", "/bytes/1").status == 200
        clients.append(idle.sock)
        streaming = Client(services["http"].port)  # a download the client does not read
        streaming.send(b"GET /bytes/1000000000 HTTP/1.1\r\n\r\n")
        clients.append(streaming.sock)
        for kind in ("echo", "discard", "chargen"):
            s = socket.create_connection((HOST, services[kind].port), timeout=5)
            clients.append(s)
        clients[-1].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # chargen blocks
        assert wait_until(lambda: services["chargen"].active_clients == 1)
        time.sleep(0.3)  # let the writers fill the socket buffers and block
        for kind, svc in services.items():
            started = time.monotonic()
            svc.close()
            assert time.monotonic() - started < 1.5, kind
            assert svc.closed
        assert wait_until(lambda: service_threads() == [], timeout=1)
        for kind in ("http", "echo", "discard", "chargen"):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((HOST, services[kind].port), timeout=2)
            socket.create_server((HOST, services[kind].port)).close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, services["udp-echo"].port))
        # The clients' connections were closed by the server.
        echo_client = clients[2]
        try:
            assert echo_client.recv(10) == b""
        except ConnectionResetError:
            pass
        services["echo"].close()  # a second close does nothing
    finally:
        for svc in services.values():
            svc.close()
        for s in clients:
            s.close()
