"""The calls a :class:`stack.tls.TlsSocket` passes straight to its stack
socket: what it shares with the TCP socket under it (the timeout, the
addresses, the options, the readiness fd) and the kind of socket it is.

A mixin before ``ssl.SSLSocket`` in TlsSocket's bases, so these are found
before ``socket.socket``'s, which would use the (absent) kernel descriptor.
"""

from __future__ import annotations

import socket as _socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from stack.socket import Socket


class PlainCalls:
    """The passthrough half of TlsSocket (``_sock``: the stack socket;
    ``_sslobj``: the TLS object, None before the handshake and after unwrap)."""

    _sock: Socket
    _sslobj: Any

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getblocking(self) -> bool:
        return self._sock.getblocking()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    def bind(self, address: Any) -> None:
        self._sock.bind(address)

    def listen(self, backlog: int = _socket.SOMAXCONN) -> None:
        self._sock.listen(backlog)

    def recvfrom(self, buflen: int = 1024, flags: int = 0) -> Any:
        if self._sslobj is not None:
            raise ValueError(f"recvfrom not allowed on instances of {type(self)}")
        return self._sock.recvfrom(buflen, flags)

    def recvfrom_into(self, buffer: WriteableBuffer, nbytes: int | None = None,
                      flags: int = 0) -> Any:
        if self._sslobj is not None:
            raise ValueError(f"recvfrom_into not allowed on instances of {type(self)}")
        return self._sock.recvfrom_into(buffer, nbytes or 0, flags)

    def sendto(self, data: ReadableBuffer, flags_or_addr: Any,
               addr: Any = None) -> int:
        if self._sslobj is not None:
            raise ValueError(f"sendto not allowed on instances of {type(self)}")
        if addr is None:
            return self._sock.sendto(data, flags_or_addr)
        return self._sock.sendto(data, flags_or_addr, addr)

    @property
    def family(self) -> _socket.AddressFamily:
        return _socket.AddressFamily(self._sock.family)

    @property
    def type(self) -> _socket.SocketKind:
        return _socket.SocketKind(self._sock.type)

    @property
    def proto(self) -> int:
        return self._sock.proto

    @property
    def timeout(self) -> float | None:
        return self._sock.gettimeout()
