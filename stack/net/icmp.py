"""ICMP (RFC 792, RFC 1122 3.2.2): echo, and the errors a host sends and hears.

Errors are rate limited as Linux limits them, per host (6 at once, one a
second: icmp_ratelimit) and in all (icmp_msgs_per_sec), and never sent about an ICMP error, a fragment other than the first, a
broadcast, or a packet from an address that is not a unicast host. Errors to
ourselves (over ``lo``) are not rate limited, as on Linux.

A packet of ours whose next hop never answered ARP is answered like Linux's
arp_error_report: a host unreachable from us to us, through ``lo``, which
then arrives like any ICMP error and reaches the TCP connection or UDP
socket that sent the packet (:meth:`IcmpLayer.neighbour_unreachable`).

IP options, as Linux: a malformed one is answered with a parameter problem
pointing at the bad byte (rate limited like every error); the answers to a
datagram (echo and timestamp replies, errors) carry its record route and
timestamp options back with us recorded on arrival and again on the way
out (RFC 1122 3.2.2.6, 3.2.1.8; :func:`stack.wire.ipv4.record_options`),
and an error quotes the header with its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stack.native import checksum
from stack.net.ipv4 import Ipv4Layer
from stack.trace import Trace
from stack.wire import WireError
from stack.wire.icmp_errors import classify
from stack.wire.icmp import (
    DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, TIMESTAMP, TIMESTAMP_REPLY, ERROR_TYPES, FRAG_NEEDED, HOST_UNREACHABLE,
    PARAMETER_PROBLEM, PORT_UNREACHABLE,
    PROTO_UNREACHABLE, REASSEMBLY_TIMEOUT, REDIRECT, SOURCE_QUENCH, TIME_EXCEEDED, IcmpMessage,
    build_icmp, icmp_name, parse_icmp,
)
from stack.wire.ipv4 import (
    IPV4_HEADER, IPV4_MIN_LEN, PROTO_ICMP, Ipv4Header, OptionError, RecordedOptions, int2ip,
    parse_options, record_options,
)

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}

# An error quoted back to a transport: (kind, our address, their address, quoted IP header +
# 8 bytes, the MTU of a "fragmentation needed", now); True when a socket of ours sent it.
ErrorHandler = Callable[[str, int, int, bytes, int, float], bool]
# An error about a probe (traceroute): (type, code, the error's sender, quoted, now).
ProbeWatcher = Callable[[int, int, int, bytes, float], None]


@dataclass
class IcmpConfig:
    error_rate: float = 1000.0   # errors per second, sustained
    error_burst: int = 50        # errors at once
    quote_limit: int = 576       # an error's whole datagram at most (RFC 1812 4.3.2.3, as Linux)
    peer_interval: float = 1.0   # seconds per error to one host, sustained (icmp_ratelimit; 0: none)
    peer_burst: int = 6          # errors to one host at once (Linux's XRLIM_BURST_FACTOR)
    max_peers: int = 1024        # hosts whose error budget is remembered; the oldest is forgotten


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
        # Per host the errors went to: (seconds of budget, when), as Linux's inet_peer.
        self.error_budgets: dict[int, tuple[float, float]] = {}
        self.error_handlers: dict[int, ErrorHandler] = {}   # by quoted protocol
        self.echo_waiters: dict[tuple[int, int], Callable[[int, bytes, float], None]] = {}
        # By (quoted protocol, our quoted port): errors about probes, before any socket hears them.
        self.probe_watchers: dict[tuple[int, int], ProbeWatcher] = {}
        self.error_handlers[PROTO_ICMP] = self._echo_error
        ip.handlers[PROTO_ICMP] = self.receive
        ip.on_unknown_protocol = self._protocol_unreachable
        ip.on_reassembly_timeout = self._reassembly_timeout
        ip.on_unresolved = self.neighbour_unreachable
        ip.on_bad_options = self._bad_options

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
            options = self._reply_options(h, now)
            if options is None:
                return
            try:
                self.ip.send(h.dst, h.src, PROTO_ICMP, reply, now, tos=h.tos, options=options)
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
        if self.probe_watchers:
            watcher = self.probe_watchers.get((proto, int.from_bytes(quoted[qhlen:qhlen + 2], "big")))
            if watcher is not None:
                watcher(m.type, m.code, h.src, quoted[:qhlen + 8], now)
                return
        row = classify(m.type, m.code)
        if row is None:  # (a destination unreachable code above 15: Linux ignores it)
            self.trace.drop("icmp", "unknown_code", type=m.type, code=m.code)
            return
        handler = self.error_handlers.get(proto)
        if handler is None:
            self.trace.drop("icmp", "error_for_unknown_protocol", proto=proto)
            return
        mtu = m.rest & 0xFFFF if row.kind == "frag_needed" else 0
        ours = handler(row.kind, qsrc, qdst, quoted[:qhlen + 8], mtu, now)
        if row.kind == "frag_needed":
            if ours:
                self.ip.learn_pmtu(qdst, mtu, now)
            else:
                self.trace.drop("icmp", "pmtu_not_ours", mtu=mtu, dst=int2ip(qdst))

    def _echo_error(self, kind: str, src: int, dst: int, quoted: bytes, mtu: int,
                    now: float) -> bool:
        """An error quoting an ICMP message: ours when it is an echo request
        we are waiting on the reply to (Linux's ping_err); none hears it."""
        hlen = (quoted[0] & 0x0F) * 4
        if quoted[hlen] != ECHO_REQUEST:
            self.trace.drop("icmp", "error_about_icmp", kind=kind)
            return False
        ident = int.from_bytes(quoted[hlen + 4:hlen + 6], "big")
        if (dst, ident) not in self.echo_waiters:
            self.trace.drop("icmp", "error_about_unknown_echo", kind=kind, id=ident)
            return False
        return True

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
        if not self.ip.is_local(h.src) and not self._take_token(now, h.src):
            self.trace.drop("icmp", "rate_limited", type=type_)
            return
        self._send_error(type_, code, h, payload, now, rest)

    def neighbour_unreachable(self, h: Ipv4Header, payload: bytes | memoryview,
                              now: float) -> None:
        """ARP gave up on the next hop of our packet (h, payload): a host
        unreachable to its sender, ourselves, over ``lo`` (Linux's
        arp_error_report → icmp_send). A SYN_SENT connection then fails
        with EHOSTUNREACH, a connected one keeps it as its soft error; a UDP
        socket is not told (a soft error, stack/wire/icmp_errors.py)."""
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
        data = bytes(m.data[:4]) + self._ms(now).to_bytes(4, "big") * 2
        options = self._reply_options(h, now)
        if options is None:
            return
        try:
            self.ip.send(h.dst, h.src, PROTO_ICMP,
                         build_icmp(IcmpMessage(TIMESTAMP_REPLY, 0, m.rest, data)), now, tos=h.tos,
                         options=options)
        except OSError as e:
            self.trace.drop("icmp", "reply_unroutable", detail=str(e))
            return
        self.trace.count("icmp", f"out.type{TIMESTAMP_REPLY}")
        if self.trace.on:
            self.trace.event("icmp", "out", dst=int2ip(h.src), type=TIMESTAMP_REPLY, code=0,
                             name="timestamp reply", id=m.ident, seq=m.seq)

    def _ms(self, now: float) -> int:
        """Milliseconds since midnight UT (RFC 792), or the high-order bit
        alone when the time of day is not known."""
        if self.utc_offset is None:
            return 0x80000000  # not in standard time
        return int(((now + self.utc_offset) % 86400) * 1000)

    def _recorded(self, h: Ipv4Header, now: float) -> RecordedOptions | None:
        """What the options of (received) ``h`` become at us, and in an answer."""
        if not h.options:
            return None
        try:
            parsed = parse_options(h.options)
        except OptionError as e:
            parsed = e.partial  # (a parameter problem: what came before the bad byte)
        ip = self.ip
        return record_options(h.options, parsed, h.dst if ip.is_local(h.dst) else ip.address,
                              self._ms(now), self._ours)

    def _ours(self, addr: int) -> bool:
        """Is ``addr`` one whose prespecified timestamp we fill (Linux: not
        RTN_UNICAST): ours, 127/8, a broadcast, 0/8 or multicast."""
        return (self.ip.is_local(addr) or self.ip.is_broadcast(addr) or addr >> 24 == 0
                or addr >> 28 == 0xE)

    def _reply_options(self, h: Ipv4Header, now: float) -> bytes | None:
        """The options an answer to ``h`` carries (RFC 1122 3.2.2.6: a
        record route and a timestamp come back with us recorded, as
        Linux's ip_options_echo); None when they leave no room, and then,
        as on Linux, nothing answers."""
        rec = self._recorded(h, now)
        if rec is None:
            return b""
        if rec.reply is None:
            self.trace.drop("icmp", "options_full", src=int2ip(h.src))
        return rec.reply

    def _bad_options(self, h: Ipv4Header, payload: memoryview, pointer: int, now: float) -> None:
        """A malformed option: a parameter problem pointing at its bad byte
        (RFC 792, RFC 1122 3.2.2.5, as Linux's ip_options_compile)."""
        self.send_error(PARAMETER_PROBLEM, 0, h, payload, now, rest=pointer << 24)

    def _send_error(self, type_: int, code: int, h: Ipv4Header, payload: bytes | memoryview,
                    now: float, rest: int = 0, cause: str | None = None) -> None:
        # Quote the original header, its options as we left them, and as much
        # of its payload as fits in a 576-byte error (RFC 1812 4.3.2.3; RFC
        # 792's minimum is 8 bytes; Linux quotes this much). The error
        # carries the datagram's record route and timestamp back, as Linux's.
        rec = self._recorded(h, now)
        options = b"" if rec is None else rec.reply
        if options is None:
            self.trace.drop("icmp", "options_full", src=int2ip(h.src))
            return
        qopts = b"" if rec is None else rec.options
        orig = IPV4_HEADER.pack(0x45 + len(qopts) // 4, h.tos, h.total_length, h.ident,
                                (0x4000 if h.df else 0) | (h.frag_offset >> 3) | (0x2000 if h.mf else 0),
                                h.ttl, h.proto, 0, h.src, h.dst) + qopts
        c = checksum(orig)
        orig = orig[:10] + bytes((c >> 8, c & 0xFF)) + orig[12:]
        room = self.config.quote_limit - IPV4_MIN_LEN - len(options) - 8 - len(orig)
        quoted = bytes(payload[:max(8, room)])
        msg = build_icmp(IcmpMessage(type_, code, rest, orig + quoted))
        # From the address the packet was sent to when it was ours (127.0.0.1
        # answers for itself over lo), as Linux's icmp_send.
        src = h.dst if self.ip.is_local(h.dst) else self.ip.address
        try:
            self.ip.send(src, h.src, PROTO_ICMP, msg, now, options=options)
        except OSError:
            return
        self.trace.count("icmp", f"out.type{type_}")
        if self.trace.on:
            self.trace.event("icmp", "error_out", dst=int2ip(h.src), type=type_, code=code,
                             name=icmp_name(type_, code), quote=describe_quote(orig + bytes(payload[:8])),
                             **({"mtu": rest & 0xFFFF} if code == FRAG_NEEDED
                                and type_ == DEST_UNREACHABLE else {}),
                             **({"pointer": rest >> 24} if type_ == PARAMETER_PROBLEM else {}),
                             **({"cause": cause} if cause else {}))

    def port_unreachable(self, h: Ipv4Header, payload: bytes | memoryview, now: float) -> None:
        self.send_error(DEST_UNREACHABLE, PORT_UNREACHABLE, h, payload, now)

    def _protocol_unreachable(self, h: Ipv4Header, payload: memoryview, now: float) -> None:
        self.send_error(DEST_UNREACHABLE, PROTO_UNREACHABLE, h, payload, now)

    def _reassembly_timeout(self, first: Ipv4Header, head: bytes, now: float) -> None:
        self.send_error(TIME_EXCEEDED, REASSEMBLY_TIMEOUT, first, head, now)

    def _take_token(self, now: float, peer: int) -> bool:
        """May an error go to ``peer`` now? Linux's two limits: every host
        has ``peer_burst`` errors at once and one per ``peer_interval``
        (icmp_ratelimit, per inet_peer), and all hosts together
        ``error_burst`` at once and ``error_rate`` a second
        (icmp_msgs_per_sec); a host's budget is spent only when the
        global one has room, the global one only when the host's allows."""
        cfg = self.config
        self._tokens = min(cfg.error_burst, self._tokens + (now - self._tokens_at) * cfg.error_rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        if cfg.peer_interval > 0:
            full = cfg.peer_burst * cfg.peer_interval
            budget, at = self.error_budgets.pop(peer, (full, now))
            budget = min(full, budget + (now - at))
            allowed = budget >= cfg.peer_interval
            if allowed:
                budget -= cfg.peer_interval
            if len(self.error_budgets) >= cfg.max_peers:
                del self.error_budgets[next(iter(self.error_budgets))]  # the one longest unheard of
            self.error_budgets[peer] = (budget, now)
            if not allowed:
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
