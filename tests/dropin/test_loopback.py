"""The drop-in's programs over loopback inside one stack: server and client
in this process, both patched to the same stack, talking over 127.0.0.1
(delivered inside the stack, as Linux's ``lo``). No TAP: the stack sits on an
in-memory link it never uses for these.

NEEDS THE LOOPBACK WORK (127.0.0.0/8 inside the stack, issue 11): until it is
merged, every connect to 127.0.0.1 fails with ENETUNREACH and these fail."""

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

import stack
from tests.helpers.dropin import echo_once, established

LO = "127.0.0.1"


@pytest.fixture
def net():
    a, b = stack.Stack.pair()
    a.events = []
    a.trace.subscribe(a.events.append)
    with a.patched():
        yield a
    a.close()
    b.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[1])
        if n < 0:
            time.sleep(2)  # a slow answer, for the client's timeout
            n = 0
        self._answer(bytes(i % 251 for i in range(n)))

    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(json.dumps({"bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}).encode())

    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serving(server):
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    return t


def _stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def http_server(net):
    server = http.server.ThreadingHTTPServer((LO, 8000), Handler)
    thread = _serving(server)
    yield server
    _stop(server, thread)


def test_urllib_get_and_post(net, http_server):
    body = bytes(range(256)) * 400
    with urllib.request.urlopen(f"http://{LO}:8000/bytes/50000", timeout=10) as r:
        got = r.read()
    req = urllib.request.Request(f"http://{LO}:8000/up", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    assert got == bytes(i % 251 for i in range(50000))
    assert answer == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert len(established(net.events, 8000)) == 4  # two connections, both ends in one stack


def test_http_client_keep_alive(net, http_server):
    conn = http.client.HTTPConnection(LO, 8000, timeout=10)
    sizes = []
    for n in (1, 4000, 90000):
        conn.request("GET", f"/bytes/{n}")
        sizes.append(len(conn.getresponse().read()))
    conn.close()
    assert sizes == [1, 4000, 90000]
    assert len(established(net.events, 8000)) == 2  # one connection, seen from both ends


def test_requests_get_with_a_timeout(net, http_server):
    requests = pytest.importorskip("requests")
    with requests.Session() as s:
        r = s.get(f"http://{LO}:8000/bytes/20000", timeout=5)
        assert r.content == bytes(i % 251 for i in range(20000))
        t0 = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            s.get(f"http://{LO}:8000/bytes/-1", timeout=0.5)
        assert time.monotonic() - t0 < 1.9


def test_xmlrpc(net):
    server = xmlrpc.server.SimpleXMLRPCServer((LO, 8001), logRequests=False)
    server.register_function(lambda a, b: a * b, "mul")
    thread = _serving(server)
    try:
        assert xmlrpc.client.ServerProxy(f"http://{LO}:8001/").mul(6, 7) == 42
    finally:
        _stop(server, thread)


def test_asyncio_200_connections(net):
    n = 200

    async def echo(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    def client(i):
        return echo_once(LO, 8002, i)

    async def main():
        server = await asyncio.start_server(echo, LO, 8002, backlog=512)
        async with server:
            return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(n))), 60)

    assert sum(asyncio.run(main())) == n
    assert len(established(net.events, 8002)) == 2 * n


def test_socketserver_tcp_and_udp(net):
    class Upper(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read().upper())

    class Reverse(socketserver.DatagramRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.read()[::-1])

    tcp = socketserver.TCPServer((LO, 8003), Upper)
    udp = socketserver.UDPServer((LO, 8004), Reverse)
    threads = [_serving(tcp), _serving(udp)]
    try:
        with socket.create_connection((LO, 8003), timeout=5) as c:
            c.sendall(b"loopback")
            c.shutdown(socket.SHUT_WR)
            assert c.makefile("rb").read() == b"LOOPBACK"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"stressed", (LO, 8004))
            assert u.recv(100) == b"desserts"
    finally:
        _stop(tcp, threads[0])
        _stop(udp, threads[1])


def test_stack_run_serves_and_fetches_over_loopback(netns, tmp_path):
    """One program under ``stack run``: Python's HTTP server and urllib on
    127.0.0.1 of the same stack."""
    import subprocess
    import sys

    from tests.helpers.cli import ENV, ROOT

    (tmp_path / "page.txt").write_text("over lo\n")
    script = tmp_path / "both.py"
    script.write_text(
        "import functools, http.server, threading, urllib.request\n"
        "handler = functools.partial(http.server.SimpleHTTPRequestHandler,\n"
        f"                            directory={str(tmp_path)!r})\n"
        "server = http.server.ThreadingHTTPServer(('127.0.0.1', 8080), handler)\n"
        "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
        "with urllib.request.urlopen('http://127.0.0.1:8080/page.txt', timeout=5) as r:\n"
        "    print(r.read().decode(), end='')\n"
        "server.shutdown()\n")
    subprocess.run(["ip", "link", "del", "tlo0"], capture_output=True)
    r = subprocess.run([sys.executable, "-m", "stack", "run", "--tap", "tlo0",
                        "--host-address", "192.0.2.1/24", "--", str(script)],
                       capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "over lo\n"
