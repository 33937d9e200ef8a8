"""TCP conversations: RST and SYN in synchronized states (RFC 5961).

The stack is 198.51.100.1:4000 with ISS 1000; the test is the peer 198.51.100.2:5555
with ISS 5000. Times are on a manual clock. Each test puts a connection in a state,
feeds it a segment and expects exactly what it sends back (in tcpdump form) or nothing.
"""

from __future__ import annotations

import errno

import pytest

from stack.tcp import TcpConfig
from tests.helpers.tcp import established, to_state


# --- RST and SYN in synchronized states (RFC 5961) ----------------------------


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


def test_challenge_acks_are_one_per_half_second_as_linux():
    c = established()
    for _ in range(4):
        c.feed("R", 5100)
    assert len(c.sent()) == 1  # tcp_invalid_ratelimit: 500 ms per socket
    c.advance(0.49)
    c.feed("R", 5100)
    assert len(c.sent()) == 0
    c.advance(0.01)
    c.feed("R", 5100)
    assert len(c.sent()) == 1


def test_challenge_acks_are_rate_limited():
    cfg = TcpConfig(challenge_ack_limit=2, challenge_ack_interval=0.0)
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
    rcv_nxt = c.conn.status()["rcv_nxt"]
    w = c.conn.status()["rcv_wnd"]
    c.feed("R", rcv_nxt + 1)  # not exact: challenged, not obeyed
    if state != "SYN_RECEIVED":
        c.expect(f"Flags [.], seq {c.conn.status()['snd_max']}, ack {rcv_nxt}, win {w}, length 0")
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
    w = c.conn.status()["rcv_wnd"]
    c.feed("S", c.conn.status()["rcv_nxt"] + 10)
    c.expect(f"Flags [.], seq {c.conn.status()['snd_max']}, ack {c.conn.status()['rcv_nxt']}, win {w}, length 0")
    assert c.conn.state == state


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_out_of_window_data_in_every_synchronized_state_gets_ack(state):
    c = to_state(state)
    w = c.conn.status()["rcv_wnd"]
    c.feed(".", c.conn.status()["rcv_nxt"] + 200000, c.conn.status()["snd_una"], data=b"zz")
    c.expect(f"Flags [.], seq {c.conn.status()['snd_max']}, ack {c.conn.status()['rcv_nxt']}, win {w}, length 0")
    assert c.conn.state == state


@pytest.mark.parametrize("state", ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                                   "CLOSING", "LAST_ACK", "TIME_WAIT"])
def test_segment_without_ack_dropped_in_every_synchronized_state(state):
    c = to_state(state)
    c.feed("P", c.conn.status()["rcv_nxt"], data=b"zz")
    c.run_until(1.0)  # not even a delayed ACK: the text was never accepted
    assert [s for s in c.sent() if "length 2" in s] == []
    assert c.drops()["tcp.drop.no_ack"] == 1
