"""The services' event loop: every client of a service on one thread, 503
when full, idle timeouts, and bodies streamed without being held whole.

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import socket
import threading
import time
import tracemalloc

import pytest

from tests.helpers.services import HOST, Client, expected_bytes, upload_answer, wait_until


def test_http_answers_503_when_full(serve):
    web = serve("http", max_clients=2)
    first, second = Client(web.port), Client(web.port)
    try:
        for c in (first, second):
            assert c.request("GET", "/bytes/3").body == b"\x00\x01\x02"
        assert web.active_clients == 2
        with Client(web.port) as third:
            reply = third.request("GET", "/bytes/3")
            assert (reply.status, reply.reason) == (503, "Service Unavailable")
            assert reply.headers["connection"] == "close"
            assert reply.headers["content-length"] == str(len(reply.body))
            assert b"503 Service Unavailable" in reply.body
            assert third.at_eof()
        assert web.active_clients == 2  # the refused one never counted
        # The two served clients go on as if nothing happened.
        assert first.request("GET", "/bytes/1").body == b"\x00"
        first.close()
        assert wait_until(lambda: web.active_clients == 1)
        with Client(web.port) as fourth:
            assert fourth.request("GET", "/bytes/2").body == b"\x00\x01"
    finally:
        first.close()
        second.close()


def test_300_keep_alive_clients_served_concurrently_on_one_thread(serve):
    threads_before = threading.active_count()
    web = serve("http")
    assert threading.active_count() == threads_before + 1  # the service's one loop
    clients = [Client(web.port) for _ in range(300)]
    try:
        for rnd in range(2):
            # Every request is out before any answer is read: 300 requests
            # in flight at once, which one thread answers in turn.
            for k, c in enumerate(clients):
                c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: t\r\n\r\n" % (k + rnd))
            for k, c in enumerate(clients):
                reply = c.response()
                assert reply.status == 200
                assert reply.body == expected_bytes(k + rnd)
                assert "connection" not in reply.headers  # kept alive
            assert web.active_clients == 300
            assert threading.active_count() == threads_before + 1
    finally:
        for c in clients:
            c.close()
    assert wait_until(lambda: web.active_clients == 0)


def test_a_stalled_upload_and_an_unread_download_do_not_hold_up_others(serve):
    web = serve("http")
    with Client(web.port) as uploader, Client(web.port) as downloader:
        uploader.send(b"PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
                      + b"x" * 1000)
        downloader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        downloader.send(b"GET /bytes/1000000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)  # the download fills every buffer and stalls
        started = time.monotonic()
        with Client(web.port) as other:
            for n in (1, 100_000, 5):
                assert other.request("GET", f"/bytes/{n}").body == expected_bytes(n)
        assert time.monotonic() - started < 2
        uploader.send(b"x" * 999_000)
        assert uploader.response().json() == upload_answer(b"x" * 1_000_000)


@pytest.mark.parametrize("kind", ["echo", "discard", "chargen"])
def test_idle_timeout_of_the_small_services(serve, kind):
    svc = serve(kind, idle_timeout=0.5)
    with socket.create_connection((HOST, svc.port), timeout=5) as s:
        if kind == "chargen":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        else:
            s.sendall(b"x")
            if kind == "echo":
                assert s.recv(10) == b"x"
        assert wait_until(lambda: svc.active_clients == 1)
        started = time.monotonic()
        assert wait_until(lambda: svc.active_clients == 0, timeout=5), kind
        took = time.monotonic() - started
        assert 0.2 < took < 3, (kind, took)


def test_echo_goes_on_while_a_client_does_not_read(serve):
    echo = serve("echo")
    with socket.create_connection((HOST, echo.port), timeout=5) as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.setblocking(False)
        try:  # send until nothing more fits: the server stops reading it
            while True:
                greedy.send(b"y" * 65536)
        except BlockingIOError:
            pass
        with socket.create_connection((HOST, echo.port), timeout=5) as polite:
            polite.sendall(b"hello")
            assert polite.recv(10) == b"hello"


def _peak_while(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_upload_and_download_stream_without_holding_the_body(serve):
    web = serve("http")
    n = 40_000_000
    block = random.Random(4).randbytes(1 << 20)

    def upload() -> None:
        with Client(web.port) as c:
            c.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % n)
            digest = hashlib.sha256()
            left = n
            while left:
                piece = block[: min(left, len(block))]
                c.sock.sendall(piece)
                digest.update(piece)
                left -= len(piece)
            answer = c.response().json()
            assert answer == {"bytes": n, "sha256": digest.hexdigest()}

    def download() -> None:
        with Client(web.port) as c:
            c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
            head = c.response(head_only=True)
            assert head.headers["content-length"] == str(n)
            buf = memoryview(bytearray(1 << 16))
            got = 0
            digest = hashlib.sha256()
            while got < n:
                k = c.rfile.readinto(buf[: min(len(buf), n - got)])
                assert k
                digest.update(buf[:k])
                got += k
            assert digest.hexdigest() == reference

    # sha256 of the /bytes/n body, computed before anything is traced.
    period = bytes(range(251)) * 4096
    ref = hashlib.sha256()
    for _ in range(n // len(period)):
        ref.update(period)
    ref.update(period[: n % len(period)])
    reference = ref.hexdigest()
    del period

    # The service runs in this process, so its allocations are traced too:
    # tens of MB moved, a few MB at most alive at once (buffers, not bodies).
    assert _peak_while(upload) < 8_000_000
    assert _peak_while(download) < 8_000_000


def test_accept_out_of_descriptors_waits_and_recovers(serve):
    echo = serve("echo")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    client = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 20, hard))
        try:
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        os.close(fillers.pop())  # one left: the client's socket
        client = socket.create_connection((HOST, echo.port), timeout=5)
        # The service cannot accept it (EMFILE): it must wait, not spin.
        cpu = time.process_time()
        time.sleep(0.6)
        assert time.process_time() - cpu < 0.3
        assert echo.active_clients == 0
        for fd in fillers:
            os.close(fd)
        fillers.clear()
        client.sendall(b"back")
        assert client.recv(10) == b"back"
        assert echo.active_clients == 1
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if client is not None:
            client.close()


def test_pipelining_without_reading_is_bounded(serve):
    web = serve("http")
    request = b"GET /bytes/1000 HTTP/1.1\r\nHost: t\r\n\r\n"
    tracemalloc.start()
    try:
        with Client(web.port) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sock.setblocking(False)
            sent = 0
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:  # until the server stops taking them
                try:
                    sent += c.sock.send(request * 100)
                except BlockingIOError:
                    time.sleep(0.05)
            held = tracemalloc.get_traced_memory()[0]
            # Megabytes of requests sent; the server holds one read of them,
            # one response being sent, and its buffers.
            assert sent > 1_000_000
            assert held < 1_500_000
            c.sock.setblocking(True)
            for _ in range(3):
                assert c.response().body == expected_bytes(1000)
    finally:
        tracemalloc.stop()
