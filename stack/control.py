"""The control socket of a running stack: read-only live views for ``stack ss``,
``stack stats``, ``stack neigh`` and ``stack route``.

``stack up`` listens on an AF_UNIX stream socket: by default the abstract
name ``\\0stack/<tap>`` (abstract names belong to the network namespace, so
a command in the same namespace finds the stack on that TAP, and two
namespaces never collide), or a filesystem path (``--control PATH``,
removed when the server closes).

The protocol: the client sends one JSON object on one line, the server
answers one JSON object on one line and closes. Requests are
``{"cmd": "ss" | "stats" | "neigh" | "route" | "hello"}``; answers are
``{"ok": true, ...data}`` or ``{"ok": false, "error": "why"}``.

One thread serves every client, non-blocking, with a selector: a request
may be at most :data:`MAX_REQUEST` bytes and must arrive within
:data:`REQUEST_TIMEOUT` seconds, an answer must be taken within
:data:`RESPONSE_TIMEOUT`, and at most :data:`MAX_CLIENTS` clients are
served at once, so a slow or hostile client holds up nobody. A bad request
(not JSON, too long, too slow, an unknown command) is answered with an
error, counted (``socket.control_errors``) and traced (``socket``
``control_error``); the server keeps serving. It takes the stack's lock
only while the views copy their data (``stack.live``), never while it
encodes or writes.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import stat
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from stack.runtime import Stack

MAX_REQUEST = 4096           # bytes, newline included
REQUEST_TIMEOUT = 2.0        # seconds from connect to a complete request
RESPONSE_TIMEOUT = 5.0       # seconds for the client to take the answer
MAX_CLIENTS = 16
MAX_RESPONSE = 64 << 20      # what a client accepts


class ControlError(Exception):
    """The stack answered with an error, or nothing answered."""


class NoStack(ControlError):
    """Nothing listens on the control address."""


def abstract_name(tap: str) -> str:
    """The default control address of the stack on ``tap``."""
    return f"\0stack/{tap}"


def describe(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


class _Client:
    __slots__ = ("sock", "inbuf", "outbuf", "deadline", "answered")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = b""
        self.deadline = now + REQUEST_TIMEOUT
        self.answered = False


class ControlServer:
    """Serves the live views of ``net`` on ``address`` (see the module doc)."""

    def __init__(self, net: Stack, address: str, tap: str | None = None) -> None:
        self.net = net
        self.address = address
        self.tap = tap
        self.requests = 0
        self.errors = 0
        self._handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "ss": lambda: {"sockets": net.connections()},
            "stats": lambda: {"counters": net.stats(), "t": net.clock() - net.started,
                              "dhcp": net.dhcp.status() if net.dhcp is not None else None},
            "neigh": lambda: {"neighbours": net.neighbour_table()},
            "route": lambda: {"routes": net.routes()},
            "hello": self._hello,
        }
        self._sock = self._bind(address)
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._clients: dict[int, _Client] = {}
        self._thread = threading.Thread(target=self._loop, name="stack-control", daemon=True)
        self._thread.start()

    def _bind(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.bind(address)
            except OSError as e:
                if e.errno != errno.EADDRINUSE or address.startswith("\0") or _alive(address):
                    raise
                # A socket file left by a stack that is gone: take its place.
                if stat.S_ISSOCK(os.lstat(address).st_mode):
                    os.unlink(address)
                sock.bind(address)
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _hello(self) -> dict[str, Any]:
        net = self.net
        return {"tap": self.tap, "address": f"{net.address_str}/{net.prefix_len}",
                "pid": os.getpid(), "uptime": net.clock() - net.started}

    # ---- the thread -----------------------------------------------------------------

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._closed:
                now = time.monotonic()
                waits = [c.deadline for c in self._clients.values()]
                timeout = max(0.0, min(waits) - now) if waits else None
                for key, events in sel.select(timeout):
                    if key.fileobj is self._sock:
                        self._accept(sel)
                    elif key.fileobj == self._wake_r:
                        return
                    else:
                        client = self._clients.get(key.fd)
                        if client is not None:
                            try:
                                self._serve(sel, client, events)
                            except Exception as e:  # a bug: this client goes, the server stays
                                self._fail(sel, client, e)
                now = time.monotonic()
                for client in [c for c in self._clients.values() if c.deadline <= now]:
                    try:
                        if client.answered:
                            self._drop(sel, client)
                        else:
                            self._error(sel, client, "request timed out")
                    except Exception as e:
                        self._fail(sel, client, e)
        finally:
            for client in list(self._clients.values()):
                self._drop(sel, client)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            sock, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:  # out of file descriptors, say: try again a little later
            time.sleep(0.1)
            return
        sock.setblocking(False)
        client = _Client(sock, time.monotonic())
        self._clients[sock.fileno()] = client
        sel.register(sock, selectors.EVENT_READ, None)
        if len(self._clients) > MAX_CLIENTS:
            self._error(sel, client, "too many clients")

    def _serve(self, sel: selectors.BaseSelector, client: _Client, events: int) -> None:
        if client.answered:
            if events & selectors.EVENT_WRITE:
                self._write(sel, client)
            return
        try:
            data = client.sock.recv(MAX_REQUEST + 1 - len(client.inbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, client)
            return
        client.inbuf += data
        line_end = client.inbuf.find(b"\n", 0, MAX_REQUEST)
        if line_end >= 0:
            self._answer(sel, client, bytes(client.inbuf[:line_end]))
        elif len(client.inbuf) >= MAX_REQUEST:
            self._error(sel, client, f"request longer than {MAX_REQUEST} bytes")
        elif not data:
            if client.inbuf:
                self._answer(sel, client, bytes(client.inbuf))  # (ended by EOF)
            else:
                self._drop(sel, client)

    def _answer(self, sel: selectors.BaseSelector, client: _Client, line: bytes) -> None:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as e:  # (UnicodeDecodeError is a ValueError)
            self._error(sel, client, f"bad request: not JSON ({e})")
            return
        cmd = request.get("cmd") if isinstance(request, dict) else None
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            known = ", ".join(self._handlers)
            self._error(sel, client, f"unknown command {cmd!r} (commands: {known})")
            return
        try:
            body = handler()
        except Exception as e:  # a bug in a view; the server goes on
            self._error(sel, client, f"internal error: {e!r}")
            return
        self.requests += 1
        self._respond(sel, client, {"ok": True, **body})

    def _error(self, sel: selectors.BaseSelector, client: _Client, why: str) -> None:
        self.errors += 1
        trace = self.net.trace
        with self.net.lock:
            trace.count("socket", "control_errors")
            if trace.on:
                trace.event("socket", "control_error", reason=why[:200])
        self._respond(sel, client, {"ok": False, "error": why})

    def _respond(self, sel: selectors.BaseSelector, client: _Client, body: dict[str, Any]) -> None:
        client.answered = True
        client.outbuf = (json.dumps(body, default=str) + "\n").encode()
        client.deadline = time.monotonic() + RESPONSE_TIMEOUT
        sel.modify(client.sock, selectors.EVENT_WRITE, None)
        self._write(sel, client)

    def _write(self, sel: selectors.BaseSelector, client: _Client) -> None:
        try:
            n = client.sock.send(client.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sel, client)
            return
        client.outbuf = client.outbuf[n:]
        if not client.outbuf:
            self._drop(sel, client)

    def _fail(self, sel: selectors.BaseSelector, client: _Client, e: Exception) -> None:
        self.errors += 1
        with self.net.lock:
            self.net.trace.count("socket", "control_errors")
            if self.net.trace.on:
                self.net.trace.event("socket", "control_error", reason=f"internal: {e!r}"[:200])
        self._drop(sel, client)

    def _drop(self, sel: selectors.BaseSelector, client: _Client) -> None:
        if self._clients.pop(client.sock.fileno(), None) is not None:
            sel.unregister(client.sock)
        client.sock.close()

    # ---- shutdown --------------------------------------------------------------

    def close(self) -> None:
        """Stop serving; remove the socket file (for a path)."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"\x01")
        self._thread.join(timeout=5)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if not self.address.startswith("\0"):
            try:
                os.unlink(self.address)
            except OSError:
                pass

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(path: str) -> bool:
    """Something answers on the socket file ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def request(address: str, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask the stack on ``address`` one command; its answer (without ``ok``).

    Raises NoStack when nothing listens there, ControlError when the stack
    answers with an error or not at all."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NoStack(e.strerror or str(e)) from None
        except OSError as e:
            raise NoStack(e.strerror or str(e)) from None
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        chunks = []
        size = 0
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > MAX_RESPONSE:
                raise ControlError("answer too long")
    except TimeoutError:
        raise ControlError(f"no answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(e.strerror or str(e)) from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError("the answer is not JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        why = answer.get("error") if isinstance(answer, dict) else None
        raise ControlError(str(why or "bad answer"))
    del answer["ok"]
    return answer
