"""The HTTP service: uploads (Content-Length, chunked, Expect: 100-continue).

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import random

import pytest

from tests.helpers.services import Client, upload_answer


# --- HTTP: uploads ------------------------------------------------------------


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
