"""What the socket facade is made of: the option and error constants of the
``socket`` module, errors as Python raises them, address conversion, and
the socketpair that gives a stack socket a ``fileno()`` for ``select``."""

from __future__ import annotations

import errno
import io
import os
import socket as _socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

from stack.wire.ipv4 import int2ip, ip2int

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
SOCK_DGRAM = _socket.SOCK_DGRAM
SOL_SOCKET = _socket.SOL_SOCKET
IPPROTO_TCP = _socket.IPPROTO_TCP
IPPROTO_UDP = _socket.IPPROTO_UDP
SO_REUSEADDR = _socket.SO_REUSEADDR
SO_REUSEPORT = getattr(_socket, "SO_REUSEPORT", 15)
SO_KEEPALIVE = _socket.SO_KEEPALIVE
SO_RCVBUF = _socket.SO_RCVBUF
SO_SNDBUF = _socket.SO_SNDBUF
SO_BROADCAST = _socket.SO_BROADCAST
SO_LINGER = _socket.SO_LINGER
SO_ERROR = _socket.SO_ERROR
SO_TYPE = _socket.SO_TYPE
TCP_NODELAY = _socket.TCP_NODELAY
TCP_KEEPIDLE = getattr(_socket, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL = getattr(_socket, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT = getattr(_socket, "TCP_KEEPCNT", 6)
TCP_CONGESTION = getattr(_socket, "TCP_CONGESTION", 13)
CA_NAME_MAX = 16  # Linux TCP_CA_NAME_MAX: the longest name, and what getsockopt returns
# Linux's limits for the keepalive options (seconds, seconds, probes).
KEEPALIVE_LIMITS = {TCP_KEEPIDLE: 32767, TCP_KEEPINTVL: 32767, TCP_KEEPCNT: 127}
SHUT_RD = _socket.SHUT_RD
SHUT_WR = _socket.SHUT_WR
SHUT_RDWR = _socket.SHUT_RDWR
SOMAXCONN = _socket.SOMAXCONN

MESSAGES = {code: os.strerror(code) for code in (
    errno.EBADF, errno.EINVAL, errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EMSGSIZE,
    errno.ENOTCONN, errno.EISCONN, errno.EDESTADDRREQ, errno.ECONNREFUSED, errno.ECONNRESET,
    errno.EPIPE, errno.ETIMEDOUT, errno.EAGAIN, errno.EAFNOSUPPORT, errno.ENOPROTOOPT,
    errno.EOPNOTSUPP, errno.EALREADY, errno.EINPROGRESS, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.EACCES, errno.ECONNABORTED, errno.EPROTO)}


def error(code: int, message: str | None = None) -> OSError:
    """The exception Python raises for ``code`` (OSError picks the subclass)."""
    return OSError(code, message or MESSAGES.get(code) or os.strerror(code))


def timeout_error() -> TimeoutError:
    return TimeoutError("timed out")


def addr_in(address: Any) -> tuple[int, int]:
    """("192.0.2.1", 80) -> (int, port); '' and '0.0.0.0' mean any."""
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address
    if not isinstance(port, int):
        raise TypeError("'port' must be an integer")
    if not 0 <= port <= 65535:
        raise OverflowError("port must be 0-65535.")
    if host in ("", "0.0.0.0"):
        return 0, port
    if host == "<broadcast>":
        return 0xFFFFFFFF, port
    try:
        return ip2int(host), port
    except ValueError:
        raise _socket.gaierror(_socket.EAI_NONAME, "Name or service not known") from None


def addr_out(addr: tuple[int, int] | None) -> tuple[str, int]:
    if addr is None:
        return ("0.0.0.0", 0)
    return (int2ip(addr[0]), addr[1])


class Readiness:
    """A socketpair whose one end is readable/writable exactly when told."""

    def __init__(self) -> None:
        self.user, self.peer = _socket.socketpair()
        for s in (self.user, self.peer):
            s.setblocking(False)
        self.user.setsockopt(SOL_SOCKET, SO_SNDBUF, 1)
        self.readable = False
        self.writable = True

    def update(self, readable: bool, writable: bool) -> None:
        if readable != self.readable:
            self.readable = readable
            if readable:
                self.peer.send(b"r")
            else:
                drain(self.user)
        if writable != self.writable:
            self.writable = writable
            if writable:
                drain(self.peer)
            else:
                filler = b"\0" * 65536
                try:
                    while True:
                        self.user.send(filler)
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self.user.close()
        self.peer.close()


def drain(s: _socket.socket) -> None:
    try:
        while s.recv(65536):
            pass
    except BlockingIOError:
        pass


class SocketIO(io.RawIOBase):
    """Raw I/O over a stack socket, for ``makefile`` (as ``socket.SocketIO``)."""

    def __init__(self, sock: Any, mode: str) -> None:
        super().__init__()
        self._sock = sock
        self._reading = "r" in mode
        self._writing = "w" in mode
        self.mode = mode + "b"

    def readinto(self, b: WriteableBuffer) -> int | None:
        self._checkClosed()
        try:
            return self._sock.recv_into(b)
        except BlockingIOError:
            return None

    def write(self, b: ReadableBuffer) -> int | None:
        self._checkClosed()
        try:
            return self._sock.send(b)
        except BlockingIOError:
            return None

    def readable(self) -> bool:
        return self._reading and not self.closed

    def writable(self) -> bool:
        return self._writing and not self.closed

    def seekable(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._sock.makefile_closed()
