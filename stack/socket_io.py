"""The facade's two bridges to ordinary Python I/O: :class:`Readiness`, the
socketpair that gives a stack socket a ``fileno()`` for ``select``, and
:class:`SocketIO` with :func:`makefile`, the file objects of
``socket.makefile``."""

from __future__ import annotations

import io
import socket as _socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


class Readiness:
    """A socketpair whose one end is readable/writable exactly when told.

    The user end is what ``fileno()`` returns; it carries no data. Readable:
    a byte waits in it. Not writable: its send buffer is filled."""

    def __init__(self) -> None:
        self.user, self.peer = _socket.socketpair()
        for s in (self.user, self.peer):
            s.setblocking(False)
        self.user.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 1)
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

    def fileno(self) -> int:
        return self.user.fileno()

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
    """Raw I/O over a stack socket, for ``makefile`` (as ``socket.SocketIO``):
    ``name`` is the socket's fileno, ``mode`` 'rb', 'wb' or 'rwb'; closing
    it releases the socket (the last file and the socket's own close)."""

    def __init__(self, sock: Any, mode: str) -> None:
        super().__init__()
        self.sock = sock
        self.reading = "r" in mode
        self.writing = "w" in mode
        self.mode = mode + "b"

    @property
    def name(self) -> int:
        return -1 if self.closed else self.sock.fileno()

    def readinto(self, b: WriteableBuffer) -> int | None:
        self._checkClosed()
        if not self.reading:
            raise io.UnsupportedOperation("File not open for reading")
        try:
            return self.sock.recv_into(b)
        except BlockingIOError:
            return None

    def write(self, b: ReadableBuffer) -> int | None:
        self._checkClosed()
        if not self.writing:
            raise io.UnsupportedOperation("File not open for writing")
        try:
            return self.sock.send(b)
        except BlockingIOError:
            return None

    def readable(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed socket.")
        return self.reading

    def writable(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed socket.")
        return self.writing

    def seekable(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed socket.")
        return False

    def fileno(self) -> int:
        self._checkClosed()
        return self.sock.fileno()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.sock.makefile_closed()


def makefile(sock: Any, mode: str = "r", buffering: int | None = None,
             encoding: str | None = None, errors: str | None = None,
             newline: str | None = None) -> Any:
    """``socket.makefile``: raw, buffered or text by ``mode`` and ``buffering``,
    the same objects and attributes CPython's gives."""
    if not set(mode) <= {"r", "w", "b"}:
        raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
    writing = "w" in mode
    reading = "r" in mode or not writing
    rawmode = ("r" if reading else "") + ("w" if writing else "")
    if buffering is None:
        buffering = -1
    if buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0 and "b" not in mode:
        raise ValueError("unbuffered streams must be binary")
    raw = SocketIO(sock, rawmode)
    sock.makefile_opened()
    if buffering == 0:
        return raw
    if reading and writing:
        buffer: io.BufferedIOBase = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buffer = io.BufferedReader(raw, buffering)
    else:
        buffer = io.BufferedWriter(raw, buffering)
    if "b" in mode:
        return buffer
    # typeshed wants a buffer with a ``name`` (BufferedRWPair has none) and
    # calls ``mode`` read-only; CPython's socket.makefile does both too.
    text = io.TextIOWrapper(buffer, encoding, errors, newline)  # type: ignore[type-var]
    text.mode = mode  # type: ignore[misc]
    return text
