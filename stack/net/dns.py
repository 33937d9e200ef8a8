"""A DNS stub resolver (RFC 1035 7, RFC 1123 6.1.3, RFC 7766), sans-IO.

:class:`Resolver` turns "what are the addresses of NAME?" (an A query) or
"what is the name of ADDRESS?" (a PTR query) into queries and answers into a
:class:`Lookup`, one result per call of ``resolve``:

* queries go out through ``send(server, payload)`` (the caller's UDP socket
  to port 53); answers come back through :meth:`Resolver.receive`;
* each attempt waits ``timeout`` seconds, then the next server is asked
  (failover, in turn), ``attempts`` rounds over all servers in all; a
  ``send`` that raises ``OSError`` (no route) or a server that is
  :meth:`Resolver.unreachable` (ICMP port unreachable) moves on at once;
* an answer is accepted only from the server asked, over the transport
  asked, with the query's ID and question; anything else is dropped, counted
  and traced (layer ``dns``), as is any message
  :func:`~stack.wire.dns.parse_message` refuses;
* a truncated answer (TC) is asked again over TCP when the caller gave
  ``send_tcp(server, ident, payload)``: it opens a connection to the same
  server, sends :func:`tcp_frame` of the query and hands the answer to
  :meth:`Resolver.receive_tcp` (or reports :meth:`Resolver.tcp_failed`); the
  TCP attempt has the same timeout. Without ``send_tcp`` the lookup ends
  with ``truncated`` set;
* answers are cached by their TTL (at most ``cache_size`` names); failures
  are not cached; many askers of one name share one query.

Errors are the libc ``getaddrinfo`` codes of the ``socket`` module:
``EAI_NONAME`` for NXDOMAIN, ``EAI_NODATA`` for a name without addresses,
``EAI_AGAIN`` for a timeout, SERVFAIL or refusal, ``EAI_FAIL`` otherwise.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from stack.trace import Trace
from stack.wire import WireError
from stack.wire.dns import (RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL,
                            TYPE_A, TYPE_PTR, DnsMessage, build_query, follow, parse_message)
from stack.wire.ipv4 import int2ip

Send = Callable[[int, bytes], None]
SendTcp = Callable[[int, int, bytes], None]


class Lookup(NamedTuple):
    """The outcome of one name: ``addresses`` (dotted quads, for A) or
    ``names`` (for PTR), the canonical name and the CNAME chain before it
    (``aliases``), or ``error`` (an ``EAI_*`` code); ``truncated``: ask over
    TCP (only when the resolver was given no ``send_tcp``)."""

    name: str
    addresses: tuple[str, ...] = ()
    canonical: str = ""
    error: int | None = None
    truncated: bool = False
    names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


@dataclass
class ResolverConfig:
    timeout: float = 2.0        # per attempt (glibc's resolv.conf default is 5 s)
    attempts: int = 2           # rounds over the servers
    cache_size: int = 1024      # names kept
    max_pending: int = 64       # names being looked up at once
    max_ttl: int = 86400        # a TTL is never trusted for longer


@dataclass
class _Query:
    name: str
    qtype: int
    ident: int
    payload: bytes
    tries: list[int]                       # the servers still to ask, in order
    server: int = 0                        # asked now
    deadline: float = 0.0
    tcp: bool = False                      # asked over TCP now (after a truncated answer)
    waiters: list[Callable[[Lookup], None]] = field(default_factory=list)


def tcp_frame(payload: bytes) -> bytes:
    """A DNS message as it crosses TCP: two length bytes first (RFC 1035 4.2.2)."""
    return struct.pack("!H", len(payload)) + payload


def reverse_name(address: str) -> str:
    """``192.0.2.7`` -> ``7.2.0.192.in-addr.arpa`` (RFC 1035 3.5)."""
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


class Resolver:
    def __init__(self, servers: list[int], send: Send, trace: Trace,
                 rng: random.Random | None = None, config: ResolverConfig | None = None,
                 send_tcp: SendTcp | None = None) -> None:
        self.servers = list(servers)
        self.send = send
        self.send_tcp = send_tcp
        self.trace = trace
        self.rng = rng or random.Random()
        self.config = config or ResolverConfig()
        self._pending: dict[tuple[int, str], _Query] = {}
        self._cache: OrderedDict[tuple[int, str], tuple[float, Lookup]] = OrderedDict()

    def set_servers(self, servers: list[int]) -> None:
        """The servers asked from now on (a DHCP lease brings them); queries
        on their way keep the servers they had."""
        self.servers = list(servers)

    # ---- asking ------------------------------------------------------------------

    def resolve(self, name: str, now: float, done: Callable[[Lookup], None],
                qtype: int = TYPE_A) -> None:
        """Look ``name`` up; ``done`` is called once with the result (now, if cached)."""
        name = name.rstrip(".").lower()
        key = (qtype, name)
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                self._cache.move_to_end(key)
                self.trace.count("dns", "cache_hits")
                done(hit[1])
                return
            del self._cache[key]
        q = self._pending.get(key)
        if q is not None:
            q.waiters.append(done)  # the same name is on its way already
            return
        if not self.servers:
            done(Lookup(name, error=socket.EAI_AGAIN))
            return
        if len(self._pending) >= self.config.max_pending:
            self.trace.drop("dns", "too_many_lookups", name=name)
            done(Lookup(name, error=socket.EAI_AGAIN))
            return
        ident = self._free_ident()
        try:
            payload = build_query(ident, name, qtype)
        except WireError:
            done(Lookup(name, error=socket.EAI_NONAME))  # not a name DNS can carry
            return
        tries = [s for _ in range(self.config.attempts) for s in self.servers]
        q = _Query(name, qtype, ident, payload, tries, waiters=[done])
        self._pending[key] = q
        self._ask(q, now)

    def _free_ident(self) -> int:
        """A random ID no pending query uses (so an answer names one query)."""
        used = {q.ident for q in self._pending.values()}
        while True:
            ident = self.rng.getrandbits(16)
            if ident not in used:
                return ident

    def _ask(self, q: _Query, now: float) -> None:
        """Ask the next server over UDP (or fail once none is left)."""
        while q.tries:
            q.server = q.tries.pop(0)
            q.tcp = False
            q.deadline = now + self.config.timeout
            self._count_query(q, "queries", "udp")
            try:
                self.send(q.server, q.payload)
                return
            except OSError as e:
                self.trace.drop("dns", "send_failed", server=int2ip(q.server), error=e.errno)
        self._finish(q, Lookup(q.name, error=socket.EAI_AGAIN), None, now)

    def _count_query(self, q: _Query, counter: str, via: str) -> None:
        self.trace.count("dns", counter)
        if self.trace.on:
            self.trace.event("dns", "query", name=q.name, type=_TYPES.get(q.qtype, q.qtype),
                             id=q.ident, server=int2ip(q.server), via=via)

    def _ask_tcp(self, q: _Query, now: float) -> None:
        assert self.send_tcp is not None
        q.tcp = True
        q.deadline = now + self.config.timeout
        self._count_query(q, "tcp_queries", "tcp")
        try:
            self.send_tcp(q.server, q.ident, q.payload)
        except OSError as e:
            self.trace.drop("dns", "send_failed", server=int2ip(q.server), error=e.errno)
            self._ask(q, now)

    def _finish(self, q: _Query, result: Lookup, ttl: int | None, now: float) -> None:
        key = (q.qtype, q.name)
        del self._pending[key]
        if ttl is not None and result.error is None and not result.truncated:
            cache = self._cache
            cache[key] = (now + min(ttl, self.config.max_ttl), result)
            cache.move_to_end(key)
            while len(cache) > self.config.cache_size:
                cache.popitem(last=False)
        for done in q.waiters:
            done(result)

    # ---- answers ------------------------------------------------------------------

    def receive(self, server: int, data: bytes, now: float) -> None:
        """A datagram from ``server``'s port 53."""
        msg = self._parse(server, data)
        if msg is not None:
            self.answer(server, msg, now)

    def receive_tcp(self, server: int, data: bytes, now: float) -> None:
        """One whole message (without its length bytes) read over TCP from ``server``."""
        msg = self._parse(server, data)
        if msg is not None:
            self.answer(server, msg, now, tcp=True)
            return
        q = self._asking_tcp(server)
        if q is not None:  # that connection will say nothing better: next server
            self._ask(q, now)

    def tcp_failed(self, server: int, ident: int, now: float) -> None:
        """The TCP connection for query ``ident`` ended without a whole answer."""
        q = next((p for p in self._pending.values() if p.ident == ident), None)
        if q is None or not q.tcp or q.server != server:
            return
        self.trace.count("dns", "tcp_failures")
        self._ask(q, now)

    def unreachable(self, server: int, now: float) -> None:
        """``server`` said (ICMP) that no DNS server listens there: what was asked
        of it over UDP is asked of the next server now."""
        for q in [q for q in self._pending.values() if q.server == server and not q.tcp]:
            self.trace.count("dns", "unreachable")
            if self.trace.on:
                self.trace.event("dns", "unreachable", name=q.name, id=q.ident,
                                 server=int2ip(server))
            self._ask(q, now)

    def wants_tcp(self, server: int, ident: int) -> bool:
        """Is query ``ident`` still waiting for its TCP answer from ``server``?"""
        return any(q.ident == ident and q.tcp and q.server == server
                   for q in self._pending.values())

    def _asking_tcp(self, server: int) -> _Query | None:
        return next((q for q in self._pending.values() if q.tcp and q.server == server), None)

    def _parse(self, server: int, data: bytes) -> DnsMessage | None:
        try:
            return parse_message(data)
        except WireError as e:
            self.trace.drop("dns", "malformed_" + e.field, server=int2ip(server), detail=str(e))
            return None

    def answer(self, server: int, msg: DnsMessage, now: float, tcp: bool = False) -> None:
        """A parsed answer over UDP (or over TCP after a truncated one)."""
        q = next((p for p in self._pending.values() if p.ident == msg.ident), None)
        if q is None or not msg.is_response:
            self.trace.drop("dns", "unexpected_id", server=int2ip(server), id=msg.ident)
            return
        if server != q.server:
            self.trace.drop("dns", "unexpected_server", server=int2ip(server), id=msg.ident)
            return
        if tcp != q.tcp:
            self.trace.drop("dns", "unexpected_transport", server=int2ip(server), id=msg.ident)
            return
        if (len(msg.questions) != 1 or msg.questions[0].name != q.name
                or msg.questions[0].qtype != q.qtype):
            self.trace.drop("dns", "wrong_question", server=int2ip(server), id=msg.ident)
            return
        self.trace.count("dns", "answers")
        if self.trace.on:
            self.trace.event("dns", "answer", name=q.name, id=msg.ident, server=int2ip(server),
                             via="tcp" if tcp else "udp", rcode=msg.rcode,
                             truncated=msg.truncated, answers=len(msg.answers))
        self._conclude(q, msg, now)

    def _conclude(self, q: _Query, msg: DnsMessage, now: float) -> None:
        """What an answer that passed every check means for its query."""
        rcode = msg.rcode
        if msg.truncated and not q.tcp and self.send_tcp is not None:
            self._ask_tcp(q, now)
        elif msg.truncated and not q.tcp:
            self._finish(q, Lookup(q.name, truncated=True), None, now)
        elif msg.truncated:  # truncated over TCP too: that server cannot answer
            self._ask(q, now)
        elif rcode == RCODE_NOERROR:
            found, ttl, chain = follow(msg, q.name, q.qtype)
            canonical, aliases = chain[-1], tuple(chain[:-1])
            if not found:
                self._finish(q, Lookup(q.name, canonical=canonical, aliases=aliases,
                                       error=socket.EAI_NODATA), None, now)
            elif q.qtype == TYPE_PTR:
                self._finish(q, Lookup(q.name, canonical=canonical, aliases=aliases,
                                       names=tuple(found)), ttl, now)
            else:
                self._finish(q, Lookup(q.name, tuple(found), canonical, aliases=aliases),
                             ttl, now)
        elif rcode == RCODE_NXDOMAIN:
            self._finish(q, Lookup(q.name, error=socket.EAI_NONAME), None, now)
        elif rcode in (RCODE_SERVFAIL, RCODE_REFUSED):
            self._ask(q, now)  # another server may know; EAI_AGAIN when none is left
        else:
            self._finish(q, Lookup(q.name, error=socket.EAI_FAIL), None, now)

    # ---- timers -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min((q.deadline for q in self._pending.values()), default=None)

    def on_timer(self, now: float) -> None:
        for q in [q for q in self._pending.values() if q.deadline <= now]:
            self.trace.count("dns", "timeouts")
            if self.trace.on:
                self.trace.event("dns", "timeout", name=q.name, id=q.ident,
                                 server=int2ip(q.server), via="tcp" if q.tcp else "udp")
            self._ask(q, now)

    def status(self) -> dict[str, int]:
        """How much the resolver holds (for tests that check nothing is left behind)."""
        return {"pending": len(self._pending), "cached": len(self._cache),
                "waiters": sum(len(q.waiters) for q in self._pending.values())}


_TYPES = {TYPE_A: "A", TYPE_PTR: "PTR"}
