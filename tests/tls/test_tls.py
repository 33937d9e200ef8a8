"""TlsSocket between two stacks on an in-memory link (no TAP): the parts of
``ssl.SSLSocket`` programs use, its modes and errors, and ``patch_ssl``."""

from __future__ import annotations

import errno
import hashlib
import selectors
import socket
import ssl
import threading
import time

import pytest

import stack
from stack.tls import TlsSocket, patch_ssl, wrap_socket
from tests.helpers.certs import SERVER_NAME
from tests.helpers.sockets import recv_exactly


@pytest.fixture
def nets():
    a, b = stack.Stack.pair()  # a: 192.0.2.1 serves, b: 192.0.2.2 connects
    with a, b:
        yield a, b


def connect_pair(nets, pki, *, server_kw=None, client_ctx=None, keep=None, **client_kw):
    """A TLS connection from b to a: (client TlsSocket, server TlsSocket);
    the client's stack socket is appended to ``keep`` if given."""
    a, b = nets
    listener = wrap_socket(pki.server_context(), a.create_server(("192.0.2.1", 0)),
                           server_side=True, **(server_kw or {}))
    port = listener.getsockname()[1]
    got = []
    t = threading.Thread(target=lambda: got.append(listener.accept()[0]))
    t.start()
    client_kw.setdefault("server_hostname", SERVER_NAME)
    tcp = b.create_connection(("192.0.2.1", port), timeout=10)
    if keep is not None:
        keep.append(tcp)
    client = wrap_socket(client_ctx or pki.client_context(), tcp, **client_kw)
    t.join(10)
    listener.close()
    if client_kw.get("do_handshake_on_connect", True) is False:
        client.do_handshake()
    return client, got[0]


def in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_attributes_as_ssl_socket_has_them(nets, pki):
    client, server = connect_pair(nets, pki)
    with client, server:
        for s in (client, server):
            assert isinstance(s, ssl.SSLSocket) and isinstance(s, socket.socket)
            assert s.version() == "TLSv1.3" and s.cipher() == client.cipher()
            assert s.family == socket.AF_INET and s.type == socket.SOCK_STREAM
            assert isinstance(s.context, ssl.SSLContext)
        assert (client.server_side, server.server_side) == (False, True)
        assert (client.server_hostname, server.server_hostname) == (SERVER_NAME, None)
        assert client.getpeername() == server.getsockname()
        assert server.getpeercert() is None  # no client certificate asked for
        assert client.getpeercert()["subjectAltName"][0] == ("DNS", SERVER_NAME)
        assert "TLSv1.3" in repr(client) and "raddr=('192.0.2.1'" in repr(client)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_alpn_pending_recv_into_and_read_into_a_buffer(nets, pki):
    a, b = nets
    cctx = pki.client_context()
    cctx.set_alpn_protocols(["h2", "http/1.1"])
    sctx = pki.server_context()
    sctx.set_alpn_protocols(["http/1.1"])
    listener = wrap_socket(sctx, a.create_server(("192.0.2.1", 0)), server_side=True)
    t, got = in_thread(lambda: listener.accept()[0])
    client = wrap_socket(cctx, b.create_connection(listener.getsockname(), timeout=10),
                         server_hostname=SERVER_NAME)
    t.join(10)
    server = got[0]
    assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == "http/1.1"
    server.sendall(bytes(range(100)))
    assert client.recv(10) == bytes(range(10))
    assert client.pending() == 90  # the rest of the record, already decrypted
    buf = bytearray(50)
    assert client.recv_into(buf, 40) == 40 and buf[:40] == bytes(range(10, 50))
    assert client.read(50, buf) == 50 and buf == bytes(range(50, 100))
    assert client.pending() == 0
    for s in (client, server, listener):
        s.close()


def test_several_megabytes_each_way_at_once_from_two_threads(nets, pki):
    """One thread writes while another reads the same TlsSocket."""
    client, server = connect_pair(nets, pki)
    data = hashlib.sha256(b"x").digest() * (4 << 15)  # 4 MB

    def echo():
        while chunk := server.recv(65536):
            server.sendall(chunk)
        server.close()

    threading.Thread(target=echo, daemon=True).start()
    writer, _ = in_thread(lambda: client.sendall(data))
    assert recv_exactly(client, len(data)) == data
    writer.join(10)
    client.close()


@pytest.mark.parametrize("sndbuf", [None, 8192])  # 8192: TCP takes records in parts
def test_non_blocking_send_retried_after_want_write_loses_and_repeats_nothing(nets, pki, sndbuf):
    client, server = connect_pair(nets, pki)
    if sndbuf:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    client.setblocking(False)
    block = bytes(range(256)) * 256  # 64 KB, one send's worth
    sent, wants = 0, 0
    while wants == 0:  # the server is not reading: TCP's buffers fill up
        try:
            sent += client.send(block)
        except ssl.SSLWantWriteError:
            wants += 1
    t, got = in_thread(lambda: hashlib.sha256(recv_exactly(server, sent + len(block))).digest())
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_WRITE)
    while True:  # the same data again, as OpenSSL asks of a retried write
        try:
            assert client.send(block) == len(block)
            break
        except ssl.SSLWantWriteError:
            assert sel.select(5)
    t.join(20)
    expect = hashlib.sha256(block * (sent // len(block) + 1)).digest()
    assert got == [expect]
    sel.close()
    client.close()
    server.close()


def test_recv_times_out_after_the_timeout_and_the_connection_still_works(nets, pki):
    client, server = connect_pair(nets, pki)
    client.settimeout(0.4)
    assert client.gettimeout() == 0.4 and client.timeout == 0.4
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="read operation timed out"):
        client.recv(10)
    assert 0.35 < time.monotonic() - t0 < 2
    server.sendall(b"late")
    assert client.recv(10) == b"late"
    client.close()
    server.close()


def test_makefile_keeps_the_connection_until_the_file_closes(nets, pki):
    client, server = connect_pair(nets, pki, server_kw={"suppress_ragged_eofs": False})
    server.sendall(b"one\ntwo\n")
    f = client.makefile("rb")
    client.close()  # as http.client does while the response is read
    assert f.readline() == b"one\n"
    assert f.readline() == b"two\n"
    f.close()
    assert server.recv(10) == b""  # a clean close: close_notify, then the FIN
    server.close()


def test_shutdown_wr_sends_close_notify_and_reading_goes_on(nets, pki):
    client, server = connect_pair(nets, pki)
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    assert recv_exactly(server, 7) == b"request"
    assert server.recv(10) == b""
    server.sendall(b"answer")
    server.close()
    assert recv_exactly(client, 6) == b"answer"
    assert client.recv(10) == b""
    client.close()


@pytest.mark.parametrize("suppress", [True, False])
def test_a_fin_without_close_notify_is_a_ragged_eof(nets, pki, suppress):
    tcp: list = []
    client, server = connect_pair(nets, pki, server_kw={"suppress_ragged_eofs": suppress},
                                  keep=tcp)
    client.sendall(b"hi")
    assert recv_exactly(server, 2) == b"hi"
    server.sendall(b"ok")
    # (Reading it also takes the session tickets before it: a close with
    # unread bytes would be a RST, not a FIN.)
    assert recv_exactly(client, 2) == b"ok"
    tcp[0].close()  # the TCP socket under the client's TLS, closed alone
    assert _ragged_eof(server) == _kernel_ragged_eof(pki, suppress)
    server.close()


def _ragged_eof(server) -> str:
    """What a read at a ragged EOF gives: ``b''`` or the exception's name."""
    try:
        return repr(server.recv(10))
    except ssl.SSLError as e:
        return type(e).__name__


def _kernel_ragged_eof(pki, suppress: bool) -> str:
    """The same exchange through CPython's own ssl over a kernel socketpair:
    its answer is the one to give (SSLEOFError in 3.11.7, ``b''`` in 3.11.2
    whose MemoryBIO path still read it as the end)."""
    a, b = socket.socketpair()
    done: list = []
    t = threading.Thread(target=lambda: done.append(
        pki.client_context().wrap_socket(b, server_hostname=SERVER_NAME)))
    t.start()
    server = pki.server_context().wrap_socket(a, server_side=True,
                                              suppress_ragged_eofs=suppress)
    t.join(10)
    client = done[0]
    client.sendall(b"hi")
    assert recv_exactly(server, 2) == b"hi"
    server.sendall(b"ok")
    assert recv_exactly(client, 2) == b"ok"
    client.close()  # (no close_notify: only unwrap() sends one)
    try:
        return _ragged_eof(server)
    finally:
        server.close()


def test_unwrap_both_ways_leaves_plain_tcp(nets, pki):
    client, server = connect_pair(nets, pki)
    client.sendall(b"secret")
    assert recv_exactly(server, 6) == b"secret"
    t, got = in_thread(server.unwrap)
    assert client.unwrap() is client
    t.join(10)
    assert got == [server]
    assert client.version() is None
    client.sendall(b"plain")
    assert recv_exactly(server, 5) == b"plain"  # no TLS records any more
    with pytest.raises(ValueError):
        client.read(5)
    client.close()
    server.close()


def test_connect_after_wrap_does_the_handshake(nets, pki):
    a, b = nets
    listener = wrap_socket(pki.server_context(), a.create_server(("192.0.2.1", 0)),
                           server_side=True)
    t, got = in_thread(lambda: listener.accept()[0])
    client = wrap_socket(pki.client_context(), b.socket(), server_hostname=SERVER_NAME)
    assert client.version() is None
    with pytest.raises(OSError) as e:
        client.getpeercert()
    assert e.value.errno == errno.ENOTCONN
    client.connect(listener.getsockname())
    t.join(10)
    assert client.version() == got[0].version() == "TLSv1.3"
    for s in (client, got[0], listener):
        s.close()


def test_what_ssl_socket_refuses_is_refused(nets, pki):
    a, b = nets
    ctx = pki.client_context()
    with pytest.raises(ValueError, match="check_hostname requires server_hostname"):
        wrap_socket(ctx, b.socket())
    with pytest.raises(ValueError, match="only be specified in client mode"):
        wrap_socket(pki.server_context(), b.socket(), server_side=True, server_hostname="x")
    with pytest.raises(NotImplementedError):
        wrap_socket(ctx, b.socket(stack.AF_INET, stack.SOCK_DGRAM), server_hostname="x")
    client, server = connect_pair(nets, pki)
    with pytest.raises(ValueError):
        wrap_socket(ctx, client, server_hostname=SERVER_NAME)
    for call in (lambda: client.recv(10, socket.MSG_PEEK), lambda: client.send(b"x", 1),
                 lambda: client.recvfrom(10), lambda: client.sendto(b"x", ("192.0.2.1", 1))):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(NotImplementedError):
        client.dup()
    client.close()
    with pytest.raises(OSError) as e:
        client.recv(10)
    assert e.value.errno == errno.EBADF
    server.close()


def test_a_non_blocking_socket_cannot_handshake_on_connect(nets, pki):
    a, b = nets
    listener = a.create_server(("192.0.2.1", 0))
    raw = b.create_connection(listener.getsockname(), timeout=10)
    raw.setblocking(False)
    with pytest.raises(ValueError, match="non-blocking"):
        wrap_socket(pki.client_context(), raw, server_hostname=SERVER_NAME)
    assert raw.fileno() == -1  # closed, as SSLSocket closes it
    listener.close()


def test_sendfile_sends_the_file_through_tls(nets, pki, tmp_path):
    client, server = connect_pair(nets, pki)
    path = tmp_path / "f"
    content = hashlib.sha256(b"f").digest() * 10_000
    path.write_bytes(content)
    with open(path, "rb") as f:
        assert client.sendfile(f, offset=32, count=100_000) == 100_000
        assert f.tell() == 100_032
    assert recv_exactly(server, 100_000) == content[32:100_032]
    client.close()
    server.close()


def test_patch_ssl_routes_stack_sockets_only_and_undoes(nets, pki):
    a, b = nets
    original = ssl.SSLContext.wrap_socket
    ctx = pki.client_context()
    undo = patch_ssl()
    try:
        assert ssl.SSLContext.wrap_socket is not original
        kernel = ctx.wrap_socket(socket.socket(), server_hostname=SERVER_NAME,
                                 do_handshake_on_connect=False)
        assert type(kernel) is ssl.SSLSocket  # a kernel socket gets CPython's own
        kernel.close()
        on_stack = ctx.wrap_socket(b.socket(), server_hostname=SERVER_NAME)
        assert type(on_stack) is TlsSocket
        on_stack.close()
    finally:
        undo()
    assert ssl.SSLContext.wrap_socket is original
    undo()  # twice is harmless
    assert ssl.SSLContext.wrap_socket is original
    with pytest.raises(OSError):  # unpatched, ssl cannot take a stack socket
        ctx.wrap_socket(b.socket(), server_hostname=SERVER_NAME)


def test_a_session_is_resumed_with_session(nets, pki):
    a, b = nets
    sctx, cctx = pki.server_context(), pki.client_context()
    listener = wrap_socket(sctx, a.create_server(("192.0.2.1", 0)), server_side=True)

    def one(session=None):
        t, got = in_thread(lambda: listener.accept()[0])
        client = wrap_socket(cctx, b.create_connection(listener.getsockname(), timeout=10),
                             server_hostname=SERVER_NAME, session=session)
        t.join(10)
        got[0].sendall(b"x")
        assert client.recv(1) == b"x"  # the tickets came before it
        got[0].close()
        return client

    first = one()
    assert not first.session_reused and first.session.has_ticket
    second = one(first.session)
    assert second.session_reused
    for s in (first, second, listener):
        s.close()


def test_the_readiness_fd_stays_readable_while_whole_records_wait(nets, pki):
    """A selector loop that waits on fileno() unless pending() says
    otherwise (as CPython's SSLSocket allows) never hangs on records the
    TlsSocket has already read: it reads ciphertext one record at a time."""
    client, server = connect_pair(nets, pki)
    for word in (b"one", b"two", b"three"):
        server.sendall(word)  # three records
    time.sleep(0.2)  # all three are in the client's TCP buffer now
    client.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ)
    got = []
    while len(got) < 3:
        if not client.pending():
            assert sel.select(2), f"fd not readable with records waiting; got {got}"
        try:
            got.append(client.recv(100))
        except ssl.SSLWantReadError:
            continue  # the session tickets were the first records
    assert got == [b"one", b"two", b"three"]
    sel.close()
    client.close()
    server.close()


def test_both_ends_non_blocking_in_one_thread_with_one_selector(nets, pki):
    """Client and server handshake and exchange 1 MB each way in one thread,
    each step driven by the other end's wants, all waits on fileno()."""
    a, b = nets
    sctx = pki.server_context()
    names = []
    sctx.sni_callback = lambda obj, name, ctx: names.append(name)
    listener = a.create_server(("192.0.2.1", 0))
    raw = b.socket()
    raw.setblocking(False)
    assert raw.connect_ex(listener.getsockname()) == errno.EINPROGRESS
    conn, _ = listener.accept()
    client = wrap_socket(pki.client_context(), raw, server_hostname=SERVER_NAME,
                         do_handshake_on_connect=False)
    server = wrap_socket(sctx, conn, server_side=True, do_handshake_on_connect=False)
    server.setblocking(False)
    sel = selectors.DefaultSelector()
    for s in (client, server):
        sel.register(s, selectors.EVENT_READ, s)
    pending = {client: bytes(range(256)) * 4096, server: bytes(reversed(range(256))) * 4096}
    expect = {client: pending[server], server: pending[client]}
    got = {client: bytearray(), server: bytearray()}
    shaken, wanted = set(), set()
    deadline = time.monotonic() + 20
    while any(len(got[s]) < len(expect[s]) for s in got) and time.monotonic() < deadline:
        for s in (client, server):
            try:
                if s not in shaken:
                    try:
                        s.do_handshake()
                    except ssl.SSLWantReadError:
                        wanted.add(s)
                        raise
                    shaken.add(s)
                if pending[s]:
                    pending[s] = pending[s][s.send(pending[s]):]
                got[s] += s.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        sel.select(0.05)
    assert got == expect
    assert wanted == {client, server}  # each handshake waited for the other's flight
    assert names == [SERVER_NAME]  # SNI reached the server
    sel.close()
    for s in (client, server, listener):
        s.close()


def test_a_client_that_never_reads_still_closes_with_a_fin(nets, pki):
    """The server's session tickets sit unread in the client's TCP buffer;
    closing over them would be a RST that throws away the upload still in
    flight. close() drops them, so all of it arrives, then close_notify."""
    client, server = connect_pair(nets, pki, server_kw={"suppress_ragged_eofs": False})
    data = hashlib.sha256(b"up").digest() * (1 << 15)  # 1 MB
    time.sleep(0.1)  # the tickets have arrived
    client.sendall(data)
    client.close()
    server.settimeout(10)
    assert recv_exactly(server, len(data)) == data
    assert server.recv(10) == b""
    server.close()


def test_a_send_that_timed_out_is_finished_by_its_retry(nets, pki):
    """The timed-out send had handed part of its record to TCP: the retry
    sends the rest (not the record again, which the peer would reject)."""
    client, server = connect_pair(nets, pki)
    # A TCP buffer smaller than one send's record: TCP takes records in parts.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    client.settimeout(0.3)
    block = bytes(range(256)) * 256
    sent = 0
    with pytest.raises(TimeoutError, match="write operation timed out"):
        while True:  # the server is not reading
            sent += client.send(block)
    t, got = in_thread(lambda: hashlib.sha256(recv_exactly(server, sent + len(block))).digest())
    client.settimeout(10)
    assert client.send(block) == len(block)
    t.join(20)
    assert got == [hashlib.sha256(block * (sent // len(block) + 1)).digest()]
    client.close()
    server.close()


def test_a_client_certificate_reaches_the_server_and_its_absence_is_an_alert(nets, pki):
    sctx = pki.server_context()
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_verify_locations(str(pki.ca))
    cctx = pki.client_context()
    cctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    a, b = nets
    listener = wrap_socket(sctx, a.create_server(("192.0.2.1", 0)), server_side=True)
    t, got = in_thread(lambda: listener.accept()[0])
    client = wrap_socket(cctx, b.create_connection(listener.getsockname(), timeout=10),
                         server_hostname=SERVER_NAME)
    t.join(10)
    subject = [item for rdn in got[0].getpeercert()["subject"] for item in rdn]
    assert ("commonName", "stack client") in subject
    client.close()
    got[0].close()

    def refused():
        try:
            listener.accept()
        except ssl.SSLError as e:
            return e
    t, err = in_thread(refused)
    client = wrap_socket(pki.client_context(), b.create_connection(listener.getsockname(),
                                                                   timeout=10),
                         server_hostname=SERVER_NAME)
    t.join(10)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(err[0]).upper()
    # TLS 1.3: the client's handshake was done; the server's alert comes to its first read.
    with pytest.raises(ssl.SSLError, match="(?i)certificate required"):
        client.recv(10)
    client.close()
    listener.close()
