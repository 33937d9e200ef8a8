"""The IPv4 option parser and recorder (stack/wire/ipv4.py), byte by byte,
and fuzzed: whatever the bytes, nothing but a WireError comes out, and
what comes out stays inside the 40 bytes an IPv4 header has for options."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import WireError
from stack.wire.ipv4 import (Ipv4Options, OptionError, fragment_options, parse_ipv4,
                             parse_options, record_options)
from tests.helpers.frames import PEER, US, ipv4

ME = US.to_bytes(4, "big")


def nobody(_addr: int) -> bool:
    return False


def test_the_offsets_of_what_was_found_count_from_the_start_of_the_header():
    opts = b"\x01" + b"\x07\x07\x04" + bytes(4) + b"\x44\x0c\x05\x00" + bytes(8)
    assert parse_options(opts) == Ipv4Options(rr=21, ts=28)


def test_a_source_route_is_found_and_told_loose_from_strict():
    assert parse_options(b"\x83\x07\x04" + bytes(4) + b"\x00") == Ipv4Options(srr=20)
    assert parse_options(b"\x89\x07\x08" + bytes(4) + b"\x00") == Ipv4Options(srr=20,
                                                                             strict_route=True)


def test_router_alert_and_unknown_options_are_read_past():
    parsed = parse_options(b"\x94\x04\x00\x00" + b"\x82\x04\x00\x00" + b"\x07\x03\x04\x00")
    assert parsed == Ipv4Options(rr=28, router_alert=True)


@pytest.mark.parametrize("opts,pointer", [
    (b"\x07", 20), (b"\x01\x07", 21), (b"\x07\x01\x00\x00", 20), (b"\x07\x05\x04\x00", 20),
    (b"\x07\x02\x00\x00", 21), (b"\x07\x04\x03\x00", 22), (b"\x07\x06\x04\x00\x00\x00", 22),
    (b"\x44\x03\x05\x00", 21), (b"\x44\x08\x04\x00" + bytes(4), 22),
    (b"\x44\x08\x05\x01" + bytes(4), 22), (b"\x44\x08\x09\xf0" + bytes(4), 23),
    (b"\x94\x03\x00\x00", 21), (b"\x83\x02\x00\x00", 21), (b"\x83\x07\x03" + bytes(5), 22),
    (b"\x83\x03\x04\x89\x03\x04\x00\x00", 23), (b"\x86\x06" + bytes(6), 21),
])
def test_malformed_options_name_the_bad_byte(opts, pointer):
    with pytest.raises(OptionError) as e:
        parse_options(opts)
    assert e.value.pointer == pointer and e.value.field == "options"
    assert isinstance(e.value, WireError)


def test_the_error_keeps_what_was_read_before_the_bad_byte():
    with pytest.raises(OptionError) as e:
        parse_options(b"\x07\x07\x04" + bytes(4) + b"\x07\x03\x04\x00" + b"\x00")
    assert e.value.pointer == 27 and e.value.partial == Ipv4Options(rr=20)


def test_a_full_prespecified_timestamp_is_not_an_overflow():
    assert parse_options(b"\x44\x0c\x0d\xf3" + bytes(8)) == Ipv4Options(ts=20)


def test_record_writes_us_on_arrival_and_again_in_the_reply():
    opts = b"\x07\x0b\x04" + bytes(8) + b"\x00"
    rec = record_options(opts, parse_options(opts), US, 5, nobody)
    assert rec.options == b"\x07\x0b\x08" + ME + bytes(4) + b"\x00"
    assert rec.reply == b"\x07\x0b\x0c" + ME + ME + b"\x00"


def test_everything_after_end_of_list_becomes_end_of_list():
    opts = b"\x01\x00\x07\x03"
    rec = record_options(opts, parse_options(opts), US, 5, nobody)
    assert rec.options == b"\x01\x00\x00\x00" and rec.reply == b""


def test_a_prespecified_slot_is_filled_only_when_ours_says_so():
    opts = b"\x44\x0c\x05\x03" + bytes((203, 0, 113, 9)) + bytes(4)
    mine = record_options(opts, parse_options(opts), US, 0x01020304, lambda a: a == 0xCB007109)
    theirs = record_options(opts, parse_options(opts), US, 0x01020304, nobody)
    assert mine.options == b"\x44\x0c\x0d\x03" + bytes((203, 0, 113, 9)) + b"\x01\x02\x03\x04"
    assert theirs.options == theirs.reply == opts


def test_no_reply_when_a_timestamp_has_room_on_arrival_only():
    opts = b"\x44\x0e\x05\x01" + bytes(10) + b"\x00\x00"
    rec = record_options(opts, parse_options(opts), US, 9, nobody)
    assert rec.options[:4] == b"\x44\x0e\x0d\x01" and rec.reply is None


def test_fragments_after_the_first_keep_only_copied_options():
    opts = b"\x07\x07\x08" + ME + b"\x94\x04\x00\x00" + b"\x00"
    assert fragment_options(opts) == b"\x01" * 7 + b"\x94\x04\x00\x00" + b"\x00"


def test_parse_ipv4_keeps_the_options_for_the_layer_above():
    packet = ipv4(PEER, US, 1, b"data", options=b"\x07\x02\x04\x00")
    h, payload = parse_ipv4(packet)
    assert h.options == b"\x07\x02\x04\x00" and h.header_length == 24 and bytes(payload) == b"data"


# -- fuzz ---------------------------------------------------------------------------------------

OPTION_BYTES = st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 0x44, 0x83, 0x86, 0x89,
                                         0x94, 0xF0, 0xFF]) | st.integers(0, 255),
                        max_size=40).map(bytes)


@settings(max_examples=3000, deadline=None)
@given(OPTION_BYTES, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.booleans())
def test_no_bytes_raise_anything_but_a_wire_error(opts, addr, ms, ours):
    failed = False
    try:
        parsed = parse_options(opts)
    except OptionError as e:
        assert 20 <= e.pointer < 20 + len(opts)
        parsed, failed = e.partial, True
    for offset in (parsed.rr, parsed.ts, parsed.srr, parsed.cipso):
        assert offset == 0 or 20 <= offset < 20 + len(opts)
    rec = record_options(opts, parsed, addr, ms, lambda a: ours)
    assert len(rec.options) == len(opts)
    if rec.reply is not None:
        assert len(rec.reply) % 4 == 0 and len(rec.reply) <= 40
    if rec.reply and not failed:
        # What we send parses, but for an overflow count we took to 15.
        try:
            parse_options(rec.reply)
        except OptionError as e:
            assert rec.reply[e.pointer - 20] >> 4 == 15, rec.reply.hex()
    assert len(fragment_options(opts)) == len(opts)


@settings(max_examples=1000, deadline=None)
@given(OPTION_BYTES)
def test_a_whole_header_with_any_options_parses_or_raises_a_wire_error(opts):
    opts = opts + b"\x00" * (-len(opts) % 4)
    try:
        h, _ = parse_ipv4(ipv4(PEER, US, 1, b"x" * 8, options=opts[:40]))
        parse_options(h.options)
    except WireError:
        pass
