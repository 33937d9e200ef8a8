"""Hostile DNS answers, fuzzed: whatever bytes arrive for a pending query
(over UDP or TCP), the resolver raises nothing, and every message is either
believed (counted as an answer) or dropped (counted by reason)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.net.dns import Resolver, ResolverConfig
from stack.trace import Trace
from stack.wire.dns import TC, parse_message
from tests.helpers.dns import hostile_variants, reply

SERVER = 0xC0000201


def _world(tcp: bool):
    sent: list[tuple[int, bytes]] = []
    tcp_sent: list[tuple[int, int, bytes]] = []
    results: list = []
    trace = Trace()
    r = Resolver([SERVER], lambda s, p: sent.append((s, p)), trace, random.Random(3),
                 ResolverConfig(), send_tcp=(lambda s, i, p: tcp_sent.append((s, i, p)))
                 if tcp else None)
    r.resolve("www.example.test", 0.0, results.append)
    ident = parse_message(sent[-1][1]).ident
    return r, trace, results, ident


def _drops(trace: Trace) -> int:
    return sum(v for k, v in trace.counters.items() if k.startswith("dns.drop."))


mutation = st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=mutation, cut=st.integers(0, 600), tcp=st.booleans(), junk=st.binary(max_size=64))
def test_mutated_answers_are_believed_or_dropped_never_raised(flips, cut, tcp, junk):
    """``tcp``: the resolver may retry over TCP (a flipped TC bit sends it there)."""
    r, trace, results, ident = _world(tcp)
    good = reply(ident, "www.example.test", ["198.51.100.7"], cname="web.example.test")
    fed = 0
    for raw in [*hostile_variants(ident, "www.example.test", good), junk]:
        data = bytearray(raw)
        for pos, value in flips:
            if pos < len(data):
                data[pos] = value
        r.receive(SERVER, bytes(data[:cut or None]), 1.0)
        fed += 1
    answers = trace.counters.get("dns.answers", 0)
    assert answers + _drops(trace) == fed
    # one query: still pending (perhaps over TCP now, when a flipped bit set TC) or over
    assert r.status()["pending"] + len(results) == 1


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=700))
def test_random_bytes_over_tcp_after_truncation(data):
    r, trace, results, ident = _world(tcp=True)
    r.receive(SERVER, reply(ident, "www.example.test", flags=0x8000 | TC), 0.0)
    assert r.wants_tcp(SERVER, ident)
    r.receive_tcp(SERVER, data, 0.5)
    assert trace.counters.get("dns.answers", 0) + _drops(trace) == 2
    # the lookup is over, or still pending (asked again over UDP) -- never raised
    assert len(results) == 1 or r.status()["pending"] == 1
