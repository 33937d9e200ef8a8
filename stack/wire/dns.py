"""DNS messages (RFC 1035 section 4), as a stub resolver needs them.

```
                                1  1  1  1  1  1
  0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
|                      ID                       |
+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
|QR|   Opcode  |AA|TC|RD|RA|   Z    |   RCODE   |
+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
|    QDCOUNT    |    ANCOUNT    |    NSCOUNT    |    ARCOUNT    |
+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
  question, answer, authority and additional sections
```

:func:`build_query` writes one question; :func:`parse_message` reads a whole
message into a :class:`DnsMessage`. Names may be compressed (4.1.4): a
pointer must point backwards, to a label that starts before the pointer, so a
loop cannot be written, and a name is at most 255 bytes (3.1) however it is
spelled. A message the parser cannot trust in every byte raises
:class:`~stack.wire.WireError` naming the field; nothing else is raised.
Records other than A and CNAME keep their raw data.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from stack.wire import WireError

HEADER = struct.Struct("!HHHHHH")
HEADER_LEN = 12
RR_FIXED = struct.Struct("!HHIH")      # type, class, TTL, RDLENGTH
QUESTION_FIXED = struct.Struct("!HH")  # type, class
MAX_NAME = 255                         # RFC 1035 3.1, in wire form
MAX_LABEL = 63
MAX_UDP = 512                          # RFC 1035 4.2.1, without EDNS

TYPE_A = 1
TYPE_CNAME = 5
TYPE_PTR = 12
TYPE_AAAA = 28
CLASS_IN = 1

QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
RCODE_MASK = 0x000F

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5


class Question(NamedTuple):
    name: str      # lower case, no trailing dot
    qtype: int
    qclass: int


class Record(NamedTuple):
    """A resource record. ``data`` is the address (dotted quad) of an A
    record, the target name of a CNAME or PTR, the raw bytes otherwise."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    data: str | bytes


class DnsMessage(NamedTuple):
    ident: int
    flags: int
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]

    @property
    def is_response(self) -> bool:
        return bool(self.flags & QR)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TC)

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK


def encode_name(name: str) -> bytes:
    """``www.example.test`` in wire form (no compression)."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("ascii", "strict") if label.isascii() else b""
            if not raw or len(raw) > MAX_LABEL:
                raise WireError("name", f"bad label {label!r} in {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise WireError("name", f"{name!r} is longer than {MAX_NAME} bytes")
    return bytes(out)


def build_query(ident: int, name: str, qtype: int = TYPE_A, recursion: bool = True) -> bytes:
    """A standard query for ``name`` (one question, class IN)."""
    return (HEADER.pack(ident & 0xFFFF, RD if recursion else 0, 1, 0, 0, 0)
            + encode_name(name) + QUESTION_FIXED.pack(qtype, CLASS_IN))


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` and the offset just after it (after the first
    pointer, if the name is compressed)."""
    labels: list[str] = []
    end = -1          # where the name ends in the message, once a pointer was followed
    wire_len = 0
    limit = pos       # a pointer must point before the label that holds it
    n = len(data)
    while True:
        if pos >= n:
            raise WireError("name", "runs past the end of the message")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= n:
                raise WireError("name", "truncated pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= limit:
                raise WireError("name", "compression pointer does not point backwards")
            if end < 0:
                end = pos + 2
            pos = limit = target
            continue
        if length & 0xC0:
            raise WireError("name", f"label type 0x{length & 0xC0:02x}")
        wire_len += length + 1
        if wire_len > MAX_NAME:
            raise WireError("name", f"longer than {MAX_NAME} bytes")
        if length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        if pos + 1 + length > n:
            raise WireError("name", "label runs past the end of the message")
        raw = data[pos + 1:pos + 1 + length]
        labels.append(raw.decode("ascii", "replace").lower())
        pos += 1 + length


def _read_records(data: bytes, pos: int, count: int) -> tuple[tuple[Record, ...], int]:
    out = []
    n = len(data)
    for _ in range(count):
        name, pos = _read_name(data, pos)
        if pos + RR_FIXED.size > n:
            raise WireError("record", "truncated record header")
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
        pos += RR_FIXED.size
        if pos + rdlen > n:
            raise WireError("rdlength", f"{rdlen} bytes past the end of the message")
        rdata: str | bytes
        if rtype == TYPE_A and rclass == CLASS_IN:
            if rdlen != 4:
                raise WireError("rdata", f"A record of {rdlen} bytes")
            rdata = ".".join(str(b) for b in data[pos:pos + 4])
        elif rtype in (TYPE_CNAME, TYPE_PTR):
            rdata, after = _read_name(data, pos)
            if after != pos + rdlen:
                raise WireError("rdata", "name does not fill its record")
        else:
            rdata = bytes(data[pos:pos + rdlen])
        out.append(Record(name, rtype, rclass, ttl & 0x7FFFFFFF, rdata))
        pos += rdlen
    return tuple(out), pos


def parse_message(data: bytes | bytearray | memoryview) -> DnsMessage:
    """A whole DNS message. Counts that promise more records than the
    message holds, bytes left over, and every malformed name or record are
    errors: a resolver drops such an answer."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise WireError("length", f"{len(data)} bytes is shorter than a DNS header")
    ident, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    # Every question takes at least 5 bytes, every record at least 11.
    if HEADER_LEN + 5 * qd + 11 * (an + ns + ar) > len(data):
        raise WireError("counts", f"{qd}/{an}/{ns}/{ar} entries cannot fit {len(data)} bytes")
    pos = HEADER_LEN
    questions = []
    for _ in range(qd):
        name, pos = _read_name(data, pos)
        if pos + QUESTION_FIXED.size > len(data):
            raise WireError("question", "truncated question")
        qtype, qclass = QUESTION_FIXED.unpack_from(data, pos)
        pos += QUESTION_FIXED.size
        questions.append(Question(name, qtype, qclass))
    answers, pos = _read_records(data, pos, an)
    authority, pos = _read_records(data, pos, ns)
    additional, pos = _read_records(data, pos, ar)
    if pos != len(data):
        raise WireError("length", f"{len(data) - pos} bytes after the last record")
    return DnsMessage(ident, flags, tuple(questions), answers, authority, additional)


def follow(message: DnsMessage, name: str, rtype: int) -> tuple[list[str], int | None, list[str]]:
    """The data of the ``rtype`` records the answer section gives for
    ``name`` (dotted quads for A, names for PTR), following CNAMEs within the
    answer (at most 8 deep); the smallest TTL on the way (None when nothing
    was found); and the chain of names, ``name`` first, the canonical last."""
    want = name.rstrip(".").lower()
    chain = [want]
    ttl: int | None = None
    for _ in range(8):
        aliased = False
        found = []
        for rr in message.answers:
            if rr.name != want or rr.rclass != CLASS_IN:
                continue
            if rr.rtype == rtype:
                found.append(str(rr.data))
                ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
            elif rr.rtype == TYPE_CNAME and not aliased and isinstance(rr.data, str):
                ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
                want = rr.data
                chain.append(want)
                aliased = True
        if found or not aliased:
            return found, (ttl if found else None), chain
    return [], None, chain


def addresses(message: DnsMessage, name: str) -> tuple[list[str], int | None, str]:
    """The A addresses the answer section gives for ``name``, following
    CNAMEs within the answer (at most 8 deep), the smallest TTL on the way
    (None when there is no answer) and the canonical name."""
    found, ttl, chain = follow(message, name, TYPE_A)
    return found, ttl, chain[-1]
