"""Ethernet and ARP as conversations: feed a frame, expect exactly the frames sent back.

The stack is 192.0.2.2 at 02:53:c0:00:02:02 on a CaptureLink, driven by a
manual clock. The peer is 192.0.2.1 at 52:54:00:12:34:56.
"""

from __future__ import annotations

import pytest

from tests.helpers.frames import BCAST, OTHER_MAC, PEER, PEER_MAC, US, US_MAC, arp, h
from tests.helpers.hosts import ArpHost, host_fixture


def ip_of(n: int) -> int:
    return 0xC0000200 | n


host = host_fixture(ArpHost)


def request_for(ip: int) -> bytes:
    """The ARP request the stack broadcasts to resolve ``ip``."""
    return BCAST + US_MAC + h("0806 0001 0800 0604 0001") + US_MAC + h("c0000202") \
        + b"\x00" * 6 + ip.to_bytes(4, "big")


def is_ipv4_to(frame: bytes, mac: bytes, payload: bytes) -> bool:
    return frame[:14] == mac + US_MAC + b"\x08\x00" and frame[14 + 20:] == payload


# ------------------------------------------------------------------ answering


def test_gratuitous_arp_at_start(host):
    x = host()
    assert x.boot == [h("ffffffffffff 0253c0000202 0806 0001 0800 0604 0001"
                        " 0253c0000202 c0000202 000000000000 c0000202")]


def test_request_for_us_gets_the_exact_reply(host):
    x = host()
    sent = x.feed(h("ffffffffffff 525400123456 0806 0001 0800 0604 0001"
                    " 525400123456 c0000201 000000000000 c0000202"))
    assert sent == [h("525400123456 0253c0000202 0806 0001 0800 0604 0002"
                      " 0253c0000202 c0000202 525400123456 c0000201")]
    assert x.counter("arp.requests_in") == 1
    assert x.counter("arp.replies_out") == 1


def test_padded_request_unicast_to_us_is_answered(host):
    x = host()
    frame = arp(1, PEER_MAC, PEER, b"\x00" * 6, US, dst=US_MAC) + b"\x00" * 18
    assert len(frame) == 60
    assert x.feed(frame) == [arp(2, US_MAC, US, PEER_MAC, PEER, dst=PEER_MAC)]


def test_request_for_another_address_is_ignored(host):
    x = host()
    assert x.feed(arp(1, PEER_MAC, PEER, b"\x00" * 6, ip_of(3))) == []
    # Nor did it teach us anything: a packet for the requester needs a request.
    assert x.net.neighbours() == {}
    assert x.send_ip(PEER, b"data") == [request_for(PEER)]


def test_learns_the_requester(host):
    x = host()
    x.learn(PEER, PEER_MAC)
    assert x.net.neighbours() == {"192.0.2.1": "52:54:00:12:34:56"}
    sent = x.send_ip(PEER, b"direct")
    assert len(sent) == 1 and is_ipv4_to(sent[0], PEER_MAC, b"direct")
    assert x.counter("arp.requests_out") == 0


def test_frame_for_another_mac_is_ignored(host):
    x = host()
    assert x.feed(arp(1, PEER_MAC, PEER, b"\x00" * 6, US, dst=OTHER_MAC)) == []
    assert x.counter("eth.drop.not_for_us") == 1
    assert x.net.neighbours() == {}


def test_multicast_frame_is_ignored(host):
    x = host()
    assert x.feed(arp(1, PEER_MAC, PEER, b"\x00" * 6, US, dst=h("01005e000001"))) == []
    assert x.counter("eth.drop.multicast") == 1


@pytest.mark.parametrize("n", [0, 1, 13])
def test_short_frames_are_dropped(host, n):
    x = host()
    assert x.feed(request_for(US)[:n]) == []
    assert x.counter("eth.drop.short") == 1


def test_unsupported_ethertype_is_dropped(host):
    x = host()
    frame = arp(1, PEER_MAC, PEER, b"\x00" * 6, US)
    assert x.feed(frame[:12] + b"\x86\xdd" + frame[14:]) == []
    assert x.counter("eth.drop.unsupported_ethertype") == 1


@pytest.mark.parametrize("n", [0, 8, 27])
def test_truncated_arp_is_dropped(host, n):
    x = host()
    assert x.feed(arp(1, PEER_MAC, PEER, b"\x00" * 6, US)[:14 + n]) == []
    assert x.counter("arp.drop.malformed") == 1
    assert x.net.neighbours() == {}


@pytest.mark.parametrize("mac", [BCAST, b"\x00" * 6, h("01005e000001"), h("333300000001")])
def test_sender_mac_that_is_not_a_host_is_dropped(host, mac):
    x = host()
    assert x.feed(arp(1, mac, PEER, b"\x00" * 6, US, src=PEER_MAC)) == []
    assert x.counter("arp.drop.bad_sender_mac") == 1
    assert x.net.neighbours() == {}


def test_probe_for_our_address_is_answered(host):
    # RFC 5227 probe: sender 0.0.0.0. We defend our address, learning nothing.
    x = host()
    sent = x.feed(arp(1, PEER_MAC, 0, b"\x00" * 6, US))
    assert sent == [h("525400123456 0253c0000202 0806 0001 0800 0604 0002"
                      " 0253c0000202 c0000202 525400123456 00000000")]
    assert x.net.neighbours() == {}


def test_probe_for_another_address_is_ignored(host):
    x = host()
    assert x.feed(arp(1, PEER_MAC, 0, b"\x00" * 6, ip_of(9))) == []
    assert x.net.neighbours() == {}


@pytest.mark.parametrize("op", [1, 2])
def test_arp_claiming_our_address_is_dropped(host, op):
    x = host()
    x.learn(PEER, PEER_MAC)
    assert x.feed(arp(op, OTHER_MAC, US, b"\x00" * 6, US)) == []
    assert x.feed(arp(op, OTHER_MAC, US, PEER_MAC, PEER)) == []
    assert x.counter("arp.drop.sender_is_us") == 2
    assert x.net.neighbours() == {"192.0.2.1": "52:54:00:12:34:56"}


# ------------------------------------------------------------------ resolving


def test_resolves_next_hop_queues_and_flushes_in_order(host):
    x = host()
    assert x.send_ip(PEER, b"one") == [request_for(PEER)]
    assert x.send_ip(PEER, b"two") == []   # one request is enough
    assert x.send_ip(PEER, b"three") == []
    sent = x.feed(arp(2, PEER_MAC, PEER, US_MAC, US, dst=US_MAC))
    assert len(sent) == 3
    for frame, payload in zip(sent, (b"one", b"two", b"three")):
        assert is_ipv4_to(frame, PEER_MAC, payload)
    assert x.net.neighbours() == {"192.0.2.1": "52:54:00:12:34:56"}
    assert x.net.eth.pending == {}
    # Later packets go straight out.
    sent = x.send_ip(PEER, b"four")
    assert len(sent) == 1 and is_ipv4_to(sent[0], PEER_MAC, b"four")


def test_request_from_the_pending_host_also_resolves(host):
    x = host()
    x.send_ip(PEER, b"one")
    sent = x.feed(arp(1, PEER_MAC, PEER, b"\x00" * 6, US))
    assert len(sent) == 2
    assert is_ipv4_to(sent[0], PEER_MAC, b"one")
    assert sent[1] == arp(2, US_MAC, US, PEER_MAC, PEER, dst=PEER_MAC)


def test_retries_then_gives_up_dropping_the_queue(host):
    x = host(retry_interval=1.0, max_tries=3)
    assert x.send_ip(PEER, b"a") == [request_for(PEER)]
    x.send_ip(PEER, b"b")
    assert x.at(100.5) == []
    assert x.at(101.0) == [request_for(PEER)]
    assert x.at(101.9) == []
    assert x.at(102.0) == [request_for(PEER)]
    assert x.counter("arp.requests_out") == 3
    assert x.at(103.0) == []   # three tries, no answer: give up
    assert x.counter("arp.drop.unresolved") == 2
    assert x.net.eth.pending == {}
    assert x.net.eth.next_deadline() is None
    assert x.at(110.0) == []
    # A late reply is now unsolicited and teaches nothing.
    assert x.feed(arp(2, PEER_MAC, PEER, US_MAC, US, dst=US_MAC)) == []
    assert x.net.neighbours() == {}
    # A new packet starts over.
    assert x.send_ip(PEER, b"c") == [request_for(PEER)]


def test_retry_interval_and_tries_follow_the_config(host):
    x = host(retry_interval=0.25, max_tries=5)
    x.send_ip(PEER, b"a")
    times = [100.25, 100.5, 100.75, 101.0]
    for t in times:
        assert x.at(t) == [request_for(PEER)]
    assert x.at(101.25) == []
    assert x.counter("arp.requests_out") == 5
    assert x.counter("arp.drop.unresolved") == 1


def test_queue_per_host_is_bounded(host):
    x = host(max_pending_per_host=4)
    for i in range(7):
        x.send_ip(PEER, bytes([i]))
    assert x.counter("arp.drop.pending_queue_full") == 3
    sent = x.feed(arp(2, PEER_MAC, PEER, US_MAC, US, dst=US_MAC))
    assert [f[34:] for f in sent] == [b"\x00", b"\x01", b"\x02", b"\x03"]


def test_pending_hosts_are_bounded(host):
    x = host(max_pending_hosts=3)
    sent = []
    for n in range(10, 15):
        sent += x.send_ip(ip_of(n), b"x")
    assert sent == [request_for(ip_of(10)), request_for(ip_of(11)), request_for(ip_of(12))]
    assert len(x.net.eth.pending) == 3
    assert x.counter("arp.drop.pending_hosts_full") == 2


def test_stale_probes_respect_the_pending_bound(host):
    x = host(max_pending_hosts=2, entry_lifetime=60.0)
    for n in range(20, 26):
        x.learn(ip_of(n), bytes([0x52, 0x54, 0, 0, 0, n]))
    x.t = 170.0   # every entry is stale now
    for n in range(20, 26):
        sent = x.send_ip(ip_of(n), b"x")
        assert is_ipv4_to(sent[0], bytes([0x52, 0x54, 0, 0, 0, n]), b"x")
    assert len(x.net.eth.pending) <= 2


def test_unsolicited_reply_does_not_poison_the_cache(host):
    x = host()
    assert x.feed(arp(2, OTHER_MAC, PEER, US_MAC, US, dst=US_MAC)) == []
    assert x.feed(arp(2, OTHER_MAC, PEER, BCAST, PEER)) == []   # gratuitous reply
    assert x.net.neighbours() == {}
    assert x.counter("arp.drop.unsolicited_reply") == 2
    # We ask, rather than send to the MAC we were told about.
    assert x.send_ip(PEER, b"x") == [request_for(PEER)]


def test_mutated_request_for_another_address_does_not_poison(host):
    x = host()
    assert x.feed(arp(1, OTHER_MAC, PEER, b"\x00" * 6, ip_of(3))) == []
    assert x.net.neighbours() == {}


def test_reply_for_a_host_we_asked_about_is_learned_from_any_frame(host):
    x = host()
    x.send_ip(PEER, b"q")
    sent = x.feed(arp(2, PEER_MAC, PEER, US_MAC, US, dst=BCAST))
    assert len(sent) == 1 and is_ipv4_to(sent[0], PEER_MAC, b"q")


def test_stale_entry_is_used_while_it_is_refreshed(host):
    x = host(entry_lifetime=60.0, retry_interval=1.0, max_tries=3)
    x.learn(PEER, PEER_MAC)                    # valid until 160
    x.t = 150.0
    sent = x.send_ip(PEER, b"fresh")
    assert len(sent) == 1 and is_ipv4_to(sent[0], PEER_MAC, b"fresh")
    x.t = 160.0
    sent = x.send_ip(PEER, b"stale")
    assert len(sent) == 2
    assert is_ipv4_to(sent[0], PEER_MAC, b"stale")   # used at once
    assert sent[1] == request_for(PEER)              # and confirmed
    sent = x.send_ip(PEER, b"again")                 # one probe at a time
    assert len(sent) == 1 and is_ipv4_to(sent[0], PEER_MAC, b"again")
    x.t = 160.5
    assert x.feed(arp(2, PEER_MAC, PEER, US_MAC, US, dst=US_MAC)) == []
    assert x.net.eth.pending == {}
    assert x.at(165.0) == []
    x.t = 200.0                                      # refreshed until 220.5
    sent = x.send_ip(PEER, b"later")
    assert len(sent) == 1 and is_ipv4_to(sent[0], PEER_MAC, b"later")


def test_stale_entry_that_nobody_confirms_goes(host):
    x = host(entry_lifetime=60.0, retry_interval=1.0, max_tries=3)
    x.learn(PEER, PEER_MAC)
    x.t = 161.0
    assert len(x.send_ip(PEER, b"stale")) == 2
    assert x.at(162.0) == [request_for(PEER)]
    assert x.at(163.0) == [request_for(PEER)]
    assert x.at(164.0) == []
    assert x.net.neighbours() == {}
    assert x.counter("arp.drop.unresolved") == 0   # nothing was waiting
    assert x.send_ip(PEER, b"new") == [request_for(PEER)]


def test_a_changed_mac_is_learned_from_a_request_for_us(host):
    x = host()
    x.learn(PEER, PEER_MAC)
    x.learn(PEER, OTHER_MAC)
    assert x.net.neighbours() == {"192.0.2.1": "52:54:00:00:be:ef"}


def test_cache_is_bounded(host):
    x = host(max_entries=4)
    for n in range(30, 40):
        x.t += 1.0
        x.learn(ip_of(n), bytes([0x52, 0x54, 0, 0, 0, n]))
    assert len(x.net.neighbours()) == 4
    # The newest stay.
    assert set(x.net.neighbours()) == {f"192.0.2.{n}" for n in range(36, 40)}
