"""What a lesson saw: the stack's jsonl traces and the routers' captures, read
back so that a lesson (and its test) can say what happened from evidence,
never from printed text.

Captures are decoded leniently (no checksum check): the kernel leaves
checksums to the "hardware" on veths, so a capture shows them unfinished.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Iterator

from stack.wire.ipv4 import int2ip
from stack.wire.tcp import flags_str

PCAP_MAGIC = (0xA1B2C3D4, 0xA1B23C4D)   # microseconds, nanoseconds


@dataclass
class Packet:
    """One IPv4 packet of a capture, the fields lessons look at."""

    t: float
    src: str
    dst: str
    proto: int
    ttl: int
    length: int                 # the IP total length
    df: bool
    mf: bool
    frag_offset: int
    sport: int = 0
    dport: int = 0
    flags: str = ""             # TCP, tcpdump's letters: "S", "S.", "P.", "R."
    seq: int = 0
    ack: int = 0
    mss: int | None = None
    payload: int = 0            # TCP or UDP payload bytes (in this fragment)
    icmp: tuple[int, int] | None = None   # (type, code)
    mtu: int | None = None      # ICMP fragmentation needed's next-hop MTU
    quoted: tuple[str, str, int] | None = None  # an ICMP error's quoted src, dst, proto

    @property
    def fragment(self) -> bool:
        return self.mf or self.frag_offset > 0


def pcap(path: str) -> list[Packet]:
    """Every IPv4 packet of an Ethernet pcap file (others are skipped)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic, = struct.unpack_from("<I", data)
    endian = "<" if magic in PCAP_MAGIC else ">"
    magic, = struct.unpack_from(endian + "I", data)
    scale = 1e-9 if magic == PCAP_MAGIC[1] else 1e-6
    out = []
    at = 24
    while at + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", data, at)
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        p = _packet(sec + frac * scale, frame)
        if p is not None:
            out.append(p)
    return out


def _packet(t: float, frame: bytes) -> Packet | None:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[0] >> 4 != 4 or len(ip) < ihl:
        return None
    total, = struct.unpack_from("!H", ip, 2)
    frag, = struct.unpack_from("!H", ip, 6)
    p = Packet(t, int2ip(int.from_bytes(ip[12:16], "big")), int2ip(int.from_bytes(ip[16:20], "big")),
               ip[9], ip[8], total, bool(frag & 0x4000), bool(frag & 0x2000), (frag & 0x1FFF) * 8)
    body = ip[ihl:total]
    if p.frag_offset:
        return p
    if p.proto == 6 and len(body) >= 20:
        p.sport, p.dport, p.seq, p.ack = struct.unpack_from("!HHII", body)
        off = (body[12] >> 4) * 4
        p.flags = flags_str(body[13])
        p.payload = max(0, len(body) - off)
        p.mss = _mss(body[20:off])
    elif p.proto == 17 and len(body) >= 8:
        p.sport, p.dport = struct.unpack_from("!HH", body)
        p.payload = len(body) - 8
    elif p.proto == 1 and len(body) >= 8:
        p.icmp = (body[0], body[1])
        if body[0] == 3 and body[1] == 4:
            p.mtu, = struct.unpack_from("!H", body, 6)
        inner = body[8:]
        if body[0] in (3, 11, 12) and len(inner) >= 20:
            p.quoted = (int2ip(int.from_bytes(inner[12:16], "big")),
                        int2ip(int.from_bytes(inner[16:20], "big")), inner[9])
    return p


def _mss(opts: bytes) -> int | None:
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if kind == 2 and opts[i + 1] == 4 and i + 4 <= len(opts):
            return int(struct.unpack_from("!H", opts, i + 2)[0])
        i += opts[i + 1]
    return None


def trace(path: str) -> list[dict[str, Any]]:
    """The events of a jsonl trace (a line that is not JSON is skipped)."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def events(evs: list[dict[str, Any]], layer: str, event: str, **match: Any
           ) -> Iterator[dict[str, Any]]:
    for e in evs:
        if e.get("layer") == layer and e.get("event") == event and all(
                e.get(k) == v for k, v in match.items()):
            yield e


def states(evs: list[dict[str, Any]]) -> list[tuple[float, str, str, str, str]]:
    """TCP state changes: ``(t, conn, from, to, cause)``."""
    return [(e["t"], e["conn"], e["from"], e["to"], e.get("cause", ""))
            for e in events(evs, "tcp", "state")]
