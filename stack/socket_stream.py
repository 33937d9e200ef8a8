"""The stream (TCP) endpoint of the socket facade.

:class:`StreamEndpoint` owns what a ``SOCK_STREAM`` socket is: its binding,
its :class:`~stack.tcp.listener.Listener` or
:class:`~stack.tcp.conn.TcpConnection` (in ``net.tcp``), SHUT_RD, whether
the connection's error was already reported, and the options a connection
takes when it exists. Each method runs with the stack lock held (the
Socket takes it) and waits on the endpoint's condition when it must
block. Semantics follow Linux as Python exposes it.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from stack.socket_base import (
    CA_NAME_MAX, IPPROTO_TCP, MSG_OOB, MSG_PEEK, MSG_WAITALL, SHUT_RD, SHUT_RDWR, SHUT_WR,
    SO_KEEPALIVE, SO_OOBINLINE, SO_RCVBUF, SO_SNDBUF, SOCK_STREAM, SOL_SOCKET, TCP_CONGESTION, TCP_INFO,
    TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_MAXSEG, TCP_NODELAY, SO_REUSEADDR,
    Endpoint, error, timeout_error,
)
from stack.socket_tcpinfo import MSS_DEFAULT, pack_tcp_info
from stack.tcp.states import (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_WAIT_1, LAST_ACK,
                              SYN_SENT)

if TYPE_CHECKING:
    from stack.tcp import Listener, TcpConnection, TcpLayer

_T = TypeVar("_T")


class StreamEndpoint(Endpoint):
    kind = SOCK_STREAM
    proto = IPPROTO_TCP

    def __init__(self, net: Any) -> None:
        super().__init__(net)
        self.conn: TcpConnection | None = None
        self.listener: Listener | None = None
        self.bound: tuple[int, int] | None = None
        self.shut_rd = False
        self.error_taken = False  # a connection's error is raised once, then EOF
        self.congestion: str | None = None  # TCP_CONGESTION, until a connection takes it

    @property
    def tcp(self) -> TcpLayer:
        return self.net.tcp

    # -- what the socket asks (lock held) ------------------------------------------------

    def readable(self) -> bool:
        """recv/accept would not block. A socket neither connected nor
        listening is readable and writable (its calls fail at once), as
        Linux's poll reports it (POLLOUT|POLLHUP)."""
        if self.listener is not None:
            return self.listener.readable
        conn = self.conn
        return conn is None or self.shut_rd or conn.readable

    def writable(self) -> bool:
        if self.listener is not None:
            return False
        conn = self.conn
        return conn is None or conn.writable

    def take_error(self) -> int | None:
        conn = self.conn
        if conn is None or conn.error is None or self.error_taken:
            return None
        self.error_taken = True
        return conn.error

    def local(self) -> tuple[int, int] | None:
        if self.conn is not None:
            return self.conn.local
        if self.listener is not None:
            return self.listener.local
        return self.bound

    def remote(self) -> tuple[int, int] | None:
        conn = self.conn
        if conn is None or conn.state == CLOSED:
            return None
        return conn.remote

    def status(self) -> dict[str, Any]:
        """The connection's ``status()`` (what ``ss -i`` shows), or the listener's."""
        if self.conn is not None:
            return self.conn.status()
        lst = self.listener
        if lst is not None:
            return {"state": lst.state, "local": lst.local, "queued": lst.queued(),
                    "half_open": lst.half_open(), "backlog": lst.backlog}
        return {"state": CLOSED, "local": self.bound}

    def rcvbuf(self) -> int | None:
        """SO_RCVBUF as the connection's buffer size, or None when never set."""
        return self.opts[(SOL_SOCKET, SO_RCVBUF)] // 2 if self.rcvbuf_set else None

    def congestion_name(self) -> str:
        """TCP_CONGESTION's name: the connection's algorithm, else the one set
        for it, else the layer's default."""
        if self.conn is not None:
            return self.conn.congestion
        return self.congestion or self.tcp.config.congestion

    # -- options -----------------------------------------------------------------------------

    def apply_options(self) -> None:
        if self.listener is not None:
            # Connections it accepts offer a SYN window and scale sized from it.
            self.listener.rcvbuf = self.rcvbuf()
        conn = self.conn
        if conn is None:
            return
        opts = self.opts
        conn.set_nodelay(bool(opts[(IPPROTO_TCP, TCP_NODELAY)]))
        conn.set_keepalive(bool(opts[(SOL_SOCKET, SO_KEEPALIVE)]),
                           idle=float(opts[(IPPROTO_TCP, TCP_KEEPIDLE)]),
                           interval=float(opts[(IPPROTO_TCP, TCP_KEEPINTVL)]),
                           count=opts[(IPPROTO_TCP, TCP_KEEPCNT)])
        if self.congestion is not None:
            conn.set_congestion(self.congestion)
        conn.set_buffers(sndbuf=opts[(SOL_SOCKET, SO_SNDBUF)] // 2 if self.sndbuf_set else None,
                         rcvbuf=self.rcvbuf())
        conn.ttl = self.ttl
        conn.receiver.set_oob_inline(bool(opts[(SOL_SOCKET, SO_OOBINLINE)]))
        self.net.kick()

    def get_option(self, level: int, option: int, buflen: int | None) -> Any:
        if level != IPPROTO_TCP:
            return NotImplemented
        if option == TCP_CONGESTION:
            name = self.congestion_name().encode().ljust(CA_NAME_MAX, b"\0")
            if buflen is None:
                return int.from_bytes(name[:4], "little")  # as CPython reads an int option
            return name[:min(buflen, CA_NAME_MAX)]
        if option == TCP_MAXSEG:
            # Linux: the MSS in use (without options) once connected, 536 before.
            return self.conn.status()["mss"] if self.conn is not None else MSS_DEFAULT
        if option == TCP_INFO:
            info = pack_tcp_info(self.status())
            return int.from_bytes(info[:4], "little") if buflen is None else info[:buflen]
        return NotImplemented

    def set_option(self, level: int, option: int, value: Any) -> bool:
        """TCP_CONGESTION: a name (bytes, up to the first NUL) from
        ``stack.tcp.algorithms.ALGORITHMS``; ENOENT for any other, as Linux.
        Before the connection exists it is kept, and applied when it does."""
        if (level, option) != (IPPROTO_TCP, TCP_CONGESTION):
            return False
        from stack.tcp.algorithms import ALGORITHMS

        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray)):
            raise error(errno.EINVAL)
        name = bytes(value[:CA_NAME_MAX]).split(b"\0", 1)[0].decode("ascii", "replace")
        if name not in ALGORITHMS:
            raise error(errno.ENOENT)
        self.congestion = name
        self.apply_options()
        return True

    # -- opening -----------------------------------------------------------------------------

    def bind(self, addr: int, port: int) -> None:
        if self.bound is not None or self.conn is not None or self.listener is not None:
            raise error(errno.EINVAL)
        if addr and not self.net.is_local(addr):
            raise error(errno.EADDRNOTAVAIL)
        reuse = bool(self.opts[(SOL_SOCKET, SO_REUSEADDR)])
        try:
            port = self.tcp.bind(addr, port, reuse)
        except OSError as e:
            raise error(e.errno or errno.EADDRINUSE) from None
        self.bound = (addr, port)

    def listen(self, backlog: int) -> None:
        if self.conn is not None:
            raise error(errno.EINVAL)
        backlog = max(1, min(backlog, 4096))
        if self.listener is not None:
            self.listener.backlog = backlog
            return
        if self.bound is None:
            self.bind(0, 0)
        assert self.bound is not None
        lst = self.tcp.listen(self.bound, backlog, self.net.clock())
        lst.on_change = self.changed
        lst.rcvbuf = self.rcvbuf()
        self.listener = lst
        self.refresh()

    def accept(self) -> tuple[StreamEndpoint, tuple[int, int]]:
        """The next connection, as a new endpoint carrying this one's options
        (as Linux: buffers, keepalive, nodelay, congestion control, TTL), and
        the peer's address (also of one reset while it waited)."""
        lst = self.listener
        if lst is None:
            raise error(errno.EINVAL)
        self.wait(lambda: lst.readable)
        conn = lst.accept()
        if conn is None:  # the listener was closed under us
            raise error(errno.EBADF if self.closed else errno.EINVAL)
        new = StreamEndpoint(self.net)
        new.opts.update(self.opts)
        new.sndbuf_set, new.rcvbuf_set = self.sndbuf_set, self.rcvbuf_set
        new.congestion, new.ttl, new.linger = self.congestion, self.ttl, self.linger
        new.conn = conn
        conn.on_change = new.changed
        new.apply_options()
        self.refresh()
        return new, conn.remote

    def connect(self, addr: tuple[int, int]) -> None:
        if self.listener is not None:
            raise error(errno.EISCONN)  # as Linux
        conn = self.conn
        if conn is not None:
            if conn.state == SYN_SENT:
                raise error(errno.EALREADY)
            if conn.error is not None and not self.error_taken:
                self.error_taken = True
                raise error(conn.error)
            raise error(errno.EISCONN)
        net = self.net
        laddr, lport = self.bound if self.bound is not None else (0, 0)
        raddr, rport = self.peer_of(addr, laddr)
        try:
            # ENETUNREACH (or EINVAL from a 127/8 source) now, as Linux, not
            # after the SYN's timeouts.
            net.ip.check_route(laddr, raddr)
            conn = self.tcp.connect(laddr or net.source_for(raddr), (raddr, rport), net.clock(),
                                    local_port=lport, rcvbuf=self.rcvbuf(), ttl=self.ttl)
        except OSError as e:
            raise error(e.errno or errno.ENETUNREACH) from None
        conn.on_change = self.changed
        self.conn = conn
        self.apply_options()
        self.refresh()
        net.kick()
        if self.timeout == 0.0:
            raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        try:
            self.wait(lambda: conn.state != SYN_SENT)
        except TimeoutError:
            conn.abort(net.clock(), f"user abort (connect timed out after {self.timeout:g} s)")
            raise
        if conn.error is not None:
            self.error_taken = True
            raise error(conn.error)

    # -- data --------------------------------------------------------------------------------

    def connected(self) -> TcpConnection:
        if self.conn is None:
            raise error(errno.ENOTCONN)
        return self.conn

    def sending(self) -> TcpConnection:
        """The connection to send on; Linux answers a send without one with EPIPE."""
        if self.conn is None:
            raise error(errno.EPIPE)
        return self.conn

    def sendto(self, mv: memoryview, flags: int, dst: tuple[int, int] | None) -> int:
        return self.send(mv, flags)  # Linux ignores the address on a TCP socket

    def send(self, mv: memoryview, flags: int) -> int:
        conn = self.sending()
        if not mv:
            return 0
        timeout = self.op_timeout(flags)
        while True:
            self.wait(lambda: conn.writable, timeout)
            n = self.send_some(conn, mv, flags)
            if n:
                return n

    def send_some(self, conn: TcpConnection, mv: memoryview, flags: int = 0) -> int:
        """What fits of ``mv``; MSG_OOB puts the urgent pointer after it."""
        net = self.net
        try:
            n = conn.send(mv, net.clock(), bool(flags & MSG_OOB))
        except OSError as e:
            if e.errno == errno.EPIPE or self.error_taken:
                raise error(errno.EPIPE) from None
            self.error_taken = True
            raise error(e.errno or errno.EPIPE) from None
        net.kick()
        # The connection signals only when it becomes writable; a send that
        # fills the buffer must clear the fd's writability itself.
        self.refresh()
        return n

    def sendall(self, mv: memoryview, flags: int) -> None:
        clock = self.net.clock
        timeout = self.op_timeout(flags)
        deadline = None if timeout is None else clock() + timeout
        conn = self.sending()
        while mv:
            remaining = None if deadline is None else deadline - clock()
            if remaining is not None and remaining <= 0 and timeout != 0.0:
                raise timeout_error()
            self.wait(lambda: conn.writable, remaining if timeout != 0.0 else 0.0)
            n = self.send_some(conn, mv, flags)
            mv = mv[n:]

    def read_once(self, conn: TcpConnection, timeout: float | None,
                  read: Callable[[], _T]) -> _T | None:
        """Wait until the connection has something, then ``read()``.

        Returns what ``read`` returned, or None at EOF (also after SHUT_RD
        once what had arrived is read: Linux keeps delivering it, and
        never blocks), and once the connection's error has been reported.
        Linux reports EOF before a later error: after a FIN, a RST
        (answering data we sent) leaves recv() returning b"" and the error
        for send()."""
        self.wait(lambda: conn.readable or self.shut_rd, timeout)
        if conn.at_eof or (self.shut_rd and not conn.readable):
            return None
        try:
            result = read()
        except OSError as e:
            if self.error_taken:
                return None
            self.error_taken = True
            raise error(e.errno or errno.ECONNRESET) from None
        self.net.kick()
        self.refresh()
        return result

    def recv_urgent(self, conn: TcpConnection, bufsize: int, flags: int) -> bytes:
        """recv(MSG_OOB): the urgent byte (``Receiver.read_urgent``), never
        waiting for it, as Linux; only CPython's wait for readability, with
        a timeout, comes first. Even a read of 0 bytes takes it."""
        timeout = self.op_timeout(flags)
        if timeout:
            self.wait(lambda: conn.readable or self.shut_rd, timeout)
        byte = conn.receiver.read_urgent(bool(flags & MSG_PEEK),
                                         conn.state == CLOSED or self.shut_rd)
        return byte[:bufsize]

    def pass_mark(self, conn: TcpConnection, flags: int) -> None:
        """A read that reaches the kernel at once (no timeout: CPython polls
        first) skips an out-of-band urgent byte next in line, even when it
        then finds nothing (Linux's tcp_recvmsg)."""
        if not self.op_timeout(flags) and not flags & MSG_PEEK:
            conn.receiver.pass_mark()

    def recv(self, bufsize: int, flags: int) -> bytes:
        if flags & MSG_OOB:
            return self.recv_urgent(self.connected(), bufsize, flags)
        if flags & MSG_WAITALL and not flags & MSG_PEEK:
            buf = bytearray(bufsize)
            n = self.recv_into(memoryview(buf), flags)
            del buf[n:]
            return bytes(buf)
        conn = self.connected()
        if bufsize == 0:
            return b""
        self.pass_mark(conn, flags)
        now = self.net.clock
        read: Callable[[], bytes | None]
        if flags & MSG_PEEK:
            def read() -> bytes | None:
                return conn.peek(bufsize) or conn.recv(bufsize, now())
        else:
            def read() -> bytes | None:
                return conn.recv(bufsize, now())
        return self.read_once(conn, self.op_timeout(flags), read) or b""

    def recvfrom(self, bufsize: int, flags: int) -> tuple[bytes, tuple[int, int] | None, int]:
        """As Linux for TCP: the data, no address, no flags."""
        return self.recv(bufsize, flags), None, 0

    def recv_into(self, mv: memoryview, flags: int) -> int:
        conn = self.connected()
        if flags & MSG_OOB:
            byte = self.recv_urgent(conn, len(mv), flags)
            mv[:len(byte)] = byte
            return len(byte)
        if not len(mv):
            return 0
        self.pass_mark(conn, flags)
        timeout = self.op_timeout(flags)
        now = self.net.clock
        if flags & MSG_PEEK:
            def read() -> int | None:
                data = conn.peek(len(mv))
                if not data:
                    return conn.recv_into(mv, 0, now())
                mv[:len(data)] = data
                return len(data)
            return self.read_once(conn, timeout, read) or 0
        # MSG_WAITALL waits for the whole buffer only in blocking mode: with
        # a timeout CPython's descriptor is non-blocking and Linux returns
        # what there is.
        waitall = bool(flags & MSG_WAITALL) and timeout is None
        total = 0
        while True:
            def read_rest(view: memoryview = mv[total:]) -> int | None:
                return conn.recv_into(view, 0, now())

            try:
                n = self.read_once(conn, timeout, read_rest)
            except OSError:
                if not total:
                    raise
                self.error_taken = False  # report it on the next call
                break
            if not n:
                break
            total += n
            if not waitall or total == len(mv):
                break
        return total

    # -- closing -----------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        net = self.net
        if self.listener is not None:
            # Linux: SHUT_RD on a listener stops it (a blocked accept() wakes
            # with EINVAL); SHUT_WR alone does nothing.
            if how in (SHUT_RD, SHUT_RDWR):
                self.listener.close(net.clock())
            return
        conn = self.connected()
        if conn.state == CLOSED and conn.error is None:
            raise error(errno.ENOTCONN)
        if how in (SHUT_RD, SHUT_RDWR):
            self.shut_rd = True
            conn.shutdown_read()  # data that comes after our FIN is answered with a reset
        if how in (SHUT_WR, SHUT_RDWR) and conn.state != CLOSED:
            conn.shutdown_write(net.clock())
        net.kick()
        self.changed()

    def close(self) -> None:
        """Release everything. SO_LINGER on with 0 s resets the connection;
        with N s a blocking close waits up to N s for the peer to
        acknowledge our FIN (as Linux), then lets the close go on alone."""
        now = self.net.clock()
        if self.listener is not None:
            self.listener.on_change = None
            self.listener.close(now)
        conn = self.conn
        if conn is not None:
            onoff, secs = self.linger
            if onoff and secs == 0:
                conn.abort(now)
            else:
                conn.close(now)
                if onoff and self.timeout != 0.0:
                    self.linger_wait(conn, secs)
            conn.on_change = None
        if self.bound is not None:
            self.tcp.unbind(*self.bound)
            self.bound = None

    def linger_wait(self, conn: TcpConnection, secs: float) -> None:
        clock = self.net.clock
        deadline = clock() + secs
        self.net.kick()
        # (ESTABLISHED or CLOSE_WAIT after close: the FIN waits behind data.)
        while conn.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK):
            remaining = deadline - clock()
            if remaining <= 0:
                return
            self.cond.wait(remaining)
