"""TCP conversations: receiving and sending data in ESTABLISHED.

The stack is 198.51.100.1:4000 with ISS 1000; the test is the peer 198.51.100.2:5555
with ISS 5000. Times are on a manual clock. Each test puts a connection in a state,
feeds it a segment and expects exactly what it sends back (in tcpdump form) or nothing.
"""

from __future__ import annotations



from stack.tcp import TcpConfig
from tests.helpers.tcp import Conversation, established

# Delayed ACKs from the first segment: no quickack mode (tested on its own below).
DELAYED = TcpConfig(max_quickacks=0)


# --- receiving ----------------------------------------------------------------


def test_quickack_mode_acks_the_first_segments_at_once_then_delays():
    # Linux's tcp_incr_quickack: the window over two 536-byte segments (the
    # receive MSS guessed before any data), 2 to 16; here 2144 // 1072 = 2.
    c = established(TcpConfig(rcvbuf=2144))
    c.feed("P.", 5001, 1001, data=b"a" * 100)
    c.expect("Flags [.], seq 1001, ack 5101, win 2044, length 0")
    c.feed("P.", 5101, 1001, data=b"b" * 100)
    c.expect("Flags [.], seq 1001, ack 5201, win 1944, length 0")
    c.feed("P.", 5201, 1001, data=b"c" * 100)
    c.expect_nothing()
    c.run_until(0.04)
    c.expect("Flags [.], seq 1001, ack 5301, win 1844, length 0")


def test_an_answer_within_the_delayed_ack_time_makes_acks_ride_on_data():
    # Pingpong mode: data sent in reply to data stops the immediate ACKs.
    c = established()
    c.feed("P.", 5001, 1001, data=b"q" * 10)
    c.expect("Flags [.], seq 1001, ack 5011, win 65525, length 0")
    c.conn.send(b"r" * 10, c.now)
    c.expect("Flags [P.], seq 1001:1011, ack 5011, win 65525, length 10")
    c.feed("P.", 5011, 1011, data=b"q" * 10)
    c.expect_nothing()  # delayed: the next answer will carry it
    c.conn.send(b"r" * 10, c.now)
    c.expect("Flags [P.], seq 1011:1021, ack 5021, win 65515, length 10")


def test_delayed_ack_fires_at_40ms():
    c = established(DELAYED)
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
    c = established(DELAYED)
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


def test_a_segment_gro_merged_from_several_is_acked_at_once():
    """What software GRO hands TCP (four full segments as one): two full
    segments' worth unacknowledged, so the ACK goes at once, as for the four
    (RFC 5681 4.2; Linux acknowledges a GRO packet so), and the receiver's
    MSS estimate stays at our MSS (else the second, two segments long, would
    wait)."""
    c = established(DELAYED)
    c.feed(".", 5001, 1001, data=b"a" * 4 * 1460)
    c.expect("Flags [.], seq 1001, ack 10841, win 65535, length 0")
    c.feed(".", 10841, 1001, data=b"b" * 2 * 1460)
    c.expect("Flags [.], seq 1001, ack 13761, win 65535, length 0")
    c.feed(".", 13761, 1001, data=b"c" * 1460)
    c.expect_nothing()   # one segment's worth: delayed, as before


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
    c = established(DELAYED)
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
    cfg = TcpConfig(rcvbuf=4000, max_quickacks=0)
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
    cfg = TcpConfig(rcvbuf=10000, max_quickacks=0)
    c = established(cfg)
    c.feed(".", 5001, 1001, data=b"a" * 1460)
    c.feed(".", 6461, 1001, data=b"b" * 1460)
    c.expect("Flags [.], seq 1001, ack 7921, win 7080, length 0")
    c.conn.recv(500)
    c.feed(".", 7921, 1001, data=b"c" * 1460)
    c.feed(".", 9381, 1001, data=b"d" * 1460)
    # 500 bytes freed is less than min(bufsize/2, MSS): the right edge stays.
    c.expect("Flags [.], seq 1001, ack 10841, win 4160, length 0")


# --- sending ------------------------------------------------------------------


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
    assert c.conn.status()["snd_una"] == 1001
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
        c.feed(".", 5001, c.conn.status()["snd_max"], win=1000)
    c.feed(".", 5001, 1001 - 10)  # far below snd_una - max window
    c.expect("Flags [.], seq 4001, ack 5001, win 65535, length 0")
    assert c.drops()["tcp.drop.ack_too_old"] == 1
