"""A connect that the socket's timeout ends says so in the trace (not just
"user abort"), and one that TCP gives up says how many SYNs it sent."""

from __future__ import annotations

import pytest

from stack import Stack
from stack.tcp import TcpConfig


def closed_causes(net: Stack) -> list[str]:
    return [e["cause"] for e in net.trace_events if e.get("event") == "state"
            and e.get("to") == "CLOSED" and e.get("layer") == "tcp"]


def make_pair(config: TcpConfig):
    a, b = Stack.pair(tcp_config=config)
    for net in (a, b):
        net.trace_events = []
        net.trace.subscribe(net.trace_events.append)
    return a, b


@pytest.fixture
def pair():
    a, b = make_pair(TcpConfig(syn_retries=1, rto_initial=0.05))
    yield a, b
    a.close(grace=0)
    b.close(grace=0)


def test_socket_timeout_names_itself_as_the_cause():
    a, b = make_pair(TcpConfig())  # TCP would try for about two minutes
    self_close = (a, b)
    s = a.socket()
    s.settimeout(0.2)
    with pytest.raises(TimeoutError):
        s.connect(("192.0.2.99", 80))  # nobody has this address: no ARP answer, no SYN,ACK
    s.close()
    for net in self_close:
        net.close(grace=0)
    assert closed_causes(a) == ["user abort (connect timed out after 0.2 s)"]


def test_tcp_giving_up_says_how_many_syns(pair):
    a, b = pair
    b.close(grace=0)  # the peer is gone: the SYNs go unanswered
    s = a.socket()
    s.settimeout(5)
    with pytest.raises(OSError):
        s.connect(("192.0.2.2", 80))
    s.close()
    assert closed_causes(a) == ["timer retransmit (connect timed out after 2 SYNs)"]
