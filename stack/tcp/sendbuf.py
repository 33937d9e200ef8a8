"""The send buffer: the bytes from ``data_seq`` on, sent or not.

A ``bytearray`` with a read head. Acknowledged bytes are dropped from the
front only once they are most of the array, so an ACK costs no copy and an
append only the bytes appended (CPython copies the whole of a bytearray
that grows after its front was cut; doing that on every ACK of a
multi-megabyte window was a fifth of a fast download). Amortized, every
byte is copied in once and moved at most once more.
"""

from __future__ import annotations


class SendBuffer:
    __slots__ = ("_bytes", "_head")

    def __init__(self) -> None:
        self._bytes = bytearray()
        self._head = 0   # bytes at the front already acknowledged

    def __len__(self) -> int:
        return len(self._bytes) - self._head

    def __bool__(self) -> bool:
        return len(self._bytes) > self._head

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._bytes += data

    def view(self, offset: int, n: int) -> memoryview:
        """``n`` bytes from ``offset`` (no copy; let it go before the next
        append or consume, as with any view of a bytearray)."""
        at = self._head + offset
        return memoryview(self._bytes)[at:at + n]

    def consume(self, n: int) -> None:
        """The first ``n`` bytes were acknowledged."""
        head = self._head + n
        if head >= len(self._bytes):
            self._bytes = bytearray()
            head = 0
        elif head > 65536 and head * 2 > len(self._bytes):
            del self._bytes[:head]
            head = 0
        self._head = head
