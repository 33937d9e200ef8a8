"""TCP conversations: closing: FIN in every direction, TIME_WAIT, half-close.

The stack is 198.51.100.1:4000 with ISS 1000; the test is the peer 198.51.100.2:5555
with ISS 5000. Times are on a manual clock. Each test puts a connection in a state,
feeds it a segment and expects exactly what it sends back (in tcpdump form) or nothing.
"""

from __future__ import annotations


import pytest

from stack.tcp import TcpConfig
from tests.helpers.tcp import Conversation, established, to_state


# --- closing ------------------------------------------------------------------


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
    # No data came before it: ACKed at once (as Linux, whose delayed-ACK
    # timeout is still 0 then; after data it waits, see test_like_linux).
    c.expect("Flags [.], seq 1001, ack 5002, win 65534, length 0")
    assert c.conn.state == "CLOSE_WAIT" and c.conn.readable
    assert c.conn.recv(100) == b""
    c.conn.send(b"last words", c.now)
    c.expect("Flags [P.], seq 1001:1011, ack 5002, win 65534, length 10")
    c.conn.close(c.now)
    c.expect("Flags [F.], seq 1011, ack 5002, win 65534, length 0")
    assert c.conn.state == "LAST_ACK"
    c.run_until(c.now + 0.1)
    c.expect_nothing()  # nothing left for the delayed ACK to say
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
    c.expect("Flags [.], seq 1001, ack 5007, win 65529, length 0")  # quickack mode
    c.conn.close(c.now)
    # An active reset, as Linux's tcp_send_active_reset: RST,ACK at SND.NXT.
    c.expect("Flags [R.], seq 1001, ack 5007, win 65529, length 0")
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
    c.expect("Flags [R.], seq 1004, ack 5001, win 65535, length 0")
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


def test_writable_again_when_the_free_space_is_half_of_what_is_queued():
    # As Linux's sk_stream_is_writeable. (sndbuf_max: no autotuning here.)
    c = established(TcpConfig(sndbuf=4000, sndbuf_max=4000), peer_win=1460)
    calls = []
    c.conn.on_change = lambda: calls.append(c.conn.writable)
    assert c.conn.send(b"x" * 5000, c.now) == 4000
    assert not c.conn.writable
    c.sent()
    c.feed(".", 5001, 2001, win=1460)   # 1000 free, 3000 queued
    assert not c.conn.writable and calls == []
    c.feed(".", 5001, 2461, win=1460)   # 1460 free, 2540 queued
    assert c.conn.writable and calls == [True]
