"""One HTTP/1.1 connection as a state machine on the services' event loop.

:class:`HttpConnection` is fed what arrives (``received``) and moves through
reading a request head, reading its body into a sink (SHA-256 for uploads:
nothing of the body is kept), and answering: the response head and a small
body are written at once, a large body is streamed chunk by chunk as the
socket takes it. While an answer is going out, reading pauses; once it is
out (``drained``), the next request (pipelined, or yet to come) is read, or
the connection ends by ``Connection: close``, an error, or the client
closing. :class:`Busy` answers 503 when the service is full.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from stack.services.http import (
    MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS, MAX_REQUEST_LINE, METHODS, HttpError, Request, Response,
    Router, error_response, parse_head, response_head, small_response,
)

from stack.services.simple import Deaf

if TYPE_CHECKING:
    from stack.services.loop import Channel

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# States.
HEAD, EXACT, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, ANSWERING, DONE = range(8)
_IN_DATA = (EXACT, CHUNK_DATA)


class HttpConnection:
    """The HTTP protocol of one client channel."""

    __slots__ = ("ch", "router", "state", "buf", "searched", "request", "remaining",
                 "digest", "total", "trailers", "eof_seen", "keep")

    def __init__(self, ch: Channel, router: Router) -> None:
        self.ch = ch
        self.router = router
        self.state = HEAD
        self.buf = bytearray()  # received, not yet consumed
        self.searched = 0  # how much of buf is known to hold no head end
        self.request: Request | None = None
        self.remaining = 0  # body bytes (or chunk bytes) still to come
        self.digest: Any = None  # of the body, made when one comes
        self.total = 0  # body bytes read
        self.trailers = 0
        self.eof_seen = False
        self.keep = False

    # -- what the loop calls --------------------------------------------------------

    def received(self, data: memoryview) -> None:
        if self.state in _IN_DATA and not self.buf:
            # The common case of an upload: the bytes go to the sink from the
            # loop's buffer, never copied.
            take = min(self.remaining, len(data))
            self._sink(data[:take])
            data = data[take:]
        if data:
            self.buf += data
        self._advance()

    def eof(self) -> None:
        self.eof_seen = True
        self._advance()

    def drained(self) -> None:
        if self.state != ANSWERING:
            return
        if not self.keep:
            self.state = DONE
            self.ch.finish()
            return
        self._next_request()
        self.ch.resume()
        self._advance()

    # -- the machine ----------------------------------------------------------------------

    def _advance(self) -> None:
        try:
            while self.state not in (ANSWERING, DONE):
                if not self._step():
                    break
        except HttpError as err:
            # Malformed: where the next request starts is unknown.
            self._answer(error_response(err), keep=False)
            return
        if self.state in (ANSWERING, DONE) or not self.eof_seen:
            return
        # The client closed its side and no whole request waits: between
        # requests that is a clean end, in the middle one a vanished client.
        self.state = DONE
        self.ch.close()

    def _step(self) -> bool:
        """One move; False when more bytes are needed."""
        state = self.state
        if state == HEAD:
            return self._head()
        if state in _IN_DATA:
            if not self.buf:
                return False
            take = min(self.remaining, len(self.buf))
            self._sink(memoryview(self.buf)[:take])
            del self.buf[:take]
            return True
        line = self._line()
        if line is None:
            return False
        if state == CHUNK_SIZE:
            match = _CHUNK_SIZE.fullmatch(line)
            if not match:
                raise HttpError(400, "malformed chunk size")
            size = int(match.group(1), 16)
            if size == 0:
                self.state = TRAILER
            else:
                self.remaining = size
                self.state = CHUNK_DATA
        elif state == CHUNK_END:
            if line:
                raise HttpError(400, "chunk data longer than its size")
            self.state = CHUNK_SIZE
        else:  # TRAILER: fields dropped, up to an empty line
            if not line:
                self._respond()
            else:
                self.trailers += 1
                if self.trailers > MAX_HEADERS:
                    raise HttpError(431, "too many trailer fields")
        return True

    def _head(self) -> bool:
        buf = self.buf
        if buf.startswith((b"\r", b"\n")):
            # Empty lines before a request line are ignored (RFC 9112 2.2).
            kept = len(buf.lstrip(b"\r\n"))
            del buf[: len(buf) - kept]
            self.searched = 0
        match = _HEAD_END.search(buf, max(0, self.searched - 3))
        if match:
            if match.start() > MAX_HEAD:
                raise HttpError(431)
            head = bytes(buf[: match.start()])
            del buf[: match.end()]
            self.searched = 0
            self._start(parse_head(head))
            return True
        if buf.find(b"\n", 0, MAX_REQUEST_LINE) < 0 and len(buf) > MAX_REQUEST_LINE:
            raise HttpError(414)
        if len(buf) > MAX_HEAD:
            raise HttpError(431)
        self.searched = len(buf)
        return False

    def _line(self) -> bytes | None:
        end = self.buf.find(b"\n")
        if end < 0:
            if len(self.buf) > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk line too long")
            return None
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return line.removesuffix(b"\r")

    def _start(self, request: Request) -> None:
        self.request = request
        self.keep = request.keep_alive
        if request.method not in METHODS:
            # The body, if any, stays unread: the connection cannot go on.
            self.keep = self.keep and not request.has_body
            self._answer(error_response(HttpError(405)), self.keep)
            return
        if request.has_body and request.expect_continue:
            self.ch.write(CONTINUE)
        if request.has_body:
            self.digest = hashlib.sha256()
        if request.chunked:
            self.state = CHUNK_SIZE
        elif request.content_length:
            self.remaining = request.content_length
            self.state = EXACT
        else:
            self._respond()

    def _sink(self, data: memoryview | bytearray) -> None:
        self.digest.update(data)
        self.total += len(data)
        self.remaining -= len(data)
        if self.remaining == 0:
            if self.state == EXACT:
                self._respond()
            else:
                self.state = CHUNK_END

    def _respond(self) -> None:
        request = self.request
        assert request is not None
        try:
            if request.method in ("PUT", "POST"):
                digest = self.digest or hashlib.sha256()
                body = json.dumps({"bytes": self.total, "sha256": digest.hexdigest()}) + "\n"
                response = small_response(200, "application/json", body.encode())
            else:
                response = self.router.route(request)
        except HttpError as err:
            response = error_response(err)
        self._answer(response, self.keep, head_only=request.method == "HEAD")

    def _answer(self, resp: Response, keep: bool, head_only: bool = False) -> None:
        request = self.request
        http10 = request is not None and request.version < (1, 1)
        self.keep = keep
        self.state = ANSWERING
        self.ch.pause()
        head = response_head(resp, keep, http10)
        if head_only:
            self.ch.write(head)
            resp.close()
        elif resp.body is not None:
            self.ch.write(head + resp.body)
            resp.close()
        else:
            assert resp.chunks is not None  # a Response has a body or chunks
            self.ch.write(head)
            self.ch.stream(resp.chunks, resp.close)

    def _next_request(self) -> None:
        if not self.buf:
            self.buf = bytearray()  # an idle connection keeps no grown buffer
        self.state = HEAD
        self.request = None
        self.remaining = 0
        self.digest = None
        self.total = 0
        self.trailers = 0


class Busy(Deaf):
    """The protocol for a client beyond ``max_clients``: 503 with
    ``Connection: close``, then a graceful close; what it sends is dropped."""

    __slots__ = ("ch",)

    def __init__(self, ch: Channel) -> None:
        self.ch = ch
        resp = error_response(HttpError(503, "too many clients, try again later"))
        ch.write(response_head(resp, keep_alive=False) + (resp.body or b""))
        ch.finish()
