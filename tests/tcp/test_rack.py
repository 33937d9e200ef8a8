"""RACK (RFC 8985 6), conversations on a manual clock.

The stack sends ten full segments at t = 0.1 (an RTT of 0.1 s measured in
the handshake); the peer's ACKs come at t = 0.2, so RACK's RTT is 0.1 s and
its reordering window a quarter of the minimum RTT, 25 ms, until recovery
starts or three segments are SACKed (Linux's ``tcp_rack_reo_wnd``).
"""

from __future__ import annotations

import pytest

from stack.tcp import TcpConfig

from tests.tcp.test_recovery import MSS, S, ack, retransmits, sender


def reo_timer(c) -> float | None:
    return c.conn.status()["timers"].get("reo")


def test_one_sacked_segment_marks_the_hole_lost_after_the_reordering_window():
    c = sender()
    c.now = 0.2
    assert ack(c, S(0), (S(1), S(2))) == []
    assert not c.conn.status()["in_recovery"]
    # Lost once it has been out RACK.rtt + reo_wnd = 0.1 + 0.025 s, plus
    # Linux's 2 ms of slack: at 0.227.
    assert reo_timer(c) == pytest.approx(0.227)
    c.run_until(0.226)
    assert c.sent_segments() == []
    c.run_until(0.2275)
    assert [(s.seq, len(s.payload)) for s in c.sent_segments()] == [(S(0), MSS)]
    assert c.conn.status()["in_recovery"]
    assert retransmits(c) == [("fast", S(0))]
    assert reo_timer(c) is None


def test_three_sacked_segments_make_the_hole_lost_at_once():
    c = sender()
    c.now = 0.2
    # Without reordering seen, DupThresh SACKed segments leave no window.
    assert ack(c, S(0), (S(1), S(4))) == [(S(0), MSS)]
    assert c.conn.status()["in_recovery"]


def test_a_hole_filled_before_the_window_passes_is_reordering_not_loss():
    c = sender()
    c.now = 0.2
    ack(c, S(0), (S(1), S(2)))
    assert reo_timer(c) is not None
    c.now = 0.21
    assert ack(c, S(2)) == []  # the original arrived late
    assert reo_timer(c) is None
    c.run_until(0.25)  # past where the timer was
    assert retransmits(c) == []
    # Reordering seen: from now on three SACKed segments wait for the window.
    c.now = 0.3
    assert ack(c, S(2), (S(3), S(6))) == []
    assert not c.conn.status()["in_recovery"]
    assert reo_timer(c) is not None


def test_a_lost_retransmission_is_found_without_waiting_for_the_rto():
    c = sender(segments=30)  # 10 in flight, 20 more waiting
    c.now = 0.2
    assert ack(c, S(0), (S(1), S(4))) == [(S(0), MSS)]  # lost at once
    # Each further SACK lets out new data, sent after the retransmission.
    sent = []
    for i in range(5, 11):
        c.now = 0.2 + i / 1000
        sent += ack(c, S(0), (S(1), S(i)))
    assert sent and all(seq >= S(10) for seq, _ in sent)
    # New data sent at 0.205 arrives while S(0)'s second copy (sent at 0.2)
    # does not: lost too, once out RACK.rtt, with no window in recovery.
    c.now = 0.31
    got = ack(c, S(0), (S(10), S(11)), (S(1), S(10)))
    assert (S(0), MSS) in got
    reasons = retransmits(c)
    assert reasons[0] == ("fast", S(0)) and ("rack", S(0)) in reasons[1:]
    assert "rto" not in [r for r, _ in reasons]         # the timer never had to fire


def test_a_dsack_widens_the_window():
    c = sender()
    c.now = 0.2
    assert ack(c, S(0), (S(1), S(4))) == [(S(0), MSS)]
    # Both copies of segment 0 arrive: the ACK of the second carries a
    # D-SACK (RFC 2883). The retransmission was not needed.
    c.now = 0.25
    ack(c, S(10), (S(0), S(1)))
    assert not c.conn.status()["in_recovery"]
    # The next hole now waits two steps of min_rtt / 4: 50 ms, not 25.
    c.conn.send(b"y" * (MSS * 4), c.now)
    c.sent()
    c.now = 0.35
    ack(c, S(10), (S(11), S(12)))
    assert reo_timer(c) == pytest.approx(0.35 + 0.05 + 0.002)


def test_no_tail_loss_probe_while_sacked_data_is_outstanding():
    c = sender(TcpConfig(rack=False))  # only the probe's rule, not RACK's timer
    c.now = 0.2
    probe_at = c.conn.status()["timers"]["rto"]  # 2 SRTT + 2 ms after the flight
    rto_at = 0.1 + c.conn.status()["rto"]
    assert probe_at < rto_at
    ack(c, S(0), (S(1), S(2)))
    c.run_until(rto_at - 0.001)
    assert retransmits(c) == []  # no probe: the SACK says a hole exists
    c.run_until(rto_at + 0.001)
    assert retransmits(c) == [("rto", S(0))]


def test_without_rack_the_duplicate_acks_decide():
    c = sender(TcpConfig(rack=False))
    c.now = 0.2
    ack(c, S(0), (S(1), S(2)))
    assert reo_timer(c) is None


def test_sack_blocks_that_split_segments_mark_only_whole_ones():
    """A peer that SACKs odd bytes (or half segments) marks nothing SACKed
    below a whole MSS, so it cannot make the stack keep a record per byte,
    and such a block is no evidence of loss either."""
    c = sender()
    c.now = 0.2
    for i in range(200):
        lo = S(1) + 3 + 5 * i
        ack(c, S(0), (lo, lo + 1))
    assert c.conn.status()["rack_records"] <= 10         # one a segment, as sent
    c.run_until(0.5)
    assert [r for r, _ in retransmits(c) if r in ("fast", "rack")] == []
    ack(c, S(0), (S(1) + 100, S(3) + 7))                 # whole segments 2 inside it
    assert c.conn.status()["rack_records"] <= 12


def test_a_go_back_copy_lost_after_an_rto_goes_again_before_the_next_rto():
    """Linux's Loss state: while the RTO's go-back-N is under way, a copy
    RACK finds lost is sent again at once, not after a backed-off RTO."""
    c = sender(TcpConfig(tlp=False), segments=10)
    c.now = 0.2
    c.run_until(c.conn.status()["timers"]["rto"])        # nothing ACKed: the RTO
    assert [r for r, _ in retransmits(c)] == ["rto"]
    c.now += 0.1
    ack(c, S(1))                                         # S(0)'s copy arrived; S(1), S(2) go
    c.now += 0.2
    ack(c, S(1), (S(2), S(3)))                           # S(2)'s copy arrived, S(1)'s did not
    c.run_until(c.now + 0.1)                             # RACK's window passes
    assert ("rack", S(1)) in retransmits(c)
    fired = [e for e in c.events if e["event"] == "timer" and e["timer"] == "rto"]
    assert len(fired) == 1                               # the RTO fired once only


def one_way(cfg: TcpConfig, seed: int, size: int = 1_000_000) -> int:
    """A bulk transfer over a path that reorders (10 ms, jitter 4 ms: segments
    a few hundred microseconds apart overtake each other) and loses nothing;
    returns the sender's retransmitted segments, all of them spurious."""
    from tests.helpers.tcp import LossyNet

    net = LossyNet(seed, delay=0.01, jitter=0.004, config=cfg, trace_events=False)
    lst = net.b.listen((0, 80), 8, 0.0)
    client = net.a.connect(net.A, (net.B, 80), 0.0)
    data = bytes(range(256)) * (size // 256)
    sent, got, server = 0, bytearray(), None
    while net.now < 120 and len(got) < len(data):
        if server is None:
            server = lst.accept()
        if client.state == "ESTABLISHED" and sent < len(data):
            sent += client.send(memoryview(data)[sent:sent + 65536], net.now)
        if server is not None:
            while chunk := server.recv(1 << 20):
                got += chunk
        if not net.step():
            break
    assert bytes(got) == data
    return net.traces["a"].counters["tcp.retrans_segs"]


def test_on_a_reordering_path_rack_retransmits_far_less_than_counting_duplicates():
    """RFC 6675 calls a segment lost when three segments above it are
    SACKed, which reordering alone does all the time; RACK waits a
    fraction of the RTT (widened by each D-SACK) before it calls it lost."""
    rack = sum(one_way(TcpConfig(), seed) for seed in (1, 2, 3))
    dupthresh = sum(one_way(TcpConfig(rack=False), seed) for seed in (1, 2, 3))
    assert dupthresh > 50, dupthresh
    assert rack * 5 <= dupthresh, (rack, dupthresh)
