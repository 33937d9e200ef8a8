"""Stream (TCP) bodies of the socket facade's methods.

:class:`stack.socket.Socket` keeps one class for both kinds and calls these
for ``SOCK_STREAM``. Each function takes the stack lock, talks to the TCP
layer (``net.tcp``: a :class:`~stack.tcp.layer.Listener` or
:class:`~stack.tcp.conn.TcpConnection`), and waits on the socket's condition
when the call must block. Semantics follow Linux as Python exposes it.
"""

from __future__ import annotations

import errno
import socket as _socket
from typing import TYPE_CHECKING, Callable, TypeVar

from stack.socket import (
    IPPROTO_TCP, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_KEEPALIVE, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF,
    SOL_SOCKET, TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_NODELAY, Socket, error,
    timeout_error,
)
from stack.tcp.states import CLOSED, SYN_SENT

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from stack.tcp import TcpConnection, TcpLayer

_T = TypeVar("_T")


def _tcp(sock: Socket) -> TcpLayer:
    return sock._net.tcp


# -- readiness (called under the lock) ---------------------------------------------


def readable(sock: Socket) -> bool:
    if sock._listener is not None:
        return sock._listener.readable
    conn = sock._conn
    if conn is None:
        return False
    return sock._shut_rd or conn.readable


def writable(sock: Socket) -> bool:
    conn = sock._conn
    return conn is not None and conn.writable


def take_error(sock: Socket) -> int | None:
    conn = sock._conn
    if conn is None or conn.error is None or sock._error_taken:
        return None
    sock._error_taken = True
    return conn.error


def local(sock: Socket) -> tuple[int, int] | None:
    if sock._conn is not None:
        return sock._conn.local
    if sock._listener is not None:
        return sock._listener.local
    return sock._bound


def remote(sock: Socket) -> tuple[int, int] | None:
    conn = sock._conn
    if conn is None or conn.state == CLOSED:
        return None
    return conn.remote


def _rcvbuf(sock: Socket) -> int | None:
    """SO_RCVBUF as the connection's buffer size, or None when never set."""
    return sock._opts[(SOL_SOCKET, SO_RCVBUF)] // 2 if sock._rcvbuf_set else None


def congestion(sock: Socket) -> str:
    """TCP_CONGESTION's name: the connection's algorithm, else the one set
    for it, else the layer's default."""
    if sock._conn is not None:
        return sock._conn.congestion
    if sock._congestion is not None:
        return sock._congestion
    return _tcp(sock).config.congestion


def apply_options(sock: Socket) -> None:
    if sock._listener is not None:
        # Connections it accepts offer a SYN window and scale sized from it.
        sock._listener.rcvbuf = _rcvbuf(sock)
    conn = sock._conn
    if conn is None:
        return
    opts = sock._opts
    conn.set_nodelay(bool(opts[(IPPROTO_TCP, TCP_NODELAY)]))
    conn.set_keepalive(bool(opts[(SOL_SOCKET, SO_KEEPALIVE)]),
                       idle=float(opts[(IPPROTO_TCP, TCP_KEEPIDLE)]),
                       interval=float(opts[(IPPROTO_TCP, TCP_KEEPINTVL)]),
                       count=opts[(IPPROTO_TCP, TCP_KEEPCNT)])
    if sock._congestion is not None:
        conn.set_congestion(sock._congestion)
    conn.set_buffers(sndbuf=opts[(SOL_SOCKET, SO_SNDBUF)] // 2 if sock._sndbuf_set else None,
                     rcvbuf=opts[(SOL_SOCKET, SO_RCVBUF)] // 2 if sock._rcvbuf_set else None)
    sock._net.kick()


# -- opening -------------------------------------------------------------------------


def bind(sock: Socket, addr: int, port: int) -> None:
    net = sock._net
    if sock._bound is not None or sock._conn is not None or sock._listener is not None:
        raise error(errno.EINVAL)
    if addr not in (0, net.address):
        raise error(errno.EADDRNOTAVAIL)
    reuse = bool(sock._opts[(SOL_SOCKET, SO_REUSEADDR)])
    port = _tcp(sock).bind(addr, port, reuse)
    sock._bound = (addr, port)


def listen(sock: Socket, backlog: int) -> None:
    net = sock._net
    with net.lock:
        if sock._conn is not None:
            raise error(errno.EINVAL)
        backlog = max(1, min(int(backlog), 4096))
        if sock._listener is not None:
            sock._listener.backlog = backlog
            return
        if sock._bound is None:
            bind(sock, 0, 0)
        assert sock._bound is not None
        lst = _tcp(sock).listen(sock._bound, backlog, net.clock())
        lst.on_change = sock._changed
        lst.rcvbuf = _rcvbuf(sock)
        sock._listener = lst


def accept(sock: Socket) -> tuple[Socket, tuple[str, int]]:
    from stack.socket_base import addr_out

    net = sock._net
    with net.lock:
        lst = sock._listener
        if lst is None:
            raise error(errno.EINVAL)
        sock._wait(lambda: lst.readable)
        conn = lst.accept()
        if conn is None:  # the listener was closed under us
            raise error(errno.EBADF if sock._closed else errno.EINVAL)
        new = Socket(net, sock.family, sock.type)
        new._opts.update(sock._opts)
        new._sndbuf_set, new._rcvbuf_set = sock._sndbuf_set, sock._rcvbuf_set
        new._congestion = sock._congestion  # as Linux, accepted sockets inherit it
        if _socket.getdefaulttimeout() is None and sock.gettimeout():
            new.settimeout(None)
        new._conn = conn
        conn.on_change = new._changed
        apply_options(new)
        if sock._ready is not None:
            sock._ready.update(readable(sock), False)
        return new, addr_out(conn.remote)


def connect(sock: Socket, addr: tuple[int, int]) -> None:
    net = sock._net
    with net.lock:
        if sock._listener is not None:
            raise error(errno.EISCONN)  # as Linux
        conn = sock._conn
        if conn is not None:
            if conn.state == SYN_SENT:
                raise error(errno.EALREADY)
            if conn.error is not None and not sock._error_taken:
                sock._error_taken = True
                raise error(conn.error)
            raise error(errno.EISCONN)
        raddr, rport = addr
        if raddr == 0:
            raddr = net.address
        if sock._bound is not None:
            laddr, lport = sock._bound
        else:
            laddr, lport = 0, 0
        try:
            net.ip.next_hop(raddr) if raddr != net.address else None
        except OSError as e:
            raise error(e.errno or errno.ENETUNREACH) from None
        conn = _tcp(sock).connect(laddr or net.address, (raddr, rport), net.clock(),
                                  local_port=lport, rcvbuf=_rcvbuf(sock))
        conn.on_change = sock._changed
        sock._conn = conn
        apply_options(sock)
        net.kick()
        if sock._timeout == 0.0:
            raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        try:
            sock._wait(lambda: conn.state != SYN_SENT)
        except TimeoutError:
            conn.abort(net.clock(), f"user abort (connect timed out after {sock._timeout:g} s)")
            raise
        if conn.error is not None:
            sock._error_taken = True
            raise error(conn.error)


# -- data ---------------------------------------------------------------------------------


def _connected(sock: Socket) -> "TcpConnection":
    conn = sock._conn
    if conn is None:
        raise error(errno.ENOTCONN)
    return conn


def _sending(sock: Socket) -> "TcpConnection":
    """The connection to send on; Linux answers a send without one with EPIPE."""
    conn = sock._conn
    if conn is None:
        raise error(errno.EPIPE)
    return conn


def _op_timeout(sock: Socket, flags: int) -> float | None:
    """The wait for one call: MSG_DONTWAIT makes it non-blocking."""
    return 0.0 if flags & _socket.MSG_DONTWAIT else sock._timeout


def send(sock: Socket, data: ReadableBuffer, flags: int = 0) -> int:
    net = sock._net
    mv = memoryview(data).cast("B")
    timeout = _op_timeout(sock, flags)
    with net.lock:
        conn = _sending(sock)
        if not mv:
            return 0
        while True:
            sock._wait(lambda: conn.writable, timeout)
            n = _send_some(sock, conn, mv)
            if n:
                return n


def _send_some(sock: Socket, conn: "TcpConnection", mv: memoryview) -> int:
    net = sock._net
    try:
        n = conn.send(mv, net.clock())
    except OSError as e:
        if e.errno == errno.EPIPE or sock._error_taken:
            raise error(errno.EPIPE) from None
        sock._error_taken = True
        raise
    net.kick()
    if sock._ready is not None:
        # The connection signals only when it becomes writable; a send that
        # fills the buffer must clear the fd's writability itself.
        sock._ready.update(readable(sock), writable(sock))
    return n


def sendall(sock: Socket, data: ReadableBuffer, flags: int = 0) -> None:
    net = sock._net
    mv = memoryview(data).cast("B")
    clock = net.clock
    timeout = _op_timeout(sock, flags)
    deadline = None if timeout is None else clock() + timeout
    with net.lock:
        conn = _sending(sock)
        while mv:
            remaining = None if deadline is None else deadline - clock()
            if remaining is not None and remaining <= 0 and timeout != 0.0:
                raise timeout_error()
            sock._wait(lambda: conn.writable, remaining if timeout != 0.0 else 0.0)
            n = _send_some(sock, conn, mv)
            mv = mv[n:]


def _at_eof(conn: "TcpConnection") -> bool:
    """Everything up to the peer's FIN has been read.

    Linux reports that EOF before any later error: after a FIN, a RST
    (answering data we sent) leaves recv() returning b"" and the error for
    send() to report.
    """
    return conn.at_eof


def _read_once(sock: Socket, conn: TcpConnection, timeout: float | None,
               read: Callable[[], _T]) -> _T | None:
    """Wait (lock held) until the connection has something, then ``read()``.

    Returns what ``read`` returned, or None at EOF (also after SHUT_RD, and
    once the connection's error has been reported).
    """
    sock._wait(lambda: conn.readable or sock._shut_rd, timeout)
    if sock._shut_rd or _at_eof(conn):
        return None
    try:
        result = read()
    except OSError:
        if sock._error_taken:
            return None
        sock._error_taken = True
        raise
    sock._net.kick()
    if sock._ready is not None:
        sock._ready.update(readable(sock), writable(sock))
    return result


def recv(sock: Socket, bufsize: int, flags: int = 0) -> bytes:
    if bufsize < 0:
        raise ValueError("negative buffersize in recv")
    if flags & _socket.MSG_WAITALL and not flags & _socket.MSG_PEEK:
        buf = bytearray(bufsize)
        n = recv_into(sock, memoryview(buf), flags)
        del buf[n:]
        return bytes(buf)
    net = sock._net
    with net.lock:
        conn = _connected(sock)
        if sock._shut_rd or bufsize == 0:
            return b""
        read: Callable[[], bytes | None]
        if flags & _socket.MSG_PEEK:
            def read() -> bytes | None:
                return conn.peek(bufsize) or conn.recv(bufsize, net.clock())
        else:
            def read() -> bytes | None:
                return conn.recv(bufsize, net.clock())
        data = _read_once(sock, conn, _op_timeout(sock, flags), read)
        return data or b""


def recv_into(sock: Socket, mv: memoryview, flags: int = 0) -> int:
    net = sock._net
    with net.lock:
        conn = _connected(sock)
        if sock._shut_rd or not len(mv):
            return 0
        timeout = _op_timeout(sock, flags)
        if flags & _socket.MSG_PEEK:
            def read() -> int | None:
                data = conn.peek(len(mv))
                if not data:
                    return conn.recv_into(mv, 0, net.clock())
                mv[:len(data)] = data
                return len(data)
            return _read_once(sock, conn, timeout, read) or 0
        # MSG_WAITALL waits for the whole buffer only in blocking mode: with
        # a timeout CPython's descriptor is non-blocking and Linux returns
        # what there is.
        waitall = bool(flags & _socket.MSG_WAITALL) and timeout is None
        total = 0
        while True:
            def read_rest(view: memoryview = mv[total:]) -> int | None:
                return conn.recv_into(view, 0, net.clock())

            try:
                n = _read_once(sock, conn, timeout, read_rest)
            except OSError:
                if not total:
                    raise
                sock._error_taken = False  # report it on the next call
                break
            if not n:
                break
            total += n
            if not waitall or total == len(mv):
                break
        return total


# -- closing ---------------------------------------------------------------------------------


def shutdown(sock: Socket, how: int) -> None:
    net = sock._net
    with net.lock:
        if sock._listener is not None:
            # Linux: SHUT_RD on a listener stops it (a blocked accept() wakes
            # with EINVAL); SHUT_WR alone does nothing.
            if how in (SHUT_RD, SHUT_RDWR):
                sock._listener.close(net.clock())
            return
        conn = _connected(sock)
        if conn.state == CLOSED and conn.error is None:
            raise error(errno.ENOTCONN)
        if how in (SHUT_RD, SHUT_RDWR):
            sock._shut_rd = True
        if how in (SHUT_WR, SHUT_RDWR) and conn.state != CLOSED:
            conn.shutdown_write(net.clock())
        net.kick()
        sock._changed()


def close(sock: Socket) -> None:
    """Called with the lock held by Socket._close_locked."""
    net = sock._net
    now = net.clock()
    tcp = net.tcp
    if sock._listener is not None:
        sock._listener.on_change = None
        sock._listener.close(now)
    if sock._conn is not None:
        conn = sock._conn
        conn.on_change = None
        onoff, secs = sock._linger
        if onoff and secs == 0:
            conn.abort(now)
        else:
            conn.close(now)
    if sock._bound is not None and tcp is not None:
        tcp.unbind(*sock._bound)
        sock._bound = None
