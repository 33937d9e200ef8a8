"""The fixes the conformance suite (tests/conformance) led to, each as a
conversation on the manual clock: forged timestamps change nothing, D-SACK,
an early FIN in the SACK blocks, SYN_SENT's answer to an unacceptable ACK,
and data after SHUT_RD."""

from __future__ import annotations

from stack.tcp import TcpConfig
from tests.helpers.tcp import IRS, PEER, PEER_PORT, US, US_PORT, Conversation, syn_options

ALL = dict(wscale=7, sack_perm=True, timestamps=(777, 0))


def opened(cfg: TcpConfig | None = None, **peer_opts) -> Conversation:
    """Active open; the peer's SYN,ACK offers ``peer_opts``; what was sent is forgotten."""
    c = Conversation(cfg)
    c.conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.feed("S.", IRS, 1001, mss=1460, **peer_opts)
    assert c.conn.state == "ESTABLISHED"
    c.sent()
    return c


def echoed(c: Conversation) -> list[int]:
    """The TSecr of each segment sent since the last look."""
    return [seg.timestamps[1] for seg in c.sent_segments()]


# ---- forged timestamps (RFC 7323 5.3: R3 after the acceptability checks) ----------------


def test_a_forged_tsval_on_a_blind_syn_changes_nothing():
    c = opened(**ALL)
    c.feed("S", IRS + 500, timestamps=(4_000_000_000, 0))  # in window: challenge ACK
    assert echoed(c) == [777]
    c.feed(".", IRS + 1, 1001, data=b"real", timestamps=(778, 0))
    assert echoed(c) == [778]  # the real peer's next segment is accepted
    assert c.conn.recv(10) == b"real"


def test_a_forged_tsval_on_an_ack_of_unsent_data_changes_nothing():
    c = opened(**ALL)
    c.feed(".", IRS + 1, 9000, timestamps=(4_000_000_000, 0))
    assert echoed(c) == [777]
    c.feed(".", IRS + 1, 1001, data=b"real", timestamps=(778, 0))
    assert echoed(c) == [778]
    assert c.conn.recv(10) == b"real"


def test_a_forged_tsval_on_an_out_of_window_segment_changes_nothing():
    c = opened(**ALL)
    c.feed(".", IRS + 900_000, 1001, data=b"x", timestamps=(4_000_000_000, 0))
    assert echoed(c) == [777]
    c.feed(".", IRS + 1, 1001, data=b"real", timestamps=(778, 0))
    assert echoed(c) == [778]


# ---- D-SACK (RFC 2883) -----------------------------------------------------------------------


def test_a_duplicate_segment_is_reported_in_a_dsack_block():
    c = opened(**ALL)
    c.feed(".", IRS + 1, 1001, data=b"a" * 100, timestamps=(778, 0))
    c.sent()
    c.feed(".", IRS + 1, 1001, data=b"a" * 100, timestamps=(779, 0))
    [ack] = c.sent_segments()
    assert ack.ack == IRS + 101 and ack.sack == ((IRS + 1, IRS + 101),)
    c.conn.send(b"z", c.now)
    assert c.sent_segments()[0].sack == ()  # reported once


def test_the_old_part_of_an_overlapping_segment_is_the_dsack_block():
    c = opened(**ALL)
    c.feed(".", IRS + 1, 1001, data=b"a" * 100, timestamps=(778, 0))
    c.sent()
    c.feed(".", IRS + 51, 1001, data=b"a" * 100, timestamps=(779, 0))
    [ack] = c.sent_segments()
    assert ack.ack == IRS + 151 and ack.sack == ((IRS + 51, IRS + 101),)


def test_a_copy_of_out_of_order_data_gets_a_dsack_block_then_the_queue():
    c = opened(**ALL)
    c.feed(".", IRS + 101, 1001, data=b"b" * 100, timestamps=(778, 0))
    assert c.sent_segments()[0].sack == ((IRS + 101, IRS + 201),)
    c.feed(".", IRS + 101, 1001, data=b"b" * 100, timestamps=(779, 0))
    assert c.sent_segments()[0].sack == ((IRS + 101, IRS + 201), (IRS + 101, IRS + 201))


def test_no_dsack_without_sack():
    c = opened(wscale=7, timestamps=(777, 0))
    c.feed(".", IRS + 1, 1001, data=b"a" * 100, timestamps=(778, 0))
    c.sent()
    c.feed(".", IRS + 1, 1001, data=b"a" * 100, timestamps=(779, 0))
    assert [s.sack for s in c.sent_segments()] == [()]


def test_an_early_fin_is_sacked_as_the_byte_after_its_data():
    c = opened(**ALL)
    c.feed("F.", IRS + 101, 1001, timestamps=(778, 0))
    assert c.sent_segments()[0].sack == ((IRS + 101, IRS + 102),)
    c.feed(".", IRS + 51, 1001, data=b"c" * 50, timestamps=(779, 0))
    assert c.sent_segments()[0].sack == ((IRS + 51, IRS + 102),)


# ---- SYN_SENT: an unacceptable ACK -------------------------------------------------------------


def test_an_unacceptable_syn_ack_gets_a_bare_rst_and_the_syn_again_at_once():
    c = Conversation()
    c.conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.sent()
    c.feed("S.", IRS, 77, mss=1460, timestamps=(5, 0))
    c.expect("Flags [R], seq 77, win 0, length 0")  # the reply of a closed port: no options
    c.run_until(0.01)
    # As Linux (TCP_TIMEOUT_MIN): the peer's state is stale; ask again now.
    assert c.sent_at() == [(0.002, f"Flags [S], seq 1000, win 65535, options "
                                   f"[{syn_options(now=0.002)}], length 0")]
    c.run_until(1.0)
    c.expect_nothing()  # the next one an initial RTO later
    c.run_until(1.002)
    assert len(c.sent()) == 1


# ---- shutdown(SHUT_RD) --------------------------------------------------------------------------


def test_data_after_shut_rd_once_our_fin_is_out_is_reset():
    c = opened()
    c.feed(".", IRS + 1, 1001, data=b"kept")
    c.conn.shutdown_read()
    c.conn.shutdown_write(c.now)  # FIN_WAIT_1
    c.sent()
    assert c.conn.recv(10) == b"kept"  # what came before can still be read, as on Linux
    c.feed(".", IRS + 5, 1002, data=b"more")
    c.expect("Flags [R], seq 1002, win 0, length 0")
    assert c.conn.state == "CLOSED"


def test_data_after_shut_rd_in_established_is_taken():
    c = opened()
    c.conn.shutdown_read()
    c.feed(".", IRS + 1, 1001, data=b"late")
    assert c.conn.state == "ESTABLISHED" and c.conn.recv(10) == b"late"


# ---- the ACK of a FIN that closes first ----------------------------------------------------------


def test_after_data_the_ack_of_the_peers_fin_waits_for_ours():
    c = opened(**ALL)
    c.feed("F.", IRS + 1, 1001, data=b"bye", timestamps=(778, 0))
    c.expect_nothing()  # pingpong (Linux's tcp_fin): our FIN will carry it
    assert c.conn.recv(10) == b"bye"
    c.conn.close(c.now)
    assert [(s.flags, s.ack) for s in c.sent_segments()] == [(0x11, IRS + 5)]  # FIN,ACK


def test_without_our_fin_the_delayed_ack_goes_alone():
    c = opened(**ALL)
    c.feed("F.", IRS + 1, 1001, data=b"bye", timestamps=(778, 0))
    c.run_until(0.04)
    assert [(s.flags, s.ack) for s in c.sent_segments()] == [(0x10, IRS + 5)]


def test_data_in_time_wait_is_acked_with_the_fins_timestamp():
    c = opened(**ALL)
    c.conn.close(c.now)
    c.feed(".", IRS + 1, 1002, timestamps=(778, 0))
    c.feed("F.", IRS + 1, 1002, timestamps=(779, 0))
    assert c.conn.state == "TIME_WAIT"
    c.sent()
    c.feed("P.", IRS + 2, 1002, data=b"late", timestamps=(780, 0))
    [ack] = c.sent_segments()
    assert ack.ack == IRS + 2 and ack.timestamps[1] == 779
