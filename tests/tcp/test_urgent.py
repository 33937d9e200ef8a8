"""Urgent data (RFC 9293 3.8.5, RFC 6093) as Linux handles it, as
conversations on the manual clock: the byte before the urgent pointer
leaves the stream unless SO_OOBINLINE, reads stop at the mark, MSG_OOB
reads the byte once, only the latest mark counts, and send(MSG_OOB) sets
URG with the pointer after its last byte. The differential cases are in
tests/conformance/cases/misc.pkt."""

from __future__ import annotations

import errno

import pytest

from tests.helpers.tcp import IRS, PEER, PEER_PORT, US, US_PORT, Conversation

DATA = b"abcdefghij"


def opened() -> Conversation:
    c = Conversation()
    c.conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.feed("S.", IRS, 1001, mss=1460)
    c.sent()
    return c


def oob(c: Conversation, peek: bool = False) -> bytes:
    return c.conn.receiver.read_urgent(peek, False)


def oob_errno(c: Conversation) -> int | None:
    with pytest.raises(OSError) as e:
        oob(c)
    return e.value.errno


def test_the_byte_before_the_pointer_is_out_of_band():
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=DATA, urgent=5)   # the mark: SEG.SEQ + 5 - 1, "e"
    assert c.conn.recv(100) == b"abcd"                  # the read stops before it
    assert c.conn.recv(100) == b"fghij"                 # ... and the next skips it
    assert oob_errno(c) == errno.EINVAL                 # read past: the mark is gone
    assert c.conn.status()["rcv_nxt"] == IRS + 11      # it still took sequence space


def test_msg_oob_reads_the_byte_once_and_peek_leaves_it():
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=DATA, urgent=5)
    assert oob(c, peek=True) == b"e"
    assert oob(c) == b"e"
    assert oob_errno(c) == errno.EINVAL
    assert c.conn.recv(100) == b"abcd"
    assert c.conn.recv(100) == b"fghij"


def test_no_mark_is_einval_and_a_pointer_of_zero_marks_the_first_byte():
    c = opened()
    c.feed(".", IRS + 1, 1001, data=b"ab")
    assert oob_errno(c) == errno.EINVAL
    assert c.conn.recv(100) == b"ab"
    c.feed("U.", IRS + 3, 1001, data=b"cd", urgent=0)
    assert oob(c) == b"c"
    assert c.conn.recv(100) == b"d"


def test_with_oobinline_the_byte_stays_in_line_and_the_read_still_stops():
    c = opened()
    c.conn.receiver.set_oob_inline(True)
    c.feed("U.", IRS + 1, 1001, data=DATA, urgent=5)
    assert oob_errno(c) == errno.EINVAL
    assert c.conn.recv(100) == b"abcd"
    assert c.conn.recv(100) == b"efghij"


def test_a_pointer_beyond_the_data_waits_for_its_byte():
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=DATA, urgent=15)  # the byte is IRS + 15
    assert oob_errno(c) == errno.EAGAIN                 # not yet: never blocks
    assert c.conn.recv(100) == DATA
    c.feed(".", IRS + 11, 1001, data=b"klmnopqrst")     # no URG: the byte is caught anyway
    assert oob(c) == b"o"
    assert c.conn.recv(100) == b"klmn"
    assert c.conn.recv(100) == b"pqrst"


def test_only_the_latest_mark_counts():
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=b"abcde", urgent=5)
    c.feed("U.", IRS + 6, 1001, data=b"fghij", urgent=5)
    assert oob(c) == b"j"
    assert c.conn.recv(100) == b"abcdefghi"             # the first byte is back in line
    assert not c.conn.readable                          # only the urgent byte is left


def test_a_new_mark_takes_the_old_byte_out_when_it_is_next():
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=b"abcde", urgent=5)
    assert c.conn.recv(100) == b"abcd"                  # "e" is next, out of band
    c.feed("U.", IRS + 6, 1001, data=b"fghij", urgent=5)
    assert c.conn.recv(100) == b"fghi"                  # "e" is not read in line after all
    assert oob(c) == b"j"


def test_an_old_or_stale_pointer_changes_nothing():
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=b"abcde", urgent=5)
    c.feed("U.", IRS + 1, 1001, data=b"abcde", urgent=3)  # a retransmission, older mark
    assert c.conn.recv(100) == b"abcd"
    assert oob(c) == b"e"
    assert c.conn.recv(100) is None                     # "e" is next, read already
    c.feed("U.", IRS + 6, 1001, data=b"f", urgent=0)    # a newer mark: "e" leaves
    assert c.conn.recv(100) is None                     # and "f" is out of band
    assert oob(c) == b"f"


def test_urgent_data_takes_the_general_path_and_agrees_with_it():
    """Header prediction is off while a mark is pending (as Linux's
    pred_flags): the next in-order segment still meets the mark."""
    c = opened()
    c.feed("U.", IRS + 1, 1001, data=b"abc", urgent=6)  # the byte is IRS + 6
    c.feed(".", IRS + 4, 1001, data=b"def")             # a fast-path candidate
    assert oob(c) == b"f"
    assert c.conn.recv(100) == b"abcde"


# ---- sending: send(MSG_OOB) -----------------------------------------------------------------


def test_send_urgent_sets_urg_with_the_pointer_after_the_last_byte():
    c = opened()
    assert c.conn.send(b"abc", c.now, True) == 3
    c.expect("Flags [P.U], seq 1001:1004, ack 5001, win 65535, urg 3, length 3")


def test_a_retransmission_keeps_urg_and_the_ack_of_the_byte_ends_it():
    c = opened()
    c.conn.send(b"abc", c.now, True)
    c.sent()
    c.advance(1.5)                                      # the RTO: the same segment again
    again = [s for s in c.sent() if "1001:1004" in s]
    assert again and set(again) == {
        "Flags [P.U], seq 1001:1004, ack 5001, win 65535, urg 3, length 3"}
    c.feed(".", IRS + 1, 1004)
    c.conn.send(b"de", c.now)
    c.expect("Flags [P.], seq 1004:1006, ack 5001, win 65535, length 2")


def test_an_urgent_send_behind_unsent_data_points_past_all_of_it():
    c = Conversation()
    c.conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.feed("S.", IRS, 1001, mss=1460, win=1000)          # the peer's window: 1000 bytes
    c.conn.send(b"x" * 3000, c.now)
    c.sent()
    c.conn.send(b"yz", c.now, True)                     # the pointer: after "z", 1001 + 3002
    c.feed(".", IRS + 1, 1001 + 1000, win=65535)
    segs = [s for s in c.sent_segments() if s.payload]
    assert len(segs) >= 2 and all(s.urgent == 1001 + 3002 - s.seq for s in segs)


def test_urgent_data_is_not_held_back_by_nagle():
    """Linux's tcp_nagle_test: in urgent mode a small segment goes at once,
    though another small one is still unacknowledged."""
    c = opened()
    c.conn.send(b"abc", c.now)
    c.expect("Flags [P.], seq 1001:1004, ack 5001, win 65535, length 3")
    c.conn.send(b"de", c.now)
    assert c.sent() == []                              # Nagle: wait for the ACK
    c.conn.send(b"!", c.now, True)
    c.expect("Flags [P.U], seq 1004:1007, ack 5001, win 65535, urg 3, length 3")
