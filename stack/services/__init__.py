"""Built-in services that ``stack up --serve SERVICE`` runs.

Every service is written against a socket API that mirrors Python's
``socket`` module, reached through a ``net`` object with two calls:
``net.socket(family, type)`` and ``net.create_server(address, backlog=...)``.
The stack's socket facade provides them; :class:`KernelNet` provides them on
the host kernel's sockets, so the same service code runs in tests without a
TAP.

A TCP service runs on one daemon thread: an event loop over non-blocking
sockets (:mod:`stack.services.loop`) that accepts and serves every client,
at most ``max_clients`` at a time (HTTP answers the others 503, the small
services close them). On the stack's sockets it waits on the stack's own
selector (:class:`stack.selector.StackSelector`, no kernel descriptor per
socket); on the kernel's, on ``selectors``. The UDP echo service is one
thread over one socket with a short timeout. :meth:`Service.close` wakes
the loop and returns at once.

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

from stack.services import http, http_conn, loop, simple

__all__ = [
    "KINDS",
    "KernelNet",
    "Service",
    "ServiceSpec",
    "TcpService",
    "UdpService",
    "parse_service",
    "start_service",
]

log = logging.getLogger(__name__)

# How long the UDP service's blocking call waits before it looks at the stop flag.
TICK = 0.2
# Client connections served at once per service, by default; HTTP answers
# more with 503, the other kinds close them on accept.
MAX_CLIENTS = 4096
BACKLOG = 128  # of a TCP service's listening socket
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


class ListeningSocket(Protocol):
    """What a TCP service uses of its listening socket (the accepted ones
    are used as :mod:`stack.services.loop` describes)."""

    def setblocking(self, flag: bool, /) -> None: ...
    def getsockname(self) -> Any: ...
    def accept(self) -> tuple[Any, Any]: ...
    def fileno(self) -> int: ...
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
    """A listener and its clients on one event loop thread; ``factory``
    makes each client's protocol from its channel (see
    :mod:`stack.services.loop`). Beyond ``max_clients``, ``reject`` (if
    given) answers the client before closing; otherwise it is closed."""

    def __init__(
        self,
        net: Net,
        spec: ServiceSpec,
        address: str,
        factory: Callable[[loop.Channel], loop.Handler],
        idle_timeout: float,
        max_clients: int = MAX_CLIENTS,
        backlog: int = BACKLOG,
        reject: Callable[[loop.Channel], loop.Handler] | None = None,
        setup: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(spec, address)
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        self._listener = net.create_server((address, spec.port), backlog=backlog)
        try:
            if spec.port == 0:
                self.port = self._listener.getsockname()[1]
            self._loop = loop.Loop(f"stack-{spec.kind}", self._listener,
                                   selector_for(self._listener), factory, idle_timeout,
                                   max_clients, reject=reject, setup=setup)
        except BaseException:
            self._listener.close()
            raise
        self._threads.append(self._loop.thread)
        self._loop.start()

    @property
    def active_clients(self) -> int:
        """Client connections being served now (not counting those being
        refused for want of room)."""
        return self._loop.clients

    def close(self, timeout: float = 2.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._loop.stop(timeout)
        # The loop closed it on its way out; if the loop is stuck past the
        # timeout, the port is released all the same.
        self._listener.close()


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
    """Bind ``spec`` on ``address`` through ``net`` and serve it on a
    background thread. Returns the running :class:`Service`.

    ``max_clients`` bounds the TCP clients served at once (HTTP answers
    more with 503 and ``Connection: close``; the others close them).

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
    if spec.kind == "http":
        root = None
        if spec.directory is not None:
            if not os.path.isdir(spec.directory):
                raise ValueError(f"{spec}: {spec.directory!r} is not a directory")
            root = os.path.realpath(spec.directory)
        router = http.Router(root)
        return TcpService(net, spec, address, lambda ch: http_conn.HttpConnection(ch, router),
                          idle, max_clients=max_clients, reject=http_conn.Busy,
                          setup=_no_delay)
    factories: dict[str, Callable[[loop.Channel], loop.Handler]] = {
        "echo": simple.Echo, "discard": simple.Discard, "chargen": simple.Chargen}
    factory = factories[spec.kind]
    return TcpService(net, spec, address, factory, idle, max_clients=max_clients)


def _no_delay(sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def selector_for(listener: Any) -> loop.Selector:
    """The selector a loop serving ``listener`` waits on: the stack's own
    for a stack socket, the kernel's otherwise."""
    from stack.selector import StackSelector, is_stack_socket

    if is_stack_socket(listener):
        return StackSelector.for_socket(listener)
    return loop.KernelSelector()
