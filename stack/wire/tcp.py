"""TCP header (RFC 9293 section 3.1) and its options.

```
 0                   1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|          Source Port          |       Destination Port        |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                        Sequence Number                        |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                    Acknowledgment Number                      |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|  Data |       |C|E|U|A|P|R|S|F|                               |
| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
|       |       |R|E|G|K|H|T|N|N|                               |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|           Checksum            |         Urgent Pointer        |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                           [Options]                           |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                             Data                              |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
```

The checksum covers the IPv4 pseudo-header (source, destination, zero,
protocol 6, TCP length) followed by the header and data.

Options understood: End (0), NOP (1), MSS (2, RFC 9293), Window Scale (3,
RFC 7323), SACK-Permitted (4) and SACK (5) (RFC 2018), Timestamps (8, RFC
7323). Other kinds are skipped by their length. A known kind with a wrong
length is ignored, as Linux does; a length of 0 or 1, or one running past the
header, is an error.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple, TypedDict

from stack.native import csum_partial
from stack.wire import WireError
from stack.wire.ipv4 import PROTO_TCP as PROTO_TCP  # (re-exported: TCP code finds it here)


FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40

OPT_END = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

_HDR = struct.Struct("!HHIIBBHHH")
_SEQ_ACK_WIN = struct.Struct("!HHIIBBH")
_MSS = struct.Struct("!BBH")
_TS = struct.Struct("!BBBBII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32X2 = struct.Struct("!II")
_TS_PREFIX = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10))
_SACK_HEAD = {n: bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * n)) for n in range(1, 5)}

# tcpdump's flag letters, in tcpdump's order.
_FLAG_CHARS = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."),
               (URG, "U"), (ECE, "E"), (CWR, "W"))
_FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"),
               (URG, "URG"), (ECE, "ECE"), (CWR, "CWR"))


# Both forms of every flag byte, made once (they are looked up per segment).
_STR = tuple("".join(c for bit, c in _FLAG_CHARS if f & bit) or "none" for f in range(256))
_NAMES = tuple(",".join(n for bit, n in _FLAG_NAMES if f & bit) or "none" for f in range(256))


def flags_str(flags: int) -> str:
    """tcpdump's compact form: ``S.`` for SYN+ACK, ``FP.`` for FIN+PSH+ACK."""
    return _STR[flags & 0xFF]


def flags_names(flags: int) -> str:
    """Readable form for trace causes: ``SYN,ACK``."""
    return _NAMES[flags & 0xFF]


class TcpSegment(NamedTuple):
    """One parsed TCP segment: header fields, options and payload.

    ``payload`` is a ``memoryview`` into the buffer given to :func:`parse_tcp`
    (no copy) or ``bytes``. ``timestamps`` is ``(tsval, tsecr)`` or None;
    ``sack`` a tuple of ``(left, right)`` edges.

    Immutable, as every repr in ``stack.wire``: a named tuple rather than a
    frozen dataclass because one is made for every segment received, and a
    frozen dataclass's ``__init__`` costs three times as much.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    mss: int | None = None
    wscale: int | None = None
    sack_perm: bool = False
    timestamps: tuple[int, int] | None = None
    sack: tuple[tuple[int, int], ...] = ()
    payload: bytes | memoryview = b""

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: data plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def options_list(self) -> list[str]:
        out = []
        if self.mss is not None:
            out.append(f"mss {self.mss}")
        if self.sack_perm:
            out.append("sackOK")
        if self.timestamps is not None:
            out.append(f"TS val {self.timestamps[0]} ecr {self.timestamps[1]}")
        if self.wscale is not None:
            out.append(f"wscale {self.wscale}")
        if self.sack:
            out.append("sack " + " ".join(f"{a}:{b}" for a, b in self.sack))
        return out

    def __str__(self) -> str:
        n = len(self.payload)
        seq = f"{self.seq}:{(self.seq + n) & 0xFFFFFFFF}" if n else f"{self.seq}"
        parts = [f"Flags [{flags_str(self.flags)}]", f"seq {seq}"]
        if self.flags & ACK:
            parts.append(f"ack {self.ack}")
        parts.append(f"win {self.window}")
        if self.flags & URG:
            parts.append(f"urg {self.urgent}")
        opts = self.options_list()
        if opts:
            parts.append(f"options [{','.join(opts)}]")
        parts.append(f"length {n}")
        return ", ".join(parts)

    def to_bytes(self, src_ip: int, dst_ip: int) -> bytes:
        return build_tcp(src_ip, dst_ip, self.src_port, self.dst_port, self.seq, self.ack,
                         self.flags, self.window, self.payload, urgent=self.urgent,
                         mss=self.mss, wscale=self.wscale, sack_perm=self.sack_perm,
                         timestamps=self.timestamps, sack=self.sack)


def pseudo_sum(src_ip: int, dst_ip: int, length: int) -> int:
    """Ones-complement partial sum of the IPv4 pseudo-header (not folded)."""
    return ((src_ip >> 16) + (src_ip & 0xFFFF) + (dst_ip >> 16) + (dst_ip & 0xFFFF)
            + PROTO_TCP + length)


class _Options(TypedDict, total=False):
    """The options :func:`_parse_options` found, named as TcpSegment's fields."""

    mss: int
    wscale: int
    sack_perm: bool
    timestamps: tuple[int, int]
    sack: tuple[tuple[int, int], ...]


def _parse_options(data: memoryview, start: int, end: int) -> _Options:
    opts: _Options = {}
    i = start
    while i < end:
        kind = data[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise WireError("options", f"kind {kind} has no length byte")
        length = data[i + 1]
        if length < 2:
            raise WireError("options", f"kind {kind} has length {length}")
        if i + length > end:
            raise WireError("options", f"kind {kind} length {length} runs past the header")
        if kind == OPT_MSS:
            if length == 4:
                opts["mss"] = _U16.unpack_from(data, i + 2)[0]
        elif kind == OPT_WSCALE:
            if length == 3:
                opts["wscale"] = data[i + 2]
        elif kind == OPT_SACK_PERM:
            if length == 2:
                opts["sack_perm"] = True
        elif kind == OPT_TIMESTAMP:
            if length == 10:
                opts["timestamps"] = _U32X2.unpack_from(data, i + 2)
        elif kind == OPT_SACK:
            if length >= 10 and (length - 2) % 8 == 0:
                opts["sack"] = tuple(_U32X2.unpack_from(data, j)
                                     for j in range(i + 2, i + length, 8))
        i += length
    return opts


def parse_tcp(src_ip: int, dst_ip: int, data: bytes | bytearray | memoryview) -> TcpSegment:
    """Check and parse one TCP segment carried from ``src_ip`` to ``dst_ip``.

    Integrity first (length, data offset, checksum), then fields. Raises
    :class:`WireError` naming ``length``, ``data_offset``, ``checksum`` or
    ``options``.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise WireError("length", f"{n} bytes, need at least {HEADER_LEN}")
    sport, dport, seq, ack, off, flags, window, _csum, urgent = _HDR.unpack_from(data, 0)
    hlen = (off >> 4) * 4
    if hlen < HEADER_LEN or hlen > n:
        raise WireError("data_offset", f"header length {hlen} with {n} bytes")
    if csum_partial(data, pseudo_sum(src_ip, dst_ip, n)) != 0xFFFF:
        raise WireError("checksum", "bad TCP checksum")
    mv = data if isinstance(data, memoryview) else memoryview(data)
    if hlen == 32 and mv[20:24] == _TS_PREFIX:
        # The common case once timestamps are on (RFC 7323 appendix A):
        # NOP, NOP, Timestamps and nothing else.
        return TcpSegment(sport, dport, seq, ack, flags, window, urgent,
                          timestamps=_U32X2.unpack_from(mv, 24), payload=mv[hlen:])
    if hlen > HEADER_LEN:
        opts = _parse_options(mv, HEADER_LEN, hlen)
        return TcpSegment(sport, dport, seq, ack, flags, window, urgent,
                          payload=mv[hlen:], **opts)
    return TcpSegment(sport, dport, seq, ack, flags, window, urgent, payload=mv[hlen:])


def syn_options_list(mss: int | None, wscale: int | None, sack_perm: bool,
                     ts: tuple[int, int] | None) -> list[str]:
    """The options of a SYN as trace text, in the order tcpdump prints them."""
    out = [f"mss {mss}"] if mss is not None else []
    if sack_perm:
        out.append("sackOK")
    if ts is not None:
        out.append(f"TS val {ts[0]} ecr {ts[1]}")
    if wscale is not None:
        out.append(f"wscale {wscale}")
    return out


def build_options(mss: int | None = None, wscale: int | None = None, sack_perm: bool = False,
                  timestamps: tuple[int, int] | None = None,
                  sack: tuple[tuple[int, int], ...] = ()) -> bytes:
    """Options in Linux's order, NOP-aligned to 32 bits."""
    out = bytearray()
    if mss is not None:
        out += _MSS.pack(OPT_MSS, 4, mss)
    if sack_perm and timestamps is not None:
        out += bytes((OPT_SACK_PERM, 2, OPT_TIMESTAMP, 10)) + _U32X2.pack(*timestamps)
    else:
        if sack_perm:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
        if timestamps is not None:
            out += _TS.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, *timestamps)
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack)))
        for left, right in sack:
            out += _U32X2.pack(left, right)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    if len(out) > MAX_OPTIONS_LEN:
        raise WireError("options", f"{len(out)} bytes of options, at most {MAX_OPTIONS_LEN}")
    return bytes(out)


def ts_option(tsval: int, tsecr: int) -> bytes:
    """NOP, NOP, Timestamps: the 12 option bytes of every segment once
    timestamps are on."""
    return _TS.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, tsval, tsecr)


def sack_option(blocks: Sequence[tuple[int, int]]) -> bytes:
    """NOP, NOP, SACK with 1 to 4 ``(left, right)`` blocks."""
    return _SACK_HEAD[len(blocks)] + b"".join(_U32X2.pack(a, b) for a, b in blocks)


def build_tcp(src_ip: int, dst_ip: int, src_port: int, dst_port: int, seq: int, ack: int,
              flags: int, window: int, payload: bytes | bytearray | memoryview = b"", *,
              urgent: int = 0, mss: int | None = None, wscale: int | None = None,
              sack_perm: bool = False, timestamps: tuple[int, int] | None = None,
              sack: tuple[tuple[int, int], ...] = (), options: bytes | None = None) -> bytes:
    """One TCP segment with its checksum filled in.

    ``options`` gives raw option bytes (a multiple of 4) instead of the
    keyword options; tests use it to build malformed headers.
    """
    if options is None:
        if mss is None and wscale is None and not sack_perm and timestamps is None and not sack:
            options = b""
        else:
            options = build_options(mss, wscale, sack_perm, timestamps, sack)
    hlen = HEADER_LEN + len(options)
    total = hlen + len(payload)
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    off = (hlen // 4) << 4
    # The pseudo-header's sum (pseudo_sum, inline: this runs for every segment).
    s = ((src_ip >> 16) + (src_ip & 0xFFFF) + (dst_ip >> 16) + (dst_ip & 0xFFFF)
         + PROTO_TCP + total)
    if payload:
        s = csum_partial(payload, s)
    # Odd-length headers cannot happen (a multiple of 4), so the payload's
    # word alignment is unchanged by summing it separately.
    csum = (~csum_partial(_HDR.pack(src_port, dst_port, seq, ack, off, flags, window, 0, urgent)
                          + options, s)) & 0xFFFF
    return b"".join((_HDR.pack(src_port, dst_port, seq, ack, off, flags, window, csum, urgent),
                     options, payload))
