"""ICMP (RFC 792, RFC 1122 3.2.2): echo, and the errors a host sends and hears.

Errors are rate limited by a token bucket (like Linux's icmp_msgs_per_sec)
and never sent about an ICMP error, a fragment other than the first, a
broadcast, or a packet from an address that is not a unicast host. Errors to
ourselves (over ``lo``) are not rate limited, as on Linux.

A packet of ours whose next hop never answered ARP is answered like Linux's
arp_error_report: a host unreachable from us to us, through ``lo``, which
then arrives like any ICMP error and reaches the TCP connection or UDP
socket that sent the packet (:meth:`IcmpLayer.neighbour_unreachable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stack.native import checksum
from stack.net.ipv4 import Ipv4Layer
from stack.trace import Trace
from stack.wire import WireError
from stack.wire.icmp import (
    DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, TIMESTAMP, TIMESTAMP_REPLY, ERROR_TYPES, FRAG_NEEDED, HOST_UNREACHABLE,
    PORT_UNREACHABLE,
    PROTO_UNREACHABLE, REASSEMBLY_TIMEOUT, REDIRECT, SOURCE_QUENCH, TIME_EXCEEDED, IcmpMessage,
    build_icmp, icmp_name, parse_icmp,
)
from stack.wire.ipv4 import IPV4_HEADER, PROTO_ICMP, Ipv4Header, int2ip

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}

# An error quoted back to a transport: (kind, our address, their address, quoted IP header + 8 bytes, extra)
ErrorHandler = Callable[[str, int, int, bytes, int, float], None]


@dataclass
class IcmpConfig:
    error_rate: float = 1000.0   # errors per second, sustained
    error_burst: int = 50        # errors at once
    quote_limit: int = 576       # an error's whole datagram at most (RFC 1812 4.3.2.3, as Linux)


class IcmpLayer:
    def __init__(self, ip: Ipv4Layer, trace: Trace, config: IcmpConfig | None = None,
                 utc_offset: float | None = None) -> None:
        """``utc_offset``: seconds from the ``now`` the layer is given to UTC
        (time since the epoch), for timestamp replies; None: not known, and
        the reply says so (RFC 792: the high-order bit set)."""
        self.ip = ip
        self.utc_offset = utc_offset
        self.trace = trace
        self.config = config or IcmpConfig()
        self._tokens = float(self.config.error_burst)
        self._tokens_at = 0.0
        self.error_handlers: dict[int, ErrorHandler] = {}   # by quoted protocol
        self.echo_waiters: dict[tuple[int, int], Callable[[int, bytes, float], None]] = {}
        ip.handlers[PROTO_ICMP] = self.receive
        ip.on_unknown_protocol = self._protocol_unreachable
        ip.on_reassembly_timeout = self._reassembly_timeout
        ip.on_unresolved = self.neighbour_unreachable

    # -- receiving ---------------------------------------------------------

    def receive(self, h: Ipv4Header, payload: memoryview, now: float) -> None:
        try:
            m = parse_icmp(payload)
        except WireError as e:
            self.trace.drop("icmp", "malformed", field=e.field, detail=str(e))
            return
        self.trace.count("icmp", f"in.type{m.type}")
        if self.trace.on:
            extra: dict[str, object]
            if m.type in (ECHO_REQUEST, ECHO_REPLY):
                extra = {"id": m.ident, "seq": m.seq, "length": len(m.data)}
            elif m.type in ERROR_TYPES:
                extra = {"quote": describe_quote(m.data)}
                if m.type == DEST_UNREACHABLE and m.code == FRAG_NEEDED:
                    extra["mtu"] = m.rest & 0xFFFF
            else:
                extra = {}
            self.trace.event("icmp", "in", src=int2ip(h.src), type=m.type, code=m.code,
                             name=icmp_name(m.type, m.code), **extra)
        if m.type == ECHO_REQUEST:
            if self.ip.is_broadcast(h.dst):
                self.trace.drop("icmp", "broadcast_echo")
                return
            reply = build_icmp(IcmpMessage(ECHO_REPLY, 0, m.rest, m.data))
            try:
                self.ip.send(h.dst, h.src, PROTO_ICMP, reply, now, tos=h.tos)
            except OSError as e:
                self.trace.drop("icmp", "reply_unroutable", detail=str(e))
                return
            self.trace.count("icmp", "out.type0")
            if self.trace.on:
                self.trace.event("icmp", "out", dst=int2ip(h.src), type=ECHO_REPLY, code=0,
                                 name="echo reply", id=m.ident, seq=m.seq, length=len(m.data))
        elif m.type == TIMESTAMP:
            self._timestamp_reply(h, m, now)
        elif m.type == ECHO_REPLY:
            waiter = self.echo_waiters.get((h.src, m.ident))
            if waiter is None:
                self.trace.drop("icmp", "unexpected_echo_reply", id=m.ident, seq=m.seq)
                return
            waiter(m.seq, bytes(m.data), now)
        elif m.type in (SOURCE_QUENCH, REDIRECT):
            # Source quench is obsolete (RFC 6633); a redirect changes a route,
            # never a socket's fate. Neither is an error a transport hears.
            self.trace.drop("icmp", "ignored_type", type=m.type)
        elif m.type in ERROR_TYPES:
            self._deliver_error(h, m, now)
        else:
            self.trace.drop("icmp", "unsupported_type", type=m.type)

    def _deliver_error(self, h: Ipv4Header, m: IcmpMessage, now: float) -> None:
        quoted = bytes(m.data)
        if len(quoted) < 28:
            self.trace.drop("icmp", "short_quote", type=m.type)
            return
        vihl, _tos, _tl, _id, _frag, _ttl, proto, _cs, qsrc, qdst = IPV4_HEADER.unpack_from(quoted)
        qhlen = (vihl & 0x0F) * 4
        if (vihl >> 4 != 4 or qhlen < 20 or len(quoted) < qhlen + 8
                or not self.ip.is_local(qsrc)):
            self.trace.drop("icmp", "bad_quote", type=m.type)
            return
        kind = _error_kind(m.type, m.code)
        handler = self.error_handlers.get(proto)
        if handler is None:
            self.trace.drop("icmp", "error_for_unknown_protocol", proto=proto)
            return
        mtu = m.rest & 0xFFFF if kind == "frag_needed" else 0
        handler(kind, qsrc, qdst, quoted[:qhlen + 8], mtu, now)

    # -- errors we send -------------------------------------------------------

    def send_error(self, type_: int, code: int, h: Ipv4Header, payload: bytes | memoryview,
                   now: float, rest: int = 0) -> None:
        """Send an ICMP error about the packet (h, payload), if a host may."""
        if self.ip.rx_link_broadcast or not self._may_answer(h, payload):
            return
        if self.ip.is_broadcast(h.dst) or h.src == 0 or (h.src >> 28) >= 0xE:
            return
        if self.ip.is_broadcast(h.src):
            return
        # (A 127/8 source arrives only over lo: the wire's are martians.)
        if not self.ip.is_local(h.src) and not self._take_token(now):
            self.trace.drop("icmp", "rate_limited", type=type_)
            return
        self._send_error(type_, code, h, payload, now, rest)

    def neighbour_unreachable(self, h: Ipv4Header, payload: bytes | memoryview,
                              now: float) -> None:
        """ARP gave up on the next hop of our packet (h, payload): a host
        unreachable to its sender, ourselves, over ``lo`` (Linux's
        arp_error_report → icmp_send). A SYN_SENT connection then fails
        with EHOSTUNREACH, a connected one keeps it as its soft error, a
        connected UDP socket reports it on its next call."""
        self.trace.count("icmp", "neighbour_unreachable")
        if self._may_answer(h, payload) and self.ip.is_local(h.src):
            self._send_error(DEST_UNREACHABLE, HOST_UNREACHABLE, h, payload, now,
                             cause="arp failed")

    @staticmethod
    def _may_answer(h: Ipv4Header, payload: bytes | memoryview) -> bool:
        """Not about an ICMP error, nor about a fragment but the first (RFC 1122 3.2.2)."""
        if h.proto == PROTO_ICMP and len(payload) >= 1 and payload[0] in ERROR_TYPES:
            return False
        return not h.frag_offset

    def _timestamp_reply(self, h: Ipv4Header, m: IcmpMessage, now: float) -> None:
        """RFC 792: the originate timestamp back, with our receive and transmit
        times in milliseconds since midnight UT (as Linux answers)."""
        if len(m.data) < 12 or self.ip.is_broadcast(h.dst):
            self.trace.drop("icmp", "bad_timestamp" if len(m.data) < 12 else "broadcast_timestamp")
            return
        if self.utc_offset is None:
            ms = 0x80000000  # not in standard time
        else:
            ms = int(((now + self.utc_offset) % 86400) * 1000)
        data = bytes(m.data[:4]) + ms.to_bytes(4, "big") * 2
        try:
            self.ip.send(h.dst, h.src, PROTO_ICMP,
                         build_icmp(IcmpMessage(TIMESTAMP_REPLY, 0, m.rest, data)), now, tos=h.tos)
        except OSError as e:
            self.trace.drop("icmp", "reply_unroutable", detail=str(e))
            return
        self.trace.count("icmp", f"out.type{TIMESTAMP_REPLY}")
        if self.trace.on:
            self.trace.event("icmp", "out", dst=int2ip(h.src), type=TIMESTAMP_REPLY, code=0,
                             name="timestamp reply", id=m.ident, seq=m.seq)

    def _send_error(self, type_: int, code: int, h: Ipv4Header, payload: bytes | memoryview,
                    now: float, rest: int = 0, cause: str | None = None) -> None:
        # Quote the original header (without options) and as much of its
        # payload as fits in a 576-byte error (RFC 1812 4.3.2.3; RFC 792's
        # minimum is 8 bytes; Linux quotes this much).
        orig = IPV4_HEADER.pack(0x45, h.tos, h.total_length - h.header_length + 20, h.ident,
                                (0x4000 if h.df else 0) | (h.frag_offset >> 3) | (0x2000 if h.mf else 0),
                                h.ttl, h.proto, 0, h.src, h.dst)
        c = checksum(orig)
        orig = orig[:10] + bytes((c >> 8, c & 0xFF)) + orig[12:]
        quoted = bytes(payload[:max(8, self.config.quote_limit - 20 - 8 - 20)])
        msg = build_icmp(IcmpMessage(type_, code, rest, orig + quoted))
        # From the address the packet was sent to when it was ours (127.0.0.1
        # answers for itself over lo), as Linux's icmp_send.
        src = h.dst if self.ip.is_local(h.dst) else self.ip.address
        try:
            self.ip.send(src, h.src, PROTO_ICMP, msg, now)
        except OSError:
            return
        self.trace.count("icmp", f"out.type{type_}")
        if self.trace.on:
            self.trace.event("icmp", "error_out", dst=int2ip(h.src), type=type_, code=code,
                             name=icmp_name(type_, code), quote=describe_quote(orig + bytes(payload[:8])),
                             **({"mtu": rest & 0xFFFF} if code == FRAG_NEEDED
                                and type_ == DEST_UNREACHABLE else {}),
                             **({"cause": cause} if cause else {}))

    def port_unreachable(self, h: Ipv4Header, payload: bytes | memoryview, now: float) -> None:
        self.send_error(DEST_UNREACHABLE, PORT_UNREACHABLE, h, payload, now)

    def _protocol_unreachable(self, h: Ipv4Header, payload: memoryview, now: float) -> None:
        self.send_error(DEST_UNREACHABLE, PROTO_UNREACHABLE, h, payload, now)

    def _reassembly_timeout(self, first: Ipv4Header, head: bytes, now: float) -> None:
        self.send_error(TIME_EXCEEDED, REASSEMBLY_TIMEOUT, first, head, now)

    def _take_token(self, now: float) -> bool:
        cfg = self.config
        self._tokens = min(cfg.error_burst, self._tokens + (now - self._tokens_at) * cfg.error_rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    # -- echo from the API ---------------------------------------------------

    def send_echo(self, dst: int, ident: int, seq: int, data: bytes, now: float,
                  df: bool = False) -> None:
        msg = build_icmp(IcmpMessage(ECHO_REQUEST, 0, (ident << 16) | seq, data))
        self.ip.send(self.ip.source_for(dst), dst, PROTO_ICMP, msg, now, df=df)
        self.trace.count("icmp", "out.type8")
        if self.trace.on:
            self.trace.event("icmp", "out", dst=int2ip(dst), type=ECHO_REQUEST, code=0,
                             name="echo request", id=ident, seq=seq, length=len(data))


def _error_kind(type_: int, code: int) -> str:
    if type_ == DEST_UNREACHABLE:
        return {PORT_UNREACHABLE: "port_unreachable", PROTO_UNREACHABLE: "protocol_unreachable",
                FRAG_NEEDED: "frag_needed"}.get(code, "host_unreachable")
    if type_ == TIME_EXCEEDED:
        return "time_exceeded"
    return "parameter_problem"


def describe_quote(quoted: bytes | memoryview) -> dict[str, object]:
    """What an ICMP error quotes, as trace data: the quoted datagram's protocol,
    ends (``ADDR:PORT`` for UDP and TCP), IP id and total length, and a TCP
    segment's sequence number. Fields the quote is too short for are left out."""
    q = bytes(quoted)
    if len(q) < 20 or q[0] >> 4 != 4:
        return {"length": len(q)}
    _vihl, _tos, total, ident, _frag, _ttl, proto, _cs, src, dst = IPV4_HEADER.unpack_from(q)
    hlen = (q[0] & 0x0F) * 4
    out: dict[str, object] = {"proto": _PROTO_NAMES.get(proto, str(proto)), "id": ident,
                              "total_length": total}
    body = q[hlen:]
    if proto in (6, 17) and len(body) >= 4:
        out["src"] = f"{int2ip(src)}:{int.from_bytes(body[0:2], 'big')}"
        out["dst"] = f"{int2ip(dst)}:{int.from_bytes(body[2:4], 'big')}"
        if proto == 6 and len(body) >= 8:
            out["seq"] = int.from_bytes(body[4:8], "big")
    else:
        out["src"], out["dst"] = int2ip(src), int2ip(dst)
    return out
