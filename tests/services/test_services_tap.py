"""The event-driven services on the stack itself, over a real TAP, against
the kernel's clients (curl, Python sockets); and the stack's own selector.

The kernel side of the TAP is 192.0.2.1/24, the stack 192.0.2.2/24.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import socket
import threading
import time

import pytest

from stack.selector import StackSelector
from stack.services import start_service
from tests.helpers.services import expected_bytes
from tests.helpers.tap import sh, wait_for

STACK = "192.0.2.2"
MB = 1 << 20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            h.update(chunk)
    return h.hexdigest()


def test_curl_uploads_and_downloads_are_byte_exact(tap_stack, tmp_path):
    net = tap_stack(trace=None)
    served = tmp_path / "www"
    served.mkdir()
    blob = os.urandom(7 * MB + 13)
    (served / "blob.bin").write_bytes(blob)
    svc = start_service(net, f"http:80:{served}")
    try:
        out = tmp_path / "got"
        sh(f"curl -sS --max-time 60 -o {out} http://{STACK}/blob.bin", timeout=70)
        assert out.read_bytes() == blob
        sh(f"curl -sS --max-time 60 -o {out} http://{STACK}/bytes/{30 * MB + 7}", timeout=70)
        assert _sha256_file(out) == hashlib.sha256(expected_bytes(30 * MB + 7)).hexdigest()
        up = tmp_path / "up.bin"
        up.write_bytes(os.urandom(12 * MB + 1))
        r = sh(f"curl -sS --max-time 60 -T {up} http://{STACK}/upload", timeout=70)
        assert json.loads(r.stdout) == {"bytes": 12 * MB + 1, "sha256": _sha256_file(up)}
        # chunked (curl reads stdin) and then the same connection again
        r = sh(f"curl -sS --max-time 60 -T - http://{STACK}/stdin < {up}", timeout=70)
        assert json.loads(r.stdout)["sha256"] == _sha256_file(up)
    finally:
        svc.close()


def test_503_over_the_tap_when_full(tap_stack):
    net = tap_stack(trace=None)
    svc = start_service(net, "http:80", max_clients=2)
    held = [socket.create_connection((STACK, 80), timeout=10) for _ in range(2)]
    try:
        assert wait_for(lambda: svc.active_clients == 2, timeout=5)
        r = sh(f"curl -sS -i --max-time 10 http://{STACK}/bytes/5")
        head, _, body = r.stdout.partition("\n\n")  # (text mode: newlines translated)
        assert head.startswith("HTTP/1.1 503 Service Unavailable")
        assert "Connection: close" in head
        assert body.startswith("503 Service Unavailable")
        held[0].close()
        assert wait_for(lambda: svc.active_clients == 1, timeout=5)
        r = sh(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 http://{STACK}/bytes/5")
        assert r.stdout == "200"
    finally:
        for s in held:
            s.close()
        svc.close()


def test_200_clients_on_one_thread_and_no_descriptor_each(tap_stack):
    net = tap_stack(trace=None)
    threads = threading.active_count()
    fds = _open_fds()
    svc = start_service(net, "http:80")
    clients = [socket.create_connection((STACK, 80), timeout=20) for _ in range(200)]
    try:
        for k, c in enumerate(clients):
            c.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: t\r\n\r\n" % k)
        for k, c in enumerate(clients):
            f = c.makefile("rb")
            assert f.readline() == b"HTTP/1.1 200 OK\r\n"
            while f.readline() != b"\r\n":
                pass
            assert f.read(k) == expected_bytes(k)
            f.close()
        assert svc.active_clients == 200
        assert threading.active_count() == threads + 1
        # 200 kernel client sockets; the stack's side of them costs no
        # descriptor (the stack selector waits without fileno()).
        assert _open_fds() - fds < 200 + 10
    finally:
        for c in clients:
            c.close()
        started = time.monotonic()
        svc.close()
        assert time.monotonic() - started < 1.5
    assert svc.closed


def test_stack_selector_reports_readiness_without_a_descriptor(tap_stack):
    net = tap_stack(trace=None)
    listener = net.create_server(("0.0.0.0", 7000))
    listener.setblocking(False)
    sel = StackSelector.for_socket(listener)
    fds = _open_fds()
    sel.register(listener, selectors.EVENT_READ, "listener")
    assert sel.select(0.05) == []  # nobody connects: times out empty
    kernel = socket.create_connection((STACK, 7000), timeout=10)
    try:
        [(key, mask)] = sel.select(5)
        assert (key.data, mask, key.fd) == ("listener", selectors.EVENT_READ, -1)
        conn, _ = listener.accept()
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, "conn")
        assert sel.select(1) == [(sel.get_key(conn), selectors.EVENT_WRITE)]
        sel.modify(conn, selectors.EVENT_READ, "conn")
        assert sel.select(0.05) == []
        kernel.sendall(b"ping")
        [(key, mask)] = sel.select(5)
        assert (key.data, mask) == ("conn", selectors.EVENT_READ)
        assert conn.recv(10) == b"ping"
        assert sel.select(0.05) == []  # read: not readable any more
        # The kernel client's socket; readiness socketpairs for our two would
        # add four more (the slack is for another test's leftovers closing).
        assert _open_fds() - fds < 4
        # wake() ends a select that waits in another thread.
        woken = []
        waiter = threading.Thread(target=lambda: woken.append(sel.select(10)))
        waiter.start()
        time.sleep(0.1)
        started = time.monotonic()
        sel.wake()
        waiter.join(5)
        assert woken == [[]] and time.monotonic() - started < 1
        # A socket in a stack selector may not join a second one.
        with pytest.raises(ValueError):
            StackSelector.for_socket(conn).register(conn, selectors.EVENT_READ)
        sel.unregister(conn)
        other = StackSelector.for_socket(conn)
        other.register(conn, selectors.EVENT_READ)
        kernel.close()  # EOF: readable
        assert [m for _, m in other.select(5)] == [selectors.EVENT_READ]
        assert conn.recv(10) == b""
        other.close()
        conn.close()
    finally:
        kernel.close()
        sel.close()
        listener.close()
