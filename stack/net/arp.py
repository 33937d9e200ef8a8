"""Ethernet and ARP (RFC 826): frames in and out, and who has which IPv4
address on the link.

:meth:`EthernetArp.receive` is where every frame from the link enters: it
checks the length and the destination MAC and hands the payload to IPv4 or
ARP by EtherType; everything else is dropped and counted.

The neighbour cache only learns from ARP traffic that concerns us: a request
for our address (RFC 826's merge rule) or a reply to a request we sent. An
unsolicited reply for an address we never asked about changes nothing, so
another host cannot poison the cache. Packets waiting for an address wait in
a bounded queue per neighbour; requests are retried, then the queue is given
up: each packet in it is dropped, counted and handed to ``on_unresolved``
(IPv4 answers its sender with a local ICMP host unreachable, as Linux's
arp_error_report does).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

from stack.trace import Trace
from stack.wire import WireError
from stack.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket, build_arp, parse_arp
from stack.wire.eth import (
    BROADCAST, ETH_HEADER, ETH_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, mac2str, parse_eth,
)
from stack.wire.ipv4 import PROTO_TCP, int2ip, parse_ipv4
from stack.wire.tcp import parse_tcp

# Hands an IPv4 packet up: (packet, now, link_broadcast=...).
Ipv4Receive = Callable[..., None]
# A packet given up on because its next hop never answered ARP: (packet, now).
Unresolved = Callable[[bytes, float], None]


def describe_frame(frame: bytes | memoryview, outgoing: bool) -> dict[str, object]:
    """What a frame carries, for trace events about frames: an IPv4 frame's
    :func:`describe_packet`; nothing for other frames."""
    try:
        eth = parse_eth(frame)
    except WireError:  # too short, or 802.3: not a frame we carry
        return {}
    if eth.ethertype != ETHERTYPE_IPV4:
        return {}
    return describe_packet(eth.payload, outgoing)


def describe_packet(packet: bytes | memoryview, outgoing: bool) -> dict[str, object]:
    """What an IPv4 packet carries, for trace events about frames and packets.

    ``proto``, ``src``, ``dst``; TCP instead ``proto``, ``conn`` (ours
    first: the sender's side when ``outgoing``), ``seq`` and ``len`` (data
    bytes). A packet that does not parse (a corrupted one, say) gives what was
    read before the failure and ``malformed``, the field that failed.
    """
    try:
        ip, payload = parse_ipv4(packet)
    except WireError as e:
        return {"malformed": e.field}
    src, dst = int2ip(ip.src), int2ip(ip.dst)
    if ip.proto != PROTO_TCP or ip.is_fragment:
        return {"proto": ip.proto, "src": src, "dst": dst}
    try:
        seg = parse_tcp(ip.src, ip.dst, payload)
    except WireError as e:
        return {"proto": ip.proto, "src": src, "dst": dst, "malformed": e.field}
    if outgoing:
        conn = f"{src}:{seg.src_port}-{dst}:{seg.dst_port}"
    else:
        conn = f"{dst}:{seg.dst_port}-{src}:{seg.src_port}"
    return {"proto": ip.proto, "conn": conn, "seq": seg.seq, "len": len(seg.payload)}


@dataclass
class ArpConfig:
    entry_lifetime: float = 60.0   # seconds a learned entry stays valid
    # Linux's retrans_time_ms (1 s) and mcast_solicit (3): an address nobody
    # answers fails 3 s after the first request, and the packets that waited
    # for it are reported to their senders as host unreachable.
    retry_interval: float = 1.0    # seconds between requests for an unresolved address
    max_tries: int = 3             # requests before the waiting packets are given up
    max_pending_per_host: int = 64  # packets queued per unresolved address
    max_pending_hosts: int = 64    # unresolved addresses at once
    max_entries: int = 1024        # neighbour cache size


class _Pending:
    __slots__ = ("packets", "tries", "deadline")

    def __init__(self) -> None:
        self.packets: deque[bytes] = deque()
        self.tries = 0
        self.deadline = 0.0


class EthernetArp:
    """The Ethernet interface of one stack: framing, ARP, the neighbour cache."""

    def __init__(self, mac: bytes, address: int, send_frame: Callable[[bytes], None],
                 trace: Trace, config: ArpConfig | None = None) -> None:
        self.mac = mac
        self.address = address
        self.send_frame = send_frame
        self.trace = trace
        self.config = config or ArpConfig()
        self.cache: dict[int, tuple[bytes, float]] = {}
        self.pending: dict[int, _Pending] = {}
        # Precomputed Ethernet header prefixes for the neighbours we talk to.
        self._src_ipv4 = mac + ETHERTYPE_IPV4.to_bytes(2, "big")
        # Where IPv4 packets go up; set by whoever builds the IPv4 layer.
        self.ipv4_receive: Ipv4Receive | None = None
        # Told about every packet given up on (set by the IPv4 layer).
        self.on_unresolved: Unresolved | None = None

    def set_address(self, address: int) -> None:
        """Our IPv4 address changed (0: none, a DHCP client without a lease)."""
        self.address = address

    # -- receiving frames ----------------------------------------------------

    def receive(self, frame: bytes | memoryview, now: float) -> None:
        """One Ethernet frame from the link: to IPv4 or ARP, or dropped and counted."""
        trace = self.trace
        if len(frame) < ETH_LEN:
            trace.drop("eth", "short", length=len(frame))
            return
        dst = frame[0:6]
        if dst != self.mac and dst != BROADCAST:
            trace.drop("eth", "not_for_us" if not dst[0] & 1 else "multicast")
            return
        ethertype = (frame[12] << 8) | frame[13]
        trace.counters["eth.frames_in"] += 1
        if ethertype == ETHERTYPE_IPV4 and self.ipv4_receive is not None:
            self.ipv4_receive(memoryview(frame)[ETH_LEN:], now, link_broadcast=dst == BROADCAST)
        elif ethertype == ETHERTYPE_ARP:
            self.receive_arp(memoryview(frame)[ETH_LEN:], bytes(frame[6:12]), now)
        else:
            trace.drop("eth", "unsupported_ethertype", ethertype=f"0x{ethertype:04x}")

    # -- sending -----------------------------------------------------------

    def send_ipv4(self, next_hop: int, packet: bytes, now: float, broadcast: bool = False) -> None:
        """Frame an IPv4 packet for ``next_hop``, resolving its MAC first if needed."""
        if broadcast:
            self.send_frame(BROADCAST + self._src_ipv4 + packet)
            return
        entry = self.cache.get(next_hop)
        if entry is None:
            self._queue(next_hop, packet, now)
            return
        self.send_frame(entry[0] + self._src_ipv4 + packet)
        if (entry[1] <= now and next_hop not in self.pending
                and len(self.pending) < self.config.max_pending_hosts):
            # Stale: keep using it while a fresh request confirms it (Linux's
            # STALE/PROBE); if nobody answers, the entry goes. The probe counts
            # against the pending bound; when that is full, probe later.
            p = self.pending[next_hop] = _Pending()
            self._request(next_hop, p, now)

    def _queue(self, ip: int, packet: bytes, now: float) -> None:
        p = self.pending.get(ip)
        if p is None:
            if len(self.pending) >= self.config.max_pending_hosts:
                self.trace.drop("arp", "pending_hosts_full", ip=int2ip(ip))
                return
            p = self.pending[ip] = _Pending()
            self._request(ip, p, now)
        if len(p.packets) >= self.config.max_pending_per_host:
            self.trace.drop("arp", "pending_queue_full", ip=int2ip(ip))
            return
        p.packets.append(packet)

    def _request(self, ip: int, p: _Pending, now: float) -> None:
        p.tries += 1
        p.deadline = now + self.config.retry_interval
        self.trace.count("arp", "requests_out")
        if self.trace.on:
            self.trace.event("arp", "request", target=int2ip(ip), attempt=p.tries)
        self._send_arp(OP_REQUEST, BROADCAST, b"\x00" * 6, ip)

    def _send_arp(self, op: int, eth_dst: bytes, target_mac: bytes, target_ip: int) -> None:
        pkt = ArpPacket(op, self.mac, self.address, target_mac, target_ip)
        self.send_frame(ETH_HEADER.pack(eth_dst, self.mac, ETHERTYPE_ARP) + build_arp(pkt))

    def announce(self) -> None:
        """Gratuitous ARP: tell the link our address is at our MAC (none without one)."""
        if not self.address:
            return
        if self.trace.on:
            self.trace.event("arp", "gratuitous", ip=int2ip(self.address), mac=mac2str(self.mac))
        self._send_arp(OP_REQUEST, BROADCAST, b"\x00" * 6, self.address)

    # -- receiving ARP -----------------------------------------------------

    def receive_arp(self, data: memoryview, eth_src: bytes, now: float) -> None:
        try:
            pkt = parse_arp(data)
        except WireError as e:
            self.trace.drop("arp", "malformed", field=e.field, detail=str(e))
            return
        if pkt.sender_mac[0] & 1 or pkt.sender_mac == b"\x00" * 6:
            self.trace.drop("arp", "bad_sender_mac", mac=mac2str(pkt.sender_mac))
            return
        if pkt.sender_ip == self.address:
            # Someone else claims our address (or our own frame looped back).
            self.trace.drop("arp", "sender_is_us", mac=mac2str(pkt.sender_mac))
            return
        if pkt.sender_ip == 0 or pkt.sender_ip == 0xFFFFFFFF:
            # ARP probes (RFC 5227) carry sender 0.0.0.0; nothing to learn.
            if pkt.op == OP_REQUEST and pkt.target_ip == self.address:
                self._send_arp(OP_REPLY, pkt.sender_mac, pkt.sender_mac, pkt.sender_ip)
            else:
                self.trace.drop("arp", "not_for_us")
            return
        self.trace.count("arp", "requests_in" if pkt.op == OP_REQUEST else "replies_in")
        if self.trace.on:
            self.trace.event("arp", "request_in" if pkt.op == OP_REQUEST else "reply_in",
                             sender=int2ip(pkt.sender_ip), mac=mac2str(pkt.sender_mac),
                             target=int2ip(pkt.target_ip))
        # RFC 826 merge: update an entry we already have; add one only when
        # the packet is addressed to us and we asked, or it asks us.
        known = pkt.sender_ip in self.cache or pkt.sender_ip in self.pending
        for_us = pkt.target_ip == self.address
        if known or (for_us and pkt.op == OP_REQUEST):
            self._learn(pkt.sender_ip, pkt.sender_mac, now)
        elif pkt.op == OP_REPLY:
            self.trace.drop("arp", "unsolicited_reply", sender=int2ip(pkt.sender_ip))
            return
        if for_us and pkt.op == OP_REQUEST:
            self.trace.count("arp", "replies_out")
            if self.trace.on:
                self.trace.event("arp", "reply", target=int2ip(pkt.sender_ip))
            self._send_arp(OP_REPLY, pkt.sender_mac, pkt.sender_mac, pkt.sender_ip)

    def _learn(self, ip: int, mac: bytes, now: float) -> None:
        if ip not in self.cache and len(self.cache) >= self.config.max_entries:
            oldest = min(self.cache, key=lambda k: self.cache[k][1])
            del self.cache[oldest]
        fresh = ip not in self.cache or self.cache[ip][0] != mac
        self.cache[ip] = (mac, now + self.config.entry_lifetime)
        if fresh and self.trace.on:
            self.trace.event("arp", "cache_add", ip=int2ip(ip), mac=mac2str(mac))
        p = self.pending.pop(ip, None)
        if p is not None:
            prefix = mac + self._src_ipv4
            for packet in p.packets:
                self.send_frame(prefix + packet)

    # -- timers --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if not self.pending:
            return None
        return min(p.deadline for p in self.pending.values())

    def on_timer(self, now: float) -> None:
        for ip, p in list(self.pending.items()):
            if p.deadline > now:
                continue
            if p.tries >= self.config.max_tries:
                self._give_up(ip, p, now)
            else:
                self._request(ip, p, now)
        life = self.config.entry_lifetime
        expired = [ip for ip, (_, until) in self.cache.items() if until + life <= now]
        for ip in expired:
            del self.cache[ip]
            if self.trace.on:
                self.trace.event("arp", "cache_expire", ip=int2ip(ip))

    def _give_up(self, ip: int, p: _Pending, now: float) -> None:
        """Nobody answered for ``ip`` (Linux's FAILED): forget it, drop what
        waited for it and report each packet (after the entry is gone, so a
        sender that reacts at once starts afresh)."""
        del self.pending[ip]
        self.cache.pop(ip, None)
        if self.trace.on:
            self.trace.event("arp", "failed", ip=int2ip(ip), tries=p.tries,
                             dropped=len(p.packets),
                             cause=f"no ARP reply for {int2ip(ip)} after "
                                   f"{p.tries} request{'s' if p.tries != 1 else ''}")
        for packet in p.packets:
            self.trace.drop("arp", "unresolved", ip=int2ip(ip))
            if self.on_unresolved is not None:
                self.on_unresolved(packet, now)

    def neighbours(self) -> dict[str, str]:
        return {int2ip(ip): mac2str(mac) for ip, (mac, _) in self.cache.items()}
