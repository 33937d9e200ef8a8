"""The built-in services, run on the host kernel's sockets (KernelNet) over
127.0.0.1 with ephemeral ports: the same code the stack runs on its own
socket facade."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time

import pytest

from stack.services import (
    KernelNet,
    ServiceSpec,
    parse_service,
    start_service,
)
from stack.services.http import CHUNK

HOST = "127.0.0.1"
NET = KernelNet()


def expected_bytes(n: int) -> bytes:
    """Byte i is i % 251 (built by repetition; test_get_bytes checks the
    server against the formula itself, byte by byte)."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


@pytest.fixture
def serve():
    """Start services on 127.0.0.1 port 0; all are closed afterwards."""
    running = []

    def start(kind: str, directory=None, **options):
        svc = start_service(NET, ServiceSpec(kind, 0, directory), HOST, **options)
        running.append(svc)
        return svc

    yield start
    for svc in running:
        svc.close()


@pytest.fixture
def web(serve):
    return serve("http")


class Reply:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Client:
    """A deliberately plain HTTP client over one kernel socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.rfile = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, method: str, path: str, headers=(), body: bytes = b"", version: str = "HTTP/1.1"
    ) -> Reply:
        lines = [f"{method} {path} {version}", "Host: test"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return self.response(head_only=method == "HEAD")

    def response(self, head_only: bool = False) -> Reply:
        status_line = self.rfile.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        _, status, reason = status_line.decode().rstrip("\r\n").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline().decode("latin-1")
            assert line.endswith("\r\n")
            if line == "\r\n":
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if not head_only and not status.startswith("1"):
            body = self.rfile.read(int(headers["content-length"]))
        return Reply(int(status), reason, headers, body)

    def at_eof(self) -> bool:
        """Whether the server has closed the connection (nothing more to read)."""
        try:
            return self.rfile.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_until(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- parse_service ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, spec",
    [
        ("http:8080", ServiceSpec("http", 8080)),
        ("http:8080:/srv/www", ServiceSpec("http", 8080, "/srv/www")),
        ("http:80:/dir/with:colon", ServiceSpec("http", 80, "/dir/with:colon")),
        ("echo:7", ServiceSpec("echo", 7)),
        ("discard:9", ServiceSpec("discard", 9)),
        ("chargen:19", ServiceSpec("chargen", 19)),
        ("udp-echo:7", ServiceSpec("udp-echo", 7)),
        ("echo:65535", ServiceSpec("echo", 65535)),
    ],
)
def test_parse_service_good(text, spec):
    assert parse_service(text) == spec
    assert str(spec) == text


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "unknown service"),
        ("ftp:21", "unknown service"),
        ("HTTP:80", "unknown service"),
        ("http", "missing port"),
        ("http:", "missing port"),
        ("http:abc", "port"),
        ("http:0", "port"),
        ("http:65536", "port"),
        ("http:-1", "port"),
        ("http: 80", "port"),
        ("http:+80", "port"),
        ("http:\uff18\uff10", "port"),
        ("http:8080:", "empty directory"),
        ("echo:7:/tmp", "only http"),
        ("udp-echo:7:x", "only http"),
    ],
)
def test_parse_service_bad(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_service(text)


def test_service_spec_checks_itself():
    with pytest.raises(ValueError):
        ServiceSpec("gopher", 70)
    with pytest.raises(ValueError):
        ServiceSpec("echo", 70000)
    with pytest.raises(ValueError):
        ServiceSpec("echo", 7, "/srv")


def test_http_directory_must_exist(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        start_service(NET, ServiceSpec("http", 0, str(tmp_path / "missing")), HOST)


def test_start_service_takes_a_string():
    with socket.create_server((HOST, 0)) as probe:
        port = probe.getsockname()[1]
    with start_service(NET, f"echo:{port}", HOST) as svc:
        assert svc.port == port
        assert "echo" in repr(svc)
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
    assert svc.closed


# --- HTTP: /bytes/N ----------------------------------------------------------


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


# --- HTTP: connections ---------------------------------------------------------


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


# --- HTTP: uploads -------------------------------------------------------------


def upload_answer(body: bytes) -> dict:
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("size", [0, 1, 70_000, 3_000_000])
def test_upload_with_content_length(web, method, size):
    body = random.Random(size).randbytes(size)
    with Client(web.port) as c:
        # Client adds Content-Length itself when there is a body.
        headers = [("Content-Length", "0")] if size == 0 else []
        reply = c.request(method, "/any/path", headers=headers, body=body)
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == upload_answer(body)
        assert reply.body.startswith(b'{"bytes": %d, "sha256": "' % size)
        # still alive
        assert c.request("GET", "/bytes/1").body == b"\x00"


def test_upload_without_length_is_empty(web):
    with Client(web.port) as c:
        assert c.request("POST", "/").json() == upload_answer(b"")


def chunked(body: bytes, sizes) -> bytes:
    out = []
    pos = 0
    for size in sizes:
        piece = body[pos : pos + size]
        if not piece:
            break
        ext = b";name=value" if len(out) % 2 else b""
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        pos += len(piece)
    assert pos == len(body)
    return b"".join(out) + b"0\r\nX-Trailer: yes\r\n\r\n"


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_upload_chunked(web, method):
    rng = random.Random(7)
    body = rng.randbytes(500_000)
    sizes = [1, 2, 100, 65536, 100_000] + [rng.randrange(1, 50_000) for _ in range(60)]
    sizes.append(len(body))
    with Client(web.port) as c:
        c.send(
            f"{method} /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunked(body, sizes)
        )
        reply = c.response()
        assert reply.status == 200
        assert reply.json() == upload_answer(body)
        assert c.request("GET", "/bytes/2").body == b"\x00\x01"


def test_upload_chunked_uppercase_hex_and_empty(web):
    with Client(web.port) as c:
        c.send(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n")
        assert c.response().json() == upload_answer(b"0123456789")
        c.send(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert c.response().json() == upload_answer(b"")


@pytest.mark.parametrize("encoding", ["length", "chunked"])
def test_expect_100_continue(web, encoding):
    body = random.Random(3).randbytes(2_000_000)
    framing = (
        f"Content-Length: {len(body)}" if encoding == "length" else "Transfer-Encoding: chunked"
    )
    with Client(web.port) as c:
        c.send(f"PUT /f HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n{framing}\r\n\r\n".encode())
        # The interim answer must come before any of the body is sent.
        interim = c.response()
        assert (interim.status, interim.reason) == (100, "Continue")
        c.send(body if encoding == "length" else chunked(body, [300_000] * 7))
        reply = c.response()
        assert reply.status == 200
        assert reply.json() == upload_answer(body)


def test_unknown_expectation_is_417(web):
    with Client(web.port) as c:
        c.send(b"PUT / HTTP/1.1\r\nExpect: coffee\r\nContent-Length: 3\r\n\r\nabc")
        assert c.response().status == 417


# --- HTTP: errors ----------------------------------------------------------------


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


# --- HTTP: pages and files -------------------------------------------------------------


def test_front_page_without_directory(web):
    with Client(web.port) as c:
        reply = c.request("GET", "/")
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/html")
        assert b"stack" in reply.body and b"/bytes/" in reply.body
        assert c.request("GET", "/index.html").status == 404


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "empty").mkdir()
    (www / "index.html").write_bytes(b"<h1>home</h1>\n")
    (www / "a.txt").write_bytes(b"hello file\n")
    (www / "sub" / "index.html").write_bytes(b"<p>sub</p>\n")
    (www / "sub" / "big.bin").write_bytes(random.Random(1).randbytes(3 * CHUNK + 17))
    (www / "with space.txt").write_bytes(b"spaced\n")
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET\n")
    os.symlink(tmp_path / "secret.txt", www / "out")
    os.symlink(tmp_path, www / "up")
    return www


def test_files_are_served(serve, site):
    web = serve("http", str(site))
    with Client(web.port) as c:
        reply = c.request("GET", "/")
        assert reply.body == b"<h1>home</h1>\n"
        assert reply.headers["content-type"].startswith("text/html")
        reply = c.request("GET", "/a.txt")
        assert reply.body == b"hello file\n"
        assert reply.headers["content-type"].startswith("text/plain")
        big = (site / "sub" / "big.bin").read_bytes()
        reply = c.request("GET", "/sub/big.bin")
        assert reply.body == big
        assert reply.headers["content-type"] == "application/octet-stream"
        reply = c.request("HEAD", "/sub/big.bin")
        assert reply.headers["content-length"] == str(len(big))
        assert c.request("GET", "/sub/").body == b"<p>sub</p>\n"
        assert c.request("GET", "/sub").body == b"<p>sub</p>\n"
        assert c.request("GET", "/with%20space.txt").body == b"spaced\n"
        assert c.request("GET", "/a.txt?v=2").body == b"hello file\n"
        assert c.request("GET", "/sub/../a.txt").body == b"hello file\n"
        assert c.request("GET", "/empty/").status == 404
        assert c.request("GET", "/missing").status == 404
        assert c.request("GET", "/a.txt/x").status == 404
        assert c.request("GET", "/%00").status == 404
        assert c.request("GET", "/%ff").status == 404
        assert c.request("GET", "/bytes/3").body == b"\x00\x01\x02"
        assert c.request("PUT", "/a.txt", body=b"x").json() == upload_answer(b"x")
        assert (site / "a.txt").read_bytes() == b"hello file\n"


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/out",
        "/up/secret.txt",
        "/up/",
        "//etc/passwd",
        "/../../../../../../etc/passwd",
    ],
)
def test_path_traversal_is_refused(serve, site, path):
    web = serve("http", str(site))
    with Client(web.port) as c:
        reply = c.request("GET", path)
        assert reply.status in (403, 404), path
        assert b"SECRET" not in reply.body and b"root:" not in reply.body
        assert c.request("GET", "/a.txt").status == 200


def test_directory_without_index_falls_back_to_front_page(serve, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"f")
    web = serve("http", str(tmp_path))
    with Client(web.port) as c:
        assert b"/bytes/" in c.request("GET", "/").body
        assert c.request("GET", "/f.txt").body == b"f"


# --- HTTP: many clients ------------------------------------------------------------


def test_50_concurrent_clients_10_requests_each(web):
    errors: list[str] = []
    start = threading.Barrier(50)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            conn = http.client.HTTPConnection(HOST, web.port, timeout=30)
            start.wait()
            for i in range(10):
                if i % 3 == 2:
                    body = rng.randbytes(rng.randrange(0, 100_000))
                    conn.request("PUT", f"/u/{seed}/{i}", body=body)
                    resp = conn.getresponse()
                    got = json.loads(resp.read())
                    if resp.status != 200 or got != upload_answer(body):
                        errors.append(f"client {seed} PUT {i}: {resp.status} {got}")
                else:
                    n = rng.randrange(0, 300_000)
                    conn.request("GET", f"/bytes/{n}")
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status != 200 or data != expected_bytes(n):
                        errors.append(f"client {seed} GET {n}: {resp.status} {len(data)}")
            conn.close()
        except Exception as exc:  # noqa: BLE001 - collected and reported
            errors.append(f"client {seed}: {exc!r}")

    threads = [threading.Thread(target=client, args=(s,)) for s in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert wait_until(lambda: web.active_clients == 0)


def test_clients_beyond_the_limit_are_closed(serve):
    echo = serve("echo", max_clients=2)
    first = socket.create_connection((HOST, echo.port), timeout=5)
    second = socket.create_connection((HOST, echo.port), timeout=5)
    for s in (first, second):
        s.sendall(b"hi")
        assert s.recv(10) == b"hi"
    with socket.create_connection((HOST, echo.port), timeout=5) as third:
        try:
            assert third.recv(10) == b""
        except ConnectionResetError:
            pass
    first.close()
    assert wait_until(lambda: echo.active_clients == 1)
    with socket.create_connection((HOST, echo.port), timeout=5) as fourth:
        fourth.sendall(b"again")
        assert fourth.recv(10) == b"again"
    second.close()


# --- echo, discard, chargen, udp-echo -----------------------------------------------


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


# --- stopping ---------------------------------------------------------------------


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


# --- interop with a real client -----------------------------------------------------------

curl = shutil.which("curl")
needs_curl = pytest.mark.skipif(curl is None, reason="curl is not installed")


def run_curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [curl, "--silent", "--show-error", "--max-time", "30", *args],
        input=stdin,
        capture_output=True,
        check=True,
    )


@needs_curl
def test_curl_download(web, tmp_path):
    out = tmp_path / "download"
    run_curl("-o", str(out), f"http://{HOST}:{web.port}/bytes/100000")
    assert out.read_bytes() == expected_bytes(100_000)


@needs_curl
def test_curl_upload_file(web, tmp_path):
    body = random.Random(11).randbytes(2_500_000)
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    done = run_curl("-v", "-T", str(path), f"http://{HOST}:{web.port}/upload.bin")
    assert json.loads(done.stdout) == upload_answer(body)
    log = done.stderr.decode(errors="replace")
    if "Expect: 100-continue" in log:
        assert "HTTP/1.1 100 Continue" in log


@needs_curl
def test_curl_upload_stdin_is_chunked(web):
    body = random.Random(12).randbytes(300_000)
    done = run_curl("-v", "-T", "-", f"http://{HOST}:{web.port}/stdin", stdin=body)
    assert json.loads(done.stdout) == upload_answer(body)
    assert "Transfer-Encoding: chunked" in done.stderr.decode(errors="replace")


@needs_curl
def test_curl_reuses_the_connection(web):
    url = f"http://{HOST}:{web.port}"
    done = run_curl("-v", f"{url}/bytes/10", f"{url}/bytes/20", f"{url}/")
    assert done.stdout.startswith(expected_bytes(10) + expected_bytes(20))
    assert b"<h1>stack</h1>" in done.stdout
    log = done.stderr.decode(errors="replace")
    assert "Re-using existing connection" in log or "Reusing existing" in log
