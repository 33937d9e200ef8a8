"""The DNS stub resolver (:mod:`stack.net.dns`) wired to the stack: its
queries cross the stack's own UDP, a truncated answer is asked again over a
stack TCP connection to port 53, and the threads that wait for an answer run
its timers.

Why the UDP and TCP layers directly and not ``net.socket()``: everything
here runs under ``net.lock`` and is driven by events, like the socket facade
itself. An answer datagram is handed to the resolver by the UDP endpoint's
``on_change`` (one endpoint per server, connected to its port 53) in the
network thread the moment it arrives, so every waiter of
a name (one query for them all), the cache and the trace see it at once,
whether or not the thread that asked is still there; no thread sits in a
blocking ``recvfrom``. The same code runs on a manual clock with
``thread=False``: a test starts a lookup with :meth:`DnsClient.start`, steps
both stacks and calls :meth:`DnsClient.poll`.

Waiting: :meth:`DnsClient.lookup` waits on a condition bound to
``net.lock`` for at most the resolver's next deadline, then runs the
resolver's timers itself (``poll``); the network loop needs no DNS timer of
its own. A TCP exchange reports progress through its connection's
``on_change`` (which only notifies: reading and closing happen in
``poll``, outside the TCP layer's entry points).
"""

from __future__ import annotations

import random
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from stack.net.dns import Lookup, Resolver, ResolverConfig, tcp_frame
from stack.net.udp import UdpEndpoint
from stack.tcp.states import CLOSED
from stack.wire.dns import TYPE_A

if TYPE_CHECKING:
    from stack.runtime import Stack
    from stack.tcp import TcpConnection

DNS_PORT = 53
MAX_TCP_MESSAGE = 65535
WAIT_CAP = 1.0   # a waiter looks at the clock at least this often (seconds)


@dataclass
class _Exchange:
    """One query asked over TCP: its connection and what it has read."""

    server: int
    ident: int
    conn: "TcpConnection"
    buf: bytearray = field(default_factory=bytearray)


class DnsClient:
    """A stack's resolver, its UDP endpoint and its TCP exchanges."""

    def __init__(self, net: "Stack", servers: list[int],
                 config: ResolverConfig | None = None) -> None:
        self.net = net
        # typeshed lists only threading's own locks; the runtime's StackLock
        # has the hooks a Condition uses (as in the socket facade).
        self.cond = threading.Condition(net.lock)  # type: ignore[arg-type]
        rng = random.Random(net.rng.getrandbits(64))
        self.resolver = Resolver(servers, self._send_udp, net.trace, rng, config,
                                 send_tcp=self._send_tcp)
        self._endpoints: dict[int, UdpEndpoint] = {}
        self._exchanges: list[_Exchange] = []

    # ---- asking ----------------------------------------------------------------------

    def lookup(self, name: str, qtype: int = TYPE_A) -> Lookup:
        """Resolve ``name`` (blocking): cached, joined to a query on its way, or asked."""
        box: list[Lookup] = []
        net = self.net
        with net.lock:
            self.start(name, box.append, qtype)
            while not box:
                self.poll(net.clock())
                if box:
                    break
                self.cond.wait(self._wait_time())
        return box[0]

    def start(self, name: str, done: Callable[[Lookup], None], qtype: int = TYPE_A) -> None:
        """Begin resolving ``name``; ``done(result)`` is called under the lock."""
        def finished(result: Lookup) -> None:
            done(result)
            self.cond.notify_all()

        with self.net.lock:
            self.resolver.resolve(name, self.net.clock(), finished, qtype)
            self.net.kick()

    def _wait_time(self) -> float:
        d = self.next_deadline()
        if d is None:
            return WAIT_CAP
        return min(WAIT_CAP, max(0.0, d - self.net.clock()))

    def next_deadline(self) -> float | None:
        return self.resolver.next_deadline()

    def poll(self, now: float) -> None:
        """Read what the TCP exchanges received and run the resolver's due timers."""
        with self.net.lock:
            self._pump_tcp(now)
            d = self.resolver.next_deadline()
            if d is not None and d <= now:
                self.resolver.on_timer(now)
                self._pump_tcp(now)  # exchanges the timers gave up on are closed
            self.net.kick()

    def status(self) -> dict[str, int]:
        """The resolver's pending queries and cache, and the open TCP exchanges."""
        with self.net.lock:
            return {**self.resolver.status(), "tcp_exchanges": len(self._exchanges)}

    # ---- UDP -------------------------------------------------------------------------

    def _endpoint(self, server: int) -> UdpEndpoint:
        """The UDP endpoint connected to ``server``'s port 53 (as glibc connects its
        socket): only that server's datagrams reach it, and an ICMP error about a
        query (port unreachable: no DNS server there) fails it over at once."""
        ep = self._endpoints.get(server)
        if ep is None or ep.closed:
            ep = UdpEndpoint()
            self.net.udp.connect(ep, (server, DNS_PORT))  # raises if there is no route
            ep.on_change = lambda: self._on_udp(server)
            self._endpoints[server] = ep
        return ep

    def _send_udp(self, server: int, payload: bytes) -> None:
        self.net.udp.send(self._endpoint(server), payload, (server, DNS_PORT), self.net.clock())

    def _on_udp(self, server: int) -> None:
        """A datagram or an ICMP error arrived for ``server`` (network thread, lock held)."""
        ep = self._endpoints[server]
        now = self.net.clock()
        if ep.error is not None:
            ep.error = None
            self.resolver.unreachable(server, now)
        while (item := ep.pop()) is not None:
            data, (src, _) = item
            self.resolver.receive(src, data, now)

    # ---- TCP -------------------------------------------------------------------------

    def _send_tcp(self, server: int, ident: int, payload: bytes) -> None:
        """Ask ``payload`` again over TCP (the resolver calls this after TC)."""
        net = self.net
        now = net.clock()
        conn = net.tcp.connect(net.source_for(server), (server, DNS_PORT), now)
        conn.on_change = self.cond.notify_all
        try:
            conn.send(tcp_frame(payload), now)
        except OSError:
            conn.on_change = None
            conn.abort(now)
            raise
        self._exchanges.append(_Exchange(server, ident, conn))
        net.kick()

    def _pump_tcp(self, now: float) -> None:
        for ex in list(self._exchanges):
            if not self.resolver.wants_tcp(ex.server, ex.ident):
                self._end(ex, now, abort=True)  # timed out, or answered another way
                continue
            ended = self._read(ex, now)
            if len(ex.buf) >= 2:
                (n,) = struct.unpack_from("!H", ex.buf)
                if len(ex.buf) >= 2 + n:
                    message = bytes(ex.buf[2:2 + n])
                    self._end(ex, now)
                    self.resolver.receive_tcp(ex.server, message, now)
                    continue
            if ended:
                self._end(ex, now, abort=True)
                self.resolver.tcp_failed(ex.server, ex.ident, now)

    def _read(self, ex: _Exchange, now: float) -> bool:
        """Read what the connection holds; True once it can bring no more."""
        conn = ex.conn
        try:
            while len(ex.buf) < 2 + MAX_TCP_MESSAGE:
                chunk = conn.recv(2 + MAX_TCP_MESSAGE - len(ex.buf), now)
                if chunk is None:
                    return conn.state == CLOSED
                if not chunk:
                    return True
                ex.buf += chunk
        except OSError:
            return True
        return False

    def _end(self, ex: _Exchange, now: float, abort: bool = False) -> None:
        self._exchanges.remove(ex)
        ex.conn.on_change = None
        if abort:
            ex.conn.abort(now, "dns: exchange over")
        else:
            ex.conn.close(now)
