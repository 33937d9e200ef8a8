"""Path MTU per destination on a manual clock: learnt from a "fragmentation
needed" that quotes what one of our sockets sent, used by new TCP
connections, UDP and ping, shown by the route view, and forgotten after 10
minutes (Linux's mtu_expires)."""

from __future__ import annotations

import errno
import socket

import pytest

from stack.livecmd import route_line
from stack.socket_dgram import IP_MTU, IP_MTU_DISCOVER, IP_PMTUDISC_DO
from stack.wire.tcp import parse_tcp
from tests.helpers.frames import FAR, US
from tests.helpers.icmp import FAR_STR, frag_needed, routed_host, sent_ip


def udp_to_far(x, size: int = 8, df: bool = False):
    s = x.net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if df:
        s.setsockopt(0, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.connect((FAR_STR, 9))
    s.send(bytes(size))
    [dgram] = sent_ip(x, 17)
    return s, dgram


def cached(x) -> list[str]:
    return [route_line(r) for r in x.net.routes() if r.get("cache")]


def syn_mss(x) -> int:
    s = x.net.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((FAR_STR, 80))
    [syn] = sent_ip(x, 6)
    seg = parse_tcp(US, FAR, memoryview(syn[20:]))
    s.close()
    return seg.mss


def test_frag_needed_for_our_datagram_records_the_path_mtu_for_its_destination():
    x = routed_host()
    s, dgram = udp_to_far(x)
    assert s.getsockopt(0, IP_MTU) == 1500
    frag_needed(x, dgram, 1400)
    assert cached(x) == [f"{FAR_STR} via 192.0.2.254 dev mem0 src 192.0.2.2 cache expires 600sec mtu 1400"]
    assert s.getsockopt(0, IP_MTU) == 1400
    assert x.counter("ip.pmtu_learnt") == 1
    [event] = [e for e in x.events if e["event"] == "pmtu"]
    assert event["dst"] == FAR_STR and event["mtu"] == 1400


def test_a_new_tcp_connection_starts_with_the_smaller_mss():
    x = routed_host()
    assert syn_mss(x) == 1460
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1400)
    assert syn_mss(x) == 1360


def test_udp_with_df_bigger_than_the_path_mtu_is_emsgsize_and_without_is_fragmented_to_it():
    x = routed_host()
    s, dgram = udp_to_far(x, df=True)
    assert dgram[6] & 0x40  # DF
    frag_needed(x, dgram, 1400)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EMSGSIZE  # the ICMP itself
    with pytest.raises(OSError) as e:
        s.send(bytes(1400 - 28 + 1))
    assert e.value.errno == errno.EMSGSIZE
    assert s.send(bytes(1400 - 28)) == 1372
    assert [len(p) for p in sent_ip(x, 17)] == [1400]
    loose = x.net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loose.sendto(bytes(1472), (FAR_STR, 9))
    assert [len(p) for p in sent_ip(x, 17)] == [1396, 20 + 1480 - 1376]  # 1376 of 1480 first


def test_ping_with_df_bigger_than_the_path_mtu_is_emsgsize():
    x = routed_host()
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1400)
    x.net.icmp.send_echo(FAR, 1, 1, bytes(1400 - 28), x.t, df=True)
    with pytest.raises(OSError) as e:
        x.net.icmp.send_echo(FAR, 1, 2, bytes(1400 - 27), x.t, df=True)
    assert e.value.errno == errno.EMSGSIZE


def test_the_entry_expires_after_600_s_and_the_link_mtu_is_back():
    x = routed_host()
    s, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1400)
    start = x.t
    assert x.net.next_deadline() <= start + 600
    x.at(start + 599.0)
    assert cached(x) == [f"{FAR_STR} via 192.0.2.254 dev mem0 src 192.0.2.2 cache expires 1sec mtu 1400"]
    x.at(start + 600.0)
    assert cached(x) == []
    assert s.getsockopt(0, IP_MTU) == 1500
    assert x.counter("ip.pmtu_expired") == 1
    assert syn_mss(x) == 1460


def test_the_lifetime_is_configurable():
    x = routed_host()
    x.net.ip.pmtu.config.expires = 30.0
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1400)
    x.at(x.t + 30.0)
    assert cached(x) == []


def test_a_frag_needed_quoting_nothing_of_ours_records_nothing():
    x = routed_host()
    _, dgram = udp_to_far(x)
    other_port = dgram[:20] + b"\x99\x99" + dgram[22:]
    frag_needed(x, other_port, 1400)
    assert cached(x) == []
    assert x.counter("icmp.drop.pmtu_not_ours") == 1
    someone_else = dgram[:12] + bytes([192, 0, 2, 9]) + dgram[16:]
    frag_needed(x, someone_else, 1400)
    assert cached(x) == [] and x.counter("icmp.drop.bad_quote") == 1


@pytest.mark.parametrize("mtu", [0, 68, 551])
def test_an_mtu_below_552_counts_as_552(mtu):
    x = routed_host()
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, mtu)
    assert [r["cache"]["mtu"] for r in x.net.routes() if r.get("cache")] == [552]
    assert x.counter("ip.pmtu_clamped") == 1


def test_an_mtu_above_the_link_s_is_dropped_and_counted():
    x = routed_host(mtu=1400)
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1500)
    assert cached(x) == []
    assert x.counter("ip.drop.pmtu_above_link") == 1


def test_a_larger_mtu_than_the_path_s_changes_nothing():
    x = routed_host()
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1300)
    frag_needed(x, dgram, 1400)
    assert [r["cache"]["mtu"] for r in x.net.routes() if r.get("cache")] == [1300]
    assert x.counter("ip.pmtu_not_smaller") == 1


def test_the_table_is_bounded():
    x = routed_host()
    x.net.ip.pmtu.config.max_entries = 4
    s = x.net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 5000))
    for i in range(10):
        s.sendto(b"x", (f"198.51.100.{10 + i}", 9))
        [dgram] = sent_ip(x, 17)
        frag_needed(x, dgram, 1400)
    dsts = [r["dst"] for r in x.net.routes() if r.get("cache")]
    assert dsts == [f"198.51.100.{10 + i}" for i in range(6, 10)]
    assert x.counter("ip.pmtu_evicted") == 6


def test_a_tcp_connection_s_frag_needed_is_recorded_too():
    x = routed_host()
    s = x.net.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((FAR_STR, 80))
    [syn] = sent_ip(x, 6)
    assert syn[6] & 0x40  # TCP segments carry DF (PMTUD, as Linux)
    frag_needed(x, syn, 1280)
    assert [r["cache"]["mtu"] for r in x.net.routes() if r.get("cache")] == [1280]


def test_the_same_mtu_again_renews_the_entry_only_in_its_second_half():
    x = routed_host()
    _, dgram = udp_to_far(x)
    frag_needed(x, dgram, 1400)
    start = x.t
    x.t = start + 299.0
    frag_needed(x, dgram, 1400)
    assert x.counter("ip.pmtu_same") == 1 and x.counter("ip.pmtu_learnt") == 1
    x.t = start + 301.0
    frag_needed(x, dgram, 1400)
    assert x.counter("ip.pmtu_learnt") == 2
    x.at(start + 600.0)
    assert cached(x) == [f"{FAR_STR} via 192.0.2.254 dev mem0 src 192.0.2.2 cache expires 301sec mtu 1400"]
