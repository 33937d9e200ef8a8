"""Loss recovery and congestion control in conversations on a manual clock:
SACK-based recovery (RFC 6675), NewReno partial ACKs (RFC 6582), CUBIC's
window against RFC 9438's formula, appropriate byte counting (RFC 3465), and
back-to-back transfers through the seeded fault injector with and without
SACK.

The stack (ISS 1000) sends; the test peer (ISS 5000) acknowledges. With
timestamps on, a full segment carries 1448 bytes.
"""

from __future__ import annotations

import pytest

from stack.tcp import TcpConfig
from stack.tcp.congestion import Cubic

from tests.helpers.tcp import IRS, Conversation, LossyNet

MSS = 1448
# RFC 6675's own loss detection (duplicate ACKs and IsLost): RACK, the
# default, decides by time instead (tests/tcp/test_rack.py); its FlightSize
# rule for ssthresh and its pipe for sending (no PRR).
# (undo off: the ACKs here echo one old timestamp, which Eifel would read as
# every retransmission being spurious.)
RFC6675 = TcpConfig(rack=False, prr=False, loss_window="flight", undo=False)
WIN = 4000  # the peer's window field: 4000 << 7 = 512000 bytes


def S(i: int) -> int:
    """Sequence number of the i-th full segment the stack sends."""
    return 1001 + MSS * i


def sender(cfg: TcpConfig | None = None, segments: int = 10, sack: bool = True,
           rtt: float = 0.1) -> Conversation:
    """Established at ``rtt`` (one RTT sample) with timestamps (and SACK), the
    peer's window 512000; ``segments`` full segments sent and not yet ACKed."""
    c = Conversation(cfg)
    c.syn_sent()
    c.now = rtt
    opts = dict(wscale=7, timestamps=(1, 0))
    if sack:
        opts["sack_perm"] = True
    c.feed("S.", IRS, 1001, mss=1460, **opts)
    c.feed(".", IRS + 1, 1001, win=WIN, timestamps=(1, 0))  # the scaled window
    c.sent()
    if segments:
        c.conn.send(b"x" * (MSS * segments), c.now)
        assert len(c.sent()) == min(segments, 10)
    return c


def ack(c: Conversation, a: int, *blocks: tuple[int, int]) -> list[tuple[int, int]]:
    """The peer ACKs ``a`` with SACK ``blocks``; returns (seq, len) of what the stack sent."""
    c.feed(".", IRS + 1, a, win=WIN, sack=tuple(blocks), timestamps=(2, 100))
    return [(s.seq, len(s.payload)) for s in c.sent_segments()]


def retransmits(c: Conversation) -> list[tuple[str, int]]:
    return [(e["reason"], e["seq"]) for e in c.events if e["event"] == "retransmit"]


# ---- SACK recovery (RFC 6675) -----------------------------------------------------------


def test_sack_recovery_resends_only_the_holes():
    c = sender(RFC6675)
    c.now = 0.2
    # Segments 1 and 4 are lost; the receiver SACKs everything else.
    assert ack(c, S(1)) == []
    assert ack(c, S(1), (S(2), S(3))) == []
    assert ack(c, S(1), (S(2), S(4))) == []
    # Third duplicate ACK: recovery, cwnd = ssthresh = 0.7 * flight (CUBIC);
    # the first hole goes again.
    assert ack(c, S(1), (S(5), S(6)), (S(2), S(4))) == [(S(1), MSS)]
    assert c.conn.status()["in_recovery"] and c.conn.status()["cwnd"] == c.conn.status()["ssthresh"] == int(0.7 * 9 * MSS)
    # pipe = 1 (resent) + 1 (hole 4, not yet lost) + 4 (above the highest SACK):
    # no room. One more SACKed segment makes room: hole 4 goes (NextSeg rule 3).
    assert ack(c, S(1), (S(5), S(7)), (S(2), S(4))) == [(S(4), MSS)]
    for top in (8, 9, 10):
        assert ack(c, S(1), (S(5), S(top)), (S(2), S(4))) == []
    # Partial ACK (segment 1 arrived), then everything.
    assert ack(c, S(4), (S(5), S(10))) == []
    assert c.conn.status()["in_recovery"]
    assert ack(c, S(10)) == []
    assert not c.conn.status()["in_recovery"]
    assert retransmits(c) == [("fast", S(1)), ("sack", S(4))]
    assert c.conn.status()["snd_una"] == S(10) and c.conn.status()["snd_max"] == S(10)


def test_sack_recovery_starts_when_three_segments_are_sacked_at_once():
    c = sender()
    c.now = 0.2
    # One ACK SACKing three segments above a hole: IsLost(HighACK + 1) holds
    # before three duplicate ACKs (RFC 6675 5, step 2).
    assert ack(c, S(0), (S(1), S(4))) == [(S(0), MSS)]
    assert c.conn.status()["in_recovery"] and c.conn.status()["dupacks"] == 1


def test_two_sacked_segments_are_not_yet_a_loss():
    c = sender()
    c.now = 0.2
    assert ack(c, S(0), (S(1), S(3))) == []
    assert ack(c, S(0), (S(1), S(3))) == []  # nothing newly SACKed: not a duplicate
    assert not c.conn.status()["in_recovery"] and c.conn.status()["dupacks"] == 1


def test_sacked_segments_make_room_for_new_data_before_and_during_recovery():
    c = sender(RFC6675, segments=30)  # 10 in flight, 20 more waiting
    c.now = 0.2
    # Before recovery each SACKed segment has left the network: one new
    # segment for each (RFC 6675 5 step 3, limited transmit governed by pipe).
    assert ack(c, S(0), (S(1), S(2))) == [(S(10), MSS)]
    assert ack(c, S(0), (S(1), S(3))) == [(S(11), MSS)]
    # Recovery: flight 12 segments, cwnd = 0.7 * 12; the hole goes, then
    # nothing until pipe falls below cwnd.
    assert ack(c, S(0), (S(1), S(4))) == [(S(0), MSS)]
    cwnd = c.conn.status()["cwnd"]
    assert cwnd == int(0.7 * 12 * MSS)
    sent = []
    for top in range(5, 13):
        sent += ack(c, S(0), (S(1), S(top)))
    # New segments go one for one as SACKs arrive, and pipe never exceeds cwnd:
    # pipe = the resent hole + everything above the highest SACKed byte.
    assert sent == [(S(i), MSS) for i in range(12, 12 + len(sent))]
    pipe = MSS + (12 + len(sent) - 12) * MSS
    assert pipe <= cwnd < pipe + MSS


def test_dsack_blocks_are_ignored_safely():
    c = sender()
    c.now = 0.2
    assert ack(c, S(2)) == []
    # A D-SACK for bytes below the cumulative ACK (a duplicate received):
    # not a duplicate ACK, nothing recorded.
    assert ack(c, S(2), (S(0), S(1))) == []
    assert c.conn.status()["dupacks"] == 0 and not c.conn.status()["sacked"]
    # A D-SACK inside already SACKed bytes adds nothing either.
    ack(c, S(2), (S(4), S(6)))
    assert ack(c, S(2), (S(4), S(5)), (S(4), S(6))) == []
    assert c.conn.status()["dupacks"] == 1 and c.conn.status()["sacked"] == 2 * MSS
    # Blocks beyond anything sent are ignored.
    assert ack(c, S(2), (S(20), S(21))) == []
    assert c.conn.status()["sacked"] == 2 * MSS


def test_scoreboard_is_bounded_against_a_peer_sacking_every_other_byte():
    c = sender(TcpConfig(sack_max_ranges=16), segments=10)
    c.now = 0.2
    una = c.conn.status()["snd_una"]
    for k in range(20):
        blocks = [(una + 2 + 8 * (3 * k + j), una + 3 + 8 * (3 * k + j)) for j in range(3)]
        ack(c, una, *blocks)
    sb = c.conn.recovery.sb
    assert len(sb.ranges) == 16 and sb.sacked == 16
    # Blocks that grow a range it has are still taken.
    ack(c, una, (una + 2, una + 6))
    assert len(sb.ranges) == 16 and sb.sacked == 19


def test_rescue_retransmission_for_a_lost_tail():
    c = sender(RFC6675)
    c.now = 0.2
    # Segment 1 lost, 2..7 arrive, 8 and 9 (the tail) lost too.
    ack(c, S(1), (S(2), S(3)))
    ack(c, S(1), (S(2), S(4)))
    assert ack(c, S(1), (S(2), S(5))) == [(S(1), MSS)]
    ack(c, S(1), (S(2), S(6)))
    ack(c, S(1), (S(2), S(8)))
    # The resent segment 1 fills the hole: a partial ACK, nothing SACKed.
    # The rescue sends the last segment rather than wait for the RTO.
    assert ack(c, S(8)) == [(S(9), MSS)]
    # Its SACK reveals segment 8 as a hole: resent (rule 3).
    assert ack(c, S(8), (S(9), S(10))) == [(S(8), MSS)]
    assert ack(c, S(10)) == []
    assert [r for r, _ in retransmits(c)] == ["fast", "rescue", "sack"]


def test_rto_forgets_sacks_then_go_back_skips_what_is_sacked_again():
    # The RTO itself, not the tail loss probe or RACK's timer before it.
    c = sender(TcpConfig(tlp=False, rack=False, undo=False))  # (fixed TSecr: no Eifel undo)
    c.now = 0.2
    ack(c, S(0), (S(2), S(3)))  # one duplicate ACK, no recovery
    c.run_until(c.conn.status()["timers"].get("rto"))
    c.expect(f"Flags [.], seq {S(0)}:{S(1)}, ack 5001, win 32768, "
             "options [TS val 400 ecr 2], length 1448")
    assert not c.conn.status()["sacked"] and c.conn.status()["cwnd"] == MSS  # RFC 2018 8: SACK info dropped
    # The ACK of the resent segment SACKs 2..5: go-back-N sends 1, skips them, sends 5.
    c.now = 0.6
    assert ack(c, S(1), (S(2), S(5))) == [(S(1), MSS), (S(5), MSS)]


# ---- NewReno and Reno without SACK ---------------------------------------------------------


def test_newreno_partial_ack_resends_next_hole_and_stays_in_recovery():
    c = sender(TcpConfig(congestion="newreno", undo=False), sack=False)  # (fixed TSecr: no Eifel undo)
    c.now = 0.2
    for _ in range(2):
        assert ack(c, S(0)) == []
    assert ack(c, S(0)) == [(S(0), MSS)]
    ssthresh = 10 * MSS // 2
    assert c.conn.status()["ssthresh"] == ssthresh and c.conn.status()["cwnd"] == ssthresh + 3 * MSS
    assert ack(c, S(0)) == []  # inflation: + 1 MSS
    assert c.conn.status()["cwnd"] == ssthresh + 4 * MSS
    # Partial ACK: segments 0..2 acknowledged, 3 was lost too.
    c.now = 0.22
    assert ack(c, S(3))[0] == (S(3), MSS)
    assert c.conn.status()["in_recovery"]
    assert c.conn.status()["cwnd"] == ssthresh + 4 * MSS - 3 * MSS + MSS  # deflate by 3, add back one
    assert c.conn.status()["timers"].get("rto") == c.now + c.conn.status()["rto"]  # the first partial ACK restarts the timer
    rto_at = c.conn.status()["timers"].get("rto")
    c.now = 0.25
    assert ack(c, S(6))[0] == (S(6), MSS)  # a second partial ACK: the next hole
    assert c.conn.status()["in_recovery"] and c.conn.status()["timers"].get("rto") == rto_at  # ...but not the timer
    ack(c, S(10))
    assert not c.conn.status()["in_recovery"]
    assert c.conn.status()["cwnd"] == min(ssthresh, max(c.conn.status()["snd_max"] - S(10), MSS) + MSS)
    assert [r for r, _ in retransmits(c)] == ["fast", "partial", "partial"]


def test_reno_partial_ack_ends_recovery():
    c = sender(TcpConfig(congestion="reno", undo=False), sack=False)  # (fixed TSecr: no Eifel undo)
    c.now = 0.2
    for _ in range(3):
        ack(c, S(0))
    assert c.conn.status()["in_recovery"]
    assert ack(c, S(3)) == []  # Reno: out of recovery, no retransmission
    assert not c.conn.status()["in_recovery"] and c.conn.status()["cwnd"] == c.conn.status()["ssthresh"]


# ---- congestion control ---------------------------------------------------------------


def test_slow_start_counts_bytes_up_to_two_segments_per_ack():
    c = sender(segments=40)
    c.now = 0.2
    assert c.conn.status()["cwnd"] == 10 * MSS
    ack(c, S(2))  # an ACK for two segments (a delayed ACK): + 2 MSS
    assert c.conn.status()["cwnd"] == 12 * MSS
    ack(c, S(5))  # for three: still + 2 MSS (L = 2, RFC 3465)
    assert c.conn.status()["cwnd"] == 14 * MSS
    ack(c, S(5) + 100)  # a part: + what it covers
    assert c.conn.status()["cwnd"] == 14 * MSS + 100


def test_cwnd_does_not_grow_when_the_application_does_not_use_it():
    c = sender(segments=1)
    c.now = 0.2
    cwnd = c.conn.status()["cwnd"]
    for i in range(20):
        c.conn.send(b"x" * MSS, c.now)
        c.sent()
        ack(c, S(i + 2))
    assert c.conn.status()["cwnd"] == cwnd


def test_cwnd_and_rtt_trace_events():
    c = sender()
    c.now = 0.2
    ack(c, S(2))
    for top in (2, 3, 4):
        ack(c, S(2), (S(3), S(top + 2)))
    cw = [e for e in c.events if e["event"] == "cwnd"]
    assert [e["why"] for e in cw] == ["ack", "fast_retransmit"]
    st = c.conn.status()
    assert cw[-1]["cwnd"] == st["cwnd"] and cw[-1]["ssthresh"] == st["ssthresh"]
    assert cw[-1]["conn"] == c.conn.name
    rtt = [e for e in c.events if e["event"] == "rtt"]
    assert rtt[-1]["sample"] == pytest.approx(0.1) and {"srtt", "rto"} <= set(rtt[-1])


@pytest.mark.parametrize("name", ["cubic", "newreno", "reno"])
def test_congestion_control_chosen_by_config_or_per_connection(name):
    c = sender(TcpConfig(congestion=name), segments=0)
    assert c.conn.status()["congestion"] == name and c.conn.status()["congestion"] == name
    other = "reno" if name != "reno" else "cubic"
    c.conn.recovery.cc.ssthresh = 5 * MSS
    c.conn.set_congestion(other)
    assert c.conn.status()["congestion"] == other and c.conn.status()["ssthresh"] == 5 * MSS
    assert c.conn.status()["cwnd"] == 10 * MSS
    with pytest.raises(FileNotFoundError):
        c.conn.set_congestion("vegas")


def w_cubic(t: float, k: float, w_max: float) -> float:
    """RFC 9438 figure 1."""
    return 0.4 * (t - k) ** 3 + w_max


def test_cubic_window_follows_the_rfc_9438_curve():
    """A loss at W_max = 100 segments, then an ACK clock (one ACK per two
    segments, RTT 0.1 s): cwnd tracks W_cubic(t) = C (t - K)^3 + W_max with
    K = cbrt((W_max - cwnd_epoch) / C), through the concave plateau and beyond."""
    rtt = 0.1
    cfg = TcpConfig(initial_cwnd=100, sndbuf=1 << 30, rack=False)
    c = sender(cfg, segments=0, rtt=rtt)
    conn = c.conn
    cc = conn.recovery.cc
    assert isinstance(cc, Cubic)
    conn.send(b"c" * (1 << 26), c.now)
    assert len(c.sent_segments()) == 100
    # Segment 0 is lost: three duplicate ACKs (SACKing 1..3) start recovery.
    for i in (1, 2, 3):
        c.feed(".", IRS + 1, S(0), win=WIN, sack=((S(1), S(1 + i)),), timestamps=(2, 100))
    assert conn.status()["in_recovery"]
    # W_max is the window at the loss; ssthresh 0.7 of it (RFC 9438 4.6
    # with cwnd, as Linux: not of the 102 segments out, SACKed ones included).
    assert cc.w_max == 100 and cc.ssthresh == int(0.7 * 100 * MSS)
    c.sent()
    # The hole is filled: everything sent so far is acknowledged at once.
    c.now += rtt
    c.feed(".", IRS + 1, conn.status()["snd_max"], win=WIN, timestamps=(3, int(c.now * 1000 - 100)))
    assert not conn.status()["in_recovery"] and cc.cwnd == cc.ssthresh
    cwnd_epoch = cc.cwnd / MSS
    k = ((100 - cwnd_epoch) / 0.4) ** (1 / 3)  # 4.15 s
    checks = {1.0: None, 2.0: None, 3.0: None, round(k, 2): None, 5.0: None, 5.5: None}
    # The ACK clock: every RTT the peer acknowledges all that was sent in the
    # previous one, two segments per ACK, spread over the RTT, echoing the
    # timestamps of the segments it acknowledges.
    epoch = None
    while epoch is None or c.now - epoch < 5.6:
        segs = c.sent_segments()
        assert segs
        step = rtt / max(1, len(segs) // 2)
        t0 = c.now
        for j in range(1, len(segs), 2):
            c.now = t0 + step * (j // 2 + 1)
            end = segs[j].seq + len(segs[j].payload)
            c.feed(".", IRS + 1, end, win=WIN, timestamps=(4, segs[j - 1].timestamps[0]))
            epoch = cc.epoch
            for t in checks:
                if checks[t] is None and c.now - epoch >= t:
                    checks[t] = (c.now - epoch, cc.cwnd / MSS)
    for t, (at, cwnd) in checks.items():
        want = w_cubic(at, k, 100)
        assert cwnd == pytest.approx(want, abs=0.25), (t, at, cwnd, want)
    # Past K the curve is convex and above W_max.
    assert checks[5.5][1] > 100


def test_cubic_fast_convergence_and_timeout():
    cc = Cubic(1000, 10)
    cc.cwnd = 100_000
    cc.on_loss(100_000, 0.0)
    assert cc.w_max == 100 and cc.cwnd == cc.ssthresh == 70_000
    cc.on_loss(70_000, 1.0)  # a loss below the last maximum: W_max shrinks further
    assert cc.w_max == pytest.approx(70 * (1 + 0.7) / 2)
    assert cc.ssthresh == 49_000
    cc.on_timeout(49_000, 2.0)
    assert cc.cwnd == 1000 and cc.ssthresh == int(49_000 * 0.7)
    # The first avoidance stage after a timeout starts a curve with K = 0.
    cc.cwnd = cc.ssthresh
    cc.on_ack(1000, 3.0, 0.1)
    assert cc.k == 0 and cc.w_max == pytest.approx(cc.ssthresh / 1000)


# ---- back to back through the fault injector -------------------------------------------------


def transfer(seed: int, sack: bool, loss: float = 0.05,
             size: int = 1_000_000) -> tuple[int, LossyNet]:
    """One way bulk transfer through seeded, keyed loss (the same segments are
    lost with and without SACK); returns the sender's retransmitted segments.
    ACKs are delayed from the start (no quickack mode), and no tail loss
    probes (they need SACK, and each is a retransmission of its own): the
    two runs then differ only by what SACK recovery changes."""
    # RFC 5681's FlightSize rule in both runs, so they differ by recovery alone.
    cfg = TcpConfig(sack=sack, max_quickacks=0, tlp=False, loss_window="flight")
    net = LossyNet(seed, loss=loss, delay=0.01, config=cfg, trace_events=False, keyed=True)
    lst = net.b.listen((0, 80), 8, 0.0)
    client = net.a.connect(net.A, (net.B, 80), 0.0)
    data = bytes(range(256)) * (size // 256)
    sent, got, server = 0, bytearray(), None
    while net.now < 600:
        if server is None:
            server = lst.accept()
        if client.state == "ESTABLISHED" and sent < len(data):
            sent += client.send(memoryview(data)[sent:sent + 65536], net.now)
            if sent == len(data):
                client.close(net.now)
        if server is not None:
            while (chunk := server.recv(1 << 20)):
                got += chunk
            if chunk == b"" and server.state == "CLOSE_WAIT":
                server.close(net.now)
        if client.state == "CLOSED" and server is not None and server.state == "CLOSED":
            break
        if not net.step():
            break
    assert bytes(got) == data, f"seed={seed} sack={sack} stats={net.stats}"
    assert client.status()["sack"] == sack
    return net.traces["a"].counters["tcp.retrans_segs"], net


@pytest.mark.parametrize("seed", range(1, 9))
def test_sack_needs_fewer_retransmissions_than_without(seed):
    """The same seeded losses (5 % of segments, keyed) with and without SACK:
    with it, a window with several losses is repaired in one round trip, each
    hole once; without it, NewReno finds one hole per round trip and, when
    the timer fires, goes back N over bytes the receiver already holds."""
    with_sack, net1 = transfer(seed, True)
    without, net2 = transfer(seed, False)
    info = (f"seed={seed} retransmitted with SACK {with_sack} (stats {net1.stats}), "
            f"without {without} (stats {net2.stats})")
    assert with_sack < without, info


# ---- tail loss probes (RFC 8985 7) -------------------------------------------------------------


def resent(c: Conversation) -> list[tuple[float, str, int]]:
    return [(round(e["t"], 6), e["reason"], e["seq"]) for e in c.events
            if e["event"] == "retransmit"]


def test_the_first_timeout_of_a_flight_sends_its_last_segment_as_a_probe():
    c = sender(segments=10)  # sent at 0.1; SRTT 0.1: PTO 2 SRTT + 2 ms = 0.202 < RTO 0.3
    c.run_until(0.3021)
    assert resent(c) == [(0.302, "tlp", S(9))]
    assert c.trace.counters["tcp.tlp_probes"] == 1
    # Then the RTO, one RTO after the probe, backed off as usual.
    c.run_until(0.6031)
    assert resent(c)[1:] == [(0.602, "rto", S(0))]
    assert c.conn.status()["rto"] == pytest.approx(0.6)


def test_one_segment_in_flight_waits_200_ms_more_for_a_delayed_ack():
    # PTO 2 * 0.1 + 0.2 = 0.4 is past the RTO (0.3): the probe goes at the RTO's time.
    c = sender(segments=1)
    c.run_until(0.399)
    assert resent(c) == []
    c.run_until(0.401)
    assert resent(c) == [(0.4, "tlp", S(0))]


def test_no_probe_without_sack():
    c = sender(segments=10, sack=False)
    c.run_until(0.45)
    assert resent(c) == [(0.4, "rto", S(0))]


def test_the_probe_ack_ends_the_episode_and_the_next_flight_may_probe_again():
    c = sender(segments=2)
    c.run_until(0.3021)
    c.sent()
    ack(c, S(2))                                  # everything, probe included
    c.conn.send(b"y" * MSS, c.now)
    c.sent()
    c.run_until(c.now + 1.0)
    assert [r for _, r, _ in resent(c)][:2] == ["tlp", "tlp"]


# ---- Proportional Rate Reduction (RFC 6937) -------------------------------------------------


def test_prr_sends_in_proportion_to_what_is_delivered_then_ends_at_ssthresh():
    """20 segments out, the first lost, each ACK SACKing one more: from the
    fast retransmit on, the sender sends ceil(delivered * ssthresh /
    RecoverFS) bytes in all (whole segments), not nothing and then a burst
    (RFC 6675 alone) nor a segment per ACK."""
    c = sender(TcpConfig(rack=False, initial_cwnd=20, undo=False), segments=0)  # (fixed TSecr: no Eifel undo)
    c.conn.send(b"x" * (MSS * 40), c.now)
    assert len(c.sent()) == 20                      # 20 out, 20 waiting
    c.now = 0.2
    # Before recovery each SACKed segment has left the network: one new each.
    assert ack(c, S(0), (S(1), S(2))) == [(S(20), MSS)]
    assert ack(c, S(0), (S(1), S(3))) == [(S(21), MSS)]
    # The third SACKed segment: IsLost(segment 0), recovery, the fast retransmit.
    assert ack(c, S(0), (S(1), S(4))) == [(S(0), MSS)]
    st = c.conn.status()
    ss, recover_fs = st["ssthresh"], 20 * MSS      # 0.7 of cwnd, and cwnd itself
    assert st["in_recovery"] and ss == int(0.7 * 20 * MSS)
    delivered, out, nxt = MSS, MSS, 22              # this ACK delivered one; one went
    sends = []
    for top in range(5, 13):                        # the pipe stays above ssthresh
        sent = ack(c, S(0), (S(1), S(top)))
        delivered += MSS
        allowed = -(-delivered * ss // recover_fs) - out
        assert sent == [(S(nxt + i), MSS) for i in range(allowed // MSS)], top
        out += MSS * len(sent)
        nxt += len(sent)
        sends.append(len(sent))
    # About 0.7 segments per segment delivered, spread over the ACKs.
    assert 1 + sum(sends) == (9 * MSS * ss // recover_fs) // MSS == 6  # (of 9 delivered)
    # The hole is filled: recovery ends with cwnd = ssthresh.
    c.feed(".", IRS + 1, c.conn.status()["snd_max"], win=WIN, timestamps=(2, 100))
    st = c.conn.status()
    assert not st["in_recovery"] and st["cwnd"] == st["ssthresh"] == ss


# ---- HyStart++ (RFC 9406) ------------------------------------------------------------------


def test_hystart_enters_css_on_an_rtt_rise_and_leaves_slow_start_after_five_rounds():
    from stack.tcp.hystart import CSS, DONE, SLOW_START, HyStart

    h = HyStart()

    def round_of(rtt: float) -> str:
        phase = h.ack(rtt, True)
        for _ in range(7):
            phase = h.ack(rtt, False)
        return phase

    assert round_of(0.020) == SLOW_START and round_of(0.020) == SLOW_START
    # A rise under max(4 ms, min(20 ms / 8, 16 ms)) = 4 ms is not enough ...
    assert round_of(0.0235) == SLOW_START
    # ... one of 4 ms over the last round's minimum is: Conservative Slow Start.
    assert round_of(0.0276) == CSS and h.baseline == 0.0276
    # The RTT falls below the baseline again: the rise was spurious.
    assert round_of(0.0200) == SLOW_START
    assert round_of(0.0250) == CSS
    for _ in range(4):
        assert round_of(0.026) == CSS
    assert h.ack(0.026, True) == DONE        # the fifth CSS round ends slow start


def test_hystart_ends_cubic_slow_start_before_the_queue_overflows():
    from tests.helpers.bottleneck import BottleneckNet

    def run(hystart: bool) -> BottleneckNet:
        net = BottleneckNet(4, rate=20e6 / 8, delay=0.02, queue=100,
                            config=TcpConfig(hystart=hystart))
        net.now = 1000.0
        data, got = net.download(2_000_000, limit=1100.0)
        assert got == data
        return net

    on = run(True)
    off = run(False)
    st_on, st_off = on.conn.status(), off.conn.status()
    # Without HyStart++ slow start doubles into the 100-packet queue and
    # loses a window's worth; with it, the window stops growing fast when
    # the queue starts to build (the RTT rises).
    assert on.drops < off.drops / 2, (on.drops, off.drops)
    assert st_on["retrans"] < st_off["retrans"]


def test_an_rto_ends_conservative_slow_start_for_good():
    from stack.tcp.hystart import CSS

    cc = Cubic(MSS, 10)
    for _ in range(3):                        # rounds at 20 ms, then one at 30 ms: CSS
        cc.slow_start_ack(0.020, True)
        for _ in range(7):
            cc.slow_start_ack(0.020, False)
    cc.slow_start_ack(0.030, True)
    for _ in range(7):
        cc.slow_start_ack(0.030, False)
    assert cc.hystart is not None and cc.hystart.phase == CSS
    cc.on_timeout(cc.cwnd, 1.0)
    before = cc.cwnd
    cc.on_ack(2 * MSS, 1.1, 0.03)            # slow start again, at its full rate
    assert cc.cwnd == before + 2 * MSS
