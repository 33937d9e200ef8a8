"""Delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation) on
RACK's records, against samples computed by hand, and the pacer's clock.

Positions count from SND.UNA at the handshake (sequence 1000 here); every
record is 1000 bytes. Times start at 1000 s, as a monotonic clock would.
"""

from __future__ import annotations

import pytest

from stack.tcp import TcpConfig
from stack.tcp.pacing import after_send, burst
from stack.tcp.rack import Rack

T0 = 1000.0
UNA = 1000


def flight(rack: Rack, times: list[float]) -> None:
    for t in times:
        rack.sent(1000, t)


def test_the_newest_record_an_ack_delivers_gives_the_sample():
    rack = Rack(UNA)
    flight(rack, [T0 + i * 0.001 for i in range(10)])   # ten records, 1 ms apart
    rack.acked(UNA + 2000, T0 + 0.1)
    rs = rack.rate.sample(None)
    # The newest of the two: sent at T0 + 1 ms with nothing delivered before,
    # in a flight that began at T0. Send interval 1 ms, ACK interval 100 ms.
    assert rs is not None
    assert rs.delivered == 2000 and rs.prior_delivered == 0
    assert rs.interval == pytest.approx(0.1)
    assert rs.rate == pytest.approx(2000 / 0.1)
    assert rs.rtt == pytest.approx(0.099)
    assert rs.acked_sacked == 2000 and not rs.app_limited

    # A record sent now carries what was delivered so far (2000 bytes at T0 + 0.1).
    rack.sent(1000, T0 + 0.1)
    rack.acked(UNA + 10000, T0 + 0.2)
    rs = rack.rate.sample(None)
    # Newest of these eight: sent at T0 + 9 ms, stamped (0, T0), flight start T0.
    assert rs.delivered == 10000 and rs.interval == pytest.approx(0.2)
    assert rs.rate == pytest.approx(10000 / 0.2)

    rack.acked(UNA + 11000, T0 + 0.21)
    rs = rack.rate.sample(None)
    # Stamped (2000, T0 + 0.1), its flight starting at T0 + 1 ms (the newest
    # delivered when it left): send 99 ms, ACK 110 ms.
    assert rs.delivered == 9000 and rs.prior_delivered == 2000
    assert rs.interval == pytest.approx(0.11)
    assert rs.rate == pytest.approx(9000 / 0.11)


def test_acks_compressed_together_take_the_longer_send_interval():
    rack = Rack(UNA)
    flight(rack, [T0, T0])
    rack.acked(UNA + 1000, T0 + 0.1)        # 1000 delivered at T0 + 0.1; one still out
    rack.rate.sample(None)
    flight(rack, [T0 + 0.1 + 0.02 * i for i in range(5)])   # 5 more over 80 ms
    rack.acked(UNA + 7000, T0 + 0.2)        # and everything ACKed at once
    rs = rack.rate.sample(None)
    # The newest left at T0 + 0.18 in a flight begun at T0: send interval
    # 180 ms, longer than the ACK interval (100 ms since the last delivery).
    assert rs.delivered == 6000 and rs.prior_delivered == 1000
    assert rs.interval == pytest.approx(0.18)
    assert rs.rate == pytest.approx(6000 / 0.18)


def test_sacked_records_count_once_and_a_cumulative_ack_after_them_adds_nothing():
    rack = Rack(UNA)
    flight(rack, [T0] * 4)
    rack.sacked_block(UNA + 1000, UNA + 3000, T0 + 0.1, 1000)   # records 1 and 2
    rs = rack.rate.sample(None)
    assert rs.acked_sacked == 2000 and rs.delivered == 2000
    rack.acked(UNA + 3000, T0 + 0.11)                          # record 0 arrives late
    rs = rack.rate.sample(None)
    assert rs.acked_sacked == 1000 and rack.rate.delivered == 3000
    assert rack.rate.sample(None) is None                      # an ACK that delivers nothing


def test_a_sample_shorter_than_the_minimum_rtt_is_no_rate():
    rack = Rack(UNA)
    flight(rack, [T0])
    rack.acked(UNA + 1000, T0 + 0.01)
    rs = rack.rate.sample(0.05)
    assert rs.delivered == 1000 and rs.rate == 0.0


def test_app_limited_samples_until_the_flight_sent_then_is_delivered():
    rack = Rack(UNA)
    flight(rack, [T0, T0])
    rack.rate.mark_app_limited(2000)       # the application had nothing more
    flight(rack, [T0 + 0.01])               # sent while app-limited
    rack.acked(UNA + 2000, T0 + 0.1)
    rs = rack.rate.sample(None)
    assert not rs.app_limited              # sent before the mark
    rack.acked(UNA + 3000, T0 + 0.11)
    rs = rack.rate.sample(None)
    assert rs.app_limited
    # Delivered now exceeds the mark (0 + 2000 in flight): the mark is gone.
    flight(rack, [T0 + 0.12])
    rack.acked(UNA + 4000, T0 + 0.2)
    assert not rack.rate.sample(None).app_limited


def test_a_retransmission_is_measured_from_its_own_transmission():
    rack = Rack(UNA)
    flight(rack, [T0, T0])
    rack.acked(UNA + 1000, T0 + 0.1)
    rack.rate.sample(None)
    rack.resent(UNA + 1000, 1000, T0 + 0.3)  # record 1 again, at T0 + 0.3
    rack.acked(UNA + 2000, T0 + 0.4)
    rs = rack.rate.sample(None)
    # Stamped at its retransmission: 1000 delivered at T0 + 0.1; its RTT
    # is ambiguous (which copy arrived?).
    assert rs.prior_delivered == 1000 and rs.delivered == 1000
    assert rs.interval == pytest.approx(0.3)
    assert rs.rtt == -1.0


# ---- the pacer -----------------------------------------------------------------------------


def test_the_pacer_spaces_bursts_of_about_a_millisecond():
    rate = 1_000_000.0                       # bytes per second
    assert burst(rate, 1448) == 2896        # 1 ms of it is under two segments
    assert burst(50_000_000.0, 1448) == 33 * 1448  # 1/1024 s, whole segments
    assert burst(1e10, 1448) == 65536 - 65536 % 1448
    at = after_send(0.0, 2896, rate, T0)     # after idle, as late as can be: half credited
    assert at == pytest.approx(T0 + 0.001448)
    at = after_send(at, 2896, rate, T0 + 0.001448)   # on time: the whole burst's time
    assert at == pytest.approx(T0 + 0.004344)


def test_a_late_timer_keeps_half_a_burst_as_credit():
    rate = 1_000_000.0
    at = after_send(T0 - 0.001, 2000, rate, T0 - 0.001)
    at = after_send(at, 2000, rate, T0)              # on time: next at T0 + 2 ms
    assert at == pytest.approx(T0 + 0.002)
    at = after_send(at, 2000, rate, T0 + 0.0021)     # 0.1 ms late: all of it credited
    assert at == pytest.approx(T0 + 0.004)
    at = after_send(at, 2000, rate, T0 + 0.010)      # 6 ms late: at most 1 ms credit
    assert at == pytest.approx(T0 + 0.011)


def test_paced_segments_leave_spaced_and_the_pace_timer_lets_the_next_go():
    from tests.tcp.test_recovery import sender
    c = sender(TcpConfig(congestion="bbr", pacing_slack=0.0), segments=0)
    c.conn.send(b"x" * 200_000, c.now)
    st = c.conn.status()
    rate = st["pacing_rate"]
    # Before any sample: BBR's gain times the initial window over the RTT.
    assert rate == pytest.approx(2.885 * 10 * 1448 / 0.1 * 0.99)
    # One segment left (no GSO here: a burst is one segment); after idle
    # it costs half its time, the next one waits the whole of it.
    assert [len(s.payload) for s in c.sent_segments()] == [1448]
    t = st["timers"]["pace"]
    assert t == pytest.approx(c.now + 1448 / rate / 2)
    c.run_until(t - 1e-6)
    assert c.sent_segments() == []
    c.run_until(t)
    assert [len(s.payload) for s in c.sent_segments()] == [1448]
    assert c.conn.status()["timers"]["pace"] == pytest.approx(t + 1448 / rate)
