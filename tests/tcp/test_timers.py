"""TCP timers on a manual clock: retransmission (RFC 6298: RTO, Karn,
backoff, retry limit), fast retransmit and Reno, the persist timer,
keepalive and sequence-number wraparound. Exact send times are checked."""

from __future__ import annotations

import errno

import pytest

from stack.tcp import TcpConfig

from tests.helpers.tcp import IRS, PEER, PEER_PORT, US, US_PORT, Conversation, syn_options



def syn_line(t: float) -> str:
    return f"Flags [S], seq 1000, win 65535, options [{syn_options(now=t)}], length 0"


def connect_with_rtt(cfg: TcpConfig | None = None, rtt: float = 0.1) -> Conversation:
    """Established at time ``rtt`` with one RTT sample of ``rtt``."""
    c = Conversation(cfg)
    c.syn_sent()
    c.now = rtt
    c.feed("S.", IRS, 1001, mss=1460)
    c.sent()
    return c


# ---- RTO ------------------------------------------------------------------------


def test_rto_from_first_sample():
    c = connect_with_rtt(rtt=0.1)
    # SRTT 0.1, RTTVAR 0.05, RTO = 0.1 + 4 * 0.05
    assert c.conn.status()["srtt"] == pytest.approx(0.1) and c.conn.status()["rto"] == pytest.approx(0.3)
    rtt = [e for e in c.events if e["event"] == "rtt"]
    assert len(rtt) == 1 and rtt[0]["sample"] == pytest.approx(0.1)


def test_rto_never_below_minimum():
    # As Linux: the floor bounds the variance term, RTO = SRTT + max(4 RTTVAR, 0.2).
    c = connect_with_rtt(rtt=0.001)
    assert c.conn.status()["rto"] == pytest.approx(0.201)


def test_retransmission_backoff_and_retry_limit():
    c = connect_with_rtt(TcpConfig(max_retries=3), rtt=0.1)
    c.conn.send(b"data", c.now)
    seg = "Flags [P.], seq 1001:1005, ack 5001, win 65535, length 4"
    c.run_until(10.0)
    assert c.sent_at() == [(0.1, seg), (0.4, seg), (1.0, seg), (2.2, seg)]
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ETIMEDOUT
    with pytest.raises(TimeoutError):
        c.conn.send(b"x", c.now)
    causes = [e["cause"] for e in c.events if e["event"] == "state"]
    assert causes[-1].startswith("timer retransmit")
    assert [e["reason"] for e in c.events if e["event"] == "retransmit"] == ["rto"] * 3
    # The failure came at the fourth expiry: 2.2 + 2.4.
    assert [e["t"] for e in c.events if e["event"] == "state"][-1] == pytest.approx(4.6)


def test_rto_max_caps_backoff():
    c = connect_with_rtt(TcpConfig(max_retries=20, rto_max=2.0), rtt=0.1)
    c.conn.send(b"d", c.now)
    c.run_until(9.0)
    times = [t for t, _ in c.sent_at()]
    assert times == pytest.approx([0.1, 0.4, 1.0, 2.2, 4.2, 6.2, 8.2])


def test_syn_retransmitted_with_backoff_then_etimedout():
    c = Conversation()
    conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.run_until(200.0)
    # Linux 6.5+: the first 4 retransmissions one initial RTO apart
    # (tcp_syn_linear_timeouts), then doubling.
    assert c.sent_at() == [(t, syn_line(t)) for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0)]
    assert conn.state == "CLOSED" and conn.error == errno.ETIMEDOUT
    assert [e["t"] for e in c.events if e["event"] == "state"][-1] == 11.0
    assert c.layer.next_deadline() is None


def test_syn_ack_retransmitted_then_half_open_forgotten():
    c = Conversation(TcpConfig(synack_retries=2))
    lst = c.layer.listen((0, US_PORT), 5, 0.0)
    c.feed("S", IRS)
    c.run_until(100.0)
    line = "Flags [S.], seq 1000, ack 5001, win 65535, options [mss 1460], length 0"
    assert c.sent_at() == [(0.0, line), (1.0, line), (3.0, line)]
    assert c.layer.connections() == [] and lst.accept() is None
    assert c.layer.next_deadline() is None


def test_karn_no_sample_from_retransmitted_syn_and_rto_3s():
    c = Conversation()
    conn = c.syn_sent()
    c.run_until(1.5)  # SYN retransmitted at 1.0
    c.feed("S.", IRS, 1001)
    assert conn.state == "ESTABLISHED"
    assert conn.status()["srtt"] is None and conn.status()["rto"] == 3.0  # RFC 6298 (5.7)
    assert not [e for e in c.events if e["event"] == "rtt"]


def test_karn_no_sample_from_retransmitted_data_backoff_kept():
    c = connect_with_rtt(rtt=0.1)
    c.conn.send(b"data", c.now)
    c.run_until(0.45)  # retransmitted at 0.4, RTO now 0.6
    c.feed(".", 5001, 1005)
    assert c.conn.status()["srtt"] == pytest.approx(0.1) and c.conn.status()["rto"] == pytest.approx(0.6)
    c.conn.send(b"more", c.now)  # a fresh segment is timed again
    c.now = 0.5
    c.feed(".", 5001, 1009)
    assert c.conn.status()["srtt"] == pytest.approx(0.875 * 0.1 + 0.125 * 0.05)


@pytest.mark.parametrize("rule, ssthresh", [
    ("flight", 2920),   # RFC 5681 (4): half of the 3 segments outstanding, at least 2 MSS
    ("cwnd", 7300),     # Linux (tcp_reno_ssthresh): half of cwnd, 10 segments
])
def test_go_back_n_after_rto_with_slow_start(rule, ssthresh):
    c = connect_with_rtt(TcpConfig(congestion="newreno", loss_window=rule), rtt=0.1)
    c.conn.send(b"x" * 4380, c.now)
    assert len(c.sent()) == 3  # all lost
    c.run_until(0.4)
    c.expect("Flags [.], seq 1001:2461, ack 5001, win 65535, length 1460")
    assert c.conn.status()["cwnd"] == 1460 and c.conn.status()["ssthresh"] == ssthresh
    c.feed(".", 5001, 2461)
    c.expect("Flags [.], seq 2461:3921, ack 5001, win 65535, length 1460",
             "Flags [P.], seq 3921:5381, ack 5001, win 65535, length 1460")


def test_ack_of_everything_stops_the_timer():
    c = connect_with_rtt(rtt=0.1)
    c.conn.send(b"data", c.now)
    c.sent()
    c.feed(".", 5001, 1005)
    assert c.layer.next_deadline() is None
    c.run_until(100.0)
    c.expect_nothing()


# ---- fast retransmit, Reno ----------------------------------------------------------


def five_segments_in_flight(congestion: str = "newreno", rule: str = "flight") -> Conversation:
    # RFC 5681's FlightSize rule by default here: the windows below follow it.
    c = connect_with_rtt(TcpConfig(congestion=congestion, sack=False, loss_window=rule), rtt=0.1)
    c.conn.send(b"x" * 7300, c.now)
    assert len(c.sent()) == 5
    c.feed(".", 5001, 2461)  # first segment acknowledged
    return c


def test_fast_retransmit_on_third_duplicate_ack():
    c = five_segments_in_flight()
    c.feed(".", 5001, 2461)
    c.feed(".", 5001, 2461)
    c.expect_nothing()
    c.feed(".", 5001, 2461)
    c.expect("Flags [.], seq 2461:3921, ack 5001, win 65535, length 1460")
    st = c.conn.status()
    assert st["ssthresh"] == 2920 and st["cwnd"] == 2920 + 3 * 1460  # flight 5840 / 2, + 3 MSS
    assert [e["reason"] for e in c.events if e["event"] == "retransmit"] == ["fast"]
    c.feed(".", 5001, 2461)  # a fourth inflates the window
    assert c.conn.status()["cwnd"] == 2920 + 4 * 1460
    c.feed(".", 5001, 8301)  # all acknowledged: recovery ends, cwnd = ssthresh
    assert c.conn.status()["cwnd"] == 2920 and not c.conn.status()["in_recovery"]


def test_duplicate_ack_rules():
    c = five_segments_in_flight()
    c.feed(".", 5001, 2461, data=b"a")      # carries data: not a duplicate
    c.feed(".", 5002, 2461, win=60000)      # window changed: not a duplicate
    c.feed(".", 5002, 2461, win=60000)
    c.sent()
    assert c.conn.status()["dupacks"] == 1
    c.feed(".", 5002, 2461, win=60000)
    c.feed(".", 5002, 2461, win=60000)
    c.expect("Flags [.], seq 2461:3921, ack 5002, win 65534, length 1460")


def test_slow_start_then_congestion_avoidance():
    c = connect_with_rtt(TcpConfig(initial_cwnd=2, congestion="reno"), rtt=0.1)
    assert c.conn.status()["cwnd"] == 2920
    c.conn.send(b"x" * 200000, c.now)
    c.sent()
    c.feed(".", 5001, 2461)
    assert c.conn.status()["cwnd"] == 4380  # one MSS per ACK in slow start
    c.conn.recovery.cc.ssthresh = c.conn.status()["cwnd"]  # a write: through the congestion control itself
    c.sent()
    c.feed(".", 5001, 3921)
    assert c.conn.status()["cwnd"] == 4380  # congestion avoidance: one MSS per window of ACKs
    c.feed(".", 5001, 5381)
    c.feed(".", 5001, 6841)
    assert c.conn.status()["cwnd"] == 5840


def test_newreno_partial_ack_retransmits_next_hole():
    c = Conversation(TcpConfig(congestion="newreno"))
    c.syn_sent()
    c.now = 0.1
    c.feed("S.", IRS, 1001, mss=1460)
    c.conn.send(b"x" * 7300, c.now)
    c.sent()
    for _ in range(3):
        c.feed(".", 5001, 1001)
    c.expect("Flags [.], seq 1001:2461, ack 5001, win 65535, length 1460")
    c.feed(".", 5001, 3921)  # partial: the segment at 3921 was lost too
    c.expect("Flags [.], seq 3921:5381, ack 5001, win 65535, length 1460")
    assert c.conn.status()["in_recovery"]


# ---- persist ------------------------------------------------------------------------


def test_zero_window_probes_with_backoff_then_window_opens():
    c = connect_with_rtt(rtt=0.001)  # RTO 0.201
    c.feed(".", 5001, 1001, win=0)
    c.conn.send(b"hello", c.now)
    c.expect_nothing()
    probe = "Flags [.], seq 1000, ack 5001, win 65535, length 0"  # snd_una - 1
    c.run_until(0.202)
    assert c.sent_at() == [(0.202, probe)]
    c.feed(".", 5001, 1001, win=0)       # still closed
    c.run_until(1.409)
    assert c.sent_at() == [(0.604, probe), (1.408, probe)]
    c.feed(".", 5001, 1001, win=1000)    # opens
    c.expect("Flags [P.], seq 1001:1006, ack 5001, win 65535, length 5")


def test_answered_probes_keep_the_connection_forever():
    c = connect_with_rtt(TcpConfig(max_retries=3, rto_max=5.0), rtt=0.001)
    c.feed(".", 5001, 1001, win=0)
    c.conn.send(b"hello", c.now)
    for _ in range(20):
        c.run_until(c.layer.next_deadline())
        assert len(c.sent()) == 1
        c.feed(".", 5001, 1001, win=0)
    assert c.now > 60.0
    assert c.conn.state == "ESTABLISHED"


def test_unanswered_probes_time_out():
    c = connect_with_rtt(TcpConfig(max_retries=3, rto_max=5.0), rtt=0.001)
    c.feed(".", 5001, 1001, win=0)
    c.conn.send(b"hello", c.now)
    c.run_until(100.0)
    assert len(c.sent()) == 3
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ETIMEDOUT


def test_probe_answer_reveals_lost_window_update():
    c = connect_with_rtt(rtt=0.001)
    c.feed(".", 5001, 1001, win=0)
    c.conn.send(b"hello", c.now)
    c.run_until(0.201)
    c.sent()
    c.feed(".", 5001, 1001, win=100)  # the answer to the probe: open
    c.expect("Flags [P.], seq 1001:1006, ack 5001, win 65535, length 5")


def test_zero_window_after_partial_ack_keeps_probing_not_retransmitting():
    """Data in flight, the receiver acknowledges part of it and closes its
    window: the rest is retransmitted by the RTO; once all is acknowledged the
    persist timer takes over, and probes never count as retransmissions."""
    c = connect_with_rtt(TcpConfig(max_retries=3, rto_max=2.0), rtt=0.001)
    c.conn.send(b"x" * 1000, c.now)
    c.sent()
    c.feed(".", 5001, 2001, win=0)      # all acknowledged, window closed
    c.conn.send(b"y" * 500, c.now)
    for _ in range(30):                 # a live receiver that never reads
        c.run_until(c.layer.next_deadline())
        assert c.sent() == ["Flags [.], seq 2000, ack 5001, win 65535, length 0"]
        c.feed(".", 5001, 2001, win=0)
    assert c.conn.state == "ESTABLISHED" and c.conn.status()["snd_max"] == 2001


def test_small_window_sent_by_persist_override():
    c = connect_with_rtt(rtt=0.001)
    c.feed(".", 5001, 1001, win=100)   # below half the max window and an MSS
    c.conn.send(b"x" * 1000, c.now)
    c.expect_nothing()  # sender SWS avoidance
    c.run_until(0.202)
    c.expect("Flags [.], seq 1001:1101, ack 5001, win 65535, length 100")


# ---- keepalive ---------------------------------------------------------------------


def keepalive_conf() -> TcpConfig:
    return TcpConfig(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0,
                     keepalive_count=3)


def test_keepalive_off_by_default():
    c = Conversation()
    c.open_active()
    c.run_until(100000.0)
    c.expect_nothing()
    assert c.layer.next_deadline() is None


def test_keepalive_probes_then_failure():
    c = Conversation(keepalive_conf())
    c.open_active()
    c.run_until(100.0)
    probe = "Flags [.], seq 1000, ack 5001, win 65535, length 0"
    assert c.sent_at() == [(10.0, probe), (12.0, probe), (14.0, probe),
                           (16.0, "Flags [R.], seq 1001, ack 5001, win 65535, length 0")]
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ETIMEDOUT


def test_keepalive_answer_resets_idle():
    c = Conversation(keepalive_conf())
    c.open_active()
    c.run_until(10.5)
    c.sent()
    c.feed(".", 5001, 1001)  # the peer answers the probe
    c.run_until(20.4)
    c.expect_nothing()
    c.run_until(20.5)
    c.expect("Flags [.], seq 1000, ack 5001, win 65535, length 0")


def test_keepalive_enabled_by_user_call():
    c = Conversation()
    c.open_active()
    c.conn.keepalive_idle = 5.0
    c.conn.set_keepalive(True)
    c.run_until(5.0)
    c.expect("Flags [.], seq 1000, ack 5001, win 65535, length 0")


def test_a_new_keepalive_idle_time_starts_the_probes_over():
    """TCP_KEEPIDLE set while probes go unanswered: the count starts again
    (the socket facade applies options this way on every setsockopt)."""
    c = Conversation(keepalive_conf())
    c.open_active()
    c.run_until(12.5)  # probes at 10 and 12, unanswered
    assert len(c.sent()) == 2
    c.conn.set_keepalive(True, idle=20.0, interval=2.0, count=3)
    c.run_until(100.0)
    probe = "Flags [.], seq 1000, ack 5001, win 65535, length 0"
    # The new idle time counts from the connection's last event (the probe at 12).
    assert c.sent_at() == [(32.0, probe), (34.0, probe), (36.0, probe),
                           (38.0, "Flags [R.], seq 1001, ack 5001, win 65535, length 0")]


@pytest.mark.parametrize("state", ["TIME_WAIT", "CLOSING", "LAST_ACK"])
def test_no_keepalive_probes_once_both_sides_have_closed_or_are_closing(state):
    c = Conversation(TcpConfig(keepalive_idle=1.0, keepalive_interval=1.0))
    c.to(state)
    c.sent()
    c.conn.set_keepalive(True)
    assert "keepalive" not in c.conn.status()["timers"]
    probe_seq = c.conn.status()["snd_una"] - 1  # a keepalive probe's sequence number
    c.run_until(c.now + 5.0)  # (CLOSING and LAST_ACK resend their FIN meanwhile)
    assert not [line for line in c.sent() if line.startswith(f"Flags [.], seq {probe_seq},")]


# ---- wraparound -----------------------------------------------------------------------


def test_sequence_numbers_wrap_on_both_sides():
    iss = 2**32 - 3
    c = Conversation(iss=iss)
    conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.expect(f"Flags [S], seq {iss}, win 65535, options [{syn_options()}], length 0")
    irs = 2**32 - 2
    c.feed("S.", irs, iss + 1, mss=1460)
    c.expect(f"Flags [.], seq {iss + 1}, ack {2**32 - 1}, win 65535, length 0")
    conn.send(b"0123456789", c.now)
    c.expect(f"Flags [P.], seq {iss + 1}:8, ack {2**32 - 1}, win 65535, length 10")
    c.feed(".", 2**32 - 1, 8, data=b"abcdef")  # the peer's data wraps too
    c.run_until(0.04)
    c.expect("Flags [.], seq 8, ack 5, win 65529, length 0")
    assert conn.recv(100) == b"abcdef" and conn.status()['snd_una'] == 8
    c.feed("F.", 5, 8)
    c.expect_nothing()  # the FIN's ACK waits for ours (as Linux, see test_close)
    conn.close(c.now)
    c.expect("Flags [F.], seq 8, ack 6, win 65528, length 0")
    c.feed(".", 6, 9)
    assert conn.state == "CLOSED"


def test_out_of_order_across_the_wrap():
    c = Conversation(iss=1000)
    c.syn_sent()
    c.feed("S.", 2**32 - 11, 1001)
    c.sent()
    c.feed(".", 0, 1001, data=b"B" * 10)           # after the wrap, early
    c.expect(f"Flags [.], seq 1001, ack {2**32 - 10}, win 65535, length 0")
    c.feed(".", 2**32 - 10, 1001, data=b"A" * 10)  # fills the hole before the wrap
    c.expect("Flags [.], seq 1001, ack 10, win 65515, length 0")
    assert c.conn.recv(100) == b"A" * 10 + b"B" * 10


# ---- FIN retransmission ------------------------------------------------------------------


def test_fin_retransmitted_in_fin_wait_1_and_last_ack():
    c = connect_with_rtt(rtt=0.1)
    c.conn.close(c.now)
    fin = "Flags [F.], seq 1001, ack 5001, win 65535, length 0"
    c.run_until(0.5)
    assert c.sent_at() == [(0.1, fin), (0.4, fin)]
    c.feed("F.", 5001, 1001)  # simultaneous close; our FIN still unacknowledged
    c.sent()
    assert c.conn.state == "CLOSING"
    c.run_until(2.2)
    assert c.sent_at() == [(1.0, "Flags [F.], seq 1001, ack 5002, win 65534, length 0"),
                           (2.2, "Flags [F.], seq 1001, ack 5002, win 65534, length 0")]


def test_fin_retransmitted_in_last_ack_then_gives_up():
    c = connect_with_rtt(TcpConfig(max_retries=1), rtt=0.1)
    c.feed("F.", 5001, 1001)
    c.conn.close(c.now)
    c.run_until(10.0)
    fin = "Flags [F.], seq 1001, ack 5002, win 65534, length 0"
    assert c.sent_at() == [(0.1, "Flags [.], seq 1001, ack 5002, win 65534, length 0"),
                           (0.1, fin), (0.4, fin)]
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ETIMEDOUT


def test_retransmission_respects_small_window():
    c = connect_with_rtt(rtt=0.001)
    c.feed(".", 5001, 1001, win=200)
    c.conn.send(b"x" * 1000, c.now)
    c.expect_nothing()  # sender SWS avoidance
    c.run_until(0.5)    # persist override at 0.202, lost; RTO at 0.403
    seg = "Flags [.], seq 1001:1201, ack 5001, win 65535, length 200"
    assert c.sent_at() == [(0.202, seg), (0.403, seg)]
    c.feed(".", 5001, 1201, win=0)  # at 0.5; the RTO stays backed off at 0.402
    c.run_until(0.95)
    assert c.sent_at() == [(0.902, "Flags [.], seq 1200, ack 5001, win 65535, length 0")]


def test_window_shrunk_on_data_in_flight_does_not_time_out():
    c = connect_with_rtt(TcpConfig(max_retries=2), rtt=0.001)
    c.conn.send(b"x" * 1000, c.now)
    c.sent()
    c.feed(".", 5001, 1501, win=0)  # the peer takes 500 bytes and shrinks its window
    for _ in range(8):
        c.run_until(c.layer.next_deadline())
        assert c.sent() == ["Flags [.], seq 1501:1502, ack 5001, win 65535, length 1"]
        c.feed(".", 5001, 1501, win=0)
    assert c.conn.state == "ESTABLISHED"
    c.feed(".", 5001, 1501, win=5000)  # opens: the rest goes at once (Nagle
    # must not count the bytes dropped by the RTO's go-back as in flight)
    assert c.sent() == ["Flags [P.], seq 1502:2001, ack 5001, win 65535, length 499"]


def test_bare_fin_resent_after_rto_is_traced():
    """Go-back-N after an RTO can reach a FIN on its own: the RTO resent only
    what a shrunken window allowed, and a late ACK then covers all the data.
    The FIN it sends again is a retransmission: counted and traced."""
    c = connect_with_rtt(rtt=0.1)  # RTO 0.3
    c.conn.send(b"x" * 100, c.now)
    c.conn.close(c.now)
    c.sent()
    c.feed(".", 5001, 1001, win=50)  # the window shrinks on unacknowledged data
    c.run_until(0.4)
    assert c.sent_at() == [(0.4, "Flags [.], seq 1001:1051, ack 5001, win 65535, length 50")]
    c.feed(".", 5001, 1101)          # the first copies arrived after all
    assert c.sent() == ["Flags [F.], seq 1101, ack 5001, win 65535, length 0"]
    resent = [(e["reason"], e["seq"], e["len"]) for e in c.events if e["event"] == "retransmit"]
    assert resent == [("rto", 1001, 50), ("rto", 1101, 0)]
    assert c.trace.counters["tcp.retrans_segs"] == 2
