"""The classic small services: echo (RFC 862), discard (RFC 863), chargen
(RFC 864) over TCP, and echo over UDP.

The TCP ones are connection handlers: each takes a
:class:`stack.services.Connection` and returns when the client is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stack.services import Connection

BUFFER = 65536


def echo(conn: Connection) -> None:
    """Send back every byte received until the client closes its side."""
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    while True:
        n = conn.recv_into(view)
        if n == 0:
            return
        conn.sendall(view[:n])


def discard(conn: Connection) -> None:
    """Read and drop everything until the client closes its side."""
    buf = bytearray(BUFFER)
    while conn.recv_into(buf):
        pass


def chargen_lines(count: int, first: int = 0) -> bytes:
    """``count`` chargen lines starting with line number ``first``.

    RFC 864's pattern: the 95 printable ASCII characters (space to ``~``) in
    a ring; line k holds the 72 characters starting at position k mod 95,
    then CR LF. The pattern repeats every 95 lines.
    """
    ring = bytes(range(32, 127)) * 2
    lines = []
    for k in range(first, first + count):
        start = k % 95
        lines.append(ring[start : start + 72] + b"\r\n")
    return b"".join(lines)


# Nine whole cycles of 95 lines (about 62 KB), so each send continues the
# stream exactly where the previous one ended.
_CHARGEN_BLOCK = chargen_lines(95 * 9)


def chargen(conn: Connection) -> None:
    """Send chargen lines until the client goes away (the send then fails
    with BrokenPipeError or ConnectionResetError, which ends the handler).
    Whatever the client sends is ignored."""
    block = memoryview(_CHARGEN_BLOCK)
    while True:
        conn.sendall(block)


def udp_echo(datagram: bytes) -> bytes:
    """The reply to a UDP echo request: the datagram itself."""
    return datagram
