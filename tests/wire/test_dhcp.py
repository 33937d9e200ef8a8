"""BOOTP/DHCP messages: building, parsing, and every malformed input refused."""

from __future__ import annotations

import struct

import pytest

from stack.wire.dhcp import (
    ACK, BOOTP_MIN, BOOTREPLY, BOOTREQUEST, DISCOVER, FLAG_BROADCAST, MAGIC, MAX_OPTIONS,
    OPT_CLIENT_ID, OPT_DNS, OPT_HOST_NAME, OPT_LEASE_TIME, OPT_PARAMETER_LIST, OPT_REQUESTED_IP,
    OPT_ROUTER, OPT_SERVER_ID, OPT_SUBNET_MASK, OPT_T1, OPT_T2, DhcpError, DhcpMessage,
    build_dhcp, parse_dhcp,
)
from stack.wire.ipv4 import ip2int

MAC = bytes.fromhex("0253dc000001")


def addr(text: str) -> bytes:
    return ip2int(text).to_bytes(4, "big")


def fixed(op: int = BOOTREPLY, htype: int = 1, hlen: int = 6, xid: int = 0x1234) -> bytes:
    return struct.pack("!BBBBIHHIIII16s64s128s", op, htype, hlen, 0, xid, 0, 0, 0,
                       ip2int("198.51.100.50"), 0, 0, MAC, b"", b"")


def raw(options: bytes, **kw) -> bytes:
    return fixed(**kw) + MAGIC + options


def test_a_message_round_trips_with_every_option_the_client_uses():
    opts = {OPT_SUBNET_MASK: addr("255.255.255.0"), OPT_ROUTER: addr("198.51.100.1"),
            OPT_DNS: addr("198.51.100.1") + addr("198.51.100.2"), OPT_HOST_NAME: b"lab-host",
            OPT_REQUESTED_IP: addr("198.51.100.50"), OPT_SERVER_ID: addr("198.51.100.1"),
            OPT_LEASE_TIME: (120).to_bytes(4, "big"), OPT_T1: (60).to_bytes(4, "big"),
            OPT_T2: (105).to_bytes(4, "big"), OPT_PARAMETER_LIST: bytes([1, 3, 6]),
            OPT_CLIENT_ID: b"\x01" + MAC}
    m = DhcpMessage(BOOTREPLY, 0xDEADBEEF, MAC, ACK, secs=3, flags=FLAG_BROADCAST,
                    ciaddr=ip2int("198.51.100.7"), yiaddr=ip2int("198.51.100.50"),
                    siaddr=ip2int("198.51.100.1"), giaddr=ip2int("198.51.100.9"), options=opts)
    data = build_dhcp(m)
    assert data[236:240] == MAGIC and data[240:243] == bytes([53, 1, ACK])
    back = parse_dhcp(data)
    assert back == m
    assert back.server_id == ip2int("198.51.100.1")
    assert back.addresses(OPT_DNS) == [ip2int("198.51.100.1"), ip2int("198.51.100.2")]
    assert back.seconds(OPT_LEASE_TIME) == 120 and back.seconds(OPT_T2) == 105
    assert back.type_name == "ACK"


def test_a_short_message_is_padded_to_the_bootp_minimum():
    data = build_dhcp(DhcpMessage(BOOTREQUEST, 1, MAC, DISCOVER))
    assert len(data) == BOOTP_MIN
    assert data[243] == 255 and set(data[244:]) == {0}
    assert parse_dhcp(data).msg_type == DISCOVER


def test_pad_options_are_skipped_and_a_repeated_option_is_joined():
    data = raw(b"\x00\x00" + bytes([53, 1, 2]) + bytes([6, 4]) + addr("192.0.2.1")
               + b"\x00" + bytes([6, 4]) + addr("192.0.2.2") + b"\xff")
    m = parse_dhcp(data)
    assert m.msg_type == 2
    assert m.addresses(OPT_DNS) == [ip2int("192.0.2.1"), ip2int("192.0.2.2")]


def test_a_long_option_is_sent_in_pieces_and_read_back_whole():
    name = b"h" * 300
    m = parse_dhcp(build_dhcp(DhcpMessage(BOOTREQUEST, 1, MAC, DISCOVER,
                                          options={OPT_HOST_NAME: name})))
    assert m.options[OPT_HOST_NAME] == name


@pytest.mark.parametrize("data, field", [
    (b"", "length"),
    (fixed() + MAGIC[:3], "length"),                                      # truncated before options
    (raw(b"\xff") + bytes(1500), "length"),                               # longer than a frame
    (raw(b"\xff", op=3), "op"),
    (raw(b"\xff", htype=6), "htype"),
    (raw(b"\xff", hlen=16), "htype"),
    (fixed() + b"\x63\x82\x53\x64" + b"\xff", "magic"),
    (raw(bytes([53, 1, 2])), "options"),                                  # no END
    (raw(bytes([53])), "options"),                                        # cut before the length
    (raw(bytes([53, 1, 2, 6, 8]) + addr("192.0.2.1")), "options"),        # value past the end
    (raw(bytes([53, 1, 9, 255])), "message_type"),                        # no such type
    (raw(bytes([53, 2, 2, 2, 255])), "message_type"),
    (raw(bytes([53, 1, 2, 53, 1, 5, 255])), "message_type"),              # two types
    (raw(bytes([53, 1, 2, 1, 3, 255, 255, 255, 255])), "option1"),        # mask of 3 bytes
    (raw(bytes([53, 1, 2, 54, 2, 1, 2, 255])), "option54"),
    (raw(bytes([53, 1, 2, 3, 6]) + addr("192.0.2.1") + b"\x00\x00\xff"), "option3"),
    (raw(bytes([53, 1, 2, 6, 0, 255])), "option6"),
    (raw(bytes([53, 1, 2, 51, 2, 0, 1, 255])), "option51"),
    (raw(bytes([53, 1, 2, 58, 5, 0, 0, 0, 1, 0, 255])), "option58"),
    (raw(bytes([53, 1, 2, 12, 0, 255])), "option12"),
    (raw(bytes([53, 1, 2, 61, 1, 1, 255])), "option61"),
])
def test_malformed_messages_raise_naming_the_field(data, field):
    with pytest.raises(DhcpError) as e:
        parse_dhcp(data)
    assert e.value.field == field


def test_a_huge_option_list_is_refused():
    many = b"".join(bytes([200, 1, i & 0xFF]) for i in range(MAX_OPTIONS + 1))
    with pytest.raises(DhcpError, match="more than"):
        parse_dhcp(raw(bytes([53, 1, 2]) + many + b"\xff"))
    # Exactly the limit (the type counts as one) is fine.
    assert parse_dhcp(raw(bytes([53, 1, 2]) + many[:3 * (MAX_OPTIONS - 1)] + b"\xff")).msg_type == 2


def test_unknown_options_are_kept_raw():
    m = parse_dhcp(raw(bytes([53, 1, 2, 224, 3]) + b"abc" + b"\xff"))
    assert m.options[224] == b"abc"


def test_building_refuses_what_cannot_be_sent():
    with pytest.raises(ValueError):
        build_dhcp(DhcpMessage(BOOTREQUEST, 1, bytes(17), DISCOVER))
    with pytest.raises(ValueError):
        build_dhcp(DhcpMessage(BOOTREQUEST, 1, MAC, DISCOVER, options={255: b"x"}))
