"""Urgent data (RFC 9293 3.8.5, RFC 6093), as Linux keeps it.

The urgent byte is the one before the urgent pointer, SEG.SEQ + SEG.UP - 1
(the BSD reading, which RFC 6093 recommends; a pointer of 0 marks SEG.SEQ
itself, as Linux's ``tcp_check_urg`` computes it). Only the latest mark is
kept. Unless SO_OOBINLINE is set, its byte leaves the stream: a read stops
before it and the next one skips it, and ``recv(MSG_OOB)`` returns it,
once. With SO_OOBINLINE it stays in line (a read still stops at the mark)
and MSG_OOB is EINVAL. Passing the mark ends it.

Sending: ``send(MSG_OOB)`` puts the urgent pointer after its last byte;
every segment that starts before it carries URG (Linux's ``snd_up``).
"""

from __future__ import annotations

import errno

from stack.tcp.seq import seq_diff
from stack.tcp.states import os_error


class UrgentMark:
    """A pending mark: the urgent byte's sequence number (Linux's
    ``urg_seq``), the byte once it has arrived (``TCP_URG_VALID``), and
    whether MSG_OOB has read it (``TCP_URG_READ``)."""

    __slots__ = ("seq", "byte", "taken")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.byte: int | None = None
        self.taken = False

    def catch(self, data_seq: int, payload: bytes | memoryview) -> bool:
        """The byte, if this segment's data (from ``data_seq``) holds it."""
        if self.byte is not None or self.taken:
            return False
        off = seq_diff(self.seq, data_seq)
        if 0 <= off < len(payload):
            self.byte = payload[off]
            return True
        return False

    def read(self, peek: bool, done: bool) -> bytes:
        """``recv(1, MSG_OOB)`` (Linux's ``tcp_recv_urg``): the byte; b""
        when it has not arrived and never will (``done``: FIN or shut);
        EAGAIN when it has not arrived yet, never blocking; EINVAL once read."""
        if self.taken:
            raise os_error(errno.EINVAL)
        if self.byte is not None:
            if not peek:
                self.taken = True
            return bytes((self.byte,))
        if done:
            return b""
        raise os_error(errno.EAGAIN)


def urgent_pointer(snd_up: int, seq: int) -> int:
    """The urgent pointer field of a segment starting at ``seq`` while
    ``snd_up`` is our urgent pointer: 0 (no URG) from ``snd_up`` on, and
    65535 when it is further than the field can say (as Linux's
    ``__tcp_transmit_skb``, without its check against SND.NXT)."""
    off = seq_diff(snd_up, seq)
    if off <= 0:
        return 0
    return off if off < 0x10000 else 0xFFFF
