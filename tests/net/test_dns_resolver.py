"""The DNS stub resolver on a manual clock: queries, answers, failover,
timeouts, TTL caching, truncation, and answers it must not believe."""

from __future__ import annotations

import random
import socket
import struct

import pytest

from stack.net.dns import Lookup, Resolver, ResolverConfig, tcp_frame
from stack.trace import Trace
from stack.wire.dns import CLASS_IN, QR, RA, RD, TC, TYPE_A, encode_name, parse_message

S1, S2 = 0xC0000201, 0xC0000202          # 192.0.2.1, 192.0.2.2


class World:
    def __init__(self, servers=(S1, S2), **cfg):
        self.sent: list[tuple[int, bytes]] = []
        self.sent_at: list[float] = []
        self.results: list[Lookup] = []
        self.events: list[dict] = []
        self.trace = Trace(clock=lambda: self.now)
        self.trace.subscribe(self.events.append)
        self.r = Resolver(list(servers), self._send, self.trace, random.Random(1),
                          ResolverConfig(**cfg))
        self.now = 0.0

    def _send(self, server: int, payload: bytes) -> None:
        self.sent.append((server, payload))
        self.sent_at.append(self.now)

    def resolve(self, name: str) -> None:
        self.r.resolve(name, self.now, self.results.append)

    def last_query(self) -> tuple[int, int, str]:
        server, payload = self.sent[-1]
        msg = parse_message(payload)
        return server, msg.ident, msg.questions[0].name

    def run_until(self, t: float) -> None:
        while (d := self.r.next_deadline()) is not None and d <= t:
            self.now = d
            self.r.on_timer(d)
        self.now = t


def reply(ident: int, name: str, addrs=(), ttl=300, rcode=0, flags=QR | RD | RA,
          cname: str | None = None) -> bytes:
    q = encode_name(name) + struct.pack("!HH", TYPE_A, CLASS_IN)
    records = b""
    owner = encode_name(name)
    if cname is not None:
        target = encode_name(cname)
        records += owner + struct.pack("!HHIH", 5, CLASS_IN, ttl, len(target)) + target
        owner = target
    for a in addrs:
        records += owner + struct.pack("!HHIH", TYPE_A, CLASS_IN, ttl, 4) + socket.inet_aton(a)
    n = len(addrs) + (cname is not None)
    return struct.pack("!HHHHHH", ident, flags | rcode, 1, n, 0, 0) + q + records


def test_a_query_and_its_answer():
    w = World()
    w.resolve("WWW.Example.Test.")
    server, ident, name = w.last_query()
    assert server == S1 and name == "www.example.test"
    w.r.receive(S1, reply(ident, name, ["198.51.100.7", "198.51.100.8"]), w.now)
    assert w.results == [Lookup("www.example.test", ("198.51.100.7", "198.51.100.8"),
                                "www.example.test")]
    assert w.r.next_deadline() is None
    assert [(e["event"], e["server"]) for e in w.events] == [("query", "192.0.2.1"),
                                                             ("answer", "192.0.2.1")]


def test_cname_gives_the_canonical_name():
    w = World()
    w.resolve("www.example.test")
    _, ident, name = w.last_query()
    w.r.receive(S1, reply(ident, name, ["198.51.100.9"], cname="web.example.test"), w.now)
    assert w.results[0].canonical == "web.example.test"
    assert w.results[0].addresses == ("198.51.100.9",)


def test_answers_are_cached_for_their_ttl():
    w = World()
    w.resolve("a.test")
    _, ident, name = w.last_query()
    w.r.receive(S1, reply(ident, name, ["192.0.2.9"], ttl=30), w.now)
    w.now = 29.9
    w.resolve("a.test")
    assert len(w.sent) == 1 and w.results[1] == w.results[0]
    assert w.trace.counters["dns.cache_hits"] == 1
    w.now = 30.0
    w.resolve("a.test")
    assert len(w.sent) == 2  # expired: asked again


def test_one_query_for_many_askers_of_the_same_name():
    w = World()
    w.resolve("a.test")
    w.resolve("a.test")
    assert len(w.sent) == 1
    _, ident, name = w.last_query()
    w.r.receive(S1, reply(ident, name, ["192.0.2.9"]), w.now)
    assert len(w.results) == 2 and w.results[0] == w.results[1]


def test_timeouts_fail_over_between_servers_then_give_up():
    w = World(timeout=2.0, attempts=2)
    w.resolve("slow.test")
    w.run_until(100.0)
    assert list(zip(w.sent_at, [s for s, _ in w.sent])) == [(0, S1), (2, S2), (4, S1), (6, S2)]
    assert w.results == [Lookup("slow.test", error=socket.EAI_AGAIN)]
    assert w.trace.counters["dns.timeouts"] == 4


def test_servfail_asks_the_next_server_at_once():
    w = World()
    w.resolve("a.test")
    _, ident, name = w.last_query()
    w.r.receive(S1, reply(ident, name, rcode=2), w.now)
    assert w.last_query()[0] == S2 and not w.results
    w.r.receive(S2, reply(ident, name, ["192.0.2.5"]), w.now)
    assert w.results[0].addresses == ("192.0.2.5",)


@pytest.mark.parametrize("rcode, addrs, error", [
    (3, (), socket.EAI_NONAME),      # NXDOMAIN
    (0, (), socket.EAI_NODATA),      # the name exists, without addresses
    (4, (), socket.EAI_FAIL),        # NOTIMP
])
def test_failures_map_to_libc_codes_and_are_not_cached(rcode, addrs, error):
    w = World()
    w.resolve("x.test")
    _, ident, name = w.last_query()
    w.r.receive(S1, reply(ident, name, addrs, rcode=rcode), w.now)
    assert w.results[0].error == error
    w.resolve("x.test")
    assert len(w.sent) == 2


def test_a_truncated_answer_ends_the_udp_lookup_for_tcp():
    w = World()
    w.resolve("big.test")
    _, ident, name = w.last_query()
    w.r.receive(S1, reply(ident, name, flags=QR | RD | RA | TC), w.now)
    assert w.results == [Lookup("big.test", truncated=True)]
    payload = w.sent[-1][1]
    assert tcp_frame(payload) == struct.pack("!H", len(payload)) + payload


@pytest.mark.parametrize("mutate, reason", [
    (lambda ident, name, data: (S2, data), "unexpected_server"),
    (lambda ident, name, data: (S1, reply(ident ^ 1, name, ["192.0.2.66"])), "unexpected_id"),
    (lambda ident, name, data: (S1, reply(ident, "other.test", ["192.0.2.66"])),
     "wrong_question"),
    (lambda ident, name, data: (S1, data[:-3]), "malformed_rdlength"),
    (lambda ident, name, data: (S1, reply(ident, name, ["192.0.2.66"], flags=0)),
     "unexpected_id"),  # a query, not a response
])
def test_answers_not_to_be_believed_are_dropped_and_counted(mutate, reason):
    w = World()
    w.resolve("a.test")
    _, ident, name = w.last_query()
    server, data = mutate(ident, name, reply(ident, name, ["192.0.2.66"]))
    w.r.receive(server, data, w.now)
    assert w.results == [] and w.trace.counters[f"dns.drop.{reason}"] == 1
    w.r.receive(S1, reply(ident, name, ["192.0.2.5"]), w.now)  # the real one still counts
    assert w.results[0].addresses == ("192.0.2.5",)


def test_names_dns_cannot_carry_fail_at_once():
    w = World()
    w.resolve("a" * 70 + ".test")
    assert w.results == [Lookup("a" * 70 + ".test", error=socket.EAI_NONAME)] and not w.sent


def test_pending_lookups_and_the_cache_are_bounded():
    w = World(max_pending=3, cache_size=2)
    for i in range(5):
        w.resolve(f"n{i}.test")
    assert len(w.sent) == 3
    assert [r.error for r in w.results] == [socket.EAI_AGAIN] * 2
    assert w.trace.counters["dns.drop.too_many_lookups"] == 2
    for server, payload in list(w.sent):
        msg = parse_message(payload)
        w.r.receive(server, reply(msg.ident, msg.questions[0].name, ["192.0.2.1"]), w.now)
    before = len(w.sent)
    w.resolve("n0.test")  # evicted: the cache keeps the two most recent
    w.resolve("n2.test")
    assert len(w.sent) == before + 1


def test_no_servers_is_eai_again():
    w = World(servers=())
    w.resolve("a.test")
    assert w.results == [Lookup("a.test", error=socket.EAI_AGAIN)]
