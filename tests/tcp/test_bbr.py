"""BBR v1 (bbr.py): its state machine against the draft's and Linux's rules
on a manual clock, fed chosen delivery-rate samples; then whole transfers
through a simulated bottleneck (tests/helpers/bottleneck.py) and the fault
injector, byte-exact, against CUBIC on the same path.

Times start at 1000 s, as a monotonic clock would.
"""

from __future__ import annotations

import statistics

import pytest

from stack.tcp import TcpConfig
from stack.tcp.bbr import (DRAIN, HIGH_GAIN, LOSS, OPEN, PACING_GAINS, PROBE_BW, PROBE_RTT,
                           RECOVERY, STARTUP, Bbr, MaxFilter)
from stack.tcp.rate import RateSample

from tests.helpers.bottleneck import BottleneckNet
from tests.helpers.tcp import LossyNet
from tests.tcp.test_b2b import run_transfer

MSS = 1448
T0 = 1000.0
RTT = 0.02


class Feeder:
    """Drives a Bbr with one ACK per call; each call a round trip by default."""

    def __init__(self, seed: int = 1) -> None:
        self.bbr = Bbr(MSS, 10, seed)
        self.now = T0
        self.delivered = 0
        self.prior = 0

    def ack(self, rate: float, inflight: int, rtt: float = RTT, app: bool = False,
            lost: int = 0, state: int = OPEN, dt: float = RTT, new_round: bool = True) -> Bbr:
        self.now += dt
        d = int(rate * dt)
        if new_round:
            self.prior = self.delivered  # sent after the last round's ACK: a round ends
        rs = RateSample(rate, d, dt, self.prior, app, rtt, d)
        self.delivered += d
        self.bbr.on_sample(rs, inflight, lost, state, rtt, self.now)
        return self.bbr


def test_startup_doubles_then_leaves_on_the_third_round_without_25_percent_more():
    f = Feeder()
    b = f.bbr
    assert b.mode == STARTUP and b.pacing_gain == HIGH_GAIN == b.cwnd_gain
    for rate in (1e5, 2e5, 4e5, 8e5, 1.6e6):
        f.ack(rate, inflight=0)
        assert b.mode == STARTUP
    # Three rounds in a row under 1.25 times the plateau (1.6 MB/s) ...
    f.ack(1.9e6, inflight=10**6)
    f.ack(1.95e6, inflight=10**6)
    assert b.mode == STARTUP and b.full_bw_count == 2
    f.ack(1.99e6, inflight=10**6)
    # ... and the pipe is full: DRAIN, pacing below the estimate.
    assert b.mode == DRAIN and b.full_bw_reached
    assert b.pacing_gain == pytest.approx(1 / HIGH_GAIN)
    assert b.pacing_rate == pytest.approx(b.max_bw() / HIGH_GAIN * 0.99)
    assert b.bdp(b.max_bw(), 1.0) < b.ssthresh < 2 * b.bdp(b.max_bw(), 1.0)  # ~ one BDP


def test_app_limited_rounds_do_not_count_toward_the_plateau():
    f = Feeder()
    b = f.bbr
    f.ack(1e6, inflight=0)
    for _ in range(5):
        f.ack(5e5, inflight=0, app=True)   # the application had nothing to send
    assert b.mode == STARTUP and b.full_bw_count == 0
    assert b.max_bw() == 1e6               # lower app-limited samples leave the filter alone


def startup_done(f: Feeder) -> Bbr:
    for rate in (1e6, 1e6, 1e6, 1e6):
        f.ack(rate, inflight=10**6)
    assert f.bbr.mode == DRAIN
    return f.bbr


def test_drain_ends_once_what_is_in_flight_is_one_bdp():
    f = Feeder()
    b = startup_done(f)
    bdp = b.inflight(b.max_bw(), 1.0)       # 1 MB/s * 20 ms, plus the pacer's bursts
    f.ack(1e6, inflight=bdp + MSS)
    assert b.mode == DRAIN
    f.ack(1e6, inflight=bdp)
    assert b.mode == PROBE_BW and b.cwnd_gain == 2.0
    # The first phase is random but never the 3/4 one.
    assert b.pacing_gain in (1.25, 1.0)


def test_probe_bw_cycles_five_quarters_three_quarters_and_six_rounds_of_one():
    gains = []
    f = Feeder(seed=3)
    b = startup_done(f)
    f.ack(1e6, inflight=0)
    assert b.mode == PROBE_BW
    bdp = b.inflight(b.max_bw(), 1.0)
    for _ in range(24):
        # In flight: enough for the 5/4 phase to end when its time is up,
        # little enough for the 3/4 phase to end at once.
        f.ack(1e6, inflight=bdp * 2 if b.pacing_gain > 1 else bdp // 2, dt=RTT * 1.01)
        gains.append(b.pacing_gain)
    i = gains.index(1.25)
    assert gains[i:i + 8] == list(PACING_GAINS)
    assert gains[i + 8] == 1.25


def test_the_window_is_two_bdp_plus_room_for_bursts_and_grows_by_what_is_acked():
    f = Feeder()
    b = startup_done(f)
    f.ack(1e6, inflight=0)
    b.cwnd = 10 * MSS
    f.ack(1e6, inflight=5 * MSS)           # delivered 20 KB this round: +20 KB, below target
    assert b.cwnd == 10 * MSS + int(1e6 * RTT)
    for _ in range(20):
        f.ack(1e6, inflight=5 * MSS)
    # Two BDPs, plus what ACKs ran ahead of the model (at most 100 ms of
    # bandwidth), plus three bursts, in an even number of segments.
    bw = b.max_bw()
    aggregation = min(max(b.extra_acked), int(bw * 0.1))
    assert b.cwnd == b.quantized(b.bdp(bw, 2.0) + aggregation)
    assert b.bdp(bw, 2.0) < b.cwnd <= b.bdp(bw, 2.0) + aggregation + 11 * MSS  # (<= 3 * 2 + 1 + 2 + 2)


def test_recovery_conserves_packets_for_a_round_then_restores_the_window():
    f = Feeder()
    b = startup_done(f)
    f.ack(1e6, inflight=0)
    before = b.cwnd
    b.enter_fast_recovery(before, f.now, True)
    f.ack(1e6, inflight=20 * MSS, state=RECOVERY, new_round=False, dt=0.001)
    # The first ACK in recovery: what is in flight plus what it delivered.
    assert b.cwnd == 20 * MSS + int(1e6 * 0.001)
    f.ack(1e6, inflight=30 * MSS, state=RECOVERY, new_round=False, dt=0.001)
    assert b.cwnd == 30 * MSS + int(1e6 * 0.001)   # never less than that
    f.ack(1e6, inflight=10 * MSS, state=OPEN)
    assert b.cwnd >= before                   # recovery over: the window before it


def test_an_rto_leaves_one_segment_and_the_window_before_it_comes_back_after():
    f = Feeder()
    b = startup_done(f)
    f.ack(1e6, inflight=0)
    before = b.cwnd
    b.on_timeout(before, f.now)
    assert b.cwnd == MSS
    f.ack(1e6, inflight=0, state=LOSS)
    assert MSS < b.cwnd < before
    f.ack(1e6, inflight=0, state=OPEN)
    assert b.cwnd >= before


def test_probe_rtt_when_the_minimum_is_ten_seconds_old():
    f = Feeder()
    b = startup_done(f)
    f.ack(1e6, inflight=0)
    start = f.now
    # Ten seconds of samples no better than the minimum.
    while f.now - start < 9.9:
        f.ack(1e6, inflight=30 * MSS, rtt=RTT * 1.5, dt=0.1)
        assert b.mode == PROBE_BW
    f.ack(1e6, inflight=30 * MSS, rtt=RTT * 1.5, dt=0.2)
    # The minimum expired: this sample becomes it, and PROBE_RTT holds 4 segments.
    assert b.mode == PROBE_RTT and b.cwnd == 4 * MSS and b.pacing_gain == 1.0
    assert b.min_rtt == pytest.approx(RTT * 1.5)
    entered = f.now
    f.ack(1e6, inflight=4 * MSS, dt=0.01)     # the flight is down: 200 ms start now
    f.ack(1e6, inflight=4 * MSS, dt=0.1)      # a round passes
    assert b.mode == PROBE_RTT
    f.ack(1e6, inflight=4 * MSS, dt=0.1, new_round=False)
    assert b.mode == PROBE_BW and f.now - entered >= 0.2
    assert b.cwnd > 4 * MSS                    # the window from before PROBE_RTT


def test_the_bandwidth_filter_keeps_the_best_of_the_last_ten_rounds():
    m = MaxFilter(10)
    m.update(0, 100.0)
    for t in range(1, 10):
        assert m.update(t, 50.0) == 100.0
    assert m.update(11, 50.0) == 50.0        # the old best aged out
    m.update(12, 80.0)
    assert m.get() == 80.0


# ---- whole transfers ----------------------------------------------------------------------


def probe(net: BottleneckNet, size: int) -> tuple[list[tuple[float, str]], float]:
    modes: list[tuple[float, str]] = []

    def sample(now, conn):
        m = conn.status().get("bbr_mode")
        if m is not None and (not modes or modes[-1][1] != m):
            modes.append((now, m))

    net.now = T0
    data, got = net.download(size, limit=T0 + 120, sample=sample)
    assert got == data
    return modes, size * 8 / (net.now - T0) / 1e6


def test_over_a_bottleneck_bbr_finds_the_rate_and_keeps_the_queue_short():
    rate = 20e6 / 8                       # 20 Mbit/s, 20 ms of delay each way
    bbr = BottleneckNet(1, rate=rate, delay=0.02, queue=100, config=TcpConfig(congestion="bbr"))
    modes, mbit = probe(bbr, 6_000_000)
    names = [m for _, m in modes]
    assert names[:3] == [STARTUP, DRAIN, PROBE_BW]
    assert modes[1][0] - T0 < 1.5           # the plateau found within ~1 s
    st = bbr.conn.status()
    payload = rate * 1448 / 1514            # what the link carries of TCP payload
    assert st["bbr_bw"] == pytest.approx(payload, rel=0.1)
    assert st["bbr_min_rtt"] == pytest.approx(0.04, abs=0.003)
    assert mbit > 0.8 * 20

    cubic = BottleneckNet(1, rate=rate, delay=0.02, queue=100)
    _, mbit_cubic = probe(cubic, 6_000_000)
    q_bbr = statistics.mean(bbr.queue_delays)
    q_cubic = statistics.mean(cubic.queue_delays)
    # CUBIC fills the 100-packet queue until it overflows; BBR keeps about
    # one BDP in flight.
    assert q_bbr < q_cubic / 2, (q_bbr, q_cubic)


def test_on_a_lossy_path_bbr_keeps_the_rate_where_cubic_backs_off():
    rate = 20e6 / 8
    bbr = BottleneckNet(2, rate=rate, delay=0.01, queue=200, loss=0.02,
                        config=TcpConfig(congestion="bbr"))
    _, mbit_bbr = probe(bbr, 4_000_000)
    cubic = BottleneckNet(2, rate=rate, delay=0.01, queue=200, loss=0.02)
    _, mbit_cubic = probe(cubic, 4_000_000)
    assert mbit_bbr > 0.7 * 20 and mbit_bbr > 2 * mbit_cubic, (mbit_bbr, mbit_cubic)


def test_probe_rtt_comes_about_every_ten_seconds_of_a_long_transfer():
    bbr = BottleneckNet(3, rate=4e6 / 8, delay=0.02, queue=50, config=TcpConfig(congestion="bbr"))
    modes, _ = probe(bbr, 7_000_000)         # 14 s at 4 Mbit/s
    probes = [t for t, m in modes if m == PROBE_RTT]
    assert probes, modes
    assert 9.5 < probes[0] - T0 < 11.5
    i = [m for _, m in modes].index(PROBE_RTT)
    assert modes[i + 1][1] == PROBE_BW and modes[i + 1][0] - probes[0] >= 0.2


@pytest.mark.parametrize("cc", ["bbr", "cubic"])
def test_byte_exact_both_ways_through_the_fault_injector(cc):
    net = LossyNet(5, loss=0.02, dup=0.01, corrupt=0.01, delay=0.005, jitter=0.004,
                   config=TcpConfig(congestion=cc))
    client, server, data_a, data_b, got_a, got_b = run_transfer(net, 1024 * 1024)
    assert bytes(got_b) == data_a and bytes(got_a) == data_b
    assert client.state == "CLOSED" and server.state == "CLOSED"
    assert client.error is None and server.error is None


def test_probe_rtt_on_a_short_path_keeps_the_bandwidth_estimate():
    """Four segments in flight for 200 ms are some twenty round trips of a
    10 ms path, twice the bandwidth filter's window: PROBE_RTT's samples
    count as app-limited (as Linux), so the estimate survives them."""
    rate = 4e6 / 8
    bbr = BottleneckNet(6, rate=rate, delay=0.005, queue=50, config=TcpConfig(congestion="bbr"))
    seen = []

    def sample(now, conn):
        st = conn.status()
        if st.get("bbr_mode"):
            seen.append((now, st["bbr_mode"], st["bbr_bw"]))

    bbr.now = T0
    data, got = bbr.download(6_500_000, limit=T0 + 120, sample=sample)
    assert got == data
    probe_at = [t for t, m, _ in seen if m == PROBE_RTT]
    assert probe_at, "no PROBE_RTT"
    after = [bw for t, m, bw in seen if t > probe_at[-1] + 0.5 and m == PROBE_BW]
    assert after and min(after) > 0.8 * rate * 1448 / 1514, (min(after), rate)


def test_switching_algorithm_in_the_middle_of_a_recovery():
    from tests.tcp.test_recovery import S, ack, sender

    for first, second in (("cubic", "newreno"), ("bbr", "cubic"), ("cubic", "bbr")):
        c = sender(TcpConfig(congestion=first, undo=False, pacing_slack=1.0))  # (all 10 at once)
        c.now = 0.2
        ack(c, S(0), (S(1), S(2)))
        ack(c, S(0), (S(1), S(3)))
        ack(c, S(0), (S(1), S(4)))
        assert c.conn.status()["in_recovery"] or first == "bbr"
        c.conn.set_congestion(second)
        for top in range(5, 10):
            ack(c, S(0), (S(1), S(top)))       # no ZeroDivisionError
        ack(c, S(10))
        st = c.conn.status()
        assert not st["in_recovery"] and st["congestion"] == second
        assert st["cwnd"] < 1 << 29, (first, second, st["cwnd"])
