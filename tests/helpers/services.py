"""Running the built-in services on the host kernel's sockets (KernelNet, 127.0.0.1)
and talking to them: a plain HTTP client and the byte pattern /bytes/N serves."""

from __future__ import annotations

import hashlib
import json
import socket

from stack.services import KernelNet
from tests.helpers.tap import wait_for

HOST = "127.0.0.1"
NET = KernelNet()


def expected_bytes(n: int) -> bytes:
    """Byte i is i % 251 (built by repetition; test_get_bytes checks the
    server against the formula itself, byte by byte)."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def upload_answer(body: bytes) -> dict:
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


class Reply:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Client:
    """A deliberately plain HTTP client over one kernel socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.rfile = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self, method: str, path: str, headers=(), body: bytes = b"", version: str = "HTTP/1.1"
    ) -> Reply:
        lines = [f"{method} {path} {version}", "Host: test"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return self.response(head_only=method == "HEAD")

    def response(self, head_only: bool = False) -> Reply:
        status_line = self.rfile.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        _, status, reason = status_line.decode().rstrip("\r\n").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline().decode("latin-1")
            assert line.endswith("\r\n")
            if line == "\r\n":
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if not head_only and not status.startswith("1"):
            body = self.rfile.read(int(headers["content-length"]))
        return Reply(int(status), reason, headers, body)

    def at_eof(self) -> bool:
        """Whether the server has closed the connection (nothing more to read)."""
        try:
            return self.rfile.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_until(condition, timeout: float = 3.0) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds."""
    return bool(wait_for(condition, timeout, interval=0.02))
