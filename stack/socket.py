"""The socket facade: Python's ``socket.socket`` semantics over the stack.

A :class:`Socket` checks its arguments as CPython does, takes the stack's
lock and hands the call to its one endpoint: a
:class:`~stack.socket_stream.StreamEndpoint` (TCP) or a
:class:`~stack.socket_dgram.DatagramEndpoint` (UDP), which own their
protocol objects and state and have the same method set, so nothing here
asks which kind it holds. Blocking calls wait on a condition bound to the
lock. Errors are the standard library's exception classes with the
standard errno, through the one table in :mod:`stack.socket_base`.

``fileno()`` returns one end of a private socketpair whose readiness mirrors
the endpoint's (:class:`~stack.socket_io.Readiness`): readable when
``recv``/``accept`` would not block, writable when ``send`` would not block,
so ``select``, ``poll``, ``epoll`` and ``selectors`` work. It carries no
data: a stack socket has no kernel descriptor, so ``detach()`` refuses.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import threading
import warnings
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Iterable, overload

from stack.socket_base import (  # noqa: F401  (the constants are re-exported)
    AF_INET, SOCK_STREAM, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_MAX, SOL_SOCKET,
    IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP, SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, SO_RCVBUF,
    SO_SNDBUF, SO_BROADCAST, SO_LINGER, SO_ERROR, SO_TYPE, IP_TTL, TCP_NODELAY, TCP_MAXSEG,
    TCP_INFO, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_CONGESTION, CA_NAME_MAX,
    KEEPALIVE_LIMITS, SHUT_RD, SHUT_WR, SHUT_RDWR, SOMAXCONN, MSG_TRUNC, DEFAULT_TTL,
    NO_TIMEOUT, MESSAGES, Endpoint, error, timeout_error, addr_in, addr_out, c_int, index,
    size, data_view, timeout_value,
)
from stack.socket_dgram import DatagramEndpoint
from stack.socket_io import Readiness, SocketIO, makefile  # noqa: F401
from stack.socket_options import get_option, set_option
from stack.socket_stream import StreamEndpoint

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from stack.runtime import Stack

KINDS: dict[int, type[Endpoint]] = {SOCK_STREAM: StreamEndpoint, SOCK_DGRAM: DatagramEndpoint}
Address = tuple[str, int]


class Socket:
    """An AF_INET socket of the stack, with the methods of ``socket.socket``.

    ``type`` may carry SOCK_NONBLOCK (the socket starts non-blocking) and
    SOCK_CLOEXEC (always so: the readiness fd is never inherited unless
    ``set_inheritable``); ``.type`` reports the kind alone, as CPython."""

    def __init__(self, net: "Stack", family: int = AF_INET, type: int = SOCK_STREAM,
                 proto: int = 0, *, endpoint: Endpoint | None = None) -> None:
        family, type, proto = index(family), index(type), index(proto)
        # -1 is CPython's "not given" (socket.socket's defaults).
        family = AF_INET if family == -1 else family
        type = SOCK_STREAM if type == -1 else type
        proto = 0 if proto == -1 else proto
        if family != AF_INET:
            raise error(errno.EAFNOSUPPORT)
        kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
        if not 0 < kind < SOCK_MAX:
            raise error(errno.EINVAL)
        if kind not in KINDS:
            raise error(errno.ESOCKTNOSUPPORT)
        cls = KINDS[kind]
        if proto not in (0, cls.proto):
            raise error(errno.EPROTONOSUPPORT)
        self._net = net
        self._ep = endpoint if endpoint is not None else cls(net)
        self._ep.refs += 1
        if type & SOCK_NONBLOCK:
            self._ep.timeout = 0.0
        self.family = _socket.AddressFamily(family)
        self.type = _socket.SocketKind(kind)
        self.proto = cls.proto
        self._closed = False
        self._makefile_refs = 0
        self._close_requested = False

    # -- plumbing ------------------------------------------------------------------------

    def _note(self, call: str, **fields: object) -> None:
        """Trace a user call on this socket (layer ``socket``)."""
        trace = self._net.trace
        if trace.wants("socket", call):
            kind = "stream" if self.type == SOCK_STREAM else "dgram"
            local = None
            if not self._closed:
                with self._net.lock:
                    local = "%s:%d" % addr_out(self._ep.local())
            trace.event("socket", call, kind=kind, local=local, **fields)

    def _check_open(self) -> Endpoint:
        if self._closed:
            raise error(errno.EBADF)
        return self._ep

    def _addr(self, address: Any, call: str) -> tuple[int, int]:
        return addr_in(self._net, address, call)

    def status(self) -> dict[str, Any]:
        """What the stack knows of this socket: a TCP connection's
        ``status()`` (sequence spaces, windows, cwnd, RTT, options, timers,
        the counters ``ss -i`` shows), a listener's queue, a UDP socket's."""
        ep = self._check_open()
        with self._net.lock:
            return ep.status()

    # -- descriptors -------------------------------------------------------------------

    def fileno(self) -> int:
        """The readiness descriptor (made on first use); -1 once closed."""
        if self._closed:
            return -1
        ep = self._ep
        with self._net.lock:
            if ep.ready is None:
                ep.ready = Readiness()
                os.set_inheritable(ep.ready.fileno(), ep.inheritable)
                ep.refresh()
            return ep.ready.fileno()

    def watched_endpoint(self) -> Endpoint:
        """The endpoint behind this socket, for :class:`stack.selector.StackSelector`
        (which reads its readiness under the stack lock, with no descriptor)."""
        return self._check_open()

    def get_inheritable(self) -> bool:
        self._check_open()
        return self._ep.inheritable

    def set_inheritable(self, inheritable: bool) -> None:
        ep = self._check_open()
        with self._net.lock:
            ep.inheritable = bool(inheritable)
            if ep.ready is not None:
                os.set_inheritable(ep.ready.fileno(), ep.inheritable)

    def dup(self) -> "Socket":
        """A second socket object for the same endpoint (as ``dup(2)``: the
        endpoint closes when the last of them does). The timeout and the
        readiness fd are the endpoint's, so shared."""
        ep = self._check_open()
        with self._net.lock:
            return Socket(self._net, self.family, self.type, self.proto, endpoint=ep)

    def detach(self) -> int:
        """Refused: CPython's detach hands the kernel descriptor to someone
        else, and a stack socket has none (its fileno carries no data). The
        socket stays open and usable."""
        self._check_open()
        raise error(errno.EOPNOTSUPP, "a stack socket has no kernel descriptor to detach")

    # -- timeouts ------------------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        self._ep.timeout = timeout_value(value)

    def gettimeout(self) -> float | None:
        return self._ep.timeout

    @property
    def timeout(self) -> float | None:
        """``socket.socket.timeout``: the timeout, read only."""
        return self._ep.timeout

    def setblocking(self, flag: bool) -> None:
        self._ep.timeout = None if c_int(flag) else 0.0

    def getblocking(self) -> bool:
        return self._ep.timeout != 0.0

    # -- options -------------------------------------------------------------------------

    def setsockopt(self, level: int, option: int, value: Any, optlen: int | None = None) -> None:
        ep = self._check_open()
        with self._net.lock:
            set_option(ep, c_int(level), c_int(option), value, optlen)

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> Any:
        ep = self._check_open()
        with self._net.lock:
            return get_option(ep, c_int(level), c_int(option), buflen)

    # -- addresses -----------------------------------------------------------------------

    def getsockname(self) -> Address:
        ep = self._check_open()
        with self._net.lock:
            return addr_out(ep.local())

    def getpeername(self) -> Address:
        ep = self._check_open()
        with self._net.lock:
            remote = ep.remote()
        if remote is None:
            raise error(errno.ENOTCONN)
        return addr_out(remote)

    def bind(self, address: Address) -> None:
        ep = self._check_open()
        addr, port = self._addr(address, "bind")
        with self._net.lock:
            ep.bind(addr, port)
        self._note("bind")

    def connect(self, address: Address) -> None:
        ep = self._check_open()
        addr = self._addr(address, "connect")
        self._note("connect", remote="%s:%d" % addr_out(addr))
        with self._net.lock:
            ep.connect(addr)

    def connect_ex(self, address: Address) -> int:
        try:
            self.connect(address)
        except TimeoutError:
            return errno.EAGAIN if self._ep.timeout == 0.0 else errno.ETIMEDOUT
        except BlockingIOError as e:
            return e.errno or errno.EINPROGRESS
        except OSError as e:
            if e.errno is None or isinstance(e, _socket.gaierror):
                raise
            return e.errno
        return 0

    def listen(self, backlog: int = min(SOMAXCONN, 128)) -> None:
        ep = self._check_open()
        backlog = c_int(backlog)
        with self._net.lock:
            ep.listen(max(0, backlog))
        self._note("listen", backlog=backlog)

    def accept(self) -> tuple["Socket", Address]:
        ep = self._check_open()
        with self._net.lock:
            new, remote = ep.accept()
        if _socket.getdefaulttimeout() is None and self.gettimeout():
            new.timeout = None  # as CPython: the accepted socket blocks
        sock = Socket(self._net, self.family, self.type, self.proto, endpoint=new)
        peer = addr_out(remote)
        self._note("accept", remote="%s:%d" % peer)
        return sock, peer

    # -- data ----------------------------------------------------------------------------

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        mv, flags = data_view(data), c_int(flags)
        ep = self._check_open()
        with self._net.lock:
            return ep.send(mv, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        mv, flags = data_view(data), c_int(flags)
        ep = self._check_open()
        with self._net.lock:
            ep.sendall(mv, flags)

    @overload
    def sendto(self, data: ReadableBuffer, address: Address, /) -> int: ...
    @overload
    def sendto(self, data: ReadableBuffer, flags: int, address: Address, /) -> int: ...
    def sendto(self, data: ReadableBuffer, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            address, flags = flags_or_address, 0
        else:
            flags = c_int(flags_or_address)
        mv = data_view(data)
        ep = self._check_open()
        dst = self._addr(address, "sendto")
        with self._net.lock:
            return ep.sendto(mv, flags, dst)

    def sendmsg(self, buffers: Iterable[ReadableBuffer], ancdata: Iterable[Any] = (),
                flags: int = 0, address: Address | None = None) -> int:
        """Gathered send without ancillary data (any given is EINVAL: none of
        the control messages Linux takes here is modelled)."""
        views = [data_view(b) for b in buffers]
        anc = list(ancdata)
        for item in anc:
            if not isinstance(item, (tuple, list)):
                raise TypeError("[sendmsg() ancillary data items]() argument must be 3-item "
                                f"sequence, not {type(item).__name__}")
            if len(item) != 3:
                raise TypeError("[sendmsg() ancillary data items]() argument must be sequence "
                                f"of length 3, not {len(item)}")
        flags = c_int(flags)
        ep = self._check_open()
        if anc:
            raise error(errno.EINVAL)
        mv = memoryview(b"".join(views))
        dst = None if address is None else self._addr(address, "sendmsg")
        with self._net.lock:
            return ep.sendto(mv, flags, dst) if dst is not None else ep.send(mv, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        bufsize, flags = size(bufsize, "recv"), c_int(flags)
        ep = self._check_open()
        with self._net.lock:
            return ep.recv(bufsize, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Address | None]:
        bufsize, flags = size(bufsize, "recvfrom"), c_int(flags)
        ep = self._check_open()
        with self._net.lock:
            data, addr, _ = ep.recvfrom(bufsize, flags)
        return data, None if addr is None else addr_out(addr)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0,
                flags: int = 0) -> tuple[bytes, list[Any], int, Address | None]:
        """``(data, [], msg_flags, address)``: no ancillary data is ever
        received; MSG_TRUNC when a datagram was cut; no address for TCP."""
        bufsize = size(bufsize, "recvmsg")
        if index(ancbufsize) < 0:
            raise ValueError("invalid ancillary data buffer length")
        flags = c_int(flags)
        ep = self._check_open()
        with self._net.lock:
            data, addr, msg_flags = ep.recvfrom(bufsize, flags)
        return data, [], msg_flags, None if addr is None else addr_out(addr)

    def recvmsg_into(self, buffers: Iterable[WriteableBuffer], ancbufsize: int = 0,
                     flags: int = 0) -> tuple[int, list[Any], int, Address | None]:
        """``recvmsg`` scattered into ``buffers``."""
        views = [memoryview(b).cast("B") for b in buffers]
        if any(v.readonly for v in views):
            raise TypeError("recvmsg_into() argument 1 must be an iterable of single-segment "
                            "read-write buffers")
        data, anc, msg_flags, addr = self.recvmsg(sum(len(v) for v in views), ancbufsize, flags)
        pos = 0
        for v in views:
            piece = data[pos:pos + len(v)]
            v[:len(piece)] = piece
            pos += len(piece)
        return len(data), anc, msg_flags, addr

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        mv = _writable(buffer, "recv_into")
        n = _nbytes(mv, nbytes, "recv_into", "buffer too small for requested bytes")
        flags = c_int(flags)
        ep = self._check_open()
        with self._net.lock:
            return ep.recv_into(mv[:n], flags)

    def recvfrom_into(self, buffer: WriteableBuffer, nbytes: int = 0,
                      flags: int = 0) -> tuple[int, Address | None]:
        mv = _writable(buffer, "recvfrom_into")
        n = _nbytes(mv, nbytes, "recvfrom_into",
                    "nbytes is greater than the length of the buffer")
        data, addr = self.recvfrom(n, flags)
        mv[:len(data)] = data
        return len(data), addr

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """``socket.sendfile``: send ``count`` bytes (all by default) of a
        binary file from ``offset`` (0 by default, as ``os.sendfile`` does
        for CPython); returns the bytes sent and leaves the file's position
        after them (also when a send fails)."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if self.type != SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if self.gettimeout() == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        file.seek(offset)
        total = 0
        try:
            while count is None or total < count:
                block = file.read(65536 if count is None else min(65536, count - total))
                if not block:
                    break
                self.sendall(block)
                total += len(block)
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # -- closing -----------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        ep = self._check_open()
        how = c_int(how)
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise error(errno.EINVAL)
        self._note("shutdown", how={SHUT_RD: "SHUT_RD", SHUT_WR: "SHUT_WR"}.get(how, "SHUT_RDWR"))
        with self._net.lock:
            ep.shutdown(how)

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
        ep = self._ep
        ep.refs -= 1
        if ep.refs > 0:
            return  # a dup() still holds the endpoint
        ep.closed = True
        ep.close()
        ep.wake()
        if ep.ready is not None:
            ep.ready.close()
            ep.ready = None
        if ep.selector is not None:
            ep.selector.poke(ep)
        self._net.kick()

    def __del__(self) -> None:
        """As CPython: warn about a socket collected while open, and close it.
        Collected inside a call that holds the stack lock (the collector
        runs wherever an allocation triggers it, mid-protocol work too), it
        is closed from a thread of its own once the lock is free, never
        re-entering the protocol code that was interrupted."""
        if getattr(self, "_closed", True):
            return
        warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
        self._makefile_refs = 0
        try:
            if self._net.lock._is_owned():  # type: ignore[union-attr]
                threading.Thread(target=self._close_quietly, name="stack-socket-del",
                                 daemon=True).start()
            else:
                self._close_quietly()
        except RuntimeError:  # no new threads at interpreter exit
            pass

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  (the stack may be gone at interpreter exit)
            pass

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> None:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def __repr__(self) -> str:
        """As CPython's: ``fd`` is the readiness descriptor if ``fileno()``
        made one (-1 otherwise: repr must not create descriptors)."""
        closed = self._closed
        ready = None if closed else self._ep.ready
        fd = ready.fileno() if ready is not None else -1
        s = (f"<stack.Socket{' [closed]' if closed else ''} fd={fd}, family={int(self.family)},"
             f" type={int(self.type)}, proto={self.proto}")
        if not closed:
            ep = self._ep
            s += f", laddr={addr_out(ep.local())}"
            remote = ep.remote()
            if remote is not None:
                s += f", raddr={addr_out(remote)}"
        return s + ">"

    # -- files -----------------------------------------------------------------------------

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the socket, like ``socket.socket.makefile``."""
        return makefile(self, mode, buffering, encoding, errors, newline)

    def makefile_opened(self) -> None:
        with self._net.lock:
            self._makefile_refs += 1

    def makefile_closed(self) -> None:
        """A file from :meth:`makefile` was closed (``socket._decref_socketios``)."""
        with self._net.lock:
            if self._makefile_refs > 0:
                self._makefile_refs -= 1
            if self._close_requested and self._makefile_refs == 0 and not self._closed:
                self._close_locked()


def _writable(buffer: Any, call: str) -> memoryview:
    """A buffer to receive into: read-write, or CPython's TypeError."""
    try:
        mv = memoryview(buffer)
    except TypeError:
        mv = memoryview(b"")
    if mv.readonly:
        raise TypeError(f"{call}() argument 1 must be read-write bytes-like object, "
                        f"not {type(buffer).__name__}")
    return mv.cast("B")


def _nbytes(mv: memoryview, nbytes: Any, call: str, too_big: str) -> int:
    n = index(nbytes)
    if n < 0:
        raise ValueError(f"negative buffersize in {call}")
    if n > len(mv):
        raise ValueError(too_big)
    return n or len(mv)


def create_connection(net: Stack, address: Address,
                      timeout: float | None | EllipsisType = NO_TIMEOUT,
                      source_address: Address | None = None, *,
                      all_errors: bool = False) -> Socket:
    """``socket.create_connection`` on the stack: the host resolved through
    ``net.getaddrinfo``, each address tried in turn; the first error is
    raised (an ExceptionGroup of all with ``all_errors``), as CPython 3.11."""
    host, port = address
    errors: list[Exception] = []
    for _, kind, proto, _, sa in net.getaddrinfo(host, port, 0, SOCK_STREAM):
        s = Socket(net, AF_INET, kind, proto)
        try:
            if timeout is not NO_TIMEOUT and timeout is not ...:
                s.settimeout(timeout)
            if source_address:
                s.bind(source_address)
            s.connect(sa)
            errors.clear()
            return s
        except OSError as e:
            errors.append(e)
            s.close()
        except BaseException:
            s.close()
            raise
    if not errors:
        raise OSError("getaddrinfo returns an empty list")
    if all_errors:
        raise ExceptionGroup("create_connection failed", errors)
    raise errors[0]


def create_server(net: Stack, address: Address, *, family: int = AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> Socket:
    """``socket.create_server``: bound, listening, SO_REUSEADDR set.
    SO_REUSEPORT and IPv6 are refused as CPython refuses them where the
    platform lacks them (ValueError)."""
    if reuse_port:
        raise ValueError("SO_REUSEPORT not supported on this platform")
    if dualstack_ipv6:
        raise ValueError("dualstack_ipv6 not supported on this platform")
    s = Socket(net, family, SOCK_STREAM)
    try:
        s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno is None:
                raise
            raise error(e.errno, f"{e.strerror} (while attempting to bind on address "
                                 f"{address!r})") from None
        if backlog is None:
            s.listen()
        else:
            s.listen(backlog)
    except BaseException:
        s.close()
        raise
    return s
