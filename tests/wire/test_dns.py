"""DNS messages (RFC 1035 4): queries built byte for byte, answers parsed,
and hostile answers refused with WireError, never anything else."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import WireError
from stack.wire.dns import (CLASS_IN, QR, RA, RD, TC, TYPE_A, TYPE_AAAA, TYPE_CNAME, addresses,
                            build_query, encode_name, parse_message)

NAME = b"\x03www\x07example\x04test\x00"


def answer(ident: int = 0x1234, flags: int = QR | RD | RA, records: bytes = b"", an: int = 0,
           question: bytes = NAME + struct.pack("!HH", TYPE_A, CLASS_IN)) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, 1, an, 0, 0) + question + records


def a_record(name: bytes, addr: bytes, ttl: int = 300) -> bytes:
    return name + struct.pack("!HHIH", TYPE_A, CLASS_IN, ttl, 4) + addr


def test_query_is_byte_exact():
    assert build_query(0xBEEF, "www.example.test.") == (
        b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + NAME + b"\x00\x01\x00\x01")


@pytest.mark.parametrize("bad", ["a..b", "x" * 64 + ".test", ".".join(["abcdefg"] * 40), "é.test"])
def test_bad_names_are_refused_when_building(bad):
    with pytest.raises(WireError):
        encode_name(bad)


def test_answer_with_a_compressed_name():
    # The answer's name is a pointer to the question's (offset 12).
    msg = parse_message(answer(records=a_record(b"\xc0\x0c", bytes([192, 0, 2, 7])), an=1))
    assert msg.is_response and not msg.truncated and msg.rcode == 0
    assert msg.questions[0].name == "www.example.test"
    assert msg.answers[0].name == "www.example.test" and msg.answers[0].data == "192.0.2.7"
    assert addresses(msg, "WWW.example.test.") == (["192.0.2.7"], 300, "www.example.test")


def test_cname_chain_is_followed_and_the_smallest_ttl_kept():
    cname = (b"\xc0\x0c" + struct.pack("!HHIH", TYPE_CNAME, CLASS_IN, 60, 6)
             + b"\x03web\xc0\x10")  # web.example.test, via a pointer to "example.test"
    target = a_record(b"\x03web\xc0\x10", bytes([198, 51, 100, 9]), ttl=600)
    msg = parse_message(answer(records=cname + target, an=2))
    assert addresses(msg, "www.example.test") == (["198.51.100.9"], 60, "web.example.test")


def test_no_answer_gives_no_addresses():
    msg = parse_message(answer(flags=QR | RD | RA | 3))
    assert msg.rcode == 3 and addresses(msg, "www.example.test") == ([], None, "www.example.test")


def test_records_of_other_types_keep_their_bytes():
    aaaa = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_AAAA, CLASS_IN, 5, 16) + bytes(range(16))
    msg = parse_message(answer(records=aaaa, an=1))
    assert msg.answers[0].data == bytes(range(16))
    assert addresses(msg, "www.example.test")[0] == []


def test_truncated_flag():
    assert parse_message(answer(flags=QR | TC)).truncated


@pytest.mark.parametrize("records, an, field", [
    (b"\xc0\x22" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 1, 4) + bytes(4), 1, "name"),  # to itself
    (b"\xc0\xff" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 1, 4) + bytes(4), 1, "name"),  # forward
    (b"\xc0", 1, "name"),                                                # half a pointer
    (a_record(b"\xc0\x0c", bytes(4)) + b"\x00", 1, "length"),            # a byte left over
    (b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 1, 5) + bytes(5), 1, "rdata"),
    (b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 1, 40) + bytes(4), 1, "rdlength"),
    (a_record(b"\xc0\x0c", bytes(4)), 7, "counts"),                       # promises 7 records
    (b"\x80abc" + bytes(14), 1, "name"),                                  # reserved label type
])
def test_hostile_answers_are_refused(records, an, field):
    with pytest.raises(WireError) as e:
        parse_message(answer(records=records, an=an))
    assert e.value.field == field


def test_a_pointer_loop_between_two_names_is_refused():
    # Question name at 12 is a pointer to 14, which points back to 12.
    data = struct.pack("!HHHHHH", 1, QR, 1, 0, 0, 0) + b"\xc0\x0e\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(WireError) as e:
        parse_message(data)
    assert e.value.field == "name"


def chained_questions(n: int) -> bytes:
    """``n`` questions; each name is a 62-byte label, then a pointer to the
    previous question's name (so the n-th spells 62 * n + 1 bytes)."""
    data = bytearray(struct.pack("!HHHHHH", 1, QR, n, 0, 0, 0))
    prev = None
    for _ in range(n):
        start = len(data)
        data += b"\x3d" + b"a" * 61
        data += struct.pack("!H", 0xC000 | prev) if prev is not None else b"\x00"
        data += struct.pack("!HH", TYPE_A, CLASS_IN)
        prev = start
    return bytes(data)


def test_a_name_longer_than_255_bytes_through_pointers_is_refused():
    assert len(parse_message(chained_questions(4)).questions[3].name) == 4 * 62 - 1
    with pytest.raises(WireError) as e:
        parse_message(chained_questions(5))
    assert e.value.field == "name" and "255" in str(e.value)


VALID = answer(records=a_record(b"\xc0\x0c", bytes([192, 0, 2, 7])), an=1)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_answers_raise_nothing_but_wire_error(flips, cut):
    data = bytearray(VALID)
    for i, v in flips:
        data[i] = v
    try:
        msg = parse_message(bytes(data[:cut]) if cut < len(data) else bytes(data))
    except WireError:
        return
    addresses(msg, "www.example.test")  # and whatever parsed can be read
