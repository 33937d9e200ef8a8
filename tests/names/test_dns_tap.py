"""Names resolved by a real DNS server: Debian's dnsmasq on the kernel side of
a TAP (in the test run's private network namespace), the stack's queries
and answers crossing the TAP as UDP datagrams (and TCP after a truncated
answer), as the trace shows."""

from __future__ import annotations

import json
import socket

from tests.helpers.dns import dnsmasq

BIG = {f"n{i}": f"192.0.2.{100 + i}" for i in range(40)}   # too many for 512 bytes of UDP


def _events(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_getaddrinfo_by_name_through_dnsmasq(tap_stack, tmp_path):
    trace = tmp_path / "trace.jsonl"
    net = tap_stack(dns=["192.0.2.1"], trace=str(trace))
    with dnsmasq(listen="192.0.2.1", records={"www.example.test": "192.0.2.1"},
                 cnames={"alias.example.test": "www.example.test"}):
        assert net.getaddrinfo("www.example.test", 80, type=socket.SOCK_STREAM) == [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("192.0.2.1", 80))]
        assert net.gethostbyname_ex("alias.example.test") == (
            "www.example.test", ["alias.example.test"], ["192.0.2.1"])
        assert net.gethostbyaddr("192.0.2.1") == ("www.example.test", [], ["192.0.2.1"])
        try:
            net.getaddrinfo("nowhere.example.test", 80)
            raised = None
        except socket.gaierror as e:
            raised = e.args
        assert raised == (socket.EAI_NONAME, "Name or service not known")
    net.close()
    events = _events(trace)
    dns = [(e["event"], e.get("name"), e.get("via")) for e in events if e["layer"] == "dns"]
    assert dns[:3] == [("config", None, None), ("query", "www.example.test", "udp"),
                       ("answer", "www.example.test", "udp")]
    assert ("query", "1.2.0.192.in-addr.arpa", "udp") in dns
    # the datagrams under them, to and from the kernel's port 53
    first_query = next(i for i, e in enumerate(events)
                       if e["layer"] == "dns" and e["event"] == "query")
    udp = [e for e in events[first_query:] if e["layer"] == "udp"][:2]
    assert [(e["event"], e["dst"] if e["event"] == "out" else e["src"]) for e in udp] == [
        ("out", "192.0.2.1:53"), ("in", "192.0.2.1:53")]


def test_a_truncated_answer_from_dnsmasq_is_fetched_over_tcp(tap_stack, tmp_path):
    trace = tmp_path / "trace.jsonl"
    net = tap_stack(dns=["192.0.2.1"], trace=str(trace))
    records = {"www.example.test": "192.0.2.1"}
    extra = tuple(f"--host-record=big.example.test,{a}" for a in BIG.values())
    with dnsmasq(listen="192.0.2.1", records=records, extra=extra):
        infos = net.getaddrinfo("big.example.test", 80, socket.AF_INET, socket.SOCK_STREAM)
    assert sorted(i[4][0] for i in infos) == sorted(BIG.values())
    net.close()
    events = _events(trace)
    dns = [(e["event"], e.get("via")) for e in events
           if e["layer"] == "dns" and e["event"] in ("query", "answer")]
    assert dns == [("query", "udp"), ("answer", "udp"), ("query", "tcp"), ("answer", "tcp")]
    assert next(e for e in events if e["layer"] == "dns" and e["event"] == "answer")["truncated"]
    states = [(e["conn"].split("-")[1], e["to"]) for e in events
              if e["layer"] == "tcp" and e["event"] == "state"]
    assert ("192.0.2.1:53", "ESTABLISHED") in states
