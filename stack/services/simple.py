"""The classic small services: echo (RFC 862), discard (RFC 863), chargen
(RFC 864) over TCP, and echo over UDP.

The TCP ones are protocol classes of the services' event loop
(:mod:`stack.services.loop`): one object per client, made from its
:class:`~stack.services.loop.Channel`.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stack.services.loop import Channel



class Echo:
    """Send back every byte received; close once the client has closed its
    side and all is sent."""

    __slots__ = ("ch",)

    def __init__(self, ch: Channel) -> None:
        self.ch = ch

    def received(self, data: memoryview) -> None:
        self.ch.write(data)

    def eof(self) -> None:
        self.ch.close()

    def drained(self) -> None:
        pass


class Discard:
    """Read and drop everything until the client closes its side."""

    __slots__ = ("ch",)

    def __init__(self, ch: Channel) -> None:
        self.ch = ch

    def received(self, data: memoryview) -> None:
        pass

    def eof(self) -> None:
        self.ch.close()

    def drained(self) -> None:
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


class Deaf:
    """A protocol that takes nothing from its client: what the client sends
    is dropped, its closing its own side changes nothing, and a drained
    output asks for nothing more."""

    __slots__ = ()

    def received(self, data: memoryview) -> None:
        pass

    def eof(self) -> None:
        pass

    def drained(self) -> None:
        pass


class Chargen(Deaf):
    """Send chargen lines until the client goes away (a send then fails with
    BrokenPipeError or ConnectionResetError, which closes the channel) or
    idles out by not reading. Whatever the client sends is dropped; its
    closing its own side does not stop the stream."""

    __slots__ = ("ch",)

    def __init__(self, ch: Channel) -> None:
        self.ch = ch
        ch.stream(itertools.repeat(memoryview(_CHARGEN_BLOCK)))


def udp_echo(datagram: bytes) -> bytes:
    """The reply to a UDP echo request: the datagram itself."""
    return datagram
