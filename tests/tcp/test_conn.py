"""TCP conversations: put a connection in a state, feed it a segment, expect
exactly what it sends back (in tcpdump form) or nothing.

The stack is 198.51.100.1:4000 with ISS 1000; the test is the peer 198.51.100.2:5555
with ISS 5000. Times are on a manual clock.
"""

from __future__ import annotations

import errno

import pytest

from stack.tcp import TcpConfig

from tests.helpers.tcp import Conversation, syn_options, to_state



def established(config: TcpConfig | None = None, **kw) -> Conversation:
    c = Conversation(config)
    c.open_active(**kw)
    return c


# ---- opening -----------------------------------------------------------------------


def test_active_open_three_way_handshake():
    c = Conversation()
    conn = c.layer.connect(0xC6336401, (0xC6336402, 5555), 0.0, local_port=4000)
    c.expect(f"Flags [S], seq 1000, win 65535, options [{syn_options()}], length 0")
    assert conn.state == "SYN_SENT" and not conn.writable
    c.feed("S.", 5000, 1001, mss=1460)
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert conn.state == "ESTABLISHED" and conn.writable
    assert c.states() == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")]
    ev = [e for e in c.events if e["event"] == "state"]
    assert ev[0]["conn"] == "198.51.100.1:4000-198.51.100.2:5555"
    assert ev[0]["cause"] == "user connect"
    assert ev[1]["cause"] == "rcv SYN,ACK seq=5000 ack=1001"


def test_passive_open_three_way_handshake():
    c = Conversation()
    lst = c.layer.listen((0, 4000), 5, 0.0)
    c.feed("S", 5000, mss=1460)
    c.expect("Flags [S.], seq 1000, ack 5001, win 65535, options [mss 1460], length 0")
    assert lst.accept() is None and not lst.readable
    c.feed(".", 5001, 1001)
    c.expect_nothing()
    assert lst.readable
    conn = lst.accept()
    assert conn.state == "ESTABLISHED" and conn.remote == (0xC6336402, 5555)
    names = [(e["from"], e["to"]) for e in c.events if e["event"] == "state"]
    assert names == [("CLOSED", "LISTEN"), ("LISTEN", "SYN_RECEIVED"),
                     ("SYN_RECEIVED", "ESTABLISHED")]


def test_syn_sent_unacceptable_ack_gets_reset():
    c = Conversation()
    c.syn_sent()
    c.feed(".", 9, 999)  # acknowledges nothing we sent
    c.expect("Flags [R], seq 999, win 0, length 0")
    c.feed("S.", 5000, 2000)
    c.expect("Flags [R], seq 2000, win 0, length 0")
    assert c.layer.connections()[0].state == "SYN_SENT"


def test_syn_sent_rst_with_acceptable_ack_refuses():
    c = Conversation()
    conn = c.syn_sent()
    c.feed("R.", 0, 1001)
    c.expect_nothing()
    assert conn.state == "CLOSED" and conn.error == errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError):
        conn.send(b"x", c.now)


@pytest.mark.parametrize("flags,ack", [("R", 0), ("R.", 1000), ("R.", 3000)])
def test_syn_sent_ignores_unacceptable_rst(flags, ack):
    c = Conversation()
    conn = c.syn_sent()
    c.feed(flags, 0, ack)
    c.expect_nothing()  # never answer a RST
    assert conn.state == "SYN_SENT"


def test_syn_sent_segment_without_syn_or_rst_dropped():
    c = Conversation()
    conn = c.syn_sent()
    c.feed(".", 5000, 1001)
    c.expect_nothing()
    assert conn.state == "SYN_SENT"


def test_simultaneous_open():
    c = Conversation()
    conn = c.layer.connect(0xC6336401, (0xC6336402, 5555), 0.0, local_port=4000)
    c.expect(f"Flags [S], seq 1000, win 65535, options [{syn_options()}], length 0")
    c.feed("S", 5000, mss=1460)  # the peer's SYN crosses ours
    c.expect("Flags [S.], seq 1000, ack 5001, win 65535, options [mss 1460], length 0")
    assert conn.state == "SYN_RECEIVED"
    c.feed("S.", 5000, 1001)  # the peer's SYN,ACK: its SYN is old, its ACK is new
    c.expect_nothing()
    assert conn.state == "ESTABLISHED"
    assert c.states() == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "SYN_RECEIVED"),
                          ("SYN_RECEIVED", "ESTABLISHED")]


def test_simultaneous_open_completed_by_plain_ack():
    c = Conversation()
    conn = c.layer.connect(0xC6336401, (0xC6336402, 5555), 0.0, local_port=4000)
    c.feed("S", 5000, mss=1460)
    c.sent()
    c.feed(".", 5001, 1001)
    c.expect_nothing()
    assert conn.state == "ESTABLISHED"


def test_simultaneous_open_rst_refuses():
    c = Conversation()
    conn = c.syn_received()
    c.feed("R", 5001)
    assert conn.state == "CLOSED" and conn.error == errno.ECONNREFUSED


def test_syn_received_retransmitted_syn_gets_syn_ack_again():
    c = Conversation()
    c.layer.listen((0, 4000), 5, 0.0)
    c.feed("S", 5000, mss=1460)
    c.sent()
    c.feed("S", 5000, mss=1460)
    c.expect("Flags [S.], seq 1000, ack 5001, win 65535, options [mss 1460], length 0")


def test_syn_received_bad_ack_gets_reset():
    c = Conversation()
    lst = c.layer.listen((0, 4000), 5, 0.0)
    c.feed("S", 5000)
    c.sent()
    c.feed(".", 5001, 7777)
    c.expect("Flags [R], seq 7777, win 0, length 0")
    assert lst.accept() is None


def test_syn_received_rst_returns_to_listen():
    c = Conversation()
    lst = c.layer.listen((0, 4000), 5, 0.0)
    c.feed("S", 5000)
    c.sent()
    c.feed("R", 5001)
    c.expect_nothing()
    assert lst.accept() is None and lst.state == "LISTEN"
    assert c.states()[-1] == ("SYN_RECEIVED", "CLOSED")
    assert c.layer.connections() == []
    c.feed("S", 6000)  # the listener still works
    c.expect("Flags [S.], seq 1000, ack 6001, win 65535, options [mss 1460], length 0")


def test_syn_received_in_window_syn_drops_half_open():
    c = Conversation()
    c.layer.listen((0, 4000), 5, 0.0)
    c.feed("S", 5000)
    c.sent()
    c.feed("S", 5100)
    c.expect_nothing()
    assert c.layer.connections() == []


def test_syn_received_data_with_handshake_ack_is_delivered():
    c = Conversation()
    lst = c.layer.listen((0, 4000), 5, 0.0)
    c.feed("S", 5000)
    c.sent()
    c.feed("P.", 5001, 1001, data=b"hello")
    conn = lst.accept()
    assert conn.recv(100) == b"hello"


def test_syn_ack_carrying_data_and_fin():
    c = Conversation()
    conn = c.syn_sent()
    c.feed("FS.", 5000, 1001, data=b"hi")  # SYN+FIN is rejected as malformed
    c.expect_nothing()
    c.feed("S.", 5000, 1001, data=b"hi")
    c.expect("Flags [.], seq 1001, ack 5003, win 65533, length 0")
    assert conn.recv(10) == b"hi"


# ---- MSS --------------------------------------------------------------------------


@pytest.mark.parametrize("peer_mss,expected", [(1460, 1460), (536, 536), (9000, 1460),
                                               (None, 536)])
def test_mss_smaller_wins_default_536(peer_mss, expected):
    c = established(peer_mss=peer_mss)
    c.conn.set_nodelay(True)
    c.conn.send(b"x" * 2000, c.now)
    lens = [len(s.payload) for s in c.sent_segments()]
    assert lens == [expected] * (2000 // expected) + [2000 % expected]


def test_listener_honours_peer_mss():
    c = Conversation()
    c.open_passive(peer_mss=1000)
    c.conn.send(b"x" * 1500, c.now)
    c.expect("Flags [.], seq 1001:2001, ack 5001, win 65535, length 1000",
             "Flags [P.], seq 2001:2501, ack 5001, win 65535, length 500")


# ---- receiving -----------------------------------------------------------------------


def test_delayed_ack_fires_at_40ms():
    c = established()
    c.feed("P.", 5001, 1001, data=b"a" * 100)
    c.expect_nothing()
    assert c.conn.readable and c.conn.recv(1000) == b"a" * 100
    assert c.conn.recv(1000) is None
    c.run_until(0.0399)
    c.expect_nothing()
    c.run_until(0.04)
    # 100 bytes read: the window's right edge stays put (receiver SWS avoidance)
    c.expect("Flags [.], seq 1001, ack 5101, win 65435, length 0")
    c.run_until(1.0)
    c.expect_nothing()


def test_every_second_full_segment_acked_at_once():
    c = established()
    c.feed(".", 5001, 1001, data=b"a" * 1460)
    c.expect_nothing()
    c.feed(".", 6461, 1001, data=b"b" * 1460)
    c.expect("Flags [.], seq 1001, ack 7921, win 65535, length 0")
    c.feed(".", 7921, 1001, data=b"c" * 1460)
    c.expect_nothing()
    c.feed(".", 9381, 1001, data=b"d" * 1460)
    c.expect("Flags [.], seq 1001, ack 10841, win 65535, length 0")
    c.run_until(1.0)
    c.expect_nothing()


def test_out_of_order_acked_at_once_and_reassembled():
    c = established()
    c.feed(".", 5011, 1001, data=b"1" * 10)  # hole at 5001..5011
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    c.feed(".", 5031, 1001, data=b"3" * 10)  # a second hole
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.recv(100) is None
    c.feed(".", 5001, 1001, data=b"0" * 10)  # fills the first hole
    c.expect("Flags [.], seq 1001, ack 5021, win 65515, length 0")
    c.feed(".", 5021, 1001, data=b"2" * 10)
    c.expect("Flags [.], seq 1001, ack 5041, win 65495, length 0")
    assert c.conn.recv(100) == b"0" * 10 + b"1" * 10 + b"2" * 10 + b"3" * 10


def test_out_of_order_fin_processed_when_hole_fills():
    c = established()
    c.feed("F.", 5006, 1001, data=b"world")
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.state == "ESTABLISHED"
    c.feed(".", 5001, 1001, data=b"hello")
    c.expect("Flags [.], seq 1001, ack 5012, win 65524, length 0")
    assert c.conn.state == "CLOSE_WAIT"
    assert c.conn.recv(100) == b"helloworld" and c.conn.recv(100) == b""


def test_overlapping_retransmission_trimmed():
    c = established()
    c.feed(".", 5001, 1001, data=b"abcdef")
    c.feed(".", 5004, 1001, data=b"DEFghi")  # first three bytes are old
    c.expect("Flags [.], seq 1001, ack 5010, win 65526, length 0")
    assert c.conn.recv(100) == b"abcdefghi"


def test_old_duplicate_segment_gets_ack_and_is_dropped():
    c = established()
    c.feed(".", 5001, 1001, data=b"abc")
    c.run_until(0.1)
    c.sent()
    c.feed(".", 5001, 1001, data=b"abc")
    c.expect("Flags [.], seq 1001, ack 5004, win 65532, length 0")
    assert c.conn.recv(100) == b"abc"
    assert c.drops()["tcp.drop.out_of_window"] == 1


def test_segment_beyond_window_gets_ack_and_is_dropped():
    c = established()
    c.feed(".", 5001 + 70000, 1001, data=b"far")
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.recv(100) is None


def test_segment_straddling_right_edge_trimmed():
    cfg = TcpConfig(rcvbuf=1000)
    c = established(cfg)
    c.feed(".", 5001, 1001, data=b"x" * 1200)
    c.expect("Flags [.], seq 1001, ack 6001, win 0, length 0")
    assert len(c.conn.recv(5000)) == 1000


def test_zero_window_then_window_update_after_read():
    cfg = TcpConfig(rcvbuf=4000)
    c = Conversation(cfg)
    c.open_active()
    c.sent()
    c.feed(".", 5001, 1001, data=b"a" * 1460)
    c.feed(".", 6461, 1001, data=b"b" * 1460)
    c.expect("Flags [.], seq 1001, ack 7921, win 1080, length 0")
    c.feed("P.", 7921, 1001, data=b"c" * 1080)
    c.run_until(0.04)
    c.expect("Flags [.], seq 1001, ack 9001, win 0, length 0")
    c.feed(".", 9001, 1001, data=b"d")  # a probe into the zero window
    c.expect("Flags [.], seq 1001, ack 9001, win 0, length 0")
    assert c.conn.recv(100) == b"a" * 100
    c.expect_nothing()  # 100 bytes free: too little to announce (receiver SWS)
    assert len(c.conn.recv(10000)) == 3900
    c.expect("Flags [.], seq 1001, ack 9001, win 4000, length 0")


def test_receiver_does_not_advertise_small_window_increase():
    cfg = TcpConfig(rcvbuf=10000)
    c = established(cfg)
    c.feed(".", 5001, 1001, data=b"a" * 1460)
    c.feed(".", 6461, 1001, data=b"b" * 1460)
    c.expect("Flags [.], seq 1001, ack 7921, win 7080, length 0")
    c.conn.recv(500)
    c.feed(".", 7921, 1001, data=b"c" * 1460)
    c.feed(".", 9381, 1001, data=b"d" * 1460)
    # 500 bytes freed is less than min(bufsize/2, MSS): the right edge stays.
    c.expect("Flags [.], seq 1001, ack 10841, win 4160, length 0")


# ---- sending ---------------------------------------------------------------------------


def test_send_goes_out_at_once_and_ack_frees_buffer():
    c = established()
    assert c.conn.send(b"hello", c.now) == 5
    c.expect("Flags [P.], seq 1001:1006, ack 5001, win 65535, length 5")
    c.feed(".", 5001, 1006)
    c.expect_nothing()
    assert c.conn.status()["send_buffered"] == 0


def test_send_buffer_bounded():
    cfg = TcpConfig(sndbuf=3000)
    c = established(cfg, peer_win=0)
    assert c.conn.send(b"x" * 5000, c.now) == 3000
    assert c.conn.send(b"y", c.now) == 0
    assert not c.conn.writable


def test_nagle_holds_second_small_segment_until_ack():
    c = established()
    c.conn.send(b"a", c.now)
    c.expect("Flags [P.], seq 1001:1002, ack 5001, win 65535, length 1")
    c.conn.send(b"b", c.now)
    c.conn.send(b"c", c.now)
    c.expect_nothing()
    c.feed(".", 5001, 1002)
    c.expect("Flags [P.], seq 1002:1004, ack 5001, win 65535, length 2")


def test_nodelay_sends_every_small_write():
    c = established()
    c.conn.set_nodelay(True)
    c.conn.send(b"a", c.now)
    c.conn.send(b"b", c.now)
    c.expect("Flags [P.], seq 1001:1002, ack 5001, win 65535, length 1",
             "Flags [P.], seq 1002:1003, ack 5001, win 65535, length 1")


def test_nagle_compares_with_effective_mss():
    c = established(peer_mss=1000)
    c.conn.send(b"x" * 2000, c.now)  # two segments of exactly the effective MSS
    c.expect("Flags [.], seq 1001:2001, ack 5001, win 65535, length 1000",
             "Flags [P.], seq 2001:3001, ack 5001, win 65535, length 1000")
    c.conn.send(b"y" * 10, c.now)   # no small segment outstanding: goes
    c.expect("Flags [P.], seq 3001:3011, ack 5001, win 65535, length 10")
    c.conn.send(b"z" * 10, c.now)   # one small segment outstanding: waits
    c.expect_nothing()


def test_data_sent_as_window_allows_driven_by_acks():
    c = established(peer_win=3000)
    c.conn.send(b"x" * 6000, c.now)
    c.expect("Flags [.], seq 1001:2461, ack 5001, win 65535, length 1460",
             "Flags [.], seq 2461:3921, ack 5001, win 65535, length 1460")
    # 80 bytes of window left: below half the peer's max window, so wait.
    c.feed(".", 5001, 2461, win=3000)
    c.expect("Flags [.], seq 3921:5381, ack 5001, win 65535, length 1460")
    c.feed(".", 5001, 5381, win=3000)
    c.expect("Flags [.], seq 5381:6841, ack 5001, win 65535, length 1460",
             "Flags [P.], seq 6841:7001, ack 5001, win 65535, length 160")


def test_ack_for_unsent_data_is_answered_and_ignored():
    c = established()
    c.conn.send(b"abc", c.now)
    c.sent()
    c.feed(".", 5001, 2000)
    c.expect("Flags [.], seq 1004, ack 5001, win 65535, length 0")
    assert c.conn.snd_una == 1001
    assert c.drops()["tcp.drop.ack_unsent"] == 1


def test_ack_for_unsent_data_drops_its_text():
    c = established()
    c.feed("P.", 5001, 2000, data=b"zzz")
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.recv(10) is None


def test_too_old_ack_gets_challenge_ack():
    c = established(peer_win=1000)
    c.conn.set_nodelay(True)
    for _ in range(3):
        c.conn.send(b"x" * 1000, c.now)
        c.sent()
        c.feed(".", 5001, c.conn.snd_max, win=1000)
    c.feed(".", 5001, 1001 - 10)  # far below snd_una - max window
    c.expect("Flags [.], seq 4001, ack 5001, win 65535, length 0")
    assert c.drops()["tcp.drop.ack_too_old"] == 1


# ---- RST and SYN in synchronized states (RFC 5961) --------------------------------


def test_rst_exact_sequence_resets():
    c = established()
    c.feed("R", 5001)
    c.expect_nothing()
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ECONNRESET
    with pytest.raises(ConnectionResetError):
        c.conn.recv(10)
    with pytest.raises(ConnectionResetError):
        c.conn.send(b"x", c.now)
    assert c.layer.connections() == []


def test_rst_in_window_not_exact_gets_challenge_ack():
    c = established()
    c.feed("R", 5100)
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.state == "ESTABLISHED"


def test_rst_out_of_window_silently_dropped():
    c = established()
    c.feed("R", 5001 + 100000)
    c.feed("R", 4000)
    c.expect_nothing()
    assert c.conn.state == "ESTABLISHED"


def test_syn_in_window_gets_challenge_ack():
    c = established()
    c.feed("S", 5100)
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.state == "ESTABLISHED"
    c.feed("S", 4000)  # outside the window: an ACK too (sequence check)
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")


def test_challenge_acks_are_rate_limited():
    cfg = TcpConfig(challenge_ack_limit=2)
    c = established(cfg)
    for _ in range(4):
        c.feed("R", 5100)
    assert len(c.sent()) == 2
    c.advance(1.0)
    c.feed("R", 5100)
    assert len(c.sent()) == 1


@pytest.mark.parametrize("state,error", [
    ("SYN_RECEIVED", errno.ECONNREFUSED),
    ("ESTABLISHED", errno.ECONNRESET),
    ("FIN_WAIT_1", errno.ECONNRESET),
    ("FIN_WAIT_2", errno.ECONNRESET),
    ("CLOSE_WAIT", errno.EPIPE),    # as Linux: the peer had closed already
    ("CLOSING", None),
    ("LAST_ACK", None),
    ("TIME_WAIT", None),
])
def test_rst_in_every_synchronized_state(state, error):
    c = to_state(state)
    rcv_nxt = c.conn.rcv_nxt
    w = c.conn.rcv_adv - rcv_nxt
    c.feed("R", rcv_nxt + 1)  # not exact: challenged, not obeyed
    if state != "SYN_RECEIVED":
        c.expect(f"Flags [.], seq {c.conn.snd_max}, ack {rcv_nxt}, win {w}, length 0")
    assert c.conn.state == state
    c.sent()
    c.feed("R", rcv_nxt)
    c.expect_nothing()
    assert c.conn.state == "CLOSED" and c.conn.error == error
    assert c.states()[-1] == (state, "CLOSED")
    assert c.layer.connections() == [] and c.layer.next_deadline() is None


def test_rst_in_syn_sent_needs_ack_of_syn():
    c = to_state("SYN_SENT")
    c.feed("R.", 0, 1001)
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ECONNREFUSED


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_syn_in_every_synchronized_state_gets_challenge_ack(state):
    c = to_state(state)
    w = c.conn.rcv_adv - c.conn.rcv_nxt
    c.feed("S", c.conn.rcv_nxt + 10)
    c.expect(f"Flags [.], seq {c.conn.snd_max}, ack {c.conn.rcv_nxt}, win {w}, length 0")
    assert c.conn.state == state


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_out_of_window_data_in_every_synchronized_state_gets_ack(state):
    c = to_state(state)
    w = c.conn.rcv_adv - c.conn.rcv_nxt
    c.feed(".", c.conn.rcv_nxt + 200000, c.conn.snd_una, data=b"zz")
    c.expect(f"Flags [.], seq {c.conn.snd_max}, ack {c.conn.rcv_nxt}, win {w}, length 0")
    assert c.conn.state == state


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_segment_without_ack_dropped_in_every_synchronized_state(state):
    c = to_state(state)
    c.feed("P", c.conn.rcv_nxt, data=b"zz")
    c.run_until(1.0)  # not even a delayed ACK: the text was never accepted
    assert [s for s in c.sent() if "length 2" in s] == []
    assert c.drops()["tcp.drop.no_ack"] == 1


# ---- closing -------------------------------------------------------------------------


def test_active_close_through_time_wait():
    c = established()
    c.conn.close(c.now)
    c.expect("Flags [F.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.state == "FIN_WAIT_1"
    c.feed(".", 5001, 1002)
    c.expect_nothing()
    assert c.conn.state == "FIN_WAIT_2"
    c.feed("F.", 5001, 1002)
    c.expect("Flags [.], seq 1002, ack 5002, win 65534, length 0")
    assert c.conn.state == "TIME_WAIT"
    c.run_until(59.999)
    assert c.conn.state == "TIME_WAIT"
    c.run_until(60.0)
    assert c.conn.state == "CLOSED" and c.conn.error is None
    assert c.states() == [("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"),
                          ("ESTABLISHED", "FIN_WAIT_1"), ("FIN_WAIT_1", "FIN_WAIT_2"),
                          ("FIN_WAIT_2", "TIME_WAIT"), ("TIME_WAIT", "CLOSED")]
    assert [e["cause"] for e in c.events if e["event"] == "state"][-1] == "timer 2MSL"
    assert c.layer.next_deadline() is None and c.layer.connections() == []


def test_time_wait_reacks_retransmitted_fin_and_restarts_2msl():
    c = to_state("TIME_WAIT")
    c.run_until(30.0)
    c.feed("F.", 5001, 1002)
    c.expect("Flags [.], seq 1002, ack 5002, win 65534, length 0")
    c.run_until(89.999)
    assert c.conn.state == "TIME_WAIT"
    c.run_until(90.0)
    assert c.conn.state == "CLOSED"


def test_time_wait_length_configurable():
    c = Conversation(TcpConfig(msl=2.0))
    c.open_active()
    c.conn.close(c.now)
    c.feed("F.", 5001, 1002)
    c.run_until(3.999)
    assert c.conn.state == "TIME_WAIT"
    c.run_until(4.0)
    assert c.conn.state == "CLOSED"


def test_fin_ack_of_our_fin_goes_straight_to_time_wait():
    c = to_state("FIN_WAIT_1")
    c.feed("F.", 5001, 1002)
    c.expect("Flags [.], seq 1002, ack 5002, win 65534, length 0")
    # RFC 9293 step five (our FIN acked) then step eight (their FIN).
    assert c.states()[-2:] == [("FIN_WAIT_1", "FIN_WAIT_2"), ("FIN_WAIT_2", "TIME_WAIT")]


def test_simultaneous_close():
    c = established()
    c.conn.close(c.now)
    c.expect("Flags [F.], seq 1001, ack 5001, win 65535, length 0")
    c.feed("F.", 5001, 1001)  # the peer's FIN crossed ours
    c.expect("Flags [.], seq 1002, ack 5002, win 65534, length 0")
    assert c.conn.state == "CLOSING"
    c.feed(".", 5002, 1002)
    c.expect_nothing()
    assert c.states()[-3:] == [("ESTABLISHED", "FIN_WAIT_1"), ("FIN_WAIT_1", "CLOSING"),
                               ("CLOSING", "TIME_WAIT")]


def test_passive_close():
    c = established()
    c.feed("F.", 5001, 1001)
    c.expect("Flags [.], seq 1001, ack 5002, win 65534, length 0")
    assert c.conn.state == "CLOSE_WAIT" and c.conn.readable
    assert c.conn.recv(100) == b""
    c.conn.send(b"last words", c.now)
    c.expect("Flags [P.], seq 1001:1011, ack 5002, win 65534, length 10")
    c.conn.close(c.now)
    c.expect("Flags [F.], seq 1011, ack 5002, win 65534, length 0")
    assert c.conn.state == "LAST_ACK"
    c.feed(".", 5002, 1011)  # acknowledges the data, not the FIN
    assert c.conn.state == "LAST_ACK"
    c.feed(".", 5002, 1012)
    c.expect_nothing()
    assert c.conn.state == "CLOSED" and c.conn.error is None
    assert c.states()[-3:] == [("ESTABLISHED", "CLOSE_WAIT"), ("CLOSE_WAIT", "LAST_ACK"),
                               ("LAST_ACK", "CLOSED")]


def test_half_close_keeps_receiving():
    c = established()
    c.conn.shutdown_write(c.now)
    c.expect("Flags [F.], seq 1001, ack 5001, win 65535, length 0")
    c.feed(".", 5001, 1002)
    assert c.conn.state == "FIN_WAIT_2"
    with pytest.raises(BrokenPipeError):
        c.conn.send(b"x", c.now)
    c.feed("P.", 5001, 1002, data=b"still talking")
    c.run_until(0.04)
    c.expect("Flags [.], seq 1002, ack 5014, win 65522, length 0")
    assert c.conn.recv(100) == b"still talking"
    c.run_until(1000.0)
    assert c.conn.state == "FIN_WAIT_2"  # no FIN_WAIT_2 timeout after a half-close


def test_fin_wait_2_times_out_after_close():
    c = to_state("FIN_WAIT_2")
    c.run_until(59.9)
    assert c.conn.state == "FIN_WAIT_2"
    c.run_until(60.0)
    assert c.conn.state == "CLOSED"
    assert [e["cause"] for e in c.events if e["event"] == "state"][-1] == "timer FIN_WAIT_2"


def test_buffered_data_goes_before_fin():
    c = established(peer_win=1460)
    c.conn.send(b"x" * 3000, c.now)
    c.expect("Flags [.], seq 1001:2461, ack 5001, win 65535, length 1460")
    c.conn.close(c.now)
    c.expect_nothing()  # the FIN waits behind the data
    c.feed(".", 5001, 2461, win=1460)
    c.expect("Flags [.], seq 2461:3921, ack 5001, win 65535, length 1460")
    c.feed(".", 5001, 3921, win=1460)
    c.expect("Flags [FP.], seq 3921:4001, ack 5001, win 65535, length 80")
    c.feed(".", 5001, 4002)
    assert c.conn.state == "FIN_WAIT_2"


def test_close_with_unread_data_resets():
    c = established()
    c.feed("P.", 5001, 1001, data=b"unread")
    c.conn.close(c.now)
    c.expect("Flags [R], seq 1001, win 0, length 0")
    assert c.conn.state == "CLOSED"


def test_data_after_close_resets():
    c = to_state("FIN_WAIT_2")
    c.feed("P.", 5001, 1002, data=b"anyone?")
    c.expect("Flags [R], seq 1002, win 0, length 0")
    assert c.conn.state == "CLOSED"


def test_abort_sends_rst():
    c = established()
    c.conn.send(b"abc", c.now)
    c.sent()
    c.conn.abort(c.now)
    c.expect("Flags [R], seq 1004, win 0, length 0")
    assert c.conn.state == "CLOSED" and c.layer.next_deadline() is None


def test_abort_in_syn_sent_sends_nothing():
    c = to_state("SYN_SENT")
    c.conn.abort(c.now)
    c.expect_nothing()
    assert c.conn.state == "CLOSED"


def test_close_in_syn_sent_just_forgets():
    c = to_state("SYN_SENT")
    c.conn.close(c.now)
    c.expect_nothing()
    assert c.conn.state == "CLOSED" and c.layer.connections() == []
    c.run_until(200.0)
    c.expect_nothing()


def test_close_in_syn_received_sends_fin_once_established():
    c = to_state("SYN_RECEIVED")
    c.conn.close(c.now)
    c.expect_nothing()
    assert c.conn.state == "SYN_RECEIVED"
    c.feed(".", 5001, 1001)
    c.expect("Flags [F.], seq 1001, ack 5001, win 65535, length 0")
    assert c.conn.state == "FIN_WAIT_1"


def test_send_after_close_is_broken_pipe():
    c = established()
    c.conn.close(c.now)
    with pytest.raises(BrokenPipeError):
        c.conn.send(b"x", c.now)


def test_eof_after_fin_and_status():
    c = established()
    c.feed("FP.", 5001, 1001, data=b"bye")
    assert c.conn.recv(2) == b"by" and c.conn.recv(10) == b"e" and c.conn.recv(10) == b""
    st = c.conn.status()
    assert st["state"] == "CLOSE_WAIT" and st["rcv_nxt"] == 5005


def test_recv_into_and_eof():
    c = established()
    c.feed("P.", 5001, 1001, data=b"abcdef")
    buf = bytearray(4)
    assert c.conn.recv_into(buf) == 4 and buf == b"abcd"
    assert c.conn.recv_into(buf, 1) == 1 and buf[:1] == b"e"
    assert c.conn.recv_into(buf) == 1 and buf[:1] == b"f"
    assert c.conn.recv_into(buf) is None
    c.feed("F.", 5007, 1001)
    assert c.conn.recv_into(buf) == 0


def test_writable_again_when_half_the_buffer_frees():
    c = established(TcpConfig(sndbuf=4000), peer_win=1460)
    calls = []
    c.conn.on_change = lambda: calls.append(c.conn.writable)
    assert c.conn.send(b"x" * 5000, c.now) == 4000
    assert not c.conn.writable
    c.sent()
    c.feed(".", 5001, 2461, win=1460)   # 1460 free: less than half
    assert not c.conn.writable and calls == []
    c.feed(".", 5001, 3921, win=1460)   # 2920 free
    assert c.conn.writable and calls == [True]
