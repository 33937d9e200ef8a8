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
from typing import Callable, NamedTuple

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


class Ipv4Header(NamedTuple):
    """An IPv4 header (a named tuple: built for every packet, it costs a
    fraction of a frozen dataclass)."""

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


# -- options (RFC 791 3.1; what Linux does with them, RFC 1122 3.2.1.8) -------------------------
#
# A datagram's options are checked in order, with the bounds checks Linux's
# ip_options_compile makes; the first bad byte is named by its offset from
# the start of the header (what an ICMP parameter problem points at). The
# destination records itself in a record route and a timestamp option
# (RFC 1122 3.2.1.8 (d)), and an answer carries them back with the
# answering host recorded once more (RFC 1122 3.2.2.6; Linux's
# ip_options_echo and ip_options_build): RR first, then the timestamp,
# and nothing else but a CIPSO label, padded with end-of-list.

OPT_EOL = 0
OPT_NOP = 1
OPT_RR = 7
OPT_TS = 68
OPT_LSRR = 131
OPT_SSRR = 137
OPT_CIPSO = 134
OPT_RA = 148
OPT_COPIED = 0x80   # the type's copy flag: kept in every fragment
TS_ONLY = 0         # timestamp flags: times only
TS_ADDR = 1         # address and time pairs
TS_PRESPEC = 3      # prespecified addresses, each one's time


@dataclass(frozen=True, slots=True)
class Ipv4Options:
    """Where the options a host acts on start, as offsets from the start of
    the header (0: absent), like Linux's ``struct ip_options``."""

    rr: int = 0
    ts: int = 0
    srr: int = 0              # loose or strict source route
    strict_route: bool = False
    cipso: int = 0
    router_alert: bool = False


class OptionError(WireError):
    """A malformed option. ``pointer``: the bad byte's offset from the start
    of the header; ``partial``: the options read before it (an answer
    still carries those back, as Linux's does)."""

    def __init__(self, pointer: int, detail: str, partial: Ipv4Options) -> None:
        super().__init__("options", f"{detail} (byte {pointer})")
        self.pointer = pointer
        self.partial = partial


def parse_options(opts: bytes | memoryview) -> Ipv4Options:
    """Check the options of a received header (the bytes after the first 20).

    Unknown options (and security, stream id, an unknown timestamp flag) are
    skipped, as RFC 1122 3.2.1.8 asks; a CIPSO label is refused, as by a
    Linux that has no CIPSO domain configured. Raises :class:`OptionError`."""
    rr = ts = srr = cipso = 0
    strict = alert = False
    n = len(opts)
    i = 0

    def bad(at: int, detail: str) -> OptionError:
        return OptionError(IPV4_MIN_LEN + at, detail,
                           Ipv4Options(rr, ts, srr, strict, cipso, alert))

    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if n - i < 2:
            raise bad(i, f"option {kind} has no length byte")
        length = opts[i + 1]
        if length < 2 or length > n - i:
            raise bad(i, f"option {kind} length {length} with {n - i} bytes left")
        here = IPV4_MIN_LEN + i
        if kind in (OPT_LSRR, OPT_SSRR):
            if length < 3:
                raise bad(i + 1, f"source route length {length}")
            if opts[i + 2] < 4:
                raise bad(i + 2, f"source route pointer {opts[i + 2]}")
            if srr:
                raise bad(i, "a second source route")
            srr, strict = here, kind == OPT_SSRR
        elif kind == OPT_RR:
            if rr:
                raise bad(i, "a second record route")
            if length < 3:
                raise bad(i + 1, f"record route length {length}")
            ptr = opts[i + 2]
            if ptr < 4 or (ptr <= length and ptr + 3 > length):
                raise bad(i + 2, f"record route pointer {ptr} in {length} bytes")
            rr = here
        elif kind == OPT_TS:
            if ts:
                raise bad(i, "a second timestamp")
            if length < 4:
                raise bad(i + 1, f"timestamp length {length}")
            ptr, flag, overflow = opts[i + 2], opts[i + 3] & 0x0F, opts[i + 3] >> 4
            step = 8 if flag in (TS_ADDR, TS_PRESPEC) else 4
            if ptr < 5 or (ptr <= length and ptr + step - 1 > length):
                raise bad(i + 2, f"timestamp pointer {ptr} in {length} bytes")
            if ptr > length and flag != TS_PRESPEC and overflow == 15:
                raise bad(i + 3, "timestamp overflow count at 15")
            ts = here
        elif kind == OPT_RA:
            if length < 4:
                raise bad(i + 1, f"router alert length {length}")
            alert = opts[i + 2] == 0 and opts[i + 3] == 0
        elif kind == OPT_CIPSO:
            if cipso:
                raise bad(i, "a second CIPSO label")
            cipso = here
            raise bad(i + (1 if length < 8 else 2), "CIPSO label of no known domain")
        i += length
    return Ipv4Options(rr, ts, srr, strict, cipso, alert)


@dataclass(frozen=True, slots=True)
class RecordedOptions:
    """A received datagram's options once its destination has acted on them."""

    options: bytes       # as the destination leaves them (what an ICMP error quotes)
    reply: bytes | None  # what an answer carries (padded); None: no room, so no answer


def record_options(opts: bytes | memoryview, parsed: Ipv4Options, addr: int, ms: int,
                   ours: Callable[[int], bool]) -> RecordedOptions:
    """Act on the checked options ``opts`` (``parsed``) as their destination
    ``addr`` at ``ms`` (milliseconds since midnight UT): record ourselves in
    a record route and a timestamp option on arrival, then build the options
    of an answer with ourselves recorded once more. ``ours(a)``: is ``a``
    one of our addresses (or a broadcast), so a prespecified timestamp slot
    for it is ours to fill."""
    buf = bytearray(opts)
    end = _eol(buf)
    buf[end:] = bytes(len(buf) - end)  # after end-of-list, only end-of-list
    here = bytes((addr >> 24, (addr >> 16) & 0xFF, (addr >> 8) & 0xFF, addr & 0xFF))
    stamp = (ms & 0xFFFFFFFF).to_bytes(4, "big")
    rr_need = ts_need_addr = ts_need_time = False
    if parsed.rr:
        o = parsed.rr - IPV4_MIN_LEN
        ptr, length = buf[o + 2], buf[o + 1]
        if ptr <= length:
            buf[o + ptr - 1:o + ptr + 3] = here
            buf[o + 2] = ptr + 4
            rr_need = True
    if parsed.ts:
        o = parsed.ts - IPV4_MIN_LEN
        ptr, length, flag = buf[o + 2], buf[o + 1], buf[o + 3] & 0x0F
        if ptr <= length:
            if flag == TS_ONLY:
                buf[o + ptr - 1:o + ptr + 3] = stamp
                buf[o + 2] = ptr + 4
                ts_need_time = True
            elif flag == TS_ADDR:
                buf[o + ptr - 1:o + ptr + 7] = here + stamp
                buf[o + 2] = ptr + 8
                ts_need_addr = ts_need_time = True
            elif flag == TS_PRESPEC and ours(int.from_bytes(buf[o + ptr - 1:o + ptr + 3], "big")):
                buf[o + ptr + 3:o + ptr + 7] = stamp
                buf[o + 2] = ptr + 8
                ts_need_time = True
        elif flag != TS_PRESPEC:
            buf[o + 3] = flag | ((buf[o + 3] >> 4) + 1) << 4  # (parse refused 15)
    recorded = bytes(buf)
    return RecordedOptions(recorded, _reply(recorded, parsed, rr_need, ts_need_addr, ts_need_time,
                                            here, stamp, ours))


def _eol(buf: bytearray) -> int:
    """Where an end-of-list option ends the list (len(buf) if none)."""
    i = 0
    while i < len(buf):
        if buf[i] == OPT_EOL:
            return i + 1
        i += 1 if buf[i] == OPT_NOP else max(buf[i + 1], 2) if i + 1 < len(buf) else 1
    return len(buf)


def _reply(rec: bytes, parsed: Ipv4Options, rr_need: bool, ts_need_addr: bool,
           ts_need_time: bool, here: bytes, stamp: bytes,
           ours: Callable[[int], bool]) -> bytes | None:
    out = bytearray()
    if parsed.rr:
        o = parsed.rr - IPV4_MIN_LEN
        opt = bytearray(rec[o:o + rec[o + 1]])
        ptr, length = opt[2], opt[1]
        if rr_need and ptr <= length:
            if ptr + 3 > length:
                return None
            opt[ptr - 1:ptr + 3] = here
            opt[2] = ptr + 4
        out += opt
    if parsed.ts:
        o = parsed.ts - IPV4_MIN_LEN
        opt = bytearray(rec[o:o + rec[o + 1]])
        ptr, length = opt[2], opt[1]
        if ptr <= length:
            at_addr = at_time = 0
            if ts_need_addr:
                if ptr + 3 > length:
                    return None
                at_addr, ptr = ptr, ptr + 4
            if ts_need_time:
                if ptr + 3 > length:
                    return None
                if opt[3] & 0x0F != TS_PRESPEC:
                    at_time, ptr = ptr, ptr + 4
                elif ptr + 7 <= length and ours(int.from_bytes(opt[ptr - 1:ptr + 3], "big")):
                    at_time, ptr = ptr + 4, ptr + 8
            if at_addr:
                opt[at_addr - 1:at_addr + 3] = here
            if at_time:
                opt[at_time - 1:at_time + 3] = stamp
            opt[2] = ptr
        out += opt
    if parsed.cipso:
        o = parsed.cipso - IPV4_MIN_LEN
        out += rec[o:o + rec[o + 1]]
    out += bytes(-len(out) % 4)
    return bytes(out)


def fragment_options(opts: bytes) -> bytes:
    """The options of every fragment but the first: those without the copy
    flag (record route, timestamp) become no-operations (RFC 791 3.1, as
    Linux's ip_options_fragment)."""
    buf = bytearray(opts)
    i = 0
    while i < len(buf):
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(buf) or not 2 <= buf[i + 1] <= len(buf) - i:
            break
        length = buf[i + 1]
        if not kind & OPT_COPIED:
            buf[i:i + length] = bytes([OPT_NOP]) * length
        i += length
    return bytes(buf)
