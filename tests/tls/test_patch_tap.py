"""``patch_ssl()`` over a TAP: a TLS server on the stack answering the kernel's
``curl`` and ``openssl s_client``, and ``http.client.HTTPSConnection`` on a
stack socket fetching from a kernel-side HTTPS server."""

from __future__ import annotations

import http.client
import ssl
import threading

import pytest

from stack.tls import TlsSocket, patch_ssl
from tests.helpers.certs import SERVER_NAME
from tests.helpers.tap import sh, wait_for
from tests.helpers.tls_peer import pattern

BODY = b"hello over TLS over the stack\n"


@pytest.fixture
def patched():
    undo = patch_ssl()
    yield
    undo()


def states(events, conn):
    return [(e["from"], e["to"], e["cause"]) for e in events
            if e["event"] == "state" and e["conn"] == conn]


def read_request(tls) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def serve(listener, handlers, errors):
    """Accept one connection per handler and run it; failures are kept."""
    def run():
        for handle in handlers:
            try:
                conn, _ = listener.accept()
                with conn:
                    handle(conn)
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append(repr(e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def answer_http(conn):
    assert read_request(conn).startswith(b"GET / HTTP/1.1\r\n")
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(BODY), BODY))


def echo_line(conn):
    with conn.makefile("rb") as f:
        line = f.readline()
    conn.sendall(b"stack heard: " + line)


def test_a_stack_tls_server_answers_curl_and_s_client(tap_stack, pki, patched):
    net = tap_stack()
    listener = net.create_server(("192.0.2.2", 8443))
    tls_listener = pki.server_context().wrap_socket(listener, server_side=True)
    assert isinstance(tls_listener, TlsSocket) and isinstance(tls_listener, ssl.SSLSocket)
    errors: list[str] = []
    t = serve(tls_listener, [answer_http, answer_http, echo_line], errors)
    # By address, then by name (curl sends it as SNI and checks it).
    out = sh(f"curl -sS --max-time 20 --cacert {pki.ca} https://192.0.2.2:8443/")
    assert out.stdout.encode() == BODY
    out = sh(f"curl -sS --max-time 20 --cacert {pki.ca} --resolve {SERVER_NAME}:8443:192.0.2.2 "
             f"https://{SERVER_NAME}:8443/")
    assert out.stdout.encode() == BODY
    out = sh(f"printf 'ping\\n' | openssl s_client -connect 192.0.2.2:8443 -CAfile {pki.ca} "
             f"-verify_return_error -verify_hostname {SERVER_NAME} -servername {SERVER_NAME} "
             "-ign_eof", timeout=30)
    assert "Verify return code: 0 (ok)" in out.stdout
    assert "stack heard: ping\n" in out.stdout
    t.join(10)
    assert errors == []
    tls_listener.close()


def test_curl_with_another_ca_is_refused_and_the_server_sees_why(tap_stack, pki, patched):
    net = tap_stack()
    tls_listener = pki.server_context().wrap_socket(net.create_server(("192.0.2.2", 8443)),
                                                    server_side=True)
    errors: list[str] = []
    t = serve(tls_listener, [answer_http], errors)
    out = sh(f"curl -sS --max-time 20 --cacert {pki.other_ca} https://192.0.2.2:8443/",
             check=False)
    assert out.returncode == 60, out.stderr  # CURLE_PEER_FAILED_VERIFICATION
    t.join(10)
    # The client's alert reached the server through the stack.
    assert len(errors) == 1 and "UNKNOWN_CA" in errors[0].upper(), errors
    tls_listener.close()


def test_http_client_https_over_a_stack_socket(tap_stack, pki, kernel_peer, patched):
    net = tap_stack()
    events = []
    net.trace.subscribe(events.append)
    peer, port = kernel_peer("https")
    conn = http.client.HTTPSConnection(SERVER_NAME, port, context=pki.client_context(),
                                       timeout=20)
    # Until the drop-in resolves names and patches create_connection, the
    # connection's socket is made on the stack by hand.
    conn._create_connection = lambda address, timeout, source: net.create_connection(
        ("192.0.2.1", address[1]), timeout)
    conn.request("GET", "/2000000")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == pattern(2_000_000)
    assert type(conn.sock) is TlsSocket and conn.sock.version() == "TLSv1.3"
    name = "%s:%d-%s:%d" % (*conn.sock.getsockname(), *conn.sock.getpeername())
    conn.request("GET", "/10")  # the same connection, kept alive
    assert conn.getresponse().read() == pattern(10)
    conn.close()
    assert wait_for(lambda: states(events, name) and states(events, name)[-1][1]
                    in ("TIME_WAIT", "CLOSED"), 5), states(events, name)
    seen = states(events, name)
    assert [s[:2] for s in seen[:2]] == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]
    # Our FIN goes with conn.close(); the server, having read our close_notify,
    # may have closed first, so the teardown is either end's.
    closing = [s for s in seen if s[2] == "user close"]
    assert [s[:2] for s in closing] in ([("ESTABLISHED", "FIN_WAIT_1")],
                                        [("CLOSE_WAIT", "LAST_ACK")])
    received = sum(e["len"] for e in events if e["event"] == "seg" and e["conn"] == name
                   and e["dir"] == "in")
    assert received > 2_000_000  # the body, encrypted, came through this connection


def test_requests_over_a_stack_socket(tap_stack, pki, kernel_peer, patched, monkeypatch):
    """A third-party client: requests (urllib3) with verify= and a timeout."""
    import requests  # in the test extras
    import urllib3.util.connection

    net = tap_stack()
    _, port = kernel_peer("https")
    made = []

    def create_connection(address, timeout=None, source_address=None, socket_options=None):
        s = net.create_connection(("192.0.2.1", address[1]), timeout)
        for opt in socket_options or []:
            s.setsockopt(*opt)
        made.append(s)
        return s

    # Until the drop-in patches socket, urllib3's connect is pointed at the stack.
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    with requests.Session() as session:
        for size in (100_000, 10):  # the second on the pooled connection
            r = session.get(f"https://{SERVER_NAME}:{port}/{size}", verify=str(pki.ca),
                            timeout=10)
            assert r.status_code == 200 and r.content == pattern(size)
    assert len(made) == 1


def test_http_server_over_tls_on_the_stack_serves_curl(tap_stack, pki, patched, tmp_path):
    """http.server's ThreadingHTTPServer, unmodified but for its listening
    socket (until the drop-in patches socket.socket), wrapped as programs do."""
    import functools
    import http.server

    net = tap_stack()
    (tmp_path / "file.bin").write_bytes(pattern(1_000_000))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("192.0.2.2", 8443), handler,
                                            bind_and_activate=False)
    httpd.socket = pki.server_context().wrap_socket(net.create_server(("192.0.2.2", 8443)),
                                                    server_side=True)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        out = sh(f"curl -sS --max-time 20 --cacert {pki.ca} --resolve {SERVER_NAME}:8443:192.0.2.2"
                 f" -o {tmp_path / 'got'} -w '%{{http_code}}' https://{SERVER_NAME}:8443/file.bin")
        assert out.stdout == "200"
        assert (tmp_path / "got").read_bytes() == pattern(1_000_000)
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def test_urlopen_https_over_a_stack_socket(tap_stack, pki, kernel_peer, patched, monkeypatch):
    """urllib.request.urlopen with the test CA, as a program calls it; only
    socket.create_connection is pointed at the stack here (the drop-in's job)."""
    import socket
    import urllib.request

    net = tap_stack()
    _, port = kernel_peer("https")
    made = []

    def create_connection(address, timeout=None, source_address=None, *args):
        assert address == (SERVER_NAME, port)  # resolved by the drop-in, later
        made.append(net.create_connection(("192.0.2.1", port), timeout))
        return made[-1]

    monkeypatch.setattr(socket, "create_connection", create_connection)
    with urllib.request.urlopen(f"https://{SERVER_NAME}:{port}/300000",
                                context=pki.client_context(), timeout=10) as resp:
        assert resp.status == 200 and resp.read() == pattern(300_000)
    assert len(made) == 1 and made[0].fileno() == -1  # closed with the response
