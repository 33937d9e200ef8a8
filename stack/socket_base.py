"""What the socket facade is made of: the ``socket`` module's constants, the
one errno table every facade error goes through, the argument checks that
raise what CPython raises, address conversion, and :class:`Endpoint`, the
state and waiting every socket has whatever its kind.

:mod:`stack.socket_stream` (TCP) and :mod:`stack.socket_dgram` (UDP) build
their endpoints on :class:`Endpoint`; :mod:`stack.socket` wraps one of them
in a :class:`~stack.socket.Socket`. Nothing here imports those modules.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import _socket as _c_socket
import threading
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Callable

from stack.wire.ipv4 import int2ip, ip2int

if TYPE_CHECKING:
    from stack.runtime import Stack
    from stack.socket_io import Readiness

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
SOCK_DGRAM = _socket.SOCK_DGRAM
SOCK_NONBLOCK = getattr(_socket, "SOCK_NONBLOCK", 0o4000)
SOCK_CLOEXEC = getattr(_socket, "SOCK_CLOEXEC", 0o2000000)
SOCK_MAX = 11  # Linux: types at or above it are EINVAL
SOL_SOCKET = _socket.SOL_SOCKET
IPPROTO_IP = _socket.IPPROTO_IP
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
SO_OOBINLINE = _socket.SO_OOBINLINE
IP_TTL = _socket.IP_TTL
TCP_NODELAY = _socket.TCP_NODELAY
TCP_MAXSEG = _socket.TCP_MAXSEG
TCP_INFO = getattr(_socket, "TCP_INFO", 11)
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
LOOPBACK = 0x7F000001  # 127.0.0.1
MSG_PEEK = _socket.MSG_PEEK
MSG_DONTWAIT = _socket.MSG_DONTWAIT
MSG_WAITALL = _socket.MSG_WAITALL
MSG_TRUNC = _socket.MSG_TRUNC
MSG_OOB = _socket.MSG_OOB
DEFAULT_TTL = 64  # Linux's net.ipv4.ip_default_ttl
DEFAULT_BUF = 212992  # Linux's net.core.rmem_default / wmem_default
# create_connection's "no timeout given" (http.client passes it on).
NO_TIMEOUT: Any = vars(_socket)["_GLOBAL_DEFAULT_TIMEOUT"]

# The one errno table: every error the facade raises takes its message here.
MESSAGES = {code: os.strerror(code) for code in (
    errno.EBADF, errno.EINVAL, errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EMSGSIZE,
    errno.ENOTCONN, errno.EISCONN, errno.EDESTADDRREQ, errno.ECONNREFUSED, errno.ECONNRESET,
    errno.EPIPE, errno.ETIMEDOUT, errno.EAGAIN, errno.EAFNOSUPPORT, errno.ENOPROTOOPT,
    errno.EOPNOTSUPP, errno.EALREADY, errno.EINPROGRESS, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.EACCES, errno.ECONNABORTED, errno.EPROTO, errno.ENOENT,
    errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.ENOBUFS)}


def error(code: int, message: str | None = None) -> OSError:
    """The exception Python raises for ``code`` (OSError picks the subclass:
    ConnectionRefusedError, BrokenPipeError, BlockingIOError, ...)."""
    return OSError(code, message or MESSAGES.get(code) or os.strerror(code))


def as_error(e: OSError) -> OSError:
    """An OSError from below the facade, raised again through the table."""
    return error(e.errno) if e.errno else e


def timeout_error() -> TimeoutError:
    return TimeoutError("timed out")


def would_block() -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, MESSAGES[errno.EAGAIN])


# -- argument checks: what CPython's C code raises for bad arguments ------------------


def index(value: Any) -> int:
    """An int argument (``"'str' object cannot be interpreted as an integer"``)."""
    if isinstance(value, int):
        return value
    return value.__index__() if hasattr(value, "__index__") else _not_int(value)


def _not_int(value: Any) -> int:
    raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")


def c_int(value: Any) -> int:
    """A C ``int`` argument: OverflowError outside 32 bits, as CPython's ``i``."""
    n = index(value)
    if n > 0x7FFFFFFF:
        raise OverflowError("signed integer is greater than maximum")
    if n < -0x80000000:
        raise OverflowError("signed integer is less than minimum")
    return n


def size(value: Any, call: str) -> int:
    """A buffer size (``ssize_t``): non-negative, or ValueError as CPython."""
    n = index(value)
    if n >= 1 << 63:
        raise OverflowError("Python int too large to convert to C ssize_t")
    if n < 0:
        raise ValueError(f"negative buffersize in {call}")
    return n


def data_view(data: Any) -> memoryview:
    """Bytes to send: any buffer, never a str (TypeError as CPython)."""
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") \
            from None


# A socket object of CPython's own with no file descriptor: its settimeout()
# parses the value with the interpreter's own checks and messages (they
# differ between CPython releases), then fails with EBADF for a good one.
_TIMEOUT_PARSER = _c_socket.socket.__new__(_c_socket.socket)


def timeout_value(value: Any) -> float | None:
    """``settimeout``'s argument: None, or seconds >= 0, checked by CPython itself."""
    try:
        _TIMEOUT_PARSER.settimeout(value)
    except OSError as e:
        if e.errno != errno.EBADF:
            raise
    return None if value is None else float(value)


# -- addresses ---------------------------------------------------------------------------


def addr_in(net: "Stack", address: Any, call: str) -> tuple[int, int]:
    """``("192.0.2.1", 80)`` -> (int, port), with CPython's checks; '' and
    '0.0.0.0' mean any, '<broadcast>' the limited broadcast, a host name is
    resolved through the stack (``net.getaddrinfo``)."""
    if not isinstance(address, tuple):
        raise TypeError(f"{call}(): AF_INET address must be tuple, not {type(address).__name__}")
    if len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna")
    if not isinstance(host, str):
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if "\0" in host:
        raise TypeError("host name must not contain null character")
    port = index(port)
    if not 0 <= port <= 65535:
        raise OverflowError(f"{call}(): port must be 0-65535.")
    if host in ("", "0.0.0.0"):
        return 0, port
    if host == "<broadcast>":
        return 0xFFFFFFFF, port
    try:
        return ip2int(host), port
    except ValueError:
        pass
    infos = net.getaddrinfo(host, port, AF_INET)
    return ip2int(infos[0][4][0]), port


def addr_out(addr: tuple[int, int] | None) -> tuple[str, int]:
    if addr is None:
        return ("0.0.0.0", 0)
    return (int2ip(addr[0]), addr[1])


# -- what every endpoint has --------------------------------------------------------------


# The integer options every socket has, as a new socket reads them.
OPTION_DEFAULTS: dict[tuple[int, int], int] = {
    (SOL_SOCKET, SO_REUSEADDR): 0, (SOL_SOCKET, SO_KEEPALIVE): 0,
    (SOL_SOCKET, SO_BROADCAST): 0, (SOL_SOCKET, SO_OOBINLINE): 0,
    (IPPROTO_TCP, TCP_NODELAY): 0,
    (IPPROTO_TCP, TCP_KEEPIDLE): 7200, (IPPROTO_TCP, TCP_KEEPINTVL): 75,
    (IPPROTO_TCP, TCP_KEEPCNT): 9,
    (SOL_SOCKET, SO_RCVBUF): DEFAULT_BUF, (SOL_SOCKET, SO_SNDBUF): DEFAULT_BUF,
}


class Options(dict):
    """A socket's integer options: only those set are stored (a held
    connection of a busy server sets none), the rest read as
    :data:`OPTION_DEFAULTS`; ``key in OPTION_DEFAULTS`` says which exist."""

    __slots__ = ()

    def __missing__(self, key: tuple[int, int]) -> int:
        return OPTION_DEFAULTS[key]


class Endpoint:
    """The state of one socket shared by both kinds: the stack, the
    condition blocking calls wait on, the timeout, the options, the
    readiness descriptor (once ``fileno()`` made one), and closed.

    Subclasses (``StreamEndpoint``, ``DatagramEndpoint``) own the protocol
    objects and implement the same method set, so a Socket never asks which
    kind it holds. The methods here that a kind does not support raise what
    Linux raises for it (EOPNOTSUPP)."""

    kind = 0
    proto = 0

    def __init__(self, net: "Stack") -> None:
        self.net = net
        self._cond: threading.Condition | None = None   # made by the first waiter
        self.timeout: float | None = _socket.getdefaulttimeout()
        self.closed = False
        self.ready: Readiness | None = None
        self.opts = Options()   # the integer options set; the rest read as OPTION_DEFAULTS
        self.sndbuf_set = False          # SO_SNDBUF / SO_RCVBUF given by the user
        self.rcvbuf_set = False
        self.ttl: int | None = None      # IP_TTL (None: the stack's default)
        self.linger = (0, 0)             # SO_LINGER (onoff, seconds)
        self.inheritable = False         # of the readiness fd (set_inheritable)
        # The stack selector (stack.selector) watching this endpoint, if any:
        # told (``poke(endpoint)``, lock held) whenever readiness may change.
        self.selector: Any = None
        self.refs = 0                    # Socket objects on it (dup())

    # -- readiness and waiting (lock held) ------------------------------------------

    @property
    def cond(self) -> threading.Condition:
        """The condition blocking calls wait on, on the stack lock; made when
        first needed (most sockets of a busy server never wait), under the
        lock like every wait and notify, so no wake-up is lost."""
        cond = self._cond
        if cond is None:
            # typeshed lists only threading's own locks; Condition works with
            # any lock object, and the runtime's StackLock has the hooks it uses.
            cond = self._cond = threading.Condition(self.net.lock)  # type: ignore[arg-type]
        return cond

    def wake(self) -> None:
        """Wake every thread blocked on this endpoint (lock held)."""
        if self._cond is not None:
            self._cond.notify_all()

    def changed(self) -> None:
        """The protocol object changed: wake waiters, mirror readiness."""
        if self._cond is not None:
            self._cond.notify_all()
        self.refresh()
        if self.selector is not None:
            self.selector.poke(self)

    def refresh(self) -> None:
        if self.ready is not None:
            self.ready.update(self.closed or self.readable(), self.closed or self.writable())

    def op_timeout(self, flags: int) -> float | None:
        """The wait for one call: MSG_DONTWAIT makes it non-blocking."""
        return 0.0 if flags & MSG_DONTWAIT else self.timeout

    def wait(self, ready: Callable[[], bool],
             op_timeout: float | None | EllipsisType = ...) -> None:
        """Wait (lock held) until ``ready()``; raise BlockingIOError / TimeoutError."""
        timeout = self.timeout if op_timeout is ... else op_timeout
        if ready():
            return
        if timeout == 0.0:
            raise would_block()
        clock = self.net.clock
        deadline = None if timeout is None else clock() + timeout
        while not ready():
            if self.closed:
                raise error(errno.EBADF)
            if deadline is None:
                self.cond.wait()
            else:
                remaining = deadline - clock()
                if remaining <= 0:
                    raise timeout_error()
                self.cond.wait(remaining)
        if self.closed:
            raise error(errno.EBADF)

    def peer_of(self, addr: tuple[int, int], bound: int = 0) -> tuple[int, int]:
        """The peer a connect or send to ``addr`` means: 0.0.0.0 is this
        host, as on Linux: the bound address, else 127.0.0.1."""
        return (bound or LOOPBACK, addr[1]) if addr[0] == 0 else addr

    def raise_pending(self) -> None:
        code = self.take_error()
        if code:
            raise error(code)

    # -- the method set (each kind overrides what it has) ---------------------------

    def readable(self) -> bool:
        raise NotImplementedError

    def writable(self) -> bool:
        raise NotImplementedError

    def take_error(self) -> int | None:
        raise NotImplementedError

    def local(self) -> tuple[int, int] | None:
        raise NotImplementedError

    def remote(self) -> tuple[int, int] | None:
        raise NotImplementedError

    def bind(self, addr: int, port: int) -> None:
        raise NotImplementedError

    def connect(self, addr: tuple[int, int]) -> None:
        raise NotImplementedError

    def listen(self, backlog: int) -> None:
        raise error(errno.EOPNOTSUPP)

    def accept(self) -> tuple["Endpoint", tuple[int, int]]:
        raise error(errno.EOPNOTSUPP)

    def send(self, mv: memoryview, flags: int) -> int:
        raise NotImplementedError

    def sendall(self, mv: memoryview, flags: int) -> None:
        raise NotImplementedError

    def sendto(self, mv: memoryview, flags: int, dst: tuple[int, int] | None) -> int:
        raise NotImplementedError

    def recv(self, bufsize: int, flags: int) -> bytes:
        raise NotImplementedError

    def recv_into(self, mv: memoryview, flags: int) -> int:
        raise NotImplementedError

    def recvfrom(self, bufsize: int, flags: int) -> tuple[bytes, tuple[int, int] | None, int]:
        """The data, its source (None for a stream), MSG_TRUNC if cut."""
        raise NotImplementedError

    def shutdown(self, how: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the protocol objects (lock held; ``closed`` is already set)."""
        raise NotImplementedError

    def apply_options(self) -> None:
        """The options in ``opts`` (and ttl, linger) changed: hand them down."""

    def get_option(self, level: int, option: int, buflen: int | None) -> Any:
        """A kind's own option, or NotImplemented for the common table."""
        return NotImplemented

    def set_option(self, level: int, option: int, value: Any) -> bool:
        """Set a kind's own option; False: not one of its own."""
        return False

    def status(self) -> dict[str, Any]:
        raise NotImplementedError
