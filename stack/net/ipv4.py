"""IPv4 (RFC 791, RFC 1122): validation, routing, fragmentation, reassembly.

Incoming: every header check happens in :func:`stack.wire.ipv4.parse_ipv4`;
here we decide whether the packet is for us, reassemble fragments and hand
the payload to the protocol registered for it. Outgoing: packets to one of
our own addresses (127.0.0.0/8 and the stack's address, Linux's ``local``
table) go through the loopback interface (:mod:`stack.net.loopback`) and
never reach Ethernet; the rest choose the next hop (on-link or the
gateway), are fragmented to the link MTU unless DF, and go to Ethernet/ARP.
A packet whose next hop never answers ARP comes back from ARP and is
reported to its sender with a local ICMP host unreachable
(``on_unresolved``, set by the ICMP layer).
"""

from __future__ import annotations

import errno
from typing import Callable

from stack.net.arp import EthernetArp
from stack.net.loopback import Loopback
from stack.net.pmtu import PmtuCache
from stack.net.reassembly import FragmentReassembler, ReassemblyConfig
from stack.trace import Trace
from stack.wire import WireError
from stack.wire.ipv4 import (
    FLAG_DF, FLAG_MF, IPV4_HEADER, IPV4_MIN_LEN, Ipv4Header, OptionError, fragment_options,
    int2ip, parse_ipv4, parse_options,
)
from stack.native import checksum

LOOPBACK = 0x7F000001  # 127.0.0.1, lo's address

# handler(header, payload, now)
Handler = Callable[[Ipv4Header, memoryview, float], None]


class Ipv4Layer:
    def __init__(self, eth: EthernetArp, address: int, prefix_len: int, gateway: int | None,
                 mtu: int, trace: Trace, reassembly: ReassemblyConfig | None = None,
                 ident_seed: int = 0) -> None:
        self.eth = eth
        self.configure(address, prefix_len, gateway)
        self.mtu = mtu
        self.trace = trace
        self.handlers: dict[int, Handler] = {}
        self.reassembler = FragmentReassembler(trace, reassembly)
        self._ident = ident_seed & 0xFFFF
        self.default_ttl = 64
        # With TSO on the link, TCP may hand down segments up to this size
        # unfragmented; the link cuts them to the MTU.
        self.tcp_gso_max = mtu
        self.rx_link_broadcast = False  # set per packet by receive()
        # Set by the ICMP layer: called for packets we must answer with an error.
        self.on_unknown_protocol: Callable[[Ipv4Header, memoryview, float], None] | None = None
        self.on_reassembly_timeout: Callable[[Ipv4Header, bytes, float], None] | None = None
        # Called for a packet for us whose options are malformed (the bad byte's offset).
        self.on_bad_options: Callable[[Ipv4Header, memoryview, int, float], None] | None = None
        # Called for each of our packets ARP gave up on (its next hop never answered).
        self.on_unresolved: Callable[[Ipv4Header, memoryview, float], None] | None = None
        eth.on_unresolved = self._unresolved
        # Packets to ourselves; the runtime loop delivers them (deliver_local).
        self.lo = Loopback(trace, self._receive_lo)
        # While the address is 0.0.0.0 (a DHCP client waiting for a lease):
        # which unicast packets to other addresses are ours all the same
        # (the replies a server sends to the address it offers).
        self.accept_unconfigured: Callable[[Ipv4Header, memoryview], bool] | None = None
        # Path MTUs learnt from "fragmentation needed" (learn_pmtu), per destination.
        self.pmtu = PmtuCache(trace)

    def configure(self, address: int, prefix_len: int, gateway: int | None) -> None:
        """Our address, subnet and default gateway (at start, and when DHCP
        binds or gives a lease up: 0.0.0.0/32 is no address)."""
        self.address = address
        self.prefix_len = prefix_len
        self.netmask = (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF if prefix_len else 0
        self.network = address & self.netmask
        self.broadcast = self.network | (~self.netmask & 0xFFFFFFFF)
        self.gateway = gateway
        self.eth.set_address(address)

    @property
    def local(self) -> bool:
        """Are packets to ourselves waiting on ``lo``?"""
        return bool(self.lo.queue)

    # -- routing -------------------------------------------------------------

    def on_link(self, dst: int) -> bool:
        return (dst & self.netmask) == self.network

    def next_hop(self, dst: int) -> int:
        """The neighbour a packet to ``dst`` goes to (``dst`` itself for our
        own addresses, which ``lo`` delivers); OSError(ENETUNREACH) if none."""
        if self.on_link(dst) or dst == 0xFFFFFFFF or (dst >> 24) == 127:
            return dst
        if self.gateway is None:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return self.gateway

    def check_route(self, src: int, dst: int) -> None:
        """Raise what Linux's connect() raises when ``src`` (0: the stack
        picks, :meth:`source_for`) cannot reach ``dst``: ENETUNREACH with no
        route, EINVAL from a 127/8 source to a non-local address (lo's
        addresses never leave lo), EADDRNOTAVAIL for a source not ours."""
        if src and not self.is_local(src) and not self.is_broadcast(src):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if self.is_local(dst):
            return
        if (src >> 24) == 127:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.next_hop(dst)

    def is_local(self, addr: int) -> bool:
        """Is ``addr`` one of this host's own addresses (what bind() accepts)?
        Ours, and all of 127.0.0.0/8, as Linux's ``local`` table has it."""
        return addr == self.address or (addr >> 24) == 127

    def source_for(self, dst: int) -> int:
        """The source address a packet to ``dst`` carries when the socket
        chose none: 127.0.0.1 towards 127.0.0.0/8 (``lo``'s address, as
        Linux picks), our address otherwise (also to ourselves)."""
        return LOOPBACK if (dst >> 24) == 127 else self.address

    def route_mss(self, dst: int) -> int | None:
        """The MSS TCP offers on the route to ``dst`` when it is not the
        link's: ``lo``'s (its MTU, capped at the largest IPv4 packet, less
        40), so TCP to ourselves moves 64 KB segments as Linux does."""
        if self.is_local(dst):
            return min(self.lo.mtu, 65535) - 40
        mtu = self.pmtu.get(dst)
        return mtu - 40 if mtu is not None else None

    def path_mtu(self, dst: int) -> int:
        """The MTU of the path to ``dst``: a learnt one, else the link's."""
        return self.pmtu.get(dst) or self.mtu

    def learn_pmtu(self, dst: int, mtu: int, now: float) -> int | None:
        """A "fragmentation needed" with ``mtu`` about a datagram one of our
        sockets sent to ``dst`` (:class:`stack.net.pmtu.PmtuCache`)."""
        return self.pmtu.learn(dst, mtu, self.mtu, now)

    def has_route(self, dst: int) -> bool:
        """Could a packet to ``dst`` leave (ourselves, on-link, or a gateway
        to send it to)?"""
        return (self.gateway is not None or (dst & self.netmask) == self.network
                or dst == 0xFFFFFFFF or self.is_local(dst))

    def is_broadcast(self, dst: int) -> bool:
        return dst == 0xFFFFFFFF or (dst == self.broadcast and self.prefix_len < 31)

    # -- sending -------------------------------------------------------------

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def send(self, src: int, dst: int, proto: int, payload: bytes | memoryview, now: float,
             df: bool = False, ttl: int | None = None, tos: int = 0, options: bytes = b"") -> None:
        """Send one datagram: through ``lo`` to one of our own addresses,
        otherwise fragmented to the link's MTU. Raises OSError (ENETUNREACH,
        EMSGSIZE; EINVAL for a 127/8 source to elsewhere, as Linux) for what
        a caller must hear about. ``options``: IP options (a multiple of 4
        bytes, at most 40), in every fragment but without those that are not
        copied after the first."""
        if options:
            self._send_with_options(src, dst, proto, payload, now, df, ttl, tos, options)
            return
        total = IPV4_MIN_LEN + len(payload)
        if total > 65535:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if dst == self.address or (dst >> 24) == 127:  # is_local, inline
            self._send_lo(src, dst, proto, payload, ttl, tos)
            return
        if (src >> 24) == 127:
            # A loopback source never leaves lo (Linux refuses the route).
            self.trace.drop("ip", "loopback_source_out", src=int2ip(src), dst=int2ip(dst))
            raise OSError(errno.EINVAL, "Invalid argument")
        hop = self.next_hop(dst)
        broadcast = self.is_broadcast(dst)
        ident = self.next_ident()
        ttl = self.default_ttl if ttl is None else ttl
        src = src or self.address
        mtu = self.mtu
        if self.pmtu.entries and proto != 6:  # (TCP sizes its segments by the path's MSS itself)
            mtu = self.pmtu.get(dst) or mtu
        if total <= mtu or (proto == 6 and total <= self.tcp_gso_max):
            self.trace.counters["ip.packets_out"] += 1  # (per packet: no key formatting)
            self.eth.send_ipv4(hop, _header(total, ident, FLAG_DF if df else 0, ttl, proto, src,
                                            dst, tos) + payload, now, broadcast)
            return
        if df:
            raise OSError(errno.EMSGSIZE, "Message too long")
        # Fragment: every piece but the last carries a multiple of 8 bytes.
        step = (mtu - IPV4_MIN_LEN) & ~7
        mv = memoryview(payload)
        count = 0
        for off in range(0, len(mv), step):
            piece = mv[off:off + step]
            more = FLAG_MF if off + step < len(mv) else 0
            self.eth.send_ipv4(hop, _header(IPV4_MIN_LEN + len(piece), ident, more | (off >> 3), ttl,
                                            proto, src, dst, tos) + piece, now, broadcast)
            count += 1
        self.trace.count("ip", "packets_out", count)
        self.trace.count("ip", "fragmented")
        if self.trace.on:
            self.trace.event("ip", "fragmented", dst=int2ip(dst), id=ident, length=len(mv),
                             fragments=count, offsets=list(range(0, len(mv), step)), mtu=mtu)

    def _send_with_options(self, src: int, dst: int, proto: int, payload: bytes | memoryview,
                           now: float, df: bool, ttl: int | None, tos: int, options: bytes) -> None:
        """:meth:`send`'s rarely taken way: a header longer than 20 bytes."""
        hlen = IPV4_MIN_LEN + len(options)
        if hlen + len(payload) > 65535:
            raise OSError(errno.EMSGSIZE, "Message too long")
        ident = self.next_ident()
        ttl = self.default_ttl if ttl is None else ttl
        if self.is_local(dst):
            src = src or self.source_for(dst)
            self.trace.counters["ip.packets_out"] += 1
            self.lo.send(_header(hlen + len(payload), ident, 0, ttl, proto, src, dst, tos, options)
                         + payload)
            return
        if (src >> 24) == 127:
            self.trace.drop("ip", "loopback_source_out", src=int2ip(src), dst=int2ip(dst))
            raise OSError(errno.EINVAL, "Invalid argument")
        hop = self.next_hop(dst)
        broadcast = self.is_broadcast(dst)
        src = src or self.address
        mtu = self.path_mtu(dst) if proto != 6 else self.mtu
        if hlen + len(payload) > mtu and df:
            raise OSError(errno.EMSGSIZE, "Message too long")
        step = (mtu - hlen) & ~7
        mv = memoryview(payload)
        later = fragment_options(options)
        count = 0
        for off in range(0, max(len(mv), 1), step):
            piece = mv[off:off + step]
            flags = (FLAG_MF if off + step < len(mv) else 0) | (FLAG_DF if df else 0)
            self.eth.send_ipv4(hop, _header(hlen + len(piece), ident, flags | (off >> 3), ttl, proto,
                                            src, dst, tos, later if off else options) + piece,
                               now, broadcast)
            count += 1
        self.trace.count("ip", "packets_out", count)
        if count > 1:
            self.trace.count("ip", "fragmented")

    def _send_lo(self, src: int, dst: int, proto: int, payload: bytes | memoryview,
                 ttl: int | None, tos: int) -> None:
        """One packet to ourselves: whole (``lo``'s MTU takes any IPv4 packet)."""
        ident = self.next_ident()
        total = IPV4_MIN_LEN + len(payload)
        self.trace.counters["ip.packets_out"] += 1
        self.lo.send(_header(total, ident, 0, self.default_ttl if ttl is None else ttl, proto,
                             src or self.source_for(dst), dst, tos) + payload)

    def _unresolved(self, packet: bytes, now: float) -> None:
        """ARP gave up on ``packet``'s next hop: its sender hears of it."""
        if self.on_unresolved is None:
            return
        try:
            h, payload = parse_ipv4(packet)
        except WireError:  # (we built it: cannot happen)
            return
        self.on_unresolved(h, payload, now)

    # -- receiving -------------------------------------------------------------

    def receive(self, data: memoryview, now: float, local: bool = False,
                link_broadcast: bool = False) -> None:
        """Handle one packet from the link, or (``local``) one from ``lo``.

        ``link_broadcast``: the frame was sent to the Ethernet broadcast address,
        so no ICMP error may answer it (RFC 1122 3.2.2)."""
        self.rx_link_broadcast = link_broadcast
        try:
            h, payload = parse_ipv4(data)
        except WireError as e:
            self.trace.drop("ip", "malformed", field=e.field, detail=str(e))
            return
        dst = h.dst
        if ((dst != self.address or not dst) and not self.is_broadcast(dst)
                and not self._unconfigured_accepts(h, payload)):
            if (dst >> 24) != 127:
                self.trace.drop("ip", "not_for_us", dst=int2ip(dst))
                return
            if not local:  # 127/8 exists only on lo (Linux: a martian destination)
                self.trace.drop("ip", "martian_destination", dst=int2ip(dst))
                return
        src = h.src
        if not local and (src == self.address or (src >> 24) == 127 or (src >> 28) == 0xE
                          or src == 0xFFFFFFFF
                          or (src == self.broadcast and self.prefix_len < 31)  # is_broadcast
                          or (src == 0 and not self.is_broadcast(dst))):
            # Our own address from the wire is spoofed (a LAND attack when dst
            # is us too), 127/8 exists only on lo; nothing may answer a
            # broadcast source (a smurf amplifier would); 0.0.0.0 is a source
            # only for broadcasts (RFC 1122 3.2.1.3).
            self.trace.drop("ip", "martian_source", src=int2ip(src))
            return
        if h.header_length > IPV4_MIN_LEN and not self._options_pass(h, payload, now):
            return
        self.trace.counters["ip.packets_in"] += 1
        if h.mf or h.frag_offset:
            done = self.reassembler.add(h, payload, now)
            if done is None:
                return
            h, whole = done
            payload = memoryview(whole)
        handler = self.handlers.get(h.proto)
        if handler is None:
            self.trace.drop("ip", "unknown_protocol", proto=h.proto)
            if self.on_unknown_protocol is not None and not self.is_broadcast(dst):
                self.on_unknown_protocol(h, payload, now)
            return
        handler(h, payload, now)

    def _unconfigured_accepts(self, h: Ipv4Header, payload: memoryview) -> bool:
        return (not self.address and self.accept_unconfigured is not None
                and self.accept_unconfigured(h, payload))

    def _options_pass(self, h: Ipv4Header, payload: memoryview, now: float) -> bool:
        """Check a received header's options: a malformed one is dropped and
        answered with a parameter problem (``on_bad_options``), one with a
        source route is dropped (as Linux's default, accept_source_route 0).
        The rest go on; what they record is the answer's business
        (:func:`stack.wire.ipv4.record_options`)."""
        try:
            parsed = parse_options(h.options)
        except OptionError as e:
            self.trace.drop("ip", "bad_option", src=int2ip(h.src), pointer=e.pointer, detail=str(e))
            if self.on_bad_options is not None:
                self.on_bad_options(h, payload, e.pointer, now)
            return False
        if parsed.srr:
            self.trace.drop("ip", "source_route", src=int2ip(h.src), strict=parsed.strict_route)
            return False
        return True

    def deliver_local(self, now: float) -> None:
        """Hand up the packets waiting on ``lo`` (the runtime loop calls this)."""
        self.lo.deliver(now)

    def _receive_lo(self, packet: memoryview, now: float) -> None:
        self.receive(packet, now, local=True)

    # -- timers ----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.lo.queue:
            return 0.0  # packets to ourselves are due now
        d = self.reassembler.next_deadline()
        p = self.pmtu.next_deadline()
        return p if d is None else d if p is None else min(d, p)

    def on_timer(self, now: float) -> None:
        if self.pmtu.entries:
            self.pmtu.expire(now)
        for first, head in self.reassembler.expire(now):
            if self.on_reassembly_timeout is not None:
                self.on_reassembly_timeout(first, head, now)


def _header(total: int, ident: int, frag: int, ttl: int, proto: int, src: int, dst: int,
            tos: int = 0, options: bytes = b"") -> bytes:
    vihl = 0x45 + len(options) // 4
    csum = checksum(IPV4_HEADER.pack(vihl, tos, total, ident, frag, ttl, proto, 0, src, dst) + options)
    return IPV4_HEADER.pack(vihl, tos, total, ident, frag, ttl, proto, csum, src, dst) + options
