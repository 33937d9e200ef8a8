"""TCP conversations: opening a connection (active, passive, simultaneous) and the MSS.

The stack is 198.51.100.1:4000 with ISS 1000; the test is the peer 198.51.100.2:5555
with ISS 5000. Times are on a manual clock. Each test puts a connection in a state,
feeds it a segment and expects exactly what it sends back (in tcpdump form) or nothing.
"""

from __future__ import annotations

import errno

import pytest

from tests.helpers.tcp import Conversation, established, syn_options


# --- opening ------------------------------------------------------------------


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
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")  # as Linux
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
    # Back to LISTEN, and the peer is told (as Linux: the RST of a closed port).
    c.expect("Flags [R.], seq 0, ack 5101, win 0, length 0")
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


# --- MSS ----------------------------------------------------------------------


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
