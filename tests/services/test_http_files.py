"""The HTTP service: pages, files from a directory, many clients at once.

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading

import pytest

from stack.services.http import CHUNK
from tests.helpers.services import HOST, Client, expected_bytes, upload_answer, wait_until


# --- HTTP: pages and files ----------------------------------------------------


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


# --- HTTP: many clients -------------------------------------------------------


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
