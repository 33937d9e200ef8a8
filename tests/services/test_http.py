"""The HTTP service: /bytes/N, connections and keep-alive, errors.

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from stack.services.http import CHUNK
from tests.helpers.services import HOST, Client, expected_bytes, wait_until


# --- HTTP: /bytes/N -----------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 250, 251, 252, CHUNK, CHUNK + 1, 1_000_000])
def test_get_bytes(web, n):
    with Client(web.port) as c:
        reply = c.request("GET", f"/bytes/{n}")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["content-length"] == str(n)
    assert len(reply.body) == n
    for i, byte in enumerate(reply.body):
        assert byte == i % 251, f"byte {i}"


def test_get_bytes_50mb_streams(web):
    n = 50_000_000
    period = bytes(range(251))
    reference = memoryview(period * (1 + (1 << 20) // 251 + 1))
    with Client(web.port) as c:
        c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: test\r\n\r\n" % n)
        head = c.response(head_only=True)
        assert head.headers["content-length"] == str(n)
        buf = bytearray(1 << 20)
        offset = 0
        started = time.monotonic()
        while offset < n:
            got = c.rfile.readinto(memoryview(buf)[: min(len(buf), n - offset)])
            assert got, "connection closed early"
            start = offset % 251
            assert buf[:got] == reference[start : start + got], f"near byte {offset}"
            offset += got
        elapsed = time.monotonic() - started
    assert elapsed < 20, f"50 MB took {elapsed:.1f} s"


@pytest.mark.parametrize(
    "path",
    [
        "/bytes",
        "/bytes/",
        "/bytes/abc",
        "/bytes/-1",
        "/bytes/1x",
        "/bytes/1.5",
        "/bytes/10/",
        "/bytes/99999999999999999999",
        "/bytes/99999999999999999999999",
        f"/bytes/{10 * 1024**3 + 1}",
    ],
)
def test_get_bytes_junk_is_400(web, path):
    with Client(web.port) as c:
        reply = c.request("GET", path)
        assert reply.status == 400
        assert reply.headers["content-length"] == str(len(reply.body))
        # the request was well framed, so the connection goes on
        assert c.request("GET", "/bytes/3").body == b"\x00\x01\x02"


def test_bytes_with_query_and_absolute_form(web):
    with Client(web.port) as c:
        assert c.request("GET", "/bytes/5?x=1").body == expected_bytes(5)
        assert c.request("GET", f"http://{HOST}:{web.port}/bytes/4").body == expected_bytes(4)


def test_head_has_length_and_no_body(web):
    with Client(web.port) as c:
        reply = c.request("HEAD", "/bytes/1000000")
        assert reply.status == 200
        assert reply.headers["content-length"] == "1000000"
        # If a body had been sent the next response would not parse.
        reply = c.request("HEAD", "/bytes/7")
        assert reply.headers["content-length"] == "7"
        assert c.request("GET", "/bytes/2").body == b"\x00\x01"
        reply = c.request("HEAD", "/")
        assert int(reply.headers["content-length"]) > 0
        assert c.request("GET", "/bytes/1").body == b"\x00"


# --- HTTP: connections --------------------------------------------------------


def test_keep_alive_three_requests_one_connection(web):
    with Client(web.port) as c:
        for n in (10, 100_000, 3):
            reply = c.request("GET", f"/bytes/{n}")
            assert reply.status == 200
            assert reply.body == expected_bytes(n)
            assert "connection" not in reply.headers
        assert web.active_clients == 1


def test_pipelined_requests(web):
    with Client(web.port) as c:
        c.send(
            b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            b"HEAD /bytes/9 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /bytes/2 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        assert c.response().body == b"\x00\x01\x02"
        assert c.response().json()["sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert c.response(head_only=True).headers["content-length"] == "9"
        assert c.response().body == b"\x00\x01"


def test_connection_close_is_honoured(web):
    with Client(web.port) as c:
        reply = c.request("GET", "/bytes/10", headers=[("Connection", "close")])
        assert reply.body == expected_bytes(10)
        assert reply.headers["connection"] == "close"
        assert c.at_eof()


def test_http10_closes_unless_keep_alive(web):
    with Client(web.port) as c:
        reply = c.request("GET", "/bytes/4", version="HTTP/1.0")
        assert reply.body == expected_bytes(4)
        assert reply.headers["connection"] == "close"
        assert c.at_eof()
    with Client(web.port) as c:
        for _ in range(2):
            reply = c.request(
                "GET", "/bytes/4", headers=[("Connection", "keep-alive")], version="HTTP/1.0"
            )
            assert reply.body == expected_bytes(4)
            assert reply.headers["connection"] == "keep-alive"


def test_leading_empty_lines_and_bare_lf(web):
    with Client(web.port) as c:
        c.send(b"\r\n\r\nGET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.response().body == b"\x00\x01\x02"
        c.send(b"GET /bytes/2 HTTP/1.1\nHost: t\n\n")
        assert c.response().body == b"\x00\x01"


def test_idle_keep_alive_connection_times_out(serve):
    web = serve("http", idle_timeout=0.5)
    with Client(web.port) as c:
        assert c.request("GET", "/bytes/1").status == 200
        started = time.monotonic()
        assert c.at_eof()
        assert time.monotonic() - started < 3
    assert wait_until(lambda: web.active_clients == 0)


# --- HTTP: errors -------------------------------------------------------------


def test_404_and_405(web):
    with Client(web.port) as c:
        reply = c.request("GET", "/nope")
        assert reply.status == 404
        assert reply.headers["content-length"] == str(len(reply.body))
        for method in ("DELETE", "OPTIONS", "PATCH", "TRACE"):
            reply = c.request(method, "/")
            assert reply.status == 405
            assert reply.headers["allow"] == "GET, HEAD, PUT, POST"
        assert c.request("GET", "bytes/1").status == 400  # neither origin nor absolute form
        assert c.request("GET", "/bytes/1").status == 200


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTQ/1.1\r\n\r\n", 400),
        (b"GET \x01 HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n", 400),
        (b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    ],
)
def test_malformed_requests_get_an_error_then_close(web, raw, status):
    with Client(web.port) as c:
        c.send(raw)
        reply = c.response()
        assert reply.status == status
        assert reply.headers["connection"] == "close"
        assert reply.headers["content-length"] == str(len(reply.body))
        assert c.at_eof()


def test_endless_request_line_is_refused(web):
    with Client(web.port) as c:
        c.send(b"GET /" + b"a" * 20_000)  # no line end at all
        assert c.response().status == 414


def test_client_vanishing_mid_request(web):
    for raw in (b"GET /bytes/1 HTT", b"PUT / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"):
        with Client(web.port) as c:
            c.send(raw)
    assert wait_until(lambda: web.active_clients == 0)
    with Client(web.port) as c:
        assert c.request("GET", "/bytes/1").status == 200


def test_get_with_a_body_is_read_and_ignored(web):
    with Client(web.port) as c:
        c.send(b"GET /bytes/2 HTTP/1.1\r\nContent-Length: 4\r\n\r\nxxxx")
        assert c.response().body == b"\x00\x01"
        assert c.request("GET", "/bytes/1").body == b"\x00"
