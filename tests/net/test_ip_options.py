"""IPv4 options as conversations on the manual clock: what the stack answers
to a datagram carrying options, byte for byte (as Linux answers, see the
"IP options" cases of tests/conformance/cases/misc.pkt).

The stack is 192.0.2.2 (``US``); its address in the options is spelled out
here as bytes, and so is every option it sends back.
"""

from __future__ import annotations

import pytest

from tests.helpers.checksum import ref_checksum
from tests.helpers.frames import (BCAST, PEER, SUBNET_BCAST, US, echo, eth, fragment, icmp, ipv4,
                                  split, udp)
from tests.helpers.hosts import IpHost, host_fixture

host = host_fixture(IpHost)

ME = bytes((192, 0, 2, 2))
ZERO4 = bytes(4)


def at_time(x: IpHost, ms: int) -> bytes:
    """Set the stack's time of day so that now is ``ms`` after midnight UT; its bytes."""
    x.net.icmp.utc_offset = ms / 1000 - x.t
    return ms.to_bytes(4, "big")


def options_of(packet: bytes) -> bytes:
    return packet[20:(packet[0] & 0x0F) * 4]


def ping(x: IpHost, options: bytes, data: bytes = b"ping", **kw) -> list[bytes]:
    return x.feed_ip(ipv4(PEER, US, 1, icmp(8, 0, b"\x0b\xad\x00\x01", data), options=options, **kw))


def test_echo_reply_carries_the_record_route_with_us_twice(host):
    x = host()
    rr = b"\x07\x27\x04" + bytes(36) + b"\x00"
    [reply] = ping(x, rr)
    assert split(reply)["csum_ok"] and split(reply)["hlen"] == 60
    # Recorded on arrival and again on the way out (Linux's ip_options_echo).
    assert options_of(reply) == b"\x07\x27\x0c" + ME + ME + bytes(28) + b"\x00"
    assert split(reply)["payload"] == icmp(0, 0, b"\x0b\xad\x00\x01", b"ping")
    assert x.counter("icmp.out.type0") == 1


def test_a_full_record_route_comes_back_as_it_was(host):
    x = host()
    rr = b"\x07\x07\x08" + bytes((198, 51, 100, 1)) + b"\x00"
    [reply] = ping(x, rr)
    assert options_of(reply) == rr


def test_a_record_route_with_room_for_one_address_only(host):
    x = host()
    [reply] = ping(x, b"\x07\x07\x04" + ZERO4 + b"\x00")
    assert options_of(reply) == b"\x07\x07\x08" + ME + b"\x00"


def test_no_reply_when_the_record_route_has_room_for_only_part_of_an_address(host):
    x = host()
    # 10 bytes: our arrival fits, the reply's address would not (Linux: -EINVAL, silence).
    assert ping(x, b"\x07\x0a\x04" + bytes(9)) == []
    assert x.counter("icmp.drop.options_full") == 1


def test_timestamps_are_ms_since_midnight_on_arrival_and_departure(host):
    x = host()
    now = at_time(x, 3_600_123)
    [reply] = ping(x, b"\x44\x10\x05\x00" + bytes(12))
    assert options_of(reply) == b"\x44\x10\x0d\x00" + now + now + ZERO4


def test_timestamps_with_addresses(host):
    x = host()
    now = at_time(x, 42)
    [reply] = ping(x, b"\x44\x14\x05\x01" + bytes(16))
    assert options_of(reply) == b"\x44\x14\x15\x01" + ME + now + ME + now


def test_prespecified_timestamps_fill_only_our_slot(host):
    x = host()
    now = at_time(x, 7)
    other = bytes((198, 51, 100, 1))
    [reply] = ping(x, b"\x44\x14\x05\x03" + ME + ZERO4 + other + ZERO4)
    assert options_of(reply) == b"\x44\x14\x0d\x03" + ME + now + other + ZERO4


def test_a_full_timestamp_option_counts_the_overflow(host):
    x = host()
    [reply] = ping(x, b"\x44\x08\x09\x20" + ZERO4)
    assert options_of(reply) == b"\x44\x08\x09\x30" + ZERO4


def test_record_route_then_timestamp_whatever_the_order_they_came_in(host):
    x = host()
    now = at_time(x, 1000)
    [reply] = ping(x, b"\x44\x0c\x05\x00" + bytes(8) + b"\x07\x07\x04" + ZERO4 + b"\x00")
    assert options_of(reply) == b"\x07\x07\x08" + ME + b"\x44\x0c\x0d\x00" + now + now + b"\x00"


@pytest.mark.parametrize("options", [b"\x01\x01\x01\x01", b"\x9e\x04\x00\x00", b"\x94\x04\x00\x00",
                                     b"\x00\x07\x03\x00", b"\x44\x08\x05\x02" + ZERO4])
def test_options_that_are_not_echoed(host, options):
    """NOPs, an unknown option, router alert, junk after end-of-list: the
    reply has none; an unknown timestamp flag comes back untouched."""
    x = host()
    [reply] = ping(x, options)
    assert options_of(reply) == (options if options[0] == 0x44 else b"")
    assert split(reply)["payload"] == icmp(0, 0, b"\x0b\xad\x00\x01", b"ping")


@pytest.mark.parametrize("options,pointer", [
    (b"\x07\x02\x04\x00", 21),                      # RR length below 3
    (b"\x07\x0b\x04\x00\x00\x00\x00\x00", 20),      # length runs past the header
    (b"\x07\x07\x03\x00\x00\x00\x00\x00", 22),      # RR pointer below 4
    (b"\x01\x01\x01\x07", 23),                      # a type with no length byte
    (b"\x44\x08\x09\xf0" + ZERO4, 23),              # overflow count already 15
    (b"\x44\x0a\x05\x01" + bytes(6) + b"\x00\x00", 22),  # no room for an address and a time
    (b"\x86\x08\x00\x00\x00\x01\x00\x00", 22),      # CIPSO of no known domain
    (b"\x83\x07\x02" + ZERO4 + b"\x00", 22),        # source route pointer below 4
])
def test_a_malformed_option_gets_a_parameter_problem_at_its_bad_byte(host, options, pointer):
    x = host()
    request = ipv4(PEER, US, 1, icmp(8, 0, b"\x0b\xad\x00\x01", b"ping"), options=options)
    [error] = x.feed_ip(request)
    body = split(error)["payload"]
    assert body[:2] == b"\x0c\x00" and ref_checksum(body) == 0
    assert body[4] == pointer and body[5:8] == b"\x00\x00\x00"
    # The quote: the whole header with its options, then the ICMP message.
    quoted = body[8:]
    assert quoted[0] == 0x45 + len(options) // 4 and quoted[20:20 + len(options)] == options
    assert quoted[20 + len(options):] == request[20 + len(options):]
    assert x.counter("ip.drop.bad_option") == 1 and x.counter("icmp.out.type12") == 1
    assert x.counter("icmp.out.type0") == 0


def test_a_parameter_problem_carries_back_the_record_route_read_before_the_bad_byte(host):
    x = host()
    options = b"\x07\x0b\x04" + bytes(8) + b"\x44\x02\x00\x00" + b"\x00"
    [error] = ping(x, options)
    assert options_of(error) == b"\x07\x0b\x0c" + ME + ME + b"\x00"
    body = split(error)["payload"]
    assert body[4] == 32
    # The quoted header shows the route as we left it: us recorded once.
    assert body[8 + 20:8 + 36] == b"\x07\x0b\x08" + ME + ZERO4 + b"\x44\x02\x00\x00" + b"\x00"


def test_parameter_problems_are_rate_limited_like_every_error(host):
    x = host()
    sent = sum(len(ping(x, b"\x07\x02\x04\x00")) for _ in range(10))
    assert sent == 6                      # a host's burst (Linux's icmp_ratelimit)
    assert x.counter("icmp.drop.rate_limited") == 4
    assert x.counter("ip.drop.bad_option") == 10
    x.t += 1.0                            # and one a second, shared with every other error
    assert len(x.feed_ip(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x")))) == 1
    assert ping(x, b"\x07\x02\x04\x00") == []


def test_no_parameter_problem_for_a_broadcast_or_a_later_fragment(host):
    x = host()
    bad = b"\x07\x02\x04\x00"
    assert x.feed(eth(ipv4(PEER, SUBNET_BCAST, 1, echo(), options=bad), dst=BCAST)) == []
    assert x.feed_ip(ipv4(PEER, US, 1, b"x" * 16, options=bad, offset=1480, ident=9)) == []
    assert x.counter("ip.drop.bad_option") == 2 and x.counter("icmp.out.type12") == 0


@pytest.mark.parametrize("kind", [0x83, 0x89])
@pytest.mark.parametrize("pointer", [4, 8])
def test_source_routed_datagrams_are_dropped(host, kind, pointer):
    """Loose or strict, under way or completed (Linux's accept_source_route 0)."""
    x = host()
    srr = bytes((kind, 7, pointer, 198, 51, 100, 1)) + b"\x00"
    assert ping(x, srr) == []
    assert x.feed_ip(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"x"), options=srr)) == []
    assert x.counter("ip.drop.source_route") == 2 and x.counter("icmp.out.type3") == 0


def test_port_unreachable_carries_the_route_back_and_quotes_it(host):
    x = host()
    rr = b"\x07\x27\x04" + bytes(36) + b"\x00"
    datagram = udp(PEER, US, 5555, 9, b"hello")
    [error] = x.feed_ip(ipv4(PEER, US, 17, datagram, options=rr, ident=0x4242))
    assert options_of(error) == b"\x07\x27\x0c" + ME + ME + bytes(28) + b"\x00"
    body = split(error)["payload"]
    assert body[:2] == b"\x03\x03"
    quoted = body[8:]
    assert quoted[0] == 0x4F and int.from_bytes(quoted[2:4], "big") == 60 + len(datagram)
    assert ref_checksum(quoted[:60]) == 0
    assert quoted[20:60] == b"\x07\x27\x08" + ME + bytes(32) + b"\x00"
    assert quoted[60:] == datagram


def test_a_datagram_with_a_record_route_reaches_its_socket(host):
    from stack.net.udp import UdpEndpoint

    x = host()
    ep = UdpEndpoint()
    x.net.udp.bind(ep, 0, 9)
    rr = b"\x07\x07\x04" + ZERO4 + b"\x00"
    assert x.feed_ip(ipv4(PEER, US, 17, udp(PEER, US, 5555, 9, b"hello"), options=rr)) == []
    assert [bytes(d) for d, _ in ep.queue] == [b"hello"]


def test_a_long_reply_is_fragmented_with_the_route_in_the_first_fragment_only(host):
    x = host()
    rr = b"\x07\x27\x04" + bytes(36) + b"\x00"
    message = icmp(8, 0, b"\x0b\xad\x00\x02", bytes(3000))
    parts = fragment(PEER, US, 1, message, 0x5151, 1480)
    parts[0] = ipv4(PEER, US, 1, message[:1480], ident=0x5151, mf=True, options=rr)
    out = x.feed_ip(*parts)
    assert [split(p)["hlen"] for p in out] == [60, 60, 60]
    assert options_of(out[0]) == b"\x07\x27\x0c" + ME + ME + bytes(28) + b"\x00"
    assert options_of(out[1]) == options_of(out[2]) == b"\x01" * 39 + b"\x00"
    assert [split(p)["offset"] for p in out] == [0, 1440, 2880]
    assert b"".join(split(p)["payload"] for p in out) == icmp(0, 0, b"\x0b\xad\x00\x02", bytes(3000))
