"""Frames built by hand, byte by byte, with TEST-NET defaults.

The stack under test is 192.0.2.2 at 02:53:c0:00:02:02; its peer on the link
is 192.0.2.1 at 52:54:00:12:34:56. Nothing here uses the stack's own
builders or checksum: a frame made here is an independent witness of the
format (checksums come from ``tests.helpers.checksum``).
"""

from __future__ import annotations

from tests.helpers.checksum import ref_checksum, ref_pseudo

US_MAC = bytes.fromhex("0253c0000202")
PEER_MAC = bytes.fromhex("525400123456")
OTHER_MAC = bytes.fromhex("52540000beef")
GW_MAC = bytes.fromhex("5254000000fe")
BCAST = b"\xff" * 6
US, PEER = 0xC0000202, 0xC0000201    # 192.0.2.2 (the stack), 192.0.2.1 (its peer)
OTHER = 0xC0000263                    # 192.0.2.99, another host on the link
GATEWAY = 0xC00002FE                  # 192.0.2.254
FAR = 0xC6336407                      # 198.51.100.7, off-link
SUBNET_BCAST = 0xC00002FF
PROTO_TEST = 253                      # RFC 3692 experimentation

SYN, ACK = 0x02, 0x10
MSS_1460 = bytes.fromhex("020405b4")


def h(text: str) -> bytes:
    """Bytes from hex text that may contain spaces."""
    return bytes.fromhex(text.replace(" ", ""))


def eth(packet: bytes, dst: bytes = US_MAC, src: bytes = PEER_MAC) -> bytes:
    """An Ethernet frame carrying an IPv4 packet."""
    return dst + src + b"\x08\x00" + packet


def arp(op: int, smac: bytes, sip: int, tmac: bytes, tip: int, dst: bytes = BCAST,
        src: bytes | None = None) -> bytes:
    """An Ethernet frame carrying one ARP packet (``op`` 1 request, 2 reply)."""
    return (dst + (src or smac) + b"\x08\x06" + h("0001 0800 06 04") + op.to_bytes(2, "big")
            + smac + sip.to_bytes(4, "big") + tmac + tip.to_bytes(4, "big"))


def ipv4(src: int, dst: int, proto: int, payload: bytes, ident: int = 0x1000, mf: bool = False,
         offset: int = 0, df: bool = False, ttl: int = 64, tos: int = 0, options: bytes = b"",
         total: int | None = None) -> bytes:
    """An IPv4 packet built field by field, checksum from the reference."""
    hlen = 20 + len(options)
    assert hlen % 4 == 0
    frag = (0x4000 if df else 0) | (0x2000 if mf else 0) | (offset // 8)
    head = bytearray(bytes((0x40 | hlen // 4, tos)) + (total or hlen + len(payload)).to_bytes(2, "big")
                     + ident.to_bytes(2, "big") + frag.to_bytes(2, "big") + bytes((ttl, proto))
                     + b"\x00\x00" + src.to_bytes(4, "big") + dst.to_bytes(4, "big") + options)
    head[10:12] = ref_checksum(bytes(head)).to_bytes(2, "big")
    return bytes(head) + payload


def fragment(src: int, dst: int, proto: int, payload: bytes, ident: int, size: int) -> list[bytes]:
    """Split ``payload`` into IPv4 fragments of at most ``size`` payload bytes."""
    assert size % 8 == 0
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off:off + size]
        out.append(ipv4(src, dst, proto, piece, ident, mf=off + size < len(payload), offset=off))
    return out


def split(packet: bytes) -> dict:
    """Take an IPv4 packet apart by hand (no stack code)."""
    hlen = (packet[0] & 0x0F) * 4
    frag = int.from_bytes(packet[6:8], "big")
    return {
        "version": packet[0] >> 4, "hlen": hlen, "tos": packet[1],
        "total": int.from_bytes(packet[2:4], "big"), "id": int.from_bytes(packet[4:6], "big"),
        "df": bool(frag & 0x4000), "mf": bool(frag & 0x2000), "offset": (frag & 0x1FFF) * 8,
        "ttl": packet[8], "proto": packet[9], "src": int.from_bytes(packet[12:16], "big"),
        "dst": int.from_bytes(packet[16:20], "big"), "csum_ok": ref_checksum(packet[:hlen]) == 0,
        "payload": packet[hlen:int.from_bytes(packet[2:4], "big")],
    }


def reassemble(packets: list[bytes]) -> tuple[dict, bytes]:
    """Put fragments sent by the stack back together, checking the rules on the way."""
    parts = [split(p) for p in packets]
    assert len({p["id"] for p in parts}) == 1
    parts.sort(key=lambda p: p["offset"])
    data = b""
    for i, p in enumerate(parts):
        assert p["csum_ok"]
        assert p["offset"] == len(data)
        assert p["mf"] == (i < len(parts) - 1)
        if p["mf"]:
            assert len(p["payload"]) % 8 == 0
        data += p["payload"]
    return parts[0], data


def icmp(type_: int, code: int, rest: bytes, data: bytes) -> bytes:
    """An ICMP message: type, code, the 4 bytes after the checksum, then data."""
    msg = bytearray(bytes((type_, code)) + b"\x00\x00" + rest + data)
    msg[2:4] = ref_checksum(bytes(msg)).to_bytes(2, "big")
    return bytes(msg)


def echo(ident: int = 0x0BAD, seq: int = 1, data: bytes = b"ping") -> bytes:
    """An ICMP echo request."""
    return icmp(8, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big"), data)


def udp(src: int, dst: int, sport: int, dport: int, payload: bytes, csum: int | None = None,
        length: int | None = None) -> bytes:
    """A UDP datagram by hand; ``csum`` overrides the computed checksum."""
    n = 8 + len(payload) if length is None else length
    head = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + n.to_bytes(2, "big")
    if csum is None:
        csum = ref_checksum(ref_pseudo(src, dst, 17, 8 + len(payload)) + head + b"\x00\x00" + payload) or 0xFFFF
    return head + csum.to_bytes(2, "big") + payload


def tcp(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
        options: bytes = b"", payload: bytes = b"", win: int = 64240) -> bytes:
    """A TCP segment by hand; ``options`` are padded to 32 bits with zeros."""
    options += b"\x00" * (-len(options) % 4)
    hlen = 20 + len(options)
    head = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + seq.to_bytes(4, "big")
            + ack.to_bytes(4, "big") + bytes(((hlen // 4) << 4, flags)) + win.to_bytes(2, "big")
            + b"\x00\x00\x00\x00" + options)
    csum = ref_checksum(ref_pseudo(src, dst, 6, hlen + len(payload)) + head + payload)
    return head[:16] + csum.to_bytes(2, "big") + head[18:] + payload
