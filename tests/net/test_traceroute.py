"""Traceroute's probes and the matching of their answers, on a manual clock:
hand-built ICMP time exceeded and port unreachable quoting the probes the
stack really sent, and errors that quote something else."""

from __future__ import annotations

import pytest

from stack.net.traceroute import Hop, ProbeAnswer, Traceroute, format_hop
from tests.helpers.frames import FAR, GATEWAY, US, ipv4, udp
from tests.helpers.icmp import from_router, routed_host, sent_ip

ROUTER2 = 0xC6336401  # 198.51.100.1


def tracer(x, **kw):
    kw.setdefault("max_hops", 5)
    kw.setdefault("probes", 2)
    kw.setdefault("timeout", 1.0)
    tr = Traceroute(x.net.udp, x.net.icmp, x.net.trace, FAR, **kw)
    with x.net.lock:
        tr.start(x.t)
    return tr


def probe(x) -> bytes:
    """The next probe: one sent as an answer arrived, or one sent now."""
    waiting = getattr(x, "waiting", [])
    [p] = waiting or sent_ip(x, 17)
    x.waiting = []
    return p


def ports(p: bytes) -> tuple[int, int]:
    return int.from_bytes(p[20:22], "big"), int.from_bytes(p[22:24], "big")


def answer(x, p: bytes, type_: int, code: int, src: int, after: float) -> None:
    x.t += after
    x.waiting = [f[14:] for f in from_router(x, type_, code, p, src=src)
                 if f[12:14] == b"\x08\x00" and f[14 + 9] == 17]


def test_probes_go_out_with_the_ttl_of_their_hop_and_one_port_more_each():
    x = routed_host()
    tr = tracer(x)
    p = probe(x)
    sport, dport = ports(p)
    assert (p[8], dport, int.from_bytes(p[16:20], "big")) == (1, 33434, FAR)
    assert len(p) == 60
    answer(x, p, 11, 0, GATEWAY, 0.004)
    p2 = probe(x)
    assert (p2[8], ports(p2)) == (1, (sport, 33435))
    answer(x, p2, 11, 0, GATEWAY, 0.002)
    p3 = probe(x)
    assert (p3[8], ports(p3)) == (2, (sport, 33436))
    assert tr.hops[0] == Hop(1, [ProbeAnswer("192.0.2.254", pytest.approx(0.004)),
                                 ProbeAnswer("192.0.2.254", pytest.approx(0.002))])


def test_the_destination_s_port_unreachable_ends_the_trace_after_its_hop():
    x = routed_host()
    tr = tracer(x)
    for ttl, who in ((1, GATEWAY), (2, ROUTER2), (3, FAR)):
        for _ in range(2):
            p = probe(x)
            assert p[8] == ttl
            answer(x, p, 11 if who != FAR else 3, 0 if who != FAR else 3, who, 0.001 * ttl)
    assert tr.done and x.waiting == [] and sent_ip(x, 17) == []
    assert [[a.address for a in h.probes] for h in tr.hops] == [
        ["192.0.2.254"] * 2, ["198.51.100.1"] * 2, ["198.51.100.7"] * 2]
    assert x.counter("udp.traceroute_answers") == 6


def test_a_probe_with_no_answer_is_a_star_and_the_next_goes_at_its_deadline():
    x = routed_host()
    tr = tracer(x)
    start = x.t
    probe(x)
    assert tr.next_deadline() == start + 1.0
    with x.net.lock:
        tr.on_timer(start + 0.999)
    assert sent_ip(x, 17) == []
    x.t = start + 1.0
    with x.net.lock:
        tr.on_timer(x.t)
    p = probe(x)
    assert ports(p)[1] == 33435
    assert tr.hops[0].probes == [ProbeAnswer(None, None)]
    assert x.counter("udp.traceroute_timeouts") == 1


def test_max_hops_ends_the_trace():
    x = routed_host()
    tr = tracer(x, max_hops=2, probes=1)
    for _ in range(2):
        probe(x)
        x.t += 1.0
        with x.net.lock:
            tr.on_timer(x.t)
    assert tr.done and [len(h.probes) for h in tr.hops] == [1, 1]


def test_a_late_answer_for_an_earlier_probe_is_dropped_and_counted():
    x = routed_host()
    tr = tracer(x)
    first = probe(x)
    x.t += 1.0
    with x.net.lock:
        tr.on_timer(x.t)
    second = probe(x)
    answer(x, first, 11, 0, GATEWAY, 0.1)  # the first probe's, too late
    assert x.counter("icmp.drop.traceroute_unmatched") == 1
    assert tr.hops[0].probes == [ProbeAnswer(None, None)]
    answer(x, second, 11, 0, GATEWAY, 0.001)
    assert tr.hops[0].probes[1].address == "192.0.2.254"


def test_time_exceeded_quoting_another_destination_from_our_port_is_dropped():
    x = routed_host()
    tr = tracer(x)
    p = probe(x)
    elsewhere = p[:16] + bytes([198, 51, 100, 99]) + p[20:]
    answer(x, elsewhere, 11, 0, GATEWAY, 0.001)
    assert x.counter("icmp.drop.traceroute_unmatched") == 1 and tr.hops[0].probes == []


def test_time_exceeded_quoting_nothing_of_ours_never_reaches_the_trace():
    x = routed_host()
    tr = tracer(x)
    p = probe(x)
    sport, dport = ports(p)
    not_our_address = ipv4(0xC0000209, FAR, 17, udp(0xC0000209, FAR, sport, dport, bytes(32)))
    answer(x, not_our_address, 11, 0, GATEWAY, 0.001)
    assert x.counter("icmp.drop.bad_quote") == 1
    not_our_port = ipv4(US, FAR, 17, udp(US, FAR, sport ^ 1, dport, bytes(32)))
    answer(x, not_our_port, 11, 0, GATEWAY, 0.001)
    assert x.counter("udp.drop.icmp_error_unmatched") == 1
    assert tr.hops[0].probes == []
    answer(x, p, 11, 0, GATEWAY, 0.001)
    assert tr.hops[0].probes[0].address == "192.0.2.254"


def test_another_unreachable_is_flagged_as_traceroute_does_and_ends_the_trace():
    x = routed_host()
    tr = tracer(x, probes=1)
    answer(x, probe(x), 3, 13, GATEWAY, 0.001)
    assert tr.done and tr.hops[0].probes[0].flag == "!X"
    assert format_hop(tr.hops[0]) == " 1  192.0.2.254  1.000 ms !X"


def test_when_done_the_port_is_closed_and_errors_quoting_it_go_unmatched():
    x = routed_host()
    tr = tracer(x, probes=1)
    p = probe(x)
    answer(x, p, 3, 3, FAR, 0.001)
    assert tr.done
    answer(x, p, 11, 0, GATEWAY, 0.001)
    assert x.counter("udp.drop.icmp_error_unmatched") == 1


@pytest.mark.parametrize("probes,line", [
    ([ProbeAnswer("192.0.2.1", 0.000412), ProbeAnswer("192.0.2.1", 0.00038),
      ProbeAnswer("192.0.2.1", 0.000377)], " 1  192.0.2.1  0.412 ms  0.380 ms  0.377 ms"),
    ([ProbeAnswer(None, None)] * 3, " 1  * * *"),
    ([ProbeAnswer(None, None), ProbeAnswer("192.0.2.1", 0.001), ProbeAnswer("192.0.2.9", 0.002)],
     " 1  * 192.0.2.1  1.000 ms 192.0.2.9  2.000 ms"),
])
def test_a_hop_is_printed_like_traceroute_n(probes, line):
    assert format_hop(Hop(1, probes)) == line


def test_bad_arguments_are_refused():
    x = routed_host()
    for kw in ({"max_hops": 0}, {"probes": 0}, {"timeout": 0.0}, {"port": 65535}):
        with pytest.raises(ValueError):
            Traceroute(x.net.udp, x.net.icmp, x.net.trace, FAR, **kw)
