"""ARP for IPv4 over Ethernet (RFC 826).

    0        2        4    5    6        8
    +--------+--------+----+----+--------+
    | HTYPE  | PTYPE  |HLEN|PLEN| OPER   |
    +--------+--------+----+----+--------+
    | sender MAC (6) | sender IP (4)      |
    | target MAC (6) | target IP (4)      |
    +-------------------------------------+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire import WireError
from stack.wire.eth import mac2str
from stack.wire.ipv4 import int2ip

ARP = struct.Struct("!HHBBH6sI6sI")
ARP_LEN = 28
HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
OP_REQUEST = 1
OP_REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: int
    target_mac: bytes
    target_ip: int

    def __str__(self) -> str:
        if self.op == OP_REQUEST:
            return f"ARP, Request who-has {int2ip(self.target_ip)} tell {int2ip(self.sender_ip)}"
        if self.op == OP_REPLY:
            return f"ARP, Reply {int2ip(self.sender_ip)} is-at {mac2str(self.sender_mac)}"
        return f"ARP, op {self.op}"


def parse_arp(data: bytes | memoryview) -> ArpPacket:
    if len(data) < ARP_LEN:
        raise WireError("length", f"{len(data)} bytes is shorter than an ARP packet")
    htype, ptype, hlen, plen, op, smac, sip, tmac, tip = ARP.unpack_from(data)
    if htype != HTYPE_ETHERNET:
        raise WireError("htype", str(htype))
    if ptype != PTYPE_IPV4:
        raise WireError("ptype", f"0x{ptype:04x}")
    if hlen != 6:
        raise WireError("hlen", str(hlen))
    if plen != 4:
        raise WireError("plen", str(plen))
    if op not in (OP_REQUEST, OP_REPLY):
        raise WireError("op", str(op))
    return ArpPacket(op, smac, sip, tmac, tip)


def build_arp(p: ArpPacket) -> bytes:
    return ARP.pack(HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, p.op, p.sender_mac, p.sender_ip,
                    p.target_mac, p.target_ip)
