"""Issue 3 over a real TAP: UDP between the Linux kernel and the stack."""

from __future__ import annotations

import select
import socket
import threading

import stack
from stack.services import parse_service, start_service


def test_kernel_client_through_udp_echo(tap_stack):
    net = tap_stack()
    svc = start_service(net, parse_service("udp-echo:7"))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for size in (0, 1, 100, 1472, 1473, 8000, 30000):
                payload = bytes((i * 7) % 256 for i in range(size))
                s.sendto(payload, ("192.0.2.2", 7))
                data, addr = s.recvfrom(65535)
                assert data == payload and addr == ("192.0.2.2", 7), size
    finally:
        svc.close()
    st = net.stats()
    assert st["ip.reassembled"] >= 2 and st["ip.fragmented"] >= 2


def test_kernel_gets_connection_refused_for_closed_port(tap_stack):
    tap_stack()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("192.0.2.2", 9999))
        s.send(b"hello")
        try:
            s.recv(100)
            raise AssertionError("no error")
        except ConnectionRefusedError:
            pass


def test_stack_client_talks_to_kernel_server(tap_stack):
    net = tap_stack()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("192.0.2.1", 0))
        port = server.getsockname()[1]

        def serve():
            server.settimeout(3)
            for _ in range(2):
                data, addr = server.recvfrom(65535)
                server.sendto(data.upper(), addr)

        t = threading.Thread(target=serve)
        t.start()
        with net.socket(stack.AF_INET, stack.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.connect(("192.0.2.1", port))
            c.send(b"hello kernel")
            assert c.recv(100) == b"HELLO KERNEL"
            big = b"x" * 9000
            c.send(big)
            assert c.recv(65535) == big.upper()
        t.join()


def test_select_on_stack_socket_wakes_for_kernel_datagram(tap_stack):
    net = tap_stack()
    with net.socket(stack.AF_INET, stack.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 4000))
        assert select.select([s], [], [], 0)[0] == []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as k:
            threading.Timer(0.1, lambda: k.sendto(b"wake up", ("192.0.2.2", 4000))).start()
            r, _, _ = select.select([s], [], [], 3)
            assert r == [s]
            data, addr = s.recvfrom(100)
            assert data == b"wake up" and addr[0] == "192.0.2.1"
