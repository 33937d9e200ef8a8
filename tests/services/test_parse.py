"""Parsing service specs (parse_service, ServiceSpec) and starting them.

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import socket

import pytest

from stack.services import (
    ServiceSpec,
    parse_service,
    start_service,
)
from tests.helpers.services import HOST, NET


# --- parse_service ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, spec",
    [
        ("http:8080", ServiceSpec("http", 8080)),
        ("http:8080:/srv/www", ServiceSpec("http", 8080, "/srv/www")),
        ("http:80:/dir/with:colon", ServiceSpec("http", 80, "/dir/with:colon")),
        ("echo:7", ServiceSpec("echo", 7)),
        ("discard:9", ServiceSpec("discard", 9)),
        ("chargen:19", ServiceSpec("chargen", 19)),
        ("udp-echo:7", ServiceSpec("udp-echo", 7)),
        ("echo:65535", ServiceSpec("echo", 65535)),
    ],
)
def test_parse_service_good(text, spec):
    assert parse_service(text) == spec
    assert str(spec) == text


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "unknown service"),
        ("ftp:21", "unknown service"),
        ("HTTP:80", "unknown service"),
        ("http", "missing port"),
        ("http:", "missing port"),
        ("http:abc", "port"),
        ("http:0", "port"),
        ("http:65536", "port"),
        ("http:-1", "port"),
        ("http: 80", "port"),
        ("http:+80", "port"),
        ("http:\uff18\uff10", "port"),
        ("http:8080:", "empty directory"),
        ("echo:7:/tmp", "only http"),
        ("udp-echo:7:x", "only http"),
    ],
)
def test_parse_service_bad(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_service(text)


def test_service_spec_checks_itself():
    with pytest.raises(ValueError):
        ServiceSpec("gopher", 70)
    with pytest.raises(ValueError):
        ServiceSpec("echo", 70000)
    with pytest.raises(ValueError):
        ServiceSpec("echo", 7, "/srv")


def test_http_directory_must_exist(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        start_service(NET, ServiceSpec("http", 0, str(tmp_path / "missing")), HOST)


def test_start_service_takes_a_string():
    with socket.create_server((HOST, 0)) as probe:
        port = probe.getsockname()[1]
    with start_service(NET, f"echo:{port}", HOST) as svc:
        assert svc.port == port
        assert "echo" in repr(svc)
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
    assert svc.closed
