"""The resolver wired to the stack, on a manual clock: two stacks on an
in-memory link, a tiny DNS server on the other stack's own sockets, every
query and answer crossing real UDP datagrams (and TCP segments after a
truncated answer). Nothing runs by itself: ``World.run`` steps both stacks,
the server and the client's resolver."""

from __future__ import annotations

import socket

import pytest

from stack import Stack
from stack.link.memory import MemoryLink
from stack.trace import Trace
from tests.helpers.dns import TinyDns, Zone

CLIENT, SERVER, NOBODY = "192.0.2.2", "192.0.2.1", "192.0.2.9"


class World:
    def __init__(self, dns=(SERVER,), **zones: Zone) -> None:
        self.t = 10.0
        la, lb = MemoryLink.pair()
        self.events: list[dict] = []
        trace = Trace()
        trace.subscribe(self.events.append)
        self.client = Stack(la, address=CLIENT + "/24", thread=False, clock=lambda: self.t,
                            trace=trace, seed=7, dns=list(dns))
        self.server = Stack(lb, address=SERVER + "/24", thread=False, clock=lambda: self.t,
                            seed=8)
        self.dns = TinyDns(self.server, {k.replace("_", "."): v for k, v in zones.items()})
        self.results: list = []

    def close(self) -> None:
        self.dns.close()
        self.client.close()
        self.server.close()

    def start(self, name: str, qtype: int = 1) -> None:
        self.client.names.dns.start(name, self.results.append, qtype)

    def run(self, until: float, tick: float = 0.05) -> None:
        """Step everything every ``tick`` seconds of the manual clock up to ``until``."""
        while True:
            for _ in range(4):  # a few rounds: ARP, the query, the answer, its ACK
                self.client.step(self.t)
                self.server.step(self.t)
                self.dns.poll()
                self.client.names.dns.poll(self.t)
            if self.t >= until:
                return
            self.t = min(until, self.t + tick)

    def dns_events(self, event: str | None = None) -> list[dict]:
        return [e for e in self.events if e["layer"] == "dns"
                and (event is None or e["event"] == event)]

    def counter(self, name: str) -> int:
        return self.client.stats().get(name, 0)


@pytest.fixture
def world():
    made = []

    def make(*args, **kw):
        w = World(*args, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def test_a_query_and_its_answer_cross_the_stacks_udp(world):
    w = world(www_example_test=Zone(("198.51.100.7", "198.51.100.8")))
    w.start("www.example.test")
    w.run(10.5)
    (result,) = w.results
    assert result.addresses == ("198.51.100.7", "198.51.100.8") and result.error is None
    assert w.dns.queries() == ["www.example.test"] and w.dns.log[0][1] == "udp"
    query, answer = w.dns_events("query"), w.dns_events("answer")
    assert [(e["via"], e["server"]) for e in query + answer] == [("udp", SERVER)] * 2
    # the datagrams themselves: one out of the client, one into it, port 53 on the far end
    udp = [e for e in w.events if e["layer"] == "udp"]
    assert [(e["event"], e["dst"].endswith(":53") or e["src"].endswith(":53")) for e in udp] == \
        [("out", True), ("in", True)]
    assert w.client.names.dns.status() == {"pending": 0, "cached": 1, "waiters": 0,
                                           "tcp_exchanges": 0}


def test_answers_are_cached_for_their_ttl(world):
    w = world(a_test=Zone(("192.0.2.50",), ttl=30))
    w.start("a.test")
    w.run(10.5)
    w.t = 39.9
    w.start("a.test")
    w.run(40.0)
    assert len(w.dns.queries()) == 1 and len(w.results) == 2
    assert w.counter("dns.cache_hits") == 1
    w.t = 40.6  # 30 s after the answer: asked again
    w.start("a.test")
    w.run(41.0)
    assert len(w.dns.queries()) == 2 and w.results[2].addresses == ("192.0.2.50",)


def test_a_silent_server_is_asked_again_after_each_timeout_then_eai_again(world):
    w = world(slow_test=Zone(("192.0.2.50",), mode="silent"))
    w.start("slow.test")
    w.run(20.0)
    asked = [round(t - 10.0, 2) for t, _, _ in w.dns.log]
    assert asked == [0.0, 2.0]                      # timeout 2 s, 2 attempts
    assert [r.error for r in w.results] == [socket.EAI_AGAIN]
    assert round(w.dns_events("timeout")[-1]["t"], 1) == 4.0  # gave up 4 s in
    assert w.counter("dns.timeouts") == 2


def test_failover_to_the_next_server_when_the_first_never_answers(world):
    w = world(dns=(NOBODY, SERVER), www_example_test=Zone(("198.51.100.7",)))
    w.start("www.example.test")
    w.run(15.0)
    assert w.results[0].addresses == ("198.51.100.7",)
    queries = [(e["server"], round(e["t"], 2)) for e in w.dns_events("query")]
    assert queries == [(NOBODY, 0.0), (SERVER, 2.0)]
    assert [round(t - 10.0, 2) for t, _, _ in w.dns.log] == [2.0]


def test_servfail_asks_the_next_server_at_once(world):
    w = world(dns=(SERVER, SERVER), a_test=Zone(("192.0.2.50",), mode="servfail"))
    w.start("a.test")
    w.run(11.0)
    assert len(w.dns.log) == 4  # every attempt at once, no timeout waited for
    assert w.results[0].error == socket.EAI_AGAIN and w.counter("dns.timeouts") == 0


def test_a_truncated_answer_is_asked_again_over_tcp(world):
    w = world(big_test=Zone(tuple(f"198.51.100.{i}" for i in range(1, 41)), mode="truncate"))
    w.start("big.test")
    w.run(11.0)
    (result,) = w.results
    assert len(result.addresses) == 40 and result.addresses[0] == "198.51.100.1"
    assert [v for _, v, _ in w.dns.log] == ["udp", "tcp"]
    assert [(e["event"], e["via"]) for e in w.dns_events() if e["event"] in ("query", "answer")] \
        == [("query", "udp"), ("answer", "udp"), ("query", "tcp"), ("answer", "tcp")]
    states = [(e["from"], e["to"]) for e in w.events
              if e["layer"] == "tcp" and e["event"] == "state"]
    assert ("SYN_SENT", "ESTABLISHED") in states and ("ESTABLISHED", "FIN_WAIT_1") in states
    assert w.client.names.dns.status()["tcp_exchanges"] == 0


def test_a_tcp_server_that_never_answers_times_out_and_udp_is_tried_again(world):
    w = world(big_test=Zone(("198.51.100.1",), mode="tcp-silent"))
    w.start("big.test")
    w.run(20.0)
    assert [v for _, v, _ in w.dns.log] == ["udp", "tcp", "udp", "tcp"]
    assert w.results[0].error == socket.EAI_AGAIN
    assert w.client.names.dns.status() == {"pending": 0, "cached": 0, "waiters": 0,
                                           "tcp_exchanges": 0}
    # the abandoned connections were aborted, not left open
    assert not [c for c in w.client.connections() if c.get("state") == "ESTABLISHED"]


def test_hostile_answers_are_dropped_and_counted_and_the_real_one_counts(world):
    w = world(a_test=Zone(("192.0.2.50",), mode="hostile"))
    w.start("a.test")
    w.run(10.5)
    assert w.results[0].addresses == ("192.0.2.50",)
    drops = {k: v for k, v in w.client.stats().items() if k.startswith("dns.drop.")}
    assert drops == {"dns.drop.unexpected_id": 1, "dns.drop.wrong_question": 1,
                     "dns.drop.malformed_rdlength": 1, "dns.drop.malformed_name": 1,
                     "dns.drop.malformed_counts": 1}
    assert sum(drops.values()) == len([e for e in w.dns_events("drop")])


def test_a_datagram_from_another_port_is_not_delivered(world):
    w = world(a_test=Zone(("192.0.2.50",), mode="silent"))
    w.start("a.test")
    w.run(10.2)
    src = next(e["src"] for e in w.events if e["layer"] == "udp" and e["event"] == "out")
    with w.server.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 5353))
        s.sendto(b"\0" * 12, (CLIENT, int(src.split(":")[1])))
    w.run(10.4)
    assert w.counter("udp.drop.port_closed") == 1 and not w.results
    assert w.client.names.dns.status()["pending"] == 1


def test_port_unreachable_fails_over_at_once(world):
    w = world(dns=(SERVER, SERVER))
    w.dns.close()  # nothing listens on port 53 there: ICMP port unreachable
    w.start("a.test")
    w.run(10.3)
    assert [r.error for r in w.results] == [socket.EAI_AGAIN]
    assert w.counter("dns.unreachable") == 4 and w.counter("dns.timeouts") == 0
    assert [round(e["t"], 1) for e in w.dns_events("query")] == [0.0] * 4


def test_many_askers_of_one_name_share_one_query(world):
    w = world(a_test=Zone(("192.0.2.50",)))
    for _ in range(50):
        w.start("a.test")
    w.run(10.5)
    assert len(w.dns.queries()) == 1 and len(w.results) == 50
    assert {r.addresses for r in w.results} == {("192.0.2.50",)}


def test_a_ptr_query_and_a_cname(world):
    w = world(**{"7.100.51.198.in-addr.arpa": Zone(ptr=("web.example.test",)),
                 "www.example.test": Zone(("198.51.100.7",), cname="web.example.test")})
    w.start("7.100.51.198.in-addr.arpa", qtype=12)
    w.start("www.example.test")
    w.run(10.5)
    ptr, a = w.results
    assert ptr.names == ("web.example.test",)
    assert (a.canonical, a.aliases, a.addresses) == ("web.example.test", ("www.example.test",),
                                                      ("198.51.100.7",))


def test_no_servers_fails_at_once(world):
    w = world(dns=())
    w.start("a.test")
    assert [r.error for r in w.results] == [socket.EAI_AGAIN] and w.dns_events("query") == []


def test_a_server_without_a_route_is_skipped_at_once(world):
    w = world(dns=("203.0.113.53", SERVER), a_test=Zone(("192.0.2.50",)))
    w.start("a.test")
    w.run(10.2)
    assert w.results[0].addresses == ("192.0.2.50",)
    assert [round(t - 10.0, 2) for t, _, _ in w.dns.log] == [0.0]  # no timeout waited for
    assert w.counter("dns.drop.send_failed") == 1  # ENETUNREACH, then the next server
