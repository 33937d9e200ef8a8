"""IPv4 header (RFC 791).

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |Version|  IHL  |Type of Service|          Total Length         |
   |         Identification        |Flags|      Fragment Offset    |
   |  Time to Live |    Protocol   |         Header Checksum       |
   |                       Source Address                          |
   |                    Destination Address                        |
   |                    Options                    |    Padding    |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from stack.native import checksum
from stack.wire import WireError

IPV4_HEADER = struct.Struct("!BBHHHBBHII")
IPV4_MIN_LEN = 20
IPV4_MAX_LEN = 65535
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF
PROTO_NAMES = {PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp"}


def ip2int(text: str) -> int:
    try:
        return int.from_bytes(socket.inet_aton(text), "big")
    except OSError:
        raise ValueError(f"bad IPv4 address {text!r}") from None


def int2ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    src: int
    dst: int
    proto: int
    ttl: int = 64
    ident: int = 0
    tos: int = 0
    df: bool = False
    mf: bool = False
    frag_offset: int = 0  # in bytes (a multiple of 8)
    total_length: int = 0
    header_length: int = 20
    options: bytes = b""

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset != 0

    def __str__(self) -> str:
        frag = ""
        if self.is_fragment:
            frag = f", frag offset {self.frag_offset}{'+' if self.mf else ''}"
        proto = PROTO_NAMES.get(self.proto, str(self.proto))
        return (f"IP {int2ip(self.src)} > {int2ip(self.dst)}: {proto}, id {self.ident}, "
                f"ttl {self.ttl}, length {self.total_length}{frag}{', DF' if self.df else ''}")


def parse_ipv4(data: bytes | memoryview) -> tuple[Ipv4Header, memoryview]:
    """Validate an IPv4 packet and split it into header and payload.

    Integrity first (length, version, IHL, total length, checksum), then the
    fields. Padding beyond total length (Ethernet minimum frames) is cut off.
    """
    n = len(data)
    if n < IPV4_MIN_LEN:
        raise WireError("length", f"{n} bytes is shorter than an IPv4 header")
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = IPV4_HEADER.unpack_from(data)
    if vihl >> 4 != 4:
        raise WireError("version", str(vihl >> 4))
    hlen = (vihl & 0x0F) * 4
    if hlen < IPV4_MIN_LEN:
        raise WireError("ihl", f"{hlen} bytes")
    if total < hlen:
        raise WireError("total_length", f"{total} is less than the header length {hlen}")
    if total > n:
        raise WireError("total_length", f"{total} exceeds the {n} bytes received")
    mv = memoryview(data)
    if checksum(mv[:hlen]) != 0:
        raise WireError("checksum", "header checksum does not verify")
    if frag & 0x8000:
        raise WireError("flags", "reserved flag set")
    offset = (frag & OFFSET_MASK) * 8
    if offset + total - hlen > IPV4_MAX_LEN:
        raise WireError("frag_offset", "fragment ends past 65535 bytes")
    header = Ipv4Header(
        src=src, dst=dst, proto=proto, ttl=ttl, ident=ident, tos=tos,
        df=bool(frag & FLAG_DF), mf=bool(frag & FLAG_MF), frag_offset=offset,
        total_length=total, header_length=hlen,
        options=bytes(mv[IPV4_MIN_LEN:hlen]) if hlen > IPV4_MIN_LEN else b"",
    )
    return header, mv[hlen:total]


def build_ipv4(h: Ipv4Header, payload: bytes | memoryview) -> bytes:
    """Emit a header (checksum computed) followed by ``payload``."""
    opts = h.options
    if len(opts) % 4:
        opts = opts + b"\x00" * (4 - len(opts) % 4)
    if len(opts) > 40:
        # IHL is four bits: 60 header bytes, 40 of options, at most.
        raise WireError("options", f"{len(opts)} bytes of options, at most 40")
    hlen = IPV4_MIN_LEN + len(opts)
    total = hlen + len(payload)
    if total > IPV4_MAX_LEN:
        raise WireError("total_length", f"{total} bytes do not fit an IPv4 datagram")
    frag = (h.frag_offset // 8) | (FLAG_DF if h.df else 0) | (FLAG_MF if h.mf else 0)
    head = bytearray(IPV4_HEADER.pack(0x40 | hlen // 4, h.tos, total, h.ident, frag, h.ttl,
                                      h.proto, 0, h.src, h.dst) + opts)
    csum = checksum(head)
    head[10] = csum >> 8
    head[11] = csum & 0xFF
    return bytes(head) + payload
