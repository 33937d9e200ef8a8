"""TLS from the stack to kernel-side servers (``openssl s_server`` and CPython's
``ssl`` in another process), over a TAP in the test's namespace."""

from __future__ import annotations

import hashlib
import selectors
import ssl
import time

import pytest

from stack.tls import TlsSocket, wrap_socket
from tests.helpers.certs import SERVER_NAME
from tests.helpers.sockets import recv_exactly
from tests.helpers.tap import wait_for
from tests.helpers.tls_peer import pattern

MB = 1 << 20


def read_all(s) -> bytes:
    out = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk


def segments(events, conn):
    return [e for e in events if e["event"] == "seg" and e["conn"] == conn]


def states(events, conn):
    return [(e["from"], e["to"]) for e in events if e["event"] == "state" and e["conn"] == conn]


def conn_name(tls) -> str:
    (la, lp), (ra, rp) = tls.getsockname(), tls.getpeername()
    return f"{la}:{lp}-{ra}:{rp}"


def test_handshake_verifies_the_certificate_and_talks_to_s_server(tap_stack, pki, s_server):
    net = tap_stack()
    s_server()
    tls = wrap_socket(pki.client_context(), net.create_connection(("192.0.2.1", 4433), timeout=10),
                      server_hostname=SERVER_NAME)
    assert isinstance(tls, ssl.SSLSocket) and isinstance(tls, TlsSocket)
    assert tls.version() == "TLSv1.3" and tls.cipher()[1] == "TLSv1.3"
    assert not tls.server_side and tls.server_hostname == SERVER_NAME
    cert = tls.getpeercert()
    assert ("commonName", SERVER_NAME) in [item for rdn in cert["subject"] for item in rdn]
    assert ("IP Address", "192.0.2.1") in cert["subjectAltName"]
    assert ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True)).strip() \
        == pki.cert.read_text().strip()
    cipher = tls.cipher()[0]
    tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
    page = read_all(tls)
    tls.close()
    assert page.startswith(b"HTTP/1.0 200 ok\r\n")
    # s_server -www describes the session it served: the one we negotiated.
    assert f"Cipher is {cipher}".encode() in page


def test_an_address_in_the_certificate_verifies_too(tap_stack, pki, s_server):
    net = tap_stack()
    s_server()
    tls = wrap_socket(pki.client_context(), net.create_connection(("192.0.2.1", 4433), timeout=10),
                      server_hostname="192.0.2.1")
    assert tls.version() == "TLSv1.3"
    tls.close()


@pytest.mark.parametrize("case", ["wrong hostname", "unknown CA"])
def test_verification_failures_raise_cert_verification_error(tap_stack, pki, s_server, case):
    net = tap_stack()
    s_server()
    raw = net.create_connection(("192.0.2.1", 4433), timeout=10)
    ctx = pki.client_context(pki.other_ca if case == "unknown CA" else None)
    name = "wrong.example.test" if case == "wrong hostname" else SERVER_NAME
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        wrap_socket(ctx, raw, server_hostname=name)
    if case == "wrong hostname":
        assert info.value.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
        assert "Hostname mismatch" in info.value.verify_message
    else:
        assert info.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert info.value.reason == "CERTIFICATE_VERIFY_FAILED"
    assert raw.fileno() == -1  # as SSLSocket: a failed handshake closes the socket


def test_megabytes_both_ways_intact_and_close_sends_close_notify_then_fin(tap_stack, pki,
                                                                          kernel_peer):
    net = tap_stack()
    events = []
    net.trace.subscribe(events.append)
    peer, port = kernel_peer("bulk")
    tls = wrap_socket(pki.client_context(), net.create_connection(("192.0.2.1", port), timeout=20),
                      server_hostname=SERVER_NAME)
    name = conn_name(tls)
    n = 3 * MB
    data = hashlib.sha256(b"seed").digest() * (n // 32)
    tls.sendall(n.to_bytes(8, "big"))
    tls.sendall(data)
    assert recv_exactly(tls, 32) == hashlib.sha256(data).digest()
    assert recv_exactly(tls, n) == pattern(n)
    tls.close()
    out, _ = peer.communicate(timeout=20)
    assert out.split("\n")[-2] == "eof clean"  # the peer read our close_notify before the EOF
    # Our FIN goes with the user's close; the peer, having read close_notify,
    # may close first, so either end of the teardown is ours.
    closes = [("ESTABLISHED", "FIN_WAIT_1"), ("CLOSE_WAIT", "LAST_ACK")]
    assert wait_for(lambda: [s for s in states(events, name) if s in closes], 5)
    assert states(events, name)[:2] == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]
    assert wait_for(lambda: states(events, name)[-1][1] in ("CLOSED", "TIME_WAIT"), 5)
    sent = [e for e in segments(events, name) if e["dir"] == "out"]
    assert sum(e["len"] for e in sent) > n
    fin = next(i for i, e in enumerate(sent) if "F" in e["flags"])
    # TLS 1.3's close_notify is a 24-byte record (5 header, 2 alert, 1 type,
    # 16 tag); it is the last data before the FIN (or rides on it).
    last_data = [e for e in sent[:fin + 1] if e["len"]][-1]
    assert last_data["len"] == 24
    assert all(e["len"] == 0 for e in sent[fin + 1:])


def test_a_close_without_close_notify_is_a_ragged_eof_for_the_peer(tap_stack, pki, kernel_peer):
    """The same exchange, but the TCP socket under the TLS is closed alone:
    the peer sees the FIN without a close_notify (what the test above rules out)."""
    net = tap_stack()
    peer, port = kernel_peer("bulk")
    raw = net.create_connection(("192.0.2.1", port), timeout=20)
    tls = wrap_socket(pki.client_context(), raw, server_hostname=SERVER_NAME)
    tls.sendall((3).to_bytes(8, "big") + b"abc")
    assert recv_exactly(tls, 35)[32:] == pattern(3)
    raw.close()
    out, _ = peer.communicate(timeout=20)
    assert out.split("\n")[-2] == "eof ragged"


def test_non_blocking_handshake_and_exchange_driven_by_selectors(tap_stack, pki, s_server):
    net = tap_stack()
    s_server()
    raw = net.create_connection(("192.0.2.1", 4433), timeout=10)
    tls = wrap_socket(pki.client_context(), raw, server_hostname=SERVER_NAME,
                      do_handshake_on_connect=False)
    tls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(tls, selectors.EVENT_READ)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            assert sel.select(5), "the readiness fd never said the server's flight came"
    # (The server's flight may be in before a call looks, so this handshake
    # need not see SSLWantReadError; the pair test that drives both ends does.)
    assert tls.version() == "TLSv1.3"
    with pytest.raises(ssl.SSLWantReadError):
        tls.recv(100)  # nothing asked yet
    tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
    page = bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = tls.recv(65536)
        except ssl.SSLWantReadError:
            sel.select(1)
            continue
        if not chunk:
            break
        page += chunk
    assert page.startswith(b"HTTP/1.0 200 ok\r\n") and page.rstrip().endswith(b"</HTML>")
    sel.close()
    tls.close()


def test_a_handshake_with_a_silent_server_times_out_after_the_socket_timeout(tap_stack, pki,
                                                                             kernel_peer):
    net = tap_stack()
    _, port = kernel_peer("silent")
    raw = net.create_connection(("192.0.2.1", port), timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="handshake operation timed out"):
        wrap_socket(pki.client_context(), raw, server_hostname=SERVER_NAME)
    assert 0.9 <= time.monotonic() - t0 < 3
