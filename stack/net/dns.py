"""A DNS stub resolver (RFC 1035 7, RFC 1123 6.1.3), sans-IO.

:class:`Resolver` turns "what are the addresses of NAME?" into queries and
answers into a :class:`Lookup`, one result per call of ``resolve``:

* queries go out through ``send(server, payload)`` (the caller's UDP socket
  to port 53); answers come back through :meth:`Resolver.receive`;
* each attempt waits ``timeout`` seconds, then the next server is asked
  (failover, in turn), ``attempts`` rounds over all servers in all;
* an answer is accepted only from the server asked, with the query's ID and
  question; anything else is dropped, counted and traced (layer ``dns``),
  as is any message :func:`~stack.wire.dns.parse_message` refuses;
* a truncated answer (TC) ends the lookup with ``truncated`` set: the caller
  asks again over TCP (:func:`tcp_frame` / :meth:`Resolver.answer`);
* answers are cached by their TTL (at most ``cache_size`` names); failures
  are not cached.

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
                            TYPE_A, DnsMessage, addresses, build_query, parse_message)
from stack.wire.ipv4 import int2ip

Send = Callable[[int, bytes], None]


class Lookup(NamedTuple):
    """The outcome of one name: addresses (dotted quads) and the canonical
    name, or ``error`` (an ``EAI_*`` code); ``truncated``: ask over TCP."""

    name: str
    addresses: tuple[str, ...] = ()
    canonical: str = ""
    error: int | None = None
    truncated: bool = False


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
    ident: int
    payload: bytes
    tries: list[int]                       # the servers still to ask, in order
    server: int = 0                        # asked now
    deadline: float = 0.0
    waiters: list[Callable[[Lookup], None]] = field(default_factory=list)


def tcp_frame(payload: bytes) -> bytes:
    """A DNS message as it crosses TCP: two length bytes first (RFC 1035 4.2.2)."""
    return struct.pack("!H", len(payload)) + payload


class Resolver:
    def __init__(self, servers: list[int], send: Send, trace: Trace,
                 rng: random.Random | None = None, config: ResolverConfig | None = None) -> None:
        self.servers = list(servers)
        self.send = send
        self.trace = trace
        self.rng = rng or random.Random()
        self.config = config or ResolverConfig()
        self._pending: dict[str, _Query] = {}
        self._cache: OrderedDict[str, tuple[float, Lookup]] = OrderedDict()

    # ---- asking ------------------------------------------------------------------

    def resolve(self, name: str, now: float, done: Callable[[Lookup], None]) -> None:
        """Look ``name`` up; ``done`` is called once with the result (now, if cached)."""
        key = name.rstrip(".").lower()
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
            done(Lookup(key, error=socket.EAI_AGAIN))
            return
        if len(self._pending) >= self.config.max_pending:
            self.trace.drop("dns", "too_many_lookups", name=key)
            done(Lookup(key, error=socket.EAI_AGAIN))
            return
        try:
            ident = self.rng.getrandbits(16)
            payload = build_query(ident, key, TYPE_A)
        except WireError:
            done(Lookup(key, error=socket.EAI_NONAME))  # not a name DNS can carry
            return
        tries = [s for _ in range(self.config.attempts) for s in self.servers]
        q = _Query(key, ident, payload, tries, waiters=[done])
        self._pending[key] = q
        self._ask(q, now)

    def _ask(self, q: _Query, now: float) -> None:
        q.server = q.tries.pop(0)
        q.deadline = now + self.config.timeout
        self.trace.count("dns", "queries")
        if self.trace.on:
            self.trace.event("dns", "query", name=q.name, id=q.ident, server=int2ip(q.server))
        self.send(q.server, q.payload)

    def _finish(self, q: _Query, result: Lookup, ttl: int | None, now: float) -> None:
        del self._pending[q.name]
        if ttl is not None and result.error is None and not result.truncated:
            cache = self._cache
            cache[q.name] = (now + min(ttl, self.config.max_ttl), result)
            cache.move_to_end(q.name)
            while len(cache) > self.config.cache_size:
                cache.popitem(last=False)
        for done in q.waiters:
            done(result)

    # ---- answers ------------------------------------------------------------------

    def receive(self, server: int, data: bytes, now: float) -> None:
        """A datagram from ``server``'s port 53."""
        try:
            msg = parse_message(data)
        except WireError as e:
            self.trace.drop("dns", "malformed_" + e.field, server=int2ip(server), detail=str(e))
            return
        self.answer(server, msg, now)

    def answer(self, server: int, msg: DnsMessage, now: float) -> None:
        """A parsed answer (over UDP, or over TCP after a truncated one)."""
        q = next((p for p in self._pending.values() if p.ident == msg.ident), None)
        if q is None or not msg.is_response:
            self.trace.drop("dns", "unexpected_id", server=int2ip(server), id=msg.ident)
            return
        if server != q.server:
            self.trace.drop("dns", "unexpected_server", server=int2ip(server), id=msg.ident)
            return
        if len(msg.questions) != 1 or msg.questions[0].name != q.name:
            self.trace.drop("dns", "wrong_question", server=int2ip(server), id=msg.ident)
            return
        self.trace.count("dns", "answers")
        rcode = msg.rcode
        if self.trace.on:
            self.trace.event("dns", "answer", name=q.name, id=msg.ident, server=int2ip(server),
                             rcode=rcode, truncated=msg.truncated, answers=len(msg.answers))
        if msg.truncated:
            self._finish(q, Lookup(q.name, truncated=True), None, now)
        elif rcode == RCODE_NOERROR:
            found, ttl, canonical = addresses(msg, q.name)
            if found:
                self._finish(q, Lookup(q.name, tuple(found), canonical), ttl, now)
            else:
                self._finish(q, Lookup(q.name, canonical=canonical, error=socket.EAI_NODATA),
                             None, now)
        elif rcode == RCODE_NXDOMAIN:
            self._finish(q, Lookup(q.name, error=socket.EAI_NONAME), None, now)
        elif rcode in (RCODE_SERVFAIL, RCODE_REFUSED) and q.tries:
            self._ask(q, now)  # another server may know
        elif rcode in (RCODE_SERVFAIL, RCODE_REFUSED):
            self._finish(q, Lookup(q.name, error=socket.EAI_AGAIN), None, now)
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
                                 server=int2ip(q.server))
            if q.tries:
                self._ask(q, now)
            else:
                self._finish(q, Lookup(q.name, error=socket.EAI_AGAIN), None, now)
