"""HTTP/1.1 server for ``--serve http:PORT[:DIR]``.

This module parses requests and builds responses; the per-connection state
machine that reads and answers them on the services' event loop is
:class:`stack.services.http_conn.HttpConnection`. A connection stays open
between requests (HTTP/1.1 by default, HTTP/1.0 when ``Connection:
keep-alive`` is asked) until the client closes, asks for ``Connection:
close``, idles out, or sends something malformed.

Routes (every response has ``Content-Length``):

- ``GET``/``HEAD /bytes/N``: N bytes where byte i is ``i % 251``, streamed
  from a precomputed pattern, so large N costs no memory.
- ``GET``/``HEAD /PATH``: the file PATH under DIR when a DIR is served
  (``index.html`` for a directory), 404 otherwise; ``/`` without DIR (or
  without ``DIR/index.html``) is a small page describing the stack.
- ``PUT``/``POST`` to any path: reads the whole body (``Content-Length`` or
  ``Transfer-Encoding: chunked``, honouring ``Expect: 100-continue``) and
  answers ``{"bytes": N, "sha256": "<hex>"}``.
- Anything else: 405 for other methods, 400 for malformed requests; 503
  (``Connection: close``) when the service already serves its
  ``max_clients``.
"""

from __future__ import annotations

import email.utils
import io
import mimetypes
import os
import re
import stat
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Iterator
from urllib.parse import unquote

MAX_HEAD = 65536  # request line and headers together
MAX_REQUEST_LINE = 8192
MAX_HEADERS = 100
MAX_CHUNK_LINE = 4096
MAX_BYTES = 10 * 1024**3  # largest N for /bytes/N
METHODS = ("GET", "HEAD", "PUT", "POST")

# Byte i of any /bytes/N body is i % 251. A whole number of 251-byte periods,
# so every chunk of this size continues the sequence where the last ended.
CHUNK = 251 * 512
_PATTERN = bytes(range(251)) * 512

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_ABSOLUTE = re.compile(r"https?://[^/?#]*([^?#]*)", re.IGNORECASE)
_BYTES_PATH = re.compile(r"/bytes/([0-9]{1,20})")
_DIGITS = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?")

PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>stack</title></head>
<body>
<h1>stack</h1>
<p>A userspace TCP/IP stack written in Python. It speaks Ethernet on a
Linux TAP device: ARP, IPv4 with fragmentation, ICMP, UDP and TCP, under a
socket API shaped like Python's own. This page came to you through it.</p>
<ul>
<li><a href="/bytes/1000000">/bytes/N</a>: N bytes where byte i is i % 251
(GET or HEAD)</li>
<li>PUT or POST a body to any path: the answer is its length and SHA-256
as JSON</li>
</ul>
</body>
</html>
"""


class HttpError(Exception):
    """A request answered with an error ``status``."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"{status} {detail}".strip())
        self.status = status
        self.detail = detail


class PeerClosed(Exception):
    """The connection cannot go on: a file being served shrank after its
    Content-Length went out, so only closing tells the client."""


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str]  # lower-case names; repeated fields joined by ", "
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class Response:
    """``body`` for small answers; ``chunks`` (exactly ``length`` bytes in
    all) for large ones. ``file`` is closed once the answer is sent."""

    status: int
    content_type: str
    length: int
    body: bytes | None = None
    chunks: Iterator[memoryview] | None = None
    file: io.BufferedIOBase | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def small_response(status: int, content_type: str, body: bytes,
           headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, content_type, len(body), body=body, headers=headers)


def error_response(err: HttpError) -> Response:
    text = f"{err.status} {HTTPStatus(err.status).phrase}"
    if err.detail:
        text += f": {err.detail}"
    headers = (("Allow", ", ".join(METHODS)),) if err.status == 405 else ()
    return small_response(err.status, "text/plain; charset=utf-8", (text + "\n").encode(), headers)


def parse_head(head: bytes) -> Request:
    """Parse a request line and header fields (without the empty line that
    ends them). Raises :class:`HttpError` for anything malformed."""
    lines = _LINE_END.split(head)
    request_line = lines[0]
    if len(request_line) > MAX_REQUEST_LINE:
        raise HttpError(414)
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "malformed method")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "malformed request target")
    match = _VERSION.fullmatch(version)
    if not match:
        raise HttpError(400, "malformed HTTP version")
    if match.group(1) != b"1":
        raise HttpError(505)
    ver = (1, int(match.group(2)))
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise HttpError(400, "malformed header value")
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    chunked = False
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        if ver < (1, 1):
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise HttpError(501, "only the chunked transfer coding is supported")
        chunked = True
    length = None
    if "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise HttpError(400, "malformed Content-Length")
        length = int(values.pop())

    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if ver >= (1, 1) else "keep-alive" in tokens
    if chunked and length is not None:
        # Framing the client may not agree with: answer, then close.
        keep_alive = False
        length = None

    expect = headers.get("expect")
    expect_continue = False
    if expect is not None and ver >= (1, 1):
        if expect.lower() != "100-continue":
            raise HttpError(417)
        expect_continue = True

    return Request(
        method.decode("ascii"),
        target.decode("ascii"),
        ver,
        headers,
        length,
        chunked,
        keep_alive,
        expect_continue,
    )


_date: list[Any] = [0, ""]  # the second the Date value was made for, and it


def http_date() -> str:
    """Now as an HTTP date, made once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _date[1]


def response_head(resp: Response, keep_alive: bool, http10: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}",
        f"Date: {http_date()}",
        "Server: stack",
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {resp.length}",
    ]
    lines.extend(f"{name}: {value}" for name, value in resp.headers)
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _pattern_chunks(length: int) -> Iterator[memoryview]:
    view = memoryview(_PATTERN)
    while length >= CHUNK:
        yield view
        length -= CHUNK
    if length:
        yield view[:length]


def _file_chunks(file: io.BufferedIOBase, length: int) -> Iterator[memoryview]:
    buf = memoryview(bytearray(CHUNK))
    while length:
        got = file.readinto(buf[: min(length, CHUNK)])
        if not got:
            # The file shrank after Content-Length went out; only closing
            # the connection tells the client the body is short.
            raise PeerClosed
        length -= got
        yield buf[:got]


def _path_of(target: str) -> str:
    """The path of a request target (origin or absolute form), query removed."""
    if not target.startswith("/"):
        match = _ABSOLUTE.match(target)
        if not match:
            raise HttpError(400, "malformed request target")
        target = match.group(1) or "/"
    return target.partition("?")[0].partition("#")[0]


def _bytes_response(path: str) -> Response:
    match = _BYTES_PATH.fullmatch(path)
    if not match:
        raise HttpError(400, "expected /bytes/N with N a whole number")
    n = int(match.group(1))
    if n > MAX_BYTES:
        raise HttpError(400, f"N is at most {MAX_BYTES}")
    if n <= CHUNK:
        return small_response(200, "application/octet-stream", _PATTERN[:n])
    return Response(200, "application/octet-stream", n, chunks=_pattern_chunks(n))


class Router:
    """What a GET or HEAD answers: ``/bytes/N``, files under ``root`` (the
    resolved directory of files to serve, or None) and the front page."""

    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.realpath(root) if root is not None else None
        self._types = mimetypes.MimeTypes()

    def route(self, request: Request) -> Response:
        """The response to a GET or HEAD (raises HttpError for an error one)."""
        path = _path_of(request.target)
        if path == "/bytes" or path.startswith("/bytes/"):
            return _bytes_response(path)
        if self.root is not None:
            response = self._file(self.root, path)
            if response is not None:
                return response
        if path == "/":
            return small_response(200, "text/html; charset=utf-8", PAGE)
        raise HttpError(404)

    @staticmethod
    def _inside(root: str, path: str) -> bool:
        return os.path.commonpath([root, path]) == root

    def _file(self, root: str, path: str) -> Response | None:
        """The file for ``path`` under the root; None for ``/`` when the root
        has no index.html. Raises HttpError 403/404."""
        try:
            relative = unquote(path, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(404) from None
        if "\0" in relative:
            raise HttpError(404)
        parts = [p for p in relative.split("/") if p]
        full = os.path.realpath(os.path.join(root, *parts))
        if not self._inside(root, full):
            raise HttpError(403, "outside the served directory")
        try:
            info = os.stat(full)
            if stat.S_ISDIR(info.st_mode):
                full = os.path.realpath(os.path.join(full, "index.html"))
                if not self._inside(root, full):
                    raise HttpError(403, "outside the served directory")
                info = os.stat(full)
        except OSError:
            if path == "/":
                return None
            raise HttpError(404) from None
        if not stat.S_ISREG(info.st_mode):
            raise HttpError(404)
        try:
            file = open(full, "rb")  # closed by Response.close
        except PermissionError:
            raise HttpError(403) from None
        except OSError:
            raise HttpError(404) from None
        length = os.fstat(file.fileno()).st_size
        content_type = self._types.guess_type(full)[0] or "application/octet-stream"
        if length <= CHUNK:
            with file:
                body = file.read(length)
            return small_response(200, content_type, body)
        return Response(200, content_type, length, chunks=_file_chunks(file, length), file=file)
