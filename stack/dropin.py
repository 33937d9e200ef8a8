"""The drop-in: the standard library's ``socket`` module over a stack.

While :func:`patch` is active, the names of the ``socket`` module that open
IPv4 sockets or resolve names answer from one :class:`~stack.runtime.Stack`,
so ``http.client``, ``urllib.request``, ``socketserver``/``http.server``,
``xmlrpc``, ``asyncio`` and third-party clients such as ``requests`` run
unmodified over it::

    with net.patched():            # or stack.patch(net) ... stack.unpatch()
        urllib.request.urlopen("http://192.0.2.1:8000/").read()

What is replaced, and why (the plan follows gevent's ``monkey.patch_socket``:
one table of originals, names replaced in the module's namespace):

* ``socket.socket`` (and ``socket.SocketType``): a class whose constructor
  returns a stack socket for ``AF_INET`` (``AF_INET6`` reaches the stack too
  and fails with ``EAFNOSUPPORT``, as on a host without IPv6, so nothing
  leaves through the kernel unseen) and a kernel socket for every other
  family and for any ``fileno=`` construction: ``socketpair()``, ``fromfd()``
  and ``accept()`` of kernel sockets build theirs that way, so asyncio's
  self-pipe and the stack's own readiness pairs stay the kernel's.
  ``isinstance(s, socket.socket)`` is true for both kinds (the class's
  metaclass says so).
* ``create_connection``, ``create_server``: CPython's algorithms, on the stack.
* ``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``, ``gethostbyaddr``,
  ``getnameinfo``, ``getfqdn``: ``net.names`` (stack/names.py).

Everything else in ``socket`` (constants, ``inet_aton``, ``socketpair``, the
default timeout) is left as it is: the stdlib's own functions look the
replaced names up in the module at call time, so they follow.

The import-order trap: a module that ran ``from socket import
create_connection`` (or ``socket``) holds the object itself, not the name.
:func:`patch` therefore also replaces, in every loaded module, each global
that *is* one of the originals above, and :func:`unpatch` puts back every
global that *is* one of the replacements, also in modules imported while
patched. ``ssl`` (which subclasses ``socket.socket`` when it is first
imported) is imported before the class is replaced, so its ``SSLSocket``
keeps the kernel's base.

``patch`` and ``unpatch`` are process-wide (every thread sees the change at
once) and serialized by one lock, so two threads may call them; a call in
another thread that already looked a name up finishes with what it found.
Patching again with the same stack nests (the last ``unpatch`` restores);
patching with another stack while patched, or unpatching when not patched,
raises ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from stack.runtime import Stack

# The socket module's sentinel for "no timeout given": the default of
# create_connection's timeout, which http.client and urllib pass on as it is.
DEFAULT_TIMEOUT = inspect.signature(socket.create_connection).parameters["timeout"].default

# The names of the socket module that are replaced; the class names first.
CLASS_NAMES = ("socket", "SocketType")
FUNCTION_NAMES = ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                  "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "getfqdn")
# Families the stack answers for (AF_INET6 with EAFNOSUPPORT: it has no IPv6).
STACK_FAMILIES = (socket.AF_INET, socket.AF_INET6)

_lock = threading.RLock()
_active: "_Patch | None" = None


def patch(net: "Stack") -> None:
    """Route the ``socket`` module's IPv4 sockets and name functions to ``net``
    until :func:`unpatch` (see the module's docstring)."""
    global _active
    with _lock:
        if _active is not None:
            if _active.net is not net:
                raise RuntimeError(f"the drop-in is already patched to {_active.net!r}; "
                                   "unpatch() it before patching another stack")
            _active.depth += 1
            return
        p = _Patch(net)
        p.install()
        _active = p


def unpatch() -> None:
    """Undo one :func:`patch`; the last one restores every name exactly."""
    global _active
    with _lock:
        if _active is None:
            raise RuntimeError("the drop-in is not patched (unpatch() without patch())")
        _active.depth -= 1
        if _active.depth == 0:
            p, _active = _active, None
            p.uninstall()


def patched_to() -> "Stack | None":
    """The stack the drop-in is patched to, or None."""
    with _lock:
        return _active.net if _active is not None else None


@contextlib.contextmanager
def patched(net: "Stack") -> Iterator["Stack"]:
    """``net.patched()``: :func:`patch` for the ``with`` block."""
    patch(net)
    try:
        yield net
    finally:
        unpatch()


class _Patch:
    """One installed patch: the replacements and the originals they stand for."""

    def __init__(self, net: "Stack") -> None:
        self.net = net
        self.depth = 1
        self.originals: dict[str, Any] = {n: getattr(socket, n)
                                          for n in CLASS_NAMES + FUNCTION_NAMES}
        cls = socket_class(net, self.originals["socket"])
        self.replacements: dict[str, Any] = {"socket": cls, "SocketType": cls,
                                             **functions(net, cls)}
        self.undo_ssl: Callable[[], None] | None = None

    # Rebound in other modules: the class as ``socket`` (SocketType is the C
    # base ``_socket.socket``, which other modules hold for other reasons).
    REBOUND = ("socket",) + FUNCTION_NAMES

    def install(self) -> None:
        importlib.import_module("ssl")  # before the class changes (module docstring)
        for name, value in self.replacements.items():
            setattr(socket, name, value)
        self._rebind(self.originals, self.replacements, self.REBOUND)
        try:
            self.undo_ssl = _patch_ssl()
        except BaseException:
            self.uninstall()
            raise

    def uninstall(self) -> None:
        if self.undo_ssl is not None:
            self.undo_ssl()
            self.undo_ssl = None
        for name, value in self.originals.items():
            setattr(socket, name, value)
        self._rebind(self.replacements, self.originals, self.REBOUND)

    @staticmethod
    def _rebind(old: dict[str, Any], new: dict[str, Any], names: tuple[str, ...]) -> None:
        """In every loaded module but ``socket`` and the stack's own, set each
        global that is ``old[n]`` to ``new[n]`` (``from socket import n``,
        under any alias)."""
        by_id = {id(old[n]): new[n] for n in names}
        for mod_name, mod in list(sys.modules.items()):
            if mod_name in ("socket", "_socket") or mod_name.split(".")[0] == "stack":
                continue
            namespace = getattr(mod, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for key, value in list(namespace.items()):
                if id(value) in by_id and not key.startswith("__"):
                    namespace[key] = by_id[id(value)]


def _patch_ssl() -> Callable[[], None] | None:
    """TLS over the stack's sockets: ``stack.tls.patch_ssl()`` when that module
    exists; it returns the callable that undoes it."""
    if importlib.util.find_spec("stack.tls") is None:
        return None
    tls = importlib.import_module("stack.tls")  # its own errors are not hidden
    undo: Callable[[], None] = tls.patch_ssl()
    return undo


# -- the replacements ---------------------------------------------------------------------


class _SocketMeta(type):
    """The metaclass of the patched ``socket.socket``: a stack socket and a
    kernel socket are both instances of it (and the stack's class and the
    kernel's are its subclasses), as code that checks ``isinstance`` expects."""

    kernel: type
    stack: type

    def __instancecheck__(cls, obj: object) -> bool:
        if "stack" not in vars(cls):  # a subclass made while patched: the plain rule
            return type.__instancecheck__(cls, obj)
        return isinstance(obj, (cls.kernel, cls.stack))

    def __subclasscheck__(cls, sub: type) -> bool:
        if "stack" not in vars(cls):
            return type.__subclasscheck__(cls, sub)
        return issubclass(sub, (cls.kernel, cls.stack))


def socket_class(net: "Stack", kernel: Any) -> type:
    """The class that stands for ``socket.socket`` while patched to ``net``."""
    from stack.socket import Socket

    class PatchedSocket(kernel, metaclass=_SocketMeta):
        """``socket.socket(family, type, proto, fileno)``: a stack socket for
        AF_INET/AF_INET6 made from nothing, a kernel socket otherwise."""

        def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                    fileno: int | None = None) -> Any:
            if cls is not PatchedSocket:  # a subclass defined while patched: the kernel's
                return kernel.__new__(cls, family, type, proto, fileno)
            if fileno is None and (socket.AF_INET if family == -1 else family) in STACK_FAMILIES:
                return net.socket(socket.AF_INET if family == -1 else family,
                                  socket.SOCK_STREAM if type == -1 else type,
                                  0 if proto == -1 else proto)
            return kernel(family, type, proto, fileno)

    PatchedSocket.__name__ = PatchedSocket.__qualname__ = "socket"
    PatchedSocket.__module__ = "socket"
    PatchedSocket.kernel = kernel
    PatchedSocket.stack = Socket
    return PatchedSocket


def functions(net: "Stack", cls: type) -> dict[str, Callable[..., Any]]:
    """The ``socket`` module's functions, answered by ``net``."""

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[tuple[Any, Any, int, str, tuple[str, int]]]:
        """As ``socket.getaddrinfo`` (family and type as the module's enums)."""
        return [(_enum(socket.AddressFamily, af), _enum(socket.SocketKind, kind), pr, canon, sa)
                for af, kind, pr, canon, sa in net.getaddrinfo(host, port, family, type,
                                                               proto, flags)]

    def create_connection(address: tuple[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                          source_address: tuple[Any, Any] | None = None, *,
                          all_errors: bool = False) -> Any:
        """CPython's ``socket.create_connection``: each address in turn."""
        host, port = address
        errors: list[OSError] = []
        for af, kind, proto, _canon, sa in getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = None
            try:
                sock = cls(af, kind, proto)
                if timeout is not DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sa)
                return sock
            except OSError as exc:
                errors.append(exc)
                if sock is not None:
                    sock.close()
        if not errors:
            raise OSError("getaddrinfo returns an empty list")
        if all_errors:
            raise ExceptionGroup("create_connection failed", errors)
        raise errors[0]

    def create_server(address: tuple[Any, Any], *, family: int = socket.AF_INET,
                      backlog: int | None = None, reuse_port: bool = False,
                      dualstack_ipv6: bool = False) -> Any:
        """CPython's ``socket.create_server`` (IPv4: no dual stack)."""
        if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("SO_REUSEPORT not supported on this platform")
        if dualstack_ipv6:
            raise ValueError("dualstack_ipv6 not supported on this platform")
        sock = cls(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(address)
            except OSError as err:
                raise OSError(err.errno, f"{err.strerror} (while attempting to bind on "
                                         f"address {address!r})") from None
            sock.listen(*(() if backlog is None else (backlog,)))
            return sock
        except BaseException:
            sock.close()
            raise

    return {
        "create_connection": create_connection, "create_server": create_server,
        "getaddrinfo": getaddrinfo, "gethostbyname": net.gethostbyname,
        "gethostbyname_ex": net.gethostbyname_ex, "gethostbyaddr": net.gethostbyaddr,
        "getnameinfo": net.getnameinfo, "getfqdn": net.getfqdn,
    }


def _enum(kind: Any, value: int) -> Any:
    """``value`` as a member of the IntEnum ``kind``, or as it is if it names none."""
    try:
        return kind(value)
    except ValueError:
        return value
