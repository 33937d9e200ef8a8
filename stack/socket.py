"""The socket facade: Python's ``socket.socket`` semantics over the stack.

A :class:`Socket` is a thin object around a protocol endpoint (a UDP
endpoint, a TCP connection or a TCP listener). Calls take the stack's lock,
do their work, and — in blocking or timeout mode — wait on a condition bound
to that lock until the endpoint changes. Errors are the standard library's
exception classes with the standard errno (``OSError(errno.X, ...)`` builds
``ConnectionRefusedError`` and friends by itself).

``fileno()`` returns one end of a private socketpair whose readiness mirrors
the endpoint's: readable when ``recv``/``accept`` would not block, writable
when ``send`` would not block, so ``select`` and ``selectors`` work.
"""

from __future__ import annotations

import errno
import io
import socket as _socket
import threading
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Callable, overload

from stack.net.udp import UdpEndpoint
from stack.socket_base import (  # noqa: F401  (the constants are re-exported)
    SocketIO,
    AF_INET, SOCK_STREAM, SOCK_DGRAM, SOL_SOCKET, IPPROTO_TCP, IPPROTO_UDP, SO_REUSEADDR,
    SO_REUSEPORT, SO_KEEPALIVE, SO_RCVBUF, SO_SNDBUF, SO_BROADCAST, SO_LINGER, SO_ERROR,
    SO_TYPE, TCP_NODELAY, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_CONGESTION,
    CA_NAME_MAX, KEEPALIVE_LIMITS, SHUT_RD, SHUT_WR, SHUT_RDWR, SOMAXCONN, MESSAGES, error,
    timeout_error, addr_in, addr_out, Readiness, drain,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from stack.runtime import Stack
    from stack.tcp import Listener, TcpConnection


class Socket:
    """An AF_INET socket of the stack, with the methods of ``socket.socket``."""

    def __init__(self, net: "Stack", family: int = AF_INET, type: int = SOCK_STREAM,
                 proto: int = 0) -> None:
        if family != AF_INET:
            raise error(errno.EAFNOSUPPORT)
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise error(errno.EINVAL, "only SOCK_STREAM and SOCK_DGRAM are supported")
        self._net = net
        self.family = family
        self.type = type
        self.proto = proto or (IPPROTO_TCP if type == SOCK_STREAM else IPPROTO_UDP)
        self._timeout: float | None = _socket.getdefaulttimeout()
        # typeshed lists only threading's own locks; Condition works with any
        # lock object, and the runtime's StackLock has the hooks it uses.
        self._cond = threading.Condition(net.lock)  # type: ignore[arg-type]
        self._closed = False
        self._ready: Readiness | None = None
        self._opts: dict[tuple[int, int], int] = {
            (SOL_SOCKET, SO_REUSEADDR): 0, (SOL_SOCKET, SO_KEEPALIVE): 0,
            (SOL_SOCKET, SO_BROADCAST): 0, (IPPROTO_TCP, TCP_NODELAY): 0,
            (IPPROTO_TCP, TCP_KEEPIDLE): 7200, (IPPROTO_TCP, TCP_KEEPINTVL): 75,
            (IPPROTO_TCP, TCP_KEEPCNT): 9,
            (SOL_SOCKET, SO_RCVBUF): 212992, (SOL_SOCKET, SO_SNDBUF): 212992,
        }
        self._linger: tuple[int, int] = (0, 0)
        self._makefile_refs = 0
        self._close_requested = False
        if type == SOCK_DGRAM:
            self._udp: UdpEndpoint | None = UdpEndpoint(self._opts[(SOL_SOCKET, SO_RCVBUF)])
            self._udp.on_change = self._changed
        else:
            self._udp = None
        # Stream state (see stack.socket_stream for the methods that use it).
        self._conn: TcpConnection | None = None
        self._listener: Listener | None = None
        self._bound: tuple[int, int] | None = None
        self._shut_rd = False
        self._error_taken = False  # a connection's error is raised once, then EOF
        self._sndbuf_set = False
        self._rcvbuf_set = False
        self._congestion: str | None = None  # TCP_CONGESTION, until a connection takes it

    # -- plumbing ----------------------------------------------------------------

    def _changed(self) -> None:
        """Called under the stack lock whenever the endpoint may have changed."""
        self._cond.notify_all()
        if self._ready is not None:
            self._ready.update(self._is_readable(), self._is_writable())

    def _is_readable(self) -> bool:
        if self._closed:
            return True
        if self._udp is not None:
            return self._udp.readable
        from stack import socket_stream

        return socket_stream.readable(self)

    def _is_writable(self) -> bool:
        if self._closed or self._udp is not None:
            return True
        from stack import socket_stream

        return socket_stream.writable(self)

    def _note(self, call: str, **fields: object) -> None:
        """Trace a user call on this socket (layer ``socket``)."""
        trace = self._net.trace
        if trace.wants("socket", call):
            kind = "stream" if self.type == SOCK_STREAM else "dgram"
            local = None
            try:
                local = "%s:%d" % self.getsockname()
            except OSError:
                pass
            trace.event("socket", call, kind=kind, local=local, **fields)

    def _check_open(self) -> None:
        if self._closed:
            raise error(errno.EBADF)

    def _wait(self, ready: Callable[[], bool],
              op_timeout: float | None | EllipsisType = ...) -> None:
        """Wait (lock held) until ``ready()``; raise BlockingIOError / TimeoutError."""
        timeout = self._timeout if op_timeout is ... else op_timeout
        if ready():
            return
        if timeout == 0.0:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        clock = self._net.clock
        deadline = None if timeout is None else clock() + timeout
        while not ready():
            if self._closed:
                raise error(errno.EBADF)
            if deadline is None:
                self._cond.wait()
            else:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise timeout_error()
                self._cond.wait(remaining)
        if self._closed:
            raise error(errno.EBADF)

    # -- common API ------------------------------------------------------------

    def fileno(self) -> int:
        if self._closed:
            return -1
        with self._net.lock:
            if self._ready is None:
                self._ready = Readiness()
                self._ready.update(self._is_readable(), self._is_writable())
            return self._ready.user.fileno()

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def setsockopt(self, level: int, option: int, value: Any, optlen: int | None = None) -> None:
        self._check_open()
        if (level, option) == (SOL_SOCKET, SO_LINGER):
            import struct

            onoff, secs = struct.unpack("ii", value)
            self._linger = (onoff, secs)
            return
        if (level, option) == (IPPROTO_TCP, TCP_CONGESTION) and self._udp is None:
            self._set_congestion(value)
            return
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(value[:4], "little") if value else 0
        key = (level, option)
        if key == (SOL_SOCKET, SO_REUSEPORT):
            key = (SOL_SOCKET, SO_REUSEPORT)
        elif key not in self._opts:
            raise error(errno.ENOPROTOOPT, "Protocol not available")
        if level == IPPROTO_TCP and option in KEEPALIVE_LIMITS:
            if not 1 <= int(value) <= KEEPALIVE_LIMITS[option]:
                raise error(errno.EINVAL)
        if option in (SO_RCVBUF, SO_SNDBUF) and level == SOL_SOCKET:
            value = max(2304 if option == SO_RCVBUF else 4608, min(int(value), 1 << 24) * 2)
            if option == SO_RCVBUF:
                self._rcvbuf_set = True
            else:
                self._sndbuf_set = True
        self._opts[key] = int(value)
        with self._net.lock:
            if self._udp is not None:
                self._udp.rcvbuf = self._opts[(SOL_SOCKET, SO_RCVBUF)]
                self._udp.broadcast = bool(self._opts[(SOL_SOCKET, SO_BROADCAST)])
            else:
                from stack import socket_stream

                socket_stream.apply_options(self)

    def _set_congestion(self, value: Any) -> None:
        """TCP_CONGESTION: a name (bytes, up to the first NUL) from
        ``stack.tcp.congestion.ALGORITHMS``; ENOENT for any other, as Linux.
        Before the connection exists it is kept, and applied when it does."""
        from stack.tcp.congestion import ALGORITHMS

        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray)):
            raise error(errno.EINVAL)
        name = bytes(value[:CA_NAME_MAX]).split(b"\0", 1)[0].decode("ascii", "replace")
        if name not in ALGORITHMS:
            raise error(errno.ENOENT)
        self._congestion = name
        with self._net.lock:
            from stack import socket_stream

            socket_stream.apply_options(self)

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> Any:
        self._check_open()
        if (level, option) == (SOL_SOCKET, SO_ERROR):
            with self._net.lock:
                code = self._take_error() or 0
            return code
        if (level, option) == (SOL_SOCKET, SO_TYPE):
            return self.type
        if (level, option) == (SOL_SOCKET, SO_LINGER):
            import struct

            return struct.pack("ii", *self._linger)
        if (level, option) == (IPPROTO_TCP, TCP_CONGESTION) and self._udp is None:
            with self._net.lock:
                from stack import socket_stream

                name = socket_stream.congestion(self).encode().ljust(CA_NAME_MAX, b"\0")
            if buflen is None:
                return int.from_bytes(name[:4], "little")  # as CPython reads an int option
            return name[:min(buflen, CA_NAME_MAX)]
        try:
            value = self._opts[(level, option)]
        except KeyError:
            raise error(errno.ENOPROTOOPT, "Protocol not available") from None
        if buflen is not None:
            return value.to_bytes(4, "little")[:buflen]
        return value

    def _take_error(self) -> int | None:
        if self._udp is not None:
            code, self._udp.error = self._udp.error, None
            return code
        from stack import socket_stream

        return socket_stream.take_error(self)

    def getsockname(self) -> tuple[str, int]:
        self._check_open()
        with self._net.lock:
            if self._udp is not None:
                return addr_out(self._udp.local)
            from stack import socket_stream

            return addr_out(socket_stream.local(self))

    def getpeername(self) -> tuple[str, int]:
        self._check_open()
        with self._net.lock:
            if self._udp is not None:
                remote = self._udp.remote
            else:
                from stack import socket_stream

                remote = socket_stream.remote(self)
            if remote is None:
                raise error(errno.ENOTCONN)
            return addr_out(remote)

    def bind(self, address: tuple[str, int]) -> None:
        self._check_open()
        addr, port = addr_in(address)
        with self._net.lock:
            if self._udp is not None:
                self._net.udp.bind(self._udp, addr, port)
            else:
                from stack import socket_stream

                socket_stream.bind(self, addr, port)
        self._note("bind")

    def connect(self, address: tuple[str, int]) -> None:
        self._check_open()
        addr = addr_in(address)
        if self._udp is not None:
            with self._net.lock:
                ep = self._udp
                if addr[0] == 0:
                    addr = (self._net.address, addr[1])
                if ep.local is None:
                    self._net.udp.bind(ep, 0, 0)
                ep.remote = addr
                ep.error = None
                # Datagrams from other peers already queued stay; Linux keeps them too.
            self._note("connect", remote="%s:%d" % addr_out(addr))
            return
        from stack import socket_stream

        self._note("connect", remote="%s:%d" % addr_out(addr))
        socket_stream.connect(self, addr)

    def connect_ex(self, address: tuple[str, int]) -> int:
        try:
            self.connect(address)
        except TimeoutError:
            return errno.EAGAIN if self._timeout == 0.0 else errno.ETIMEDOUT
        except BlockingIOError as e:
            return e.errno or errno.EINPROGRESS
        except OSError as e:
            if e.errno is None:
                raise
            return e.errno
        return 0

    def close(self) -> None:
        if self._closed:
            return
        with self._net.lock:
            # As socket.socket: files from makefile() keep the socket open;
            # the last one to close closes it.
            self._close_requested = True
            if self._makefile_refs > 0 or self._closed:
                return
            self._close_locked()

    def _close_locked(self) -> None:
        self._note("close")
        self._closed = True
        if self._udp is not None:
            self._net.udp.unbind(self._udp)
        else:
            from stack import socket_stream

            socket_stream.close(self)
        self._cond.notify_all()
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        self._net.kick()

    def detach(self) -> int:
        raise error(errno.EOPNOTSUPP, "a stack socket has no kernel descriptor to detach")

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "SOCK_STREAM" if self.type == SOCK_STREAM else "SOCK_DGRAM"
        state = "closed" if self._closed else ""
        return f"<stack.Socket {kind} {state}>".replace(" >", ">")

    # -- datagrams ---------------------------------------------------------------

    @overload
    def sendto(self, data: ReadableBuffer, address: tuple[str, int], /) -> int: ...
    @overload
    def sendto(self, data: ReadableBuffer, flags: int, address: tuple[str, int], /) -> int: ...
    def sendto(self, data: ReadableBuffer, flags_or_address: Any, address: Any = None) -> int:
        self._check_open()
        if address is None:
            address, flags = flags_or_address, 0
        else:
            flags = flags_or_address
        if self._udp is None:
            from stack import socket_stream

            return socket_stream.send(self, data, flags)
        dst = addr_in(address)
        if dst[0] == 0:
            dst = (self._net.address, dst[1])
        with self._net.lock:
            self._raise_pending()
            n = self._net.udp.send(self._udp, memoryview(data), dst, self._net.clock())
            self._net.kick()
            return n

    def _raise_pending(self) -> None:
        code = self._take_error()
        if code:
            raise error(code)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self._check_open()
        if self._udp is not None:
            with self._net.lock:
                if self._udp.remote is None:
                    raise error(errno.EDESTADDRREQ)
                self._raise_pending()
                n = self._net.udp.send(self._udp, memoryview(data), self._udp.remote,
                                       self._net.clock())
                self._net.kick()
                return n
        from stack import socket_stream

        return socket_stream.send(self, data, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._check_open()
        if self._udp is not None:
            self.send(data, flags)
            return
        from stack import socket_stream

        socket_stream.sendall(self, data, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        self._check_open()
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        if self._udp is None:
            from stack import socket_stream

            return socket_stream.recv(self, bufsize, flags), self.getpeername()
        with self._net.lock:
            ep = self._udp
            self._wait(lambda: bool(ep.queue) or ep.error is not None)
            self._raise_pending()
            item = ep.queue[0] if flags & _socket.MSG_PEEK else ep.pop()
            assert item is not None
            data, addr = item
            if self._ready is not None:
                self._ready.update(self._is_readable(), True)
            return data[:bufsize], addr_out(addr)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._udp is None:
            self._check_open()
            from stack import socket_stream

            return socket_stream.recv(self, bufsize, flags)
        return self.recvfrom(bufsize, flags)[0]

    def recvfrom_into(self, buffer: WriteableBuffer, nbytes: int = 0,
                      flags: int = 0) -> tuple[int, tuple[str, int]]:
        mv = memoryview(buffer).cast("B")
        n = nbytes or len(mv)
        if n > len(mv):
            raise ValueError("nbytes is greater than the length of the buffer")
        data, addr = self.recvfrom(n, flags)
        mv[:len(data)] = data
        return len(data), addr

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        mv = memoryview(buffer).cast("B")
        n = nbytes or len(mv)
        if n > len(mv):
            raise ValueError("buffer too small for requested bytes")
        if self._udp is None:
            self._check_open()
            from stack import socket_stream

            return socket_stream.recv_into(self, mv[:n], flags)
        data = self.recvfrom(n, flags)[0]
        mv[:len(data)] = data
        return len(data)

    # -- streams (bodies in stack.socket_stream) ------------------------------------

    def listen(self, backlog: int = SOMAXCONN) -> None:
        self._check_open()
        if self._udp is not None:
            raise error(errno.EOPNOTSUPP)
        from stack import socket_stream

        socket_stream.listen(self, backlog)
        self._note("listen", backlog=backlog)

    def accept(self) -> tuple["Socket", tuple[str, int]]:
        self._check_open()
        if self._udp is not None:
            raise error(errno.EOPNOTSUPP)
        from stack import socket_stream

        conn, peer = socket_stream.accept(self)
        self._note("accept", remote="%s:%d" % peer)
        return conn, peer

    def shutdown(self, how: int) -> None:
        self._check_open()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise error(errno.EINVAL)
        if self._udp is not None:
            with self._net.lock:
                if self._udp.remote is None:
                    raise error(errno.ENOTCONN)
            return
        from stack import socket_stream

        self._note("shutdown", how={SHUT_RD: "SHUT_RD", SHUT_WR: "SHUT_WR"}.get(how, "SHUT_RDWR"))
        socket_stream.shutdown(self, how)

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the socket, like ``socket.socket.makefile``: raw,
        buffered or text by ``mode`` and ``buffering``."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = SocketIO(self, rawmode)
        with self._net.lock:
            self._makefile_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
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

    def makefile_closed(self) -> None:
        """A file from :meth:`makefile` was closed (``socket._decref_socketios``)."""
        with self._net.lock:
            if self._makefile_refs > 0:
                self._makefile_refs -= 1
            if self._close_requested and self._makefile_refs == 0 and not self._closed:
                self._close_locked()


def create_connection(net: Stack, address: tuple[str, int],
                      timeout: float | None | EllipsisType = ...,
                      source_address: tuple[str, int] | None = None) -> Socket:
    """Like ``socket.create_connection`` on the stack (IPv4 literals only)."""
    s = Socket(net, AF_INET, SOCK_STREAM)
    try:
        if timeout is not ...:
            s.settimeout(timeout)
        if source_address:
            s.bind(source_address)
        s.connect(address)
    except BaseException:
        s.close()
        raise
    return s


def create_server(net: Stack, address: tuple[str, int], *,
                  backlog: int | None = None) -> Socket:
    """Like ``socket.create_server``: bound, listening, SO_REUSEADDR set."""
    s = Socket(net, AF_INET, SOCK_STREAM)
    try:
        s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(SOMAXCONN if backlog is None else backlog)
    except BaseException:
        s.close()
        raise
    return s
