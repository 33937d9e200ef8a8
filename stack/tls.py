"""TLS over the stack's sockets: ``ssl`` for sockets that have no kernel descriptor.

CPython's :class:`ssl.SSLSocket` gives OpenSSL a real file descriptor to read
and write ciphertext on (``SSLSocket._create`` takes over ``sock.fileno()``
and detaches the socket). A stack socket has no such descriptor: its
``fileno()`` is one end of a socketpair that only signals readiness. So a
:class:`TlsSocket` runs OpenSSL on memory instead — an :class:`ssl.SSLObject`
between two :class:`ssl.MemoryBIO` — and moves the ciphertext itself with the
stack socket's ``recv`` and ``send``. Everything a program sees (the methods
of ``ssl.SSLSocket``, ``SSLWantReadError`` in non-blocking mode, timeouts,
``SSLCertVerificationError``, ``SSLEOFError``) is what CPython's ``ssl`` gives.

Two choices keep ``fileno()`` truthful for ``select``: ciphertext is read one
TLS record at a time (OpenSSL without read-ahead does the same on a kernel
socket), so no complete record waits in memory while the descriptor says
"nothing to read"; and a non-blocking ``send`` that cannot hand all its
ciphertext to TCP raises ``SSLWantWriteError`` and must be retried with the
same data, as OpenSSL asks of ``SSL_write``.

One deliberate difference: ``close()`` sends a close_notify alert before the
FIN (waiting at most a second for TCP to take it), as RFC 8446 section 6.1
asks; CPython closes without one unless ``unwrap()`` is called.

``patch_ssl()`` makes ``ssl.SSLContext.wrap_socket`` return a TlsSocket for a
stack socket, so unmodified code (``http.client``, ``urllib``, ``requests``)
gets TLS over the stack.
"""

from __future__ import annotations

import errno
import functools
import math
import select
import socket as _socket
import ssl
import threading
import time
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from stack.socket import Socket
from stack.tls_plain import PlainCalls

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

_T = TypeVar("_T")

RECORD_HEADER = 5         # type, version (2), length (2)
WRITE_CHUNK = 1 << 16     # plaintext encrypted by one send(): bounds the ciphertext held back
CLOSE_NOTIFY_WAIT = 1.0   # the longest close() waits for TCP to take its close_notify
_DONTWAIT = _socket.MSG_DONTWAIT


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ,
                                "The operation did not complete (read)")


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE,
                                 "The operation did not complete (write)")


def _encode_hostname(name: str | bytes | None) -> str | None:
    """As ``SSLContext`` does: IDNA for str, ASCII for bytes."""
    return name.decode() if isinstance(name, bytes) else name and name.encode("idna").decode()


class TlsSocket(PlainCalls, ssl.SSLSocket):
    """An ``ssl.SSLSocket`` over a stack :class:`~stack.socket.Socket`.

    It is an ``ssl.SSLSocket`` (and a ``socket.socket``) for ``isinstance``,
    but never opens a kernel socket: every method that would touch one is
    defined here and works on the stack socket or the TLS object.
    """

    def __init__(self, sock: Socket, context: ssl.SSLContext, server_side: bool = False,
                 do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                 server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> None:
        # ssl.SSLSocket.__init__ refuses to run; socket.socket.__init__ would
        # open a kernel socket. Neither is called: the C part stays fd -1.
        if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_TYPE) != _socket.SOCK_STREAM:
            raise NotImplementedError("only stream sockets are supported")
        if server_side:
            if server_hostname:
                raise ValueError("server_hostname can only be specified in client mode")
            if session is not None:
                raise ValueError("session can only be specified in client mode")
        if context.check_hostname and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        self._sock = sock
        self._context = context
        self._session = session
        self.server_side = server_side
        self.server_hostname = _encode_hostname(server_hostname)
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._sslobj: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._backlog = b""      # ciphertext made but not yet taken by TCP
        self._retry_len = 0      # plaintext length a retried send() reports once the backlog goes
        self._header = b""       # the part of the next record's header read so far
        self._record_left = 0    # bytes of the current record still to read
        self._notify_sent = False
        # socket.socket's names: makefile() and _decref_socketios() use them.
        self._closed = False
        self._io_refs = 0
        # _state guards the TLS object and the BIOs; _sending and _receiving
        # keep one thread at a time on each direction of the TCP socket.
        self._state = threading.Lock()
        self._sending = threading.Lock()
        self._receiving = threading.Lock()
        try:
            sock.getpeername()
            self._connected = True
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise
            self._connected = False
        if self._connected:
            try:
                self._sslobj = self._new_tls()
                if do_handshake_on_connect:
                    if self.gettimeout() == 0.0:
                        raise ValueError("do_handshake_on_connect should not be specified "
                                         "for non-blocking sockets")
                    self.do_handshake()
            except (OSError, ValueError):
                self.close()
                raise

    def _new_tls(self) -> ssl.SSLObject:
        return self._context.wrap_bio(self._incoming, self._outgoing,
                                      server_side=self.server_side,
                                      server_hostname=self.server_hostname,
                                      session=self._session)

    # -- moving ciphertext -----------------------------------------------------------

    def _io(self, op: Callable[[], _T], what: str,
            timeout: float | None | EllipsisType = ..., *, flush: str = "must") -> _T:
        """Run ``op`` on the TLS object, reading ciphertext while it wants
        some, within one deadline for the whole call (as ``_ssl.c``).

        ``flush``: "must" (a handshake or shutdown is not done until its
        flight is out: SSLWantWriteError in non-blocking mode), "try" (send
        what can go now) or "no" (the caller sends).
        """
        if timeout is ...:
            timeout = self._sock.gettimeout()
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            try:
                with self._state:
                    result = op()
            except ssl.SSLWantReadError:
                if not self._push(timeout, deadline, what):
                    raise _want_write() from None
                self._pull(timeout, deadline, what)
                continue
            except ssl.SSLError:
                self._push_quietly()  # the alert OpenSSL made, for the peer to see why
                raise
            if flush != "no" and not self._push(timeout, deadline, what) and flush == "must":
                raise _want_write()
            return result

    def _push(self, timeout: float | None, deadline: float | None, what: str) -> bool:
        """Hand the ciphertext made so far to TCP, in order. False when, in
        non-blocking mode, TCP could not take all of it; what did not go
        (also when a timeout or an error ends the call) stays for the next."""
        with self._sending:
            while True:
                with self._state:
                    if self._outgoing.pending:
                        self._backlog += self._outgoing.read()
                    data, self._backlog = self._backlog, b""
                if not data:
                    return True
                sent = 0
                try:
                    if timeout is None:
                        self._sock.sendall(data)
                        sent = len(data)
                    while sent < len(data):
                        if deadline is not None:
                            self._wait(select.POLLOUT, deadline, what)
                        try:
                            sent += self._sock.send(memoryview(data)[sent:], _DONTWAIT)
                        except BlockingIOError:
                            if deadline is None:
                                return False
                finally:
                    if sent < len(data):
                        with self._state:
                            self._backlog = data[sent:] + self._backlog

    def _push_quietly(self) -> None:
        """Send what is there without waiting; errors are the caller's to report."""
        try:
            self._push(0.0, None, "write")
        except OSError:
            pass

    def _pull(self, timeout: float | None, deadline: float | None, what: str) -> None:
        """Read ciphertext up to the end of the next record (or the rest of
        this one) into the incoming BIO; EOF becomes the BIO's EOF."""
        with self._receiving:
            if self._incoming.eof:
                raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
            want = self._record_left or RECORD_HEADER - len(self._header)
            while True:
                if deadline is not None:
                    self._wait(select.POLLIN, deadline, what)
                try:
                    data = self._sock.recv(want, 0 if timeout is None else _DONTWAIT)
                    break
                except BlockingIOError:
                    if timeout == 0.0:
                        raise _want_read() from None
            with self._state:
                if not data:
                    self._incoming.write_eof()
                    return
                self._incoming.write(data)
            if self._record_left:
                self._record_left -= len(data)
            else:
                self._header += data
                if len(self._header) == RECORD_HEADER:
                    self._record_left = int.from_bytes(self._header[3:5], "big")
                    self._header = b""

    def _wait(self, event: int, deadline: float, what: str) -> None:
        """Wait on the readiness descriptor until ``event`` or the deadline."""
        remaining = deadline - time.monotonic()
        if remaining > 0:
            poller = select.poll()
            poller.register(self._sock.fileno(), event)
            if poller.poll(math.ceil(remaining * 1000)):
                return
        raise TimeoutError(f"The {what} operation timed out")

    # -- the TLS calls ------------------------------------------------------------------

    def _check_connected(self) -> None:
        if not self._connected:
            self._sock.getpeername()  # ENOTCONN when it really is not connected

    def _tls(self, message: str) -> ssl.SSLObject:
        if self._sslobj is None:
            raise ValueError(message)
        return self._sslobj

    def do_handshake(self, block: bool = False) -> None:
        self._check_connected()
        tls = self._tls("No SSL wrapper around " + repr(self))
        timeout = self.gettimeout()
        self._io(tls.do_handshake, "handshake", None if block and timeout == 0.0 else timeout)

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> Any:
        tls = self._tls("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is not None:
                return self._io(lambda: tls.read(len, buffer), "read", flush="try")
            return self._io(lambda: tls.read(len), "read", flush="try")
        except ssl.SSLZeroReturnError:
            # The peer's close_notify after ours (shutdown(SHUT_WR)): the end
            # of its data. (Before ours, OpenSSL itself reads it as b"".)
            return 0 if buffer is not None else b""
        except ssl.SSLError as e:
            if e.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise

    def write(self, data: ReadableBuffer) -> int:
        """Encrypt up to WRITE_CHUNK bytes of ``data`` and send them; the
        number of plaintext bytes taken."""
        tls = self._tls("Write on closed or unwrapped SSL socket.")
        timeout = self._sock.gettimeout()
        deadline = time.monotonic() + timeout if timeout else None
        if self._retry_len:
            # A send that raised SSLWantWriteError (or timed out) is being retried.
            if memoryview(data).nbytes < self._retry_len:
                raise ssl.SSLError(ssl.SSL_ERROR_SSL, "bad write retry")
            if not self._push(timeout, deadline, "write"):
                raise _want_write()
            done, self._retry_len = self._retry_len, 0
            return done
        chunk = memoryview(data).cast("B")[:WRITE_CHUNK]
        if not chunk:
            return 0
        done = self._io(lambda: tls.write(chunk), "write", timeout, flush="no")
        self._retry_len = done
        if not self._push(timeout, deadline, "write"):
            raise _want_write()
        self._retry_len = 0
        return done

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._sslobj is None:
            return self._sock.recv(buflen, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to recv() on {type(self)}")
        return self.read(buflen)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None,
                  flags: int = 0) -> int:
        if nbytes is None:
            with memoryview(buffer) as view:
                nbytes = view.nbytes or 1024
        if self._sslobj is None:
            return self._sock.recv_into(buffer, nbytes, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to recv_into() on {type(self)}")
        return self.read(nbytes, buffer)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        if self._sslobj is None:
            return self._sock.send(data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {type(self)}")
        return self.write(data)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        if self._sslobj is None:
            self._sock.sendall(data, flags)
            return
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to sendall() on {type(self)}")
        with memoryview(data) as view, view.cast("B") as octets:
            count = 0
            while count < len(octets):
                count += self.send(octets[count:])

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """As ``SSLSocket.sendfile``: read the file and send it through TLS."""
        if self.gettimeout() == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            want = 1 << 16 if count is None else min(1 << 16, count - total)
            block = file.read(want)
            if not block:
                break
            self.sendall(block)
            total += len(block)
        if hasattr(file, "seek"):
            file.seek(offset + total)
        return total

    def pending(self) -> int:
        if self._sslobj is None:
            return 0
        with self._state:
            return self._sslobj.pending()

    def getpeercert(self, binary_form: bool = False) -> Any:
        self._check_connected()
        return self._tls("No SSL wrapper around " + repr(self)).getpeercert(binary_form)

    def cipher(self) -> tuple[str, str, int] | None:
        return None if self._sslobj is None else self._sslobj.cipher()

    def version(self) -> str | None:
        return None if self._sslobj is None else self._sslobj.version()

    def selected_alpn_protocol(self) -> str | None:
        return None if self._sslobj is None else self._sslobj.selected_alpn_protocol()

    def unwrap(self) -> TlsSocket:
        """The TLS shutdown (close_notify both ways); afterwards this socket
        carries plain bytes, as the one ``SSLSocket.unwrap`` returns."""
        tls = self._tls("No SSL wrapper around " + repr(self))
        self._io(tls.unwrap, "read")
        self._notify_sent = True
        self._sslobj = None
        return self

    def _send_close_notify(self) -> None:
        """Our close_notify, once, if a session was established. TCP may be
        full (a sendall just before): a blocking or timeout socket waits up
        to CLOSE_NOTIFY_WAIT for room; then the FIN goes without it."""
        tls = self._sslobj
        if tls is None or self._notify_sent or tls.version() is None:
            return
        self._notify_sent = True
        try:
            with self._state:
                tls.unwrap()
        except ssl.SSLError:
            pass  # SSLWantReadError: ours is made; the peer's is not waited for
        timeout = self._sock.gettimeout()
        wait = 0.0 if timeout == 0.0 else min(CLOSE_NOTIFY_WAIT, timeout or CLOSE_NOTIFY_WAIT)
        try:
            self._push(wait, time.monotonic() + wait if wait else None, "write")
        except OSError:  # TimeoutError: the peer reads nothing; or the connection's error
            pass

    # -- connecting, accepting, closing ----------------------------------------------

    def connect(self, addr: Any) -> None:
        self._real_connect(addr, False)

    def connect_ex(self, addr: Any) -> int:
        return self._real_connect(addr, True)

    def _real_connect(self, addr: Any, connect_ex: bool) -> int:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._connected or self._sslobj is not None:
            raise ValueError("attempt to connect already-connected SSLSocket!")
        self._sslobj = self._new_tls()
        try:
            rc = 0
            if connect_ex:
                rc = self._sock.connect_ex(addr)
            else:
                self._sock.connect(addr)
            if not rc:
                self._connected = True
                if self.do_handshake_on_connect:
                    self.do_handshake()
            return rc
        except (OSError, ValueError):
            self._sslobj = None
            raise

    def accept(self) -> tuple[TlsSocket, Any]:
        """Accept a connection and wrap it server-side, as ``SSLSocket.accept``
        (with do_handshake_on_connect, the handshake is done on return)."""
        conn, addr = self._sock.accept()
        tls = TlsSocket(conn, self._context, server_side=True,
                        do_handshake_on_connect=self.do_handshake_on_connect,
                        suppress_ragged_eofs=self.suppress_ragged_eofs)
        return tls, addr

    def shutdown(self, how: int) -> None:
        """Shutting down the write side sends close_notify first; reading
        (and decrypting) goes on after SHUT_WR."""
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._send_close_notify()
        self._sock.shutdown(how)

    def close(self) -> None:
        """As ``socket.close``: files from makefile() keep the connection
        open until the last is closed. Then close_notify, then the FIN."""
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        if self._sslobj is not None:
            self._send_close_notify()
            self._drop_unread()
        self._sslobj = None
        self._sock.close()

    def _drop_unread(self) -> None:
        """Drop the ciphertext TCP holds unread (TLS 1.3 session tickets a
        client never read, say): closing over unread bytes sends a RST, as
        on Linux, and the RST would throw away what is still on its way to
        the peer. A deliberate difference from CPython over the kernel."""
        for _ in range(64):  # at most 4 MB, from a peer that keeps sending
            try:
                if not self._sock.recv(1 << 16, _DONTWAIT):
                    return
            except OSError:  # BlockingIOError: nothing more; or the connection's error
                return

    def detach(self) -> int:
        return self._sock.detach()

    def dup(self) -> TlsSocket:
        raise NotImplementedError(f"Can't dup() {type(self).__name__} instances")

    def __repr__(self) -> str:
        parts = ["[closed]"] if self._closed else [
            f"family={self.family.name}", f"type={self.type.name}", f"proto={self.proto}"]
        for label, call in (("laddr", self._sock.getsockname), ("raddr", self._sock.getpeername)):
            try:
                parts.append(f"{label}={call()}")
            except OSError:
                pass
        parts += [f"version={self.version()}"] if self.version() else []
        return f"<{type(self).__module__}.{type(self).__name__} {', '.join(parts)}>"


def wrap_socket(context: ssl.SSLContext, sock: Socket | TlsSocket, server_side: bool = False,
                do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                server_hostname: str | bytes | None = None,
                session: ssl.SSLSession | None = None) -> TlsSocket:
    """``context.wrap_socket(sock, ...)`` for a stack socket, without patching."""
    if isinstance(sock, TlsSocket):
        raise ValueError("the socket already carries TLS; wrap_bio() layers another")
    return TlsSocket(sock, context, server_side, do_handshake_on_connect,
                     suppress_ragged_eofs, server_hostname, session)


def patch_ssl() -> Callable[[], None]:
    """Make ``ssl.SSLContext.wrap_socket`` wrap stack sockets in a TlsSocket
    (kernel sockets get an ``ssl.SSLSocket`` as before); returns the undo."""
    original = ssl.SSLContext.wrap_socket

    @functools.wraps(original)
    def wrap(self: ssl.SSLContext, sock: Any, server_side: bool = False,
             do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
             server_hostname: str | bytes | None = None,
             session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        if isinstance(sock, (Socket, TlsSocket)):
            # (a TlsSocket is refused there, with the reason)
            return wrap_socket(self, sock, server_side, do_handshake_on_connect,
                               suppress_ragged_eofs, server_hostname, session)
        return original(self, sock, server_side, do_handshake_on_connect,
                        suppress_ragged_eofs, server_hostname, session)

    ssl.SSLContext.wrap_socket = wrap  # type: ignore[method-assign]

    def undo() -> None:
        # Only our own patch is taken back (undo twice, or after a later patch, is harmless).
        if ssl.SSLContext.__dict__.get("wrap_socket") is wrap:
            ssl.SSLContext.wrap_socket = original  # type: ignore[method-assign]

    return undo
