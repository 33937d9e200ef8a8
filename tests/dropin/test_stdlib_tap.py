"""Unmodified standard-library code (and ``requests``) over the drop-in,
against kernel peers on a TAP: the stack side runs in this process under
``net.patched()``, the kernel side in its own process (tests/dropin/peer.py)
or as the kernel's ``curl``. Every connection shows in the stack's trace."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import http.server
import json
import socket
import socketserver
import threading
import time
import urllib.request
import xmlrpc.client
import xmlrpc.server

import pytest

from tests.helpers.dropin import KERNEL, STACK, echo_once, established, run_peer
from tests.helpers.tap import sh


def _serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    return t


def _stop(server: socketserver.BaseServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_urllib_get_and_post_reach_a_kernel_server(net, peer):
    peer("http", KERNEL, 8080)
    body = bytes(range(256)) * 1000
    with net.patched():
        with urllib.request.urlopen(f"http://{KERNEL}:8080/bytes/100000", timeout=10) as r:
            got = r.read()
        req = urllib.request.Request(f"http://{KERNEL}:8080/upload", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            answer = json.loads(r.read())
    assert got == bytes(i % 251 for i in range(100000))
    assert answer == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert len(established(net.events, 8080)) == 2  # both went through the stack


def test_http_client_keeps_one_connection_alive(net, peer):
    peer("http", KERNEL, 8081)
    with net.patched():
        conn = http.client.HTTPConnection(KERNEL, 8081, timeout=10)
        sizes = []
        for n in (10, 5000, 70000):
            conn.request("GET", f"/bytes/{n}")
            r = conn.getresponse()
            sizes.append(len(r.read()))
        conn.close()
    assert sizes == [10, 5000, 70000]
    assert len(established(net.events, 8081)) == 1  # three requests, one connection


def test_threading_http_server_on_the_stack_answers_curl(net, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the stack\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(tmp_path), **kw)

        def log_message(self, *args):
            pass

    with net.patched():
        server = http.server.ThreadingHTTPServer((STACK, 8000), Handler)
        thread = _serve_in_thread(server)
        try:
            outs = [sh(f"curl -sS --max-time 10 http://{STACK}:8000/hello.txt").stdout
                    for _ in range(3)]
            many = sh(f"curl -sS --max-time 20 --parallel --parallel-max 20 "
                      f"'http://{STACK}:8000/hello.txt?[1-40]'").stdout
        finally:
            _stop(server, thread)
    assert outs == ["hello from the stack\n"] * 3
    assert many == "hello from the stack\n" * 40
    assert len(established(net.events, 8000)) == 43


def test_xmlrpc_both_ways(net, peer):
    peer("xmlrpc", KERNEL, 8082)
    with net.patched():
        assert xmlrpc.client.ServerProxy(f"http://{KERNEL}:8082/").add(40, 2) == 42
        server = xmlrpc.server.SimpleXMLRPCServer((STACK, 8001), logRequests=False)
        server.register_function(lambda a, b: a + b, "add")
        thread = _serve_in_thread(server)
        try:
            out = run_peer("xmlrpc-call", f"http://{STACK}:8001/")
        finally:
            _stop(server, thread)
    assert out == "5\n"
    assert len(established(net.events, 8082)) == 1
    assert len(established(net.events, 8001)) == 1


N = 200


def test_asyncio_client_with_200_connections(net, peer):
    peer("echo", KERNEL, 8083)

    def one(i):
        return echo_once(KERNEL, 8083, i)

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(N))), 60)

    with net.patched():
        results = asyncio.run(main())
    assert sum(results) == N
    assert len(established(net.events, 8083)) == N


def test_asyncio_server_with_200_connections(net):
    async def echo(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, STACK, 8002, backlog=512)
        async with server:
            return await asyncio.to_thread(run_peer, "clients", STACK, 8002, N)

    with net.patched():
        out = asyncio.run(main())
    assert out == f"ok {N}\n"
    assert len(established(net.events, 8002)) == N


def test_asyncio_connect_refused_through_so_error(net):
    async def main():
        await asyncio.open_connection(KERNEL, 9)  # nothing listens: the kernel's RST

    with net.patched():
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(main())
    assert time.monotonic() - t0 < 5


def test_requests_get_with_a_timeout(net, peer):
    requests = pytest.importorskip("requests")
    peer("http", KERNEL, 8084)
    peer("silent", KERNEL, 8085)
    with net.patched():
        with requests.Session() as s:
            r1 = s.get(f"http://{KERNEL}:8084/bytes/30000", timeout=5)
            r2 = s.get(f"http://{KERNEL}:8084/bytes/7", timeout=5)
        t0 = time.monotonic()
        with requests.Session() as s, pytest.raises(requests.exceptions.ReadTimeout):
            s.get(f"http://{KERNEL}:8085/", timeout=0.5)
        waited = time.monotonic() - t0
    assert r1.status_code == 200 and r1.content == bytes(i % 251 for i in range(30000))
    assert r2.content == bytes(range(7))
    assert len(established(net.events, 8084)) == 1  # urllib3's pool kept it alive
    assert 0.4 < waited < 3
    assert len(established(net.events, 8085)) == 1


def test_socketserver_tcp_and_udp(net):
    class Upper(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    class Reverse(socketserver.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read()[::-1])

    with net.patched():
        tcp = socketserver.TCPServer((STACK, 8003), Upper)
        udp = socketserver.UDPServer((STACK, 8004), Reverse)
        threads = [_serve_in_thread(tcp), _serve_in_thread(udp)]
        try:
            out_tcp = run_peer("tcp", STACK, 8003, "over the stack")
            out_udp = run_peer("udp", STACK, 8004, "stressed")
        finally:
            _stop(tcp, threads[0])
            _stop(udp, threads[1])
    assert out_tcp == "OVER THE STACK\n"
    assert out_udp == "desserts\n"
    assert len(established(net.events, 8003)) == 1
    udp_events = [e for e in net.events if e.get("layer") == "udp"]
    assert udp_events, "the datagrams went through the stack's UDP"


def test_isinstance_and_kernel_sockets_while_patched(net):
    with net.patched():
        s = socket.socket()
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        a, b = socket.socketpair()
        try:
            assert isinstance(s, socket.socket) and isinstance(u, socket.socket)
            assert type(s).__module__.startswith("stack")
            assert type(u) is type(a) is type(b)  # the kernel's
            a.sendall(b"x")
            assert b.recv(1) == b"x"
        finally:
            for x in (s, u, a, b):
                x.close()
    assert not isinstance(net.socket(), socket.socket)
