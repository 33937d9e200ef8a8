"""``stack up --max-clients N``: bad values are one error line; a good one
bounds what each service serves at once (HTTP answers the rest 503)."""

from __future__ import annotations

import socket

import pytest

from tests.helpers.cli import assert_one_error, run_stack
from tests.helpers.tap import kill, sh, stack_up, stop_stack_up, wait_for

STACK = "192.0.2.2"


@pytest.mark.parametrize("value", ["0", "-3", "x", "1.5", "", "1000001"])
def test_bad_max_clients_is_one_error_line(value):
    assert_one_error(run_stack("up", "--tap", "tclibad", "--max-clients", value), 2,
                     "--max-clients")


def test_stack_up_max_clients_bounds_the_services(netns):
    p = stack_up("tapmax", "--serve", "http:80", "--serve", "echo:7", "--max-clients", "1")
    held = []
    try:
        line = p.stderr.readline()
        assert line.startswith("stack: up"), line
        web = socket.create_connection((STACK, 80), timeout=10)
        held.append(web)
        web.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert web.recv(4096).endswith(b"\r\n\r\n\x00\x01\x02")
        r = sh(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 http://{STACK}/bytes/5")
        assert r.stdout == "503"
        echo = socket.create_connection((STACK, 7), timeout=10)
        held.append(echo)
        echo.sendall(b"one")
        assert echo.recv(10) == b"one"
        with socket.create_connection((STACK, 7), timeout=10) as second:
            try:
                assert second.recv(10) == b""  # closed on accept
            except ConnectionResetError:
                pass
        web.close()

        def served() -> bool:
            r = sh(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 "
                   f"http://{STACK}/bytes/5")
            return r.stdout == "200"

        assert wait_for(served, timeout=5, interval=0.1)
        for s in held:
            s.close()
        stop_stack_up(p)
    finally:
        for s in held:
            s.close()
        kill(p)
