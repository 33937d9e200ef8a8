"""The blocking name functions on two threaded stacks joined in memory, a
tiny DNS server on the other stack's own sockets: getaddrinfo and friends by
name, many threads at once, reverse lookups, and what a user sees when DNS
fails."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from stack import Stack
from stack.link.memory import MemoryLink
from stack.trace import Trace
from tests.helpers.dns import TinyDns, Zone

CLIENT, SERVER = "192.0.2.2", "192.0.2.1"


@pytest.fixture
def pair():
    """(client stack, TinyDns on the server stack, the client's trace events)."""
    la, lb = MemoryLink.pair()
    events: list[dict] = []
    trace = Trace()
    trace.subscribe(events.append)
    client = Stack(la, address=CLIENT + "/24", trace=trace, dns=[SERVER],
                   hosts={"box.test": "192.0.2.77"})
    server = Stack(lb, address=SERVER + "/24")
    dns = TinyDns(server, {
        "www.example.test": Zone(("198.51.100.7",), cname="web.example.test"),
        "slow.example.test": Zone(("198.51.100.8",), mode="silent"),
        "7.100.51.198.in-addr.arpa": Zone(ptr=("web.example.test",)),
        "xn--bcher-kva.test": Zone(("198.51.100.9",)),
    })
    dns.start_thread()
    yield client, dns, events
    dns.close()
    client.close()
    server.close()


def test_getaddrinfo_by_name(pair):
    net, dns, events = pair
    infos = net.getaddrinfo("www.example.test", "http", socket.AF_INET, socket.SOCK_STREAM,
                            0, socket.AI_CANONNAME)
    assert infos == [(socket.AF_INET, socket.SOCK_STREAM, 6, "web.example.test",
                      ("198.51.100.7", 80))]
    assert [e["event"] for e in events if e["layer"] == "dns"] == ["config", "query", "answer"]


def test_gethostbyname_ex_gives_the_cname_chain(pair):
    net, _, _ = pair
    assert net.gethostbyname("www.example.test") == "198.51.100.7"
    assert net.gethostbyname_ex("www.example.test") == (
        "web.example.test", ["www.example.test"], ["198.51.100.7"])


def test_the_hosts_table_answers_before_dns(pair):
    net, dns, _ = pair
    assert net.gethostbyname("BOX.test") == "192.0.2.77"
    assert net.gethostbyaddr("192.0.2.77") == ("box.test", [], ["192.0.2.77"])
    assert net.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)
    assert dns.queries() == []


def test_reverse_lookups_ask_ptr(pair):
    net, dns, _ = pair
    assert net.gethostbyaddr("198.51.100.7") == ("web.example.test", [], ["198.51.100.7"])
    assert net.getnameinfo(("198.51.100.7", 443), 0) == ("web.example.test", "https")
    assert net.getfqdn("198.51.100.7") == "web.example.test"
    assert dns.queries() == ["7.100.51.198.in-addr.arpa"]  # the second and third: cached


def test_unknown_names_and_addresses_fail_as_libc_says(pair):
    net, _, _ = pair
    with pytest.raises(socket.gaierror) as e:
        net.getaddrinfo("nowhere.example.test", 80)
    assert e.value.args == (socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(socket.herror) as h:
        net.gethostbyaddr("198.51.100.99")
    assert h.value.args == (1, "Unknown host")
    assert net.getnameinfo(("198.51.100.99", 80), 0) == ("198.51.100.99", "http")
    with pytest.raises(socket.gaierror) as e:
        net.getnameinfo(("198.51.100.99", 80), socket.NI_NAMEREQD)
    assert e.value.errno == socket.EAI_NONAME
    assert net.getfqdn("198.51.100.99") == "198.51.100.99"


def test_a_silent_server_is_eai_again_after_the_timeouts(pair):
    net, dns, _ = pair
    t0 = time.monotonic()
    with pytest.raises(socket.gaierror) as e:
        net.getaddrinfo("slow.example.test", 80)
    took = time.monotonic() - t0
    assert e.value.args == (socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert 3.9 < took < 6.0  # 2 attempts of 2 s
    assert dns.queries() == ["slow.example.test"] * 2


def test_two_hundred_threads_resolve_one_name_with_one_query(pair):
    net, dns, _ = pair
    results: list = []
    errors: list = []
    start = threading.Barrier(200)

    def resolve() -> None:
        try:
            start.wait()
            results.append(net.getaddrinfo("www.example.test", 80, type=socket.SOCK_STREAM))
        except Exception as e:  # collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=resolve) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 200
    assert {r[0][4] for r in results} == {("198.51.100.7", 80)}
    assert dns.queries() == ["www.example.test"]
    assert net.names.dns.status() == {"pending": 0, "cached": 1, "waiters": 0,
                                      "tcp_exchanges": 0}


def test_different_names_at_once(pair):
    net, dns, _ = pair
    for i in range(20):
        dns.zones[f"n{i}.test"] = Zone((f"198.51.100.{100 + i}",))
    out: dict[int, str] = {}

    def resolve(i: int) -> None:
        out[i] = net.gethostbyname(f"n{i}.test")

    threads = [threading.Thread(target=resolve, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {i: f"198.51.100.{100 + i}" for i in range(20)}
    assert sorted(dns.queries()) == sorted(f"n{i}.test" for i in range(20))


def test_an_international_name_is_asked_in_its_idna_form(pair):
    net, dns, _ = pair
    assert net.gethostbyname("bücher.test") == "198.51.100.9"
    assert net.getaddrinfo("BÜCHER.test", 80, type=socket.SOCK_STREAM)[0][4] == (
        "198.51.100.9", 80)
    assert dns.queries() == ["xn--bcher-kva.test"]


def test_a_dns_server_on_the_stack_itself_over_loopback():
    a, b = Stack.pair(dns=["127.0.0.1"])
    events: list[dict] = []
    a.trace.subscribe(events.append)
    dns = TinyDns(a, {"self.test": Zone(("192.0.2.1",))})
    dns.start_thread()
    try:
        assert a.gethostbyname("self.test") == "192.0.2.1"
    finally:
        dns.close()
        a.close()
        b.close()
    out = next(e for e in events if e["layer"] == "udp" and e["event"] == "out")
    assert out["src"].startswith("127.0.0.1:") and out["dst"] == "127.0.0.1:53"
