"""ICMP for IPv4 (RFC 792).

    0                   1                   2                   3
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |     Type      |     Code      |          Checksum             |
   |           rest of header (identifier+sequence, unused, MTU)   |
   |     data (echo payload, or the quoted IP header + 8 bytes)    |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.native import checksum
from stack.wire import WireError

ICMP_HEADER = struct.Struct("!BBHI")
ICMP_LEN = 8
ECHO_REPLY = 0
DEST_UNREACHABLE = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIMESTAMP = 13
TIMESTAMP_REPLY = 14
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12
ERROR_TYPES = frozenset({DEST_UNREACHABLE, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM})

# Destination unreachable codes
NET_UNREACHABLE = 0
HOST_UNREACHABLE = 1
PROTO_UNREACHABLE = 2
PORT_UNREACHABLE = 3
FRAG_NEEDED = 4
# Time exceeded codes
TTL_EXCEEDED = 0
REASSEMBLY_TIMEOUT = 1

TYPE_NAMES = {TIMESTAMP: "timestamp", TIMESTAMP_REPLY: "timestamp reply",
              ECHO_REPLY: "echo reply", DEST_UNREACHABLE: "unreachable", ECHO_REQUEST: "echo request",
              TIME_EXCEEDED: "time exceeded", PARAMETER_PROBLEM: "parameter problem"}

_CODE_NAMES = {
    DEST_UNREACHABLE: {NET_UNREACHABLE: "net unreachable", HOST_UNREACHABLE: "host unreachable",
                       PROTO_UNREACHABLE: "protocol unreachable",
                       PORT_UNREACHABLE: "port unreachable", FRAG_NEEDED: "fragmentation needed"},
    TIME_EXCEEDED: {TTL_EXCEEDED: "ttl exceeded in transit",
                    REASSEMBLY_TIMEOUT: "fragment reassembly time exceeded"},
}


def icmp_name(type_: int, code: int) -> str:
    """A message's name as a person reads it: ``echo request``,
    ``destination unreachable: port unreachable``, ``time exceeded: ...``."""
    if type_ == DEST_UNREACHABLE:
        base = "destination unreachable"
    elif type_ == SOURCE_QUENCH:
        base = "source quench"
    elif type_ == REDIRECT:
        base = "redirect"
    else:
        base = TYPE_NAMES.get(type_, f"type {type_}")
    codes = _CODE_NAMES.get(type_)
    if codes is None:
        return base if type_ in TYPE_NAMES or type_ in ERROR_TYPES else f"{base} code {code}"
    return f"{base}: {codes.get(code, f'code {code}')}"


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    type: int
    code: int
    rest: int  # the 32 bits after the checksum
    data: bytes | memoryview

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def is_error(self) -> bool:
        return self.type in ERROR_TYPES

    def __str__(self) -> str:
        name = TYPE_NAMES.get(self.type, f"type {self.type}")
        if self.type in (ECHO_REQUEST, ECHO_REPLY):
            return f"ICMP {name}, id {self.ident}, seq {self.seq}, length {len(self.data)}"
        return f"ICMP {name}, code {self.code}, length {len(self.data)}"


def parse_icmp(data: bytes | memoryview) -> IcmpMessage:
    if len(data) < ICMP_LEN:
        raise WireError("length", f"{len(data)} bytes is shorter than an ICMP header")
    if checksum(data) != 0:
        raise WireError("checksum", "ICMP checksum does not verify")
    type_, code, _csum, rest = ICMP_HEADER.unpack_from(data)
    return IcmpMessage(type_, code, rest, memoryview(data)[ICMP_LEN:])


def build_icmp(m: IcmpMessage) -> bytes:
    msg = bytearray(ICMP_HEADER.pack(m.type, m.code, 0, m.rest))
    msg += m.data
    csum = checksum(msg)
    msg[2] = csum >> 8
    msg[3] = csum & 0xFF
    return bytes(msg)
