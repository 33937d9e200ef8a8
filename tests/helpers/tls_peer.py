"""A kernel-side TLS server for the TLS tests, run as its own process
(``python -m tests.helpers.tls_peer MODE CERT KEY ADDRESS PORT``) in the
test namespace with CPython's own ``ssl`` on a kernel socket.

It prints ``ready PORT`` once listening, serves one connection, and prints
one line about it at the end, then exits. Modes:

``bulk``   the client sends an 8-byte big-endian length N and N bytes; the
           server answers with their SHA-256 (32 bytes), then N bytes of
           ``pattern(N)``, then reads until the client closes and reports
           how: ``eof clean`` (close_notify came first) or ``eof ragged``
           (the TCP FIN without one).
``https``  an HTTPS server (http.server) answering ``GET /N`` with N bytes of
           ``pattern(N)``; serves until killed, printing nothing more.
``silent`` accepts TCP connections and never says anything (no TLS).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import sys
import time


def pattern(n: int) -> bytes:
    """N bytes anyone can check: a counter's bytes, not a repeated block."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += i.to_bytes(4, "big")
        i += 1
    return bytes(out[:n])


def _recv_exactly(s: ssl.SSLSocket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(1 << 16, n - len(buf)))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _bulk(listener: socket.socket, ctx: ssl.SSLContext) -> str:
    conn, _ = listener.accept()
    s = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
    n = int.from_bytes(_recv_exactly(s, 8), "big")
    h = hashlib.sha256()
    left = n
    while left:
        chunk = s.recv(min(1 << 16, left))
        if not chunk:
            raise EOFError(f"EOF with {left} bytes to come")
        h.update(chunk)
        left -= len(chunk)
    s.sendall(h.digest())
    s.sendall(pattern(n))
    try:
        extra = s.recv(1)
        how = "eof clean" if extra == b"" else f"data {extra!r}"
    except ssl.SSLEOFError:
        how = "eof ragged"
    s.close()
    return how


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = pattern(int(self.path.strip("/") or "0"))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str]) -> None:
    mode, cert, key, address, port = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if mode == "https":
        httpd = http.server.HTTPServer((address, port), _Handler)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        print("ready", httpd.server_address[1], flush=True)
        httpd.serve_forever()
        return
    listener = socket.create_server((address, port))
    print("ready", listener.getsockname()[1], flush=True)
    if mode == "silent":
        time.sleep(3600)
    elif mode == "bulk":
        print(_bulk(listener, ctx), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
