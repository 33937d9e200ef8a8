"""UDP (RFC 768).

    0      7 8     15 16    23 24    31
   +--------+--------+--------+--------+
   |   Source Port   | Destination Port|
   |     Length      |    Checksum     |
   +--------+--------+--------+--------+
   |          data octets ...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.native import checksum, csum_partial
from stack.wire import WireError
from stack.wire.ipv4 import PROTO_UDP

UDP_HEADER = struct.Struct("!HHHH")
UDP_LEN = 8
PSEUDO = struct.Struct("!IIBBH")


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: bytes | memoryview

    def __str__(self) -> str:
        return f"UDP {self.src_port} > {self.dst_port}, length {len(self.payload)}"


def pseudo_sum(src: int, dst: int, proto: int, length: int) -> int:
    """The partial sum of the IPv4 pseudo-header (RFC 768, RFC 9293 3.1)."""
    return csum_partial(PSEUDO.pack(src, dst, 0, proto, length))


def parse_udp(src: int, dst: int, data: bytes | memoryview) -> UdpDatagram:
    n = len(data)
    if n < UDP_LEN:
        raise WireError("length", f"{n} bytes is shorter than a UDP header")
    sport, dport, length, csum = UDP_HEADER.unpack_from(data)
    if length < UDP_LEN or length > n:
        raise WireError("length", f"UDP length {length} does not fit the {n} bytes received")
    mv = memoryview(data)[:length]
    if csum != 0 and checksum(mv, pseudo_sum(src, dst, PROTO_UDP, length)) != 0:
        raise WireError("checksum", "UDP checksum does not verify")
    if dport == 0:
        raise WireError("dst_port", "0")
    return UdpDatagram(sport, dport, mv[UDP_LEN:])


def build_udp(src: int, dst: int, sport: int, dport: int, payload: bytes | memoryview) -> bytes:
    length = UDP_LEN + len(payload)
    if length > 65535:
        raise WireError("length", f"{length} bytes do not fit a UDP datagram")
    msg = bytearray(UDP_HEADER.pack(sport, dport, length, 0))
    msg += payload
    csum = checksum(msg, pseudo_sum(src, dst, PROTO_UDP, length)) or 0xFFFF
    msg[6] = csum >> 8
    msg[7] = csum & 0xFF
    return bytes(msg)
