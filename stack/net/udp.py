"""UDP (RFC 768, RFC 1122 4.1): ports, demultiplexing, bounded receive queues.

An endpoint is the protocol half of a datagram socket. Datagrams for a port
nobody has bound are answered with ICMP port unreachable; an ICMP error about
a datagram a connected endpoint sent becomes that endpoint's pending error
when Linux calls it hard (ECONNREFUSED for port unreachable, EHOSTUNREACH for
admin prohibited, EMSGSIZE for fragmentation needed; the table is
:mod:`stack.wire.icmp_errors`); soft ones (host unreachable, time exceeded)
and errors for unconnected endpoints are dropped and counted, as on Linux
without IP_RECVERR.
"""

from __future__ import annotations

import errno
import random
import struct
from collections import deque
from typing import Callable

from stack.net.icmp import IcmpLayer
from stack.net.ipv4 import LOOPBACK, Ipv4Layer
from stack.trace import Trace
from stack.wire import WireError
from stack.wire.icmp_errors import BY_KIND
from stack.wire.ipv4 import PROTO_UDP, Ipv4Header, int2ip
from stack.wire.udp import build_udp, parse_udp

EPHEMERAL = (32768, 60999)  # Linux's ip_local_port_range
_PORTS = struct.Struct("!HH")


class UdpEndpoint:
    __slots__ = ("local", "remote", "queue", "queued", "rcvbuf", "error", "on_change",
                 "broadcast", "closed")

    def __init__(self, rcvbuf: int = 212992) -> None:
        self.local: tuple[int, int] | None = None
        self.remote: tuple[int, int] | None = None
        self.queue: deque[tuple[bytes, tuple[int, int]]] = deque()
        self.queued = 0
        self.rcvbuf = rcvbuf
        self.error: int | None = None
        self.on_change: Callable[[], None] | None = None
        self.broadcast = False
        self.closed = False

    @property
    def readable(self) -> bool:
        return bool(self.queue) or self.error is not None or self.closed

    def pop(self) -> tuple[bytes, tuple[int, int]] | None:
        if not self.queue:
            return None
        data, addr = self.queue.popleft()
        self.queued -= len(data)
        return data, addr

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class UdpLayer:
    def __init__(self, ip: Ipv4Layer, icmp: IcmpLayer, trace: Trace,
                 rng: random.Random | None = None) -> None:
        self.ip = ip
        self.icmp = icmp
        self.trace = trace
        self.rng = rng or random.Random()
        self.bound: dict[tuple[int, int], UdpEndpoint] = {}
        ip.handlers[PROTO_UDP] = self.receive
        icmp.error_handlers[PROTO_UDP] = self.icmp_error

    # -- binding -------------------------------------------------------------

    def bind(self, ep: UdpEndpoint, addr: int, port: int) -> None:
        if addr != 0 and not self.ip.is_local(addr) and not self.ip.is_broadcast(addr):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if ep.local is not None:
            raise OSError(errno.EINVAL, "Invalid argument")
        if port == 0:
            port = self._ephemeral(addr)
        elif self._in_use(addr, port):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        ep.local = (addr, port)
        self.bound[ep.local] = ep

    def _in_use(self, addr: int, port: int) -> bool:
        if addr == 0:
            return any(p == port for (_, p) in self.bound)
        return (addr, port) in self.bound or (0, port) in self.bound

    def _ephemeral(self, addr: int) -> int:
        lo, hi = EPHEMERAL
        start = self.rng.randint(lo, hi)
        for i in range(hi - lo + 1):
            port = lo + (start - lo + i) % (hi - lo + 1)
            if not self._in_use(addr, port):
                return port
        raise OSError(errno.EADDRINUSE, "No free ephemeral port")

    def unbind(self, ep: UdpEndpoint) -> None:
        if ep.local is not None and self.bound.get(ep.local) is ep:
            del self.bound[ep.local]
        ep.closed = True
        ep.queue.clear()
        ep.queued = 0

    def connect(self, ep: UdpEndpoint, remote: tuple[int, int]) -> None:
        """connect(): the peer ``remote`` (0.0.0.0 meaning ourselves, as on
        Linux: the bound address, else 127.0.0.1), and, when the endpoint
        has no address of its own yet, the source the route gives (Linux's
        ip4_datagram_connect), so getsockname() names it and only datagrams
        to it arrive. Raises what the route check raises (ENETUNREACH,
        EINVAL from a 127/8 source to elsewhere)."""
        addr, port = remote
        bound = ep.local[0] if ep.local is not None else 0
        if addr == 0:
            addr = bound or LOOPBACK
        self.ip.check_route(bound, addr)
        if ep.local is None:
            self.bind(ep, 0, 0)
        assert ep.local is not None
        if ep.local[0] == 0 and not self.ip.is_broadcast(addr):
            if self.bound.get(ep.local) is ep:
                del self.bound[ep.local]
            ep.local = (self.ip.source_for(addr), ep.local[1])
            self.bound[ep.local] = ep
        ep.remote = (addr, port)
        ep.error = None

    # -- sending ---------------------------------------------------------------

    def send(self, ep: UdpEndpoint, data: bytes | memoryview, dst: tuple[int, int],
             now: float, ttl: int | None = None, df: bool = False) -> int:
        if ep.local is None:
            self.bind(ep, 0, 0)
        assert ep.local is not None
        if len(data) > 65507:
            raise OSError(errno.EMSGSIZE, "Message too long")
        addr, port = dst
        if port == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        if self.ip.is_broadcast(addr) and not ep.broadcast:
            raise OSError(errno.EACCES, "Permission denied")
        src = ep.local[0]
        if not src or self.ip.is_broadcast(src):
            src = self.ip.source_for(addr)  # 127.0.0.1 towards 127/8, as Linux
        segment = build_udp(src, addr, ep.local[1], port, data)
        self.ip.send(src, addr, PROTO_UDP, segment, now, ttl=ttl, df=df)
        self.trace.count("udp", "datagrams_out")
        if self.trace.on:
            self.trace.event("udp", "out", src=f"{int2ip(src)}:{ep.local[1]}",
                             dst=f"{int2ip(addr)}:{port}", length=len(data))
        return len(data)

    # -- receiving -------------------------------------------------------------

    def receive(self, h: Ipv4Header, payload: memoryview, now: float) -> None:
        try:
            d = parse_udp(h.src, h.dst, payload)
        except WireError as e:
            self.trace.drop("udp", "malformed", field=e.field, detail=str(e))
            return
        ep = self.bound.get((h.dst, d.dst_port)) or self.bound.get((0, d.dst_port))
        if ep is not None and ep.remote is not None and ep.remote != (h.src, d.src_port):
            ep = None
        if self.trace.on:
            self.trace.event("udp", "in", src=f"{int2ip(h.src)}:{d.src_port}",
                             dst=f"{int2ip(h.dst)}:{d.dst_port}", length=len(d.payload))
        if ep is None:
            self.trace.drop("udp", "port_closed", port=d.dst_port, src=int2ip(h.src))
            self.icmp.port_unreachable(h, payload, now)
            return
        n = len(d.payload)
        if ep.queued + n > ep.rcvbuf and ep.queue:
            self.trace.drop("udp", "receive_queue_full", port=d.dst_port)
            return
        ep.queue.append((bytes(d.payload), (h.src, d.src_port)))
        ep.queued += n
        self.trace.count("udp", "datagrams_in")
        ep._changed()

    def icmp_error(self, kind: str, src: int, dst: int, quoted: bytes, mtu: int,
                   now: float) -> bool:
        """An ICMP error about a datagram from ``src`` to ``dst``; True when an
        endpoint of ours is bound to its source (its path MTU is then
        learnt), whether or not the endpoint hears of the error."""
        hlen = (quoted[0] & 0x0F) * 4
        sport, dport = _PORTS.unpack_from(quoted, hlen)
        ep = self.bound.get((src, sport)) or self.bound.get((0, sport))
        if ep is None or (ep.remote is not None and ep.remote != (dst, dport)):
            self.trace.drop("udp", "icmp_error_unmatched", kind=kind)
            return False
        row = BY_KIND[kind]
        if ep.remote is None:
            # Linux reports errors only to connected sockets (without IP_RECVERR).
            self.trace.drop("udp", "icmp_error_unconnected", kind=kind)
            return True
        if not row.udp_hard:
            self.trace.drop("udp", "icmp_error_soft", kind=kind, port=sport)
            return True
        ep.error = row.errno
        if self.trace.on:
            self.trace.event("udp", "icmp_error", kind=kind, port=sport)
        ep._changed()
        return True
