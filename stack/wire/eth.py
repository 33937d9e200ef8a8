"""Ethernet II (IEEE 802.3 framing with an EtherType).

    0                   6                  12        14
    +-------------------+-------------------+---------+-----------
    | destination MAC   | source MAC        |EtherType| payload ...
    +-------------------+-------------------+---------+-----------
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stack.wire import WireError

ETH_HEADER = struct.Struct("!6s6sH")
ETH_LEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
BROADCAST = b"\xff" * 6


def mac2str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def str2mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}") from None
    return mac


@dataclass(frozen=True, slots=True)
class EthFrame:
    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes | memoryview

    def __str__(self) -> str:
        return f"{mac2str(self.src)} > {mac2str(self.dst)}, ethertype 0x{self.ethertype:04x}, length {len(self.payload)}"


def parse_eth(frame: bytes | memoryview) -> EthFrame:
    if len(frame) < ETH_LEN:
        raise WireError("length", f"{len(frame)} bytes is shorter than an Ethernet header")
    dst, src, ethertype = ETH_HEADER.unpack_from(frame)
    if ethertype < 0x0600:
        raise WireError("ethertype", f"0x{ethertype:04x} is an 802.3 length, not an EtherType")
    return EthFrame(dst, src, ethertype, memoryview(frame)[ETH_LEN:])


def build_eth(dst: bytes, src: bytes, ethertype: int, payload: bytes | memoryview) -> bytes:
    return ETH_HEADER.pack(dst, src, ethertype) + payload
