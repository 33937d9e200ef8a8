"""Built-in services that ``stack up --serve SERVICE`` runs.

Every service is written against a socket API that mirrors Python's
``socket`` module, reached through a ``net`` object with two calls:
``net.socket(family, type)`` and ``net.create_server(address, backlog=...)``.
The stack's socket facade provides them; :class:`KernelNet` provides them on
the host kernel's sockets, so the same service code runs in tests without a
TAP.

A service runs in daemon threads: one that accepts (or, for UDP, receives),
and one per client connection, at most ``max_clients`` at a time. Nothing
relies on a blocking call being interrupted by ``close`` from another thread:
every socket has a short timeout and each loop checks a stop flag between
waits, so :meth:`Service.close` returns within a couple of seconds on any
socket implementation.

    svc = start_service(net, parse_service("http:8080"))
    ...
    svc.close()
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from stack.services import http, simple

__all__ = [
    "KINDS",
    "Connection",
    "KernelNet",
    "Service",
    "ServiceSpec",
    "Stopped",
    "TcpService",
    "UdpService",
    "parse_service",
    "start_service",
]

log = logging.getLogger(__name__)

# How long one blocking call waits before the loop looks at the stop flag.
TICK = 0.2
# Client connections served at once per service; more are closed on accept.
MAX_CLIENTS = 256
# Seconds a client may make no progress (nothing received, nothing sent)
# before its connection is dropped, per kind. HTTP keep-alive idles out
# quickly; the classic services are used by hand from nc, so they wait long.
IDLE_TIMEOUT: dict[str, float | None] = {
    "http": 30.0,
    "echo": 600.0,
    "discard": 600.0,
    "chargen": 30.0,
    "udp-echo": None,
}
KINDS = tuple(IDLE_TIMEOUT)

_PORT = re.compile(r"[0-9]{1,5}")


class KernelNet:
    """The host kernel's sockets behind the facade's calls, for tests."""

    # ``socket`` last: inside the class body the name then means the method.
    create_server = staticmethod(socket.create_server)
    create_connection = staticmethod(socket.create_connection)
    socket = staticmethod(socket.socket)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What to serve: ``kind`` (one of :data:`KINDS`), ``port`` (0 picks a
    free one) and, for ``http`` only, a ``directory`` of files to serve."""

    kind: str
    port: int
    directory: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown service {self.kind!r} (expected one of: {', '.join(KINDS)})")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 0-65535")
        if self.directory is not None and self.kind != "http":
            raise ValueError(f"service {self.kind!r} takes no directory")
        if self.directory == "":
            raise ValueError("empty directory")

    @property
    def transport(self) -> str:
        """``"udp"`` or ``"tcp"``: the port space the service binds in."""
        return "udp" if self.kind == "udp-echo" else "tcp"

    def __str__(self) -> str:
        tail = f":{self.directory}" if self.directory is not None else ""
        return f"{self.kind}:{self.port}{tail}"


def parse_service(spec: str) -> ServiceSpec:
    """Parse ``KIND:PORT`` or ``http:PORT:DIR`` as given to ``--serve``.

    Raises ValueError naming what is wrong. The directory is not checked
    here; :func:`start_service` refuses one that does not exist.
    """
    parts = spec.split(":", 2)
    kind = parts[0]
    if kind not in KINDS:
        raise ValueError(
            f"{spec!r}: unknown service {kind!r} (expected one of: {', '.join(KINDS)})"
        )
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"{spec!r}: missing port (expected {kind}:PORT)")
    if not _PORT.fullmatch(parts[1]) or not 1 <= int(parts[1]) <= 65535:
        raise ValueError(f"{spec!r}: port must be a number from 1 to 65535, not {parts[1]!r}")
    directory = None
    if len(parts) == 3:
        if kind != "http":
            raise ValueError(f"{spec!r}: only http takes a directory (expected {kind}:PORT)")
        if not parts[2]:
            raise ValueError(f"{spec!r}: empty directory after the port")
        directory = parts[2]
    return ServiceSpec(kind, int(parts[1]), directory)


class ClientSocket(Protocol):
    """What the services use of an accepted TCP socket: the stack's facade
    socket and the kernel's ``socket.socket`` both are one."""

    def settimeout(self, value: float | None, /) -> None: ...
    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, /) -> int: ...
    def send(self, data: bytes | memoryview, /) -> int: ...
    def shutdown(self, how: int, /) -> None: ...
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def close(self) -> None: ...


class ListeningSocket(Protocol):
    """What a TCP service uses of its listening socket."""

    def settimeout(self, value: float | None, /) -> None: ...
    def getsockname(self) -> Any: ...
    def accept(self) -> tuple[ClientSocket, Any]: ...
    def close(self) -> None: ...


class DatagramSocket(Protocol):
    """What a UDP service uses of its socket."""

    def bind(self, address: tuple[str, int], /) -> None: ...
    def settimeout(self, value: float | None, /) -> None: ...
    def getsockname(self) -> Any: ...
    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]: ...
    def sendto(self, data: bytes, address: Any, /) -> int: ...
    def close(self) -> None: ...


class Net(Protocol):
    """The two calls services make on ``net``: the stack (``stack.Stack``)
    and :class:`KernelNet` (the class itself) both provide them."""

    def create_server(self, address: tuple[str, int], *, backlog: int | None = ...
                      ) -> ListeningSocket: ...
    def socket(self, family: int, type: int, /) -> DatagramSocket: ...


class Stopped(Exception):
    """A client connection ends: the service is closing or the peer idled out."""


class Connection:
    """One client socket as handlers see it.

    ``recv_into`` and ``sendall`` behave like the socket's, but wait in
    :data:`TICK` slices so that they raise :class:`Stopped` soon after the
    service closes, or once the peer has made no progress for
    ``idle_timeout`` seconds. Peer errors stay ``OSError``.
    """

    __slots__ = ("sock", "_stop", "_idle")

    def __init__(self, sock: ClientSocket, stop: threading.Event, idle_timeout: float) -> None:
        self.sock = sock
        self._stop = stop
        self._idle = idle_timeout
        sock.settimeout(TICK)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0) -> int:
        """Receive into ``buffer``; 0 means the peer closed its side."""
        started = time.monotonic()
        while True:
            if self._stop.is_set():
                raise Stopped("service closing")
            try:
                return self.sock.recv_into(buffer, nbytes)
            except TimeoutError:
                if time.monotonic() - started >= self._idle:
                    raise Stopped("idle timeout") from None

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte of ``data``."""
        view = memoryview(data).cast("B")
        last = time.monotonic()
        while view:
            if self._stop.is_set():
                raise Stopped("service closing")
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                if time.monotonic() - last >= self._idle:
                    raise Stopped("send stalled") from None
                continue
            view = view[sent:]
            last = time.monotonic()

    def finish(self, linger: float = 2.0) -> None:
        """Close gracefully: send FIN, then read and drop what the peer still
        sends (at most ``linger`` seconds) so that unread request bytes do not
        turn our close into a reset that destroys the last response."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        scratch = bytearray(16384)
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if self.sock.recv_into(scratch) == 0:
                    return
            except TimeoutError:
                continue
            except OSError:
                return


class Service:
    """A running service. ``port`` is the bound port; ``close()`` stops it."""

    def __init__(self, spec: ServiceSpec, address: str) -> None:
        self.spec = spec
        self.address = address
        self.port = spec.port
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _spawn(self, target: Callable[..., object], *args: object, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving, close every socket and join the threads (waiting at
        most ``timeout`` seconds in all). Calling it again does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._all_threads():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._close_sockets()

    def _all_threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def _close_sockets(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"<{type(self).__name__} {self.spec.kind} on {self.address}:{self.port} {state}>"


class TcpService(Service):
    """A listener and one thread per client connection running ``handler``."""

    def __init__(
        self,
        net: Net,
        spec: ServiceSpec,
        address: str,
        handler: Callable[[Connection], None],
        idle_timeout: float,
        max_clients: int = MAX_CLIENTS,
        backlog: int = 128,
    ) -> None:
        super().__init__(spec, address)
        self._handler = handler
        self._idle = idle_timeout
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._clients: dict[threading.Thread, ClientSocket] = {}
        self._listener = net.create_server((address, spec.port), backlog=backlog)
        try:
            if spec.port == 0:
                self.port = self._listener.getsockname()[1]
            self._listener.settimeout(TICK)
        except BaseException:
            self._listener.close()
            raise
        self._threads.append(self._spawn(self._accept_loop, name=f"stack-{spec.kind}-accept"))

    @property
    def active_clients(self) -> int:
        """Client connections being served now."""
        with self._lock:
            return len(self._clients)

    def _accept_loop(self) -> None:
        serial = 0
        try:
            while not self._stop.is_set():
                try:
                    sock, peer = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if self._stop.is_set():
                        break
                    log.warning("%s: accept failed: %s", self.spec, exc)
                    time.sleep(TICK)
                    continue
                serial += 1
                self._admit(sock, peer, serial)
        finally:
            self._listener.close()

    def _admit(self, sock: ClientSocket, peer: object, serial: int) -> None:
        with self._lock:
            full = len(self._clients) >= self._max_clients
            if not full and not self._stop.is_set():
                thread = threading.Thread(
                    target=self._serve_client,
                    args=(sock, peer),
                    name=f"stack-{self.spec.kind}-{serial}",
                    daemon=True,
                )
                self._clients[thread] = sock
                thread.start()
                return
        if full:
            log.debug("%s: %d clients already, closing %s", self.spec, self._max_clients, peer)
        sock.close()

    def _serve_client(self, sock: ClientSocket, peer: object) -> None:
        try:
            self._handler(Connection(sock, self._stop, self._idle))
        except Stopped:
            pass
        except OSError as exc:
            log.debug("%s: client %s: %s", self.spec, peer, exc)
        except Exception:
            log.exception("%s: client %s: handler failed", self.spec, peer)
        finally:
            sock.close()
            with self._lock:
                self._clients.pop(threading.current_thread(), None)

    def _all_threads(self) -> list[threading.Thread]:
        with self._lock:
            return self._threads + list(self._clients)

    def _close_sockets(self) -> None:
        # Normally every thread has closed its own socket by now; these are
        # what a stuck thread left behind.
        self._listener.close()
        with self._lock:
            leftovers = list(self._clients.values())
        for sock in leftovers:
            try:
                sock.close()
            except OSError:
                pass


class UdpService(Service):
    """One socket and one thread; ``respond(datagram)`` returns the reply to
    send back to the sender, or None for no reply."""

    def __init__(
        self, net: Net, spec: ServiceSpec, address: str, respond: Callable[[bytes], bytes | None]
    ) -> None:
        super().__init__(spec, address)
        self._respond = respond
        self._sock = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((address, spec.port))
            if spec.port == 0:
                self.port = self._sock.getsockname()[1]
            self._sock.settimeout(TICK)
        except BaseException:
            self._sock.close()
            raise
        self._threads.append(self._spawn(self._loop, name=f"stack-{spec.kind}"))

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data, peer = self._sock.recvfrom(65535)
                except TimeoutError:
                    continue
                except OSError as exc:
                    if self._stop.is_set():
                        break
                    log.debug("%s: recvfrom: %s", self.spec, exc)
                    continue
                reply = self._respond(data)
                if reply is None:
                    continue
                try:
                    self._sock.sendto(reply, peer)
                except OSError as exc:
                    log.debug("%s: reply to %s: %s", self.spec, peer, exc)
        finally:
            self._sock.close()

    def _close_sockets(self) -> None:
        self._sock.close()


def start_service(
    net: Net,
    spec: ServiceSpec | str,
    address: str = "0.0.0.0",
    *,
    max_clients: int = MAX_CLIENTS,
    idle_timeout: float | None = None,
) -> Service:
    """Bind ``spec`` on ``address`` through ``net`` and serve it in
    background threads. Returns the running :class:`Service`.

    ``spec`` may be a string as given to ``--serve``. Raises ValueError for
    an http directory that does not exist, OSError if the port cannot be
    bound. ``idle_timeout`` overrides the kind's default (see
    :data:`IDLE_TIMEOUT`).
    """
    if isinstance(spec, str):
        spec = parse_service(spec)
    idle = idle_timeout if idle_timeout is not None else IDLE_TIMEOUT[spec.kind]
    if spec.kind == "udp-echo":
        return UdpService(net, spec, address, simple.udp_echo)
    assert idle is not None  # every TCP kind has a default
    handler: Callable[[Connection], None]
    if spec.kind == "http":
        root = None
        if spec.directory is not None:
            if not os.path.isdir(spec.directory):
                raise ValueError(f"{spec}: {spec.directory!r} is not a directory")
            root = os.path.realpath(spec.directory)
        handler = http.Handler(root)
    else:
        handler = {"echo": simple.echo, "discard": simple.discard, "chargen": simple.chargen}[
            spec.kind
        ]
    return TcpService(net, spec, address, handler, idle, max_clients=max_clients)
