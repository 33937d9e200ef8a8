"""BBR v1: congestion control by a model of the path, not by loss
(Cardwell et al., "BBR: Congestion-Based Congestion Control", ACM Queue
2016; draft-cardwell-iccrg-bbr-congestion-control-00), with the choices of
Linux's ``tcp_bbr.c`` — the BBR that Linux ships and ``ss -ti`` shows.

BBR estimates two numbers: the bottleneck bandwidth (the highest delivery
rate sampled over the last ten round trips, ``rate.py``) and the round-trip
propagation time (the lowest RTT seen in the last ten seconds). It paces
at a gain times the bandwidth and keeps a gain times their product (the
BDP) in flight. Loss alone does not shrink its window. Four modes:

* ``STARTUP``: gain 2/ln 2 on both, doubling the rate each round trip,
  until three rounds in a row fail to grow the bandwidth by 25 %;
* ``DRAIN``: pace at the inverse gain until what is in flight is down to one BDP;
* ``PROBE_BW``: cycle the pacing gain through 5/4, 3/4 and six rounds of 1,
  probing for more bandwidth and draining the queue the probe made;
* ``PROBE_RTT``: when the minimum RTT is ten seconds old, hold four
  segments in flight for 200 ms and a round trip to measure it again.

During loss recovery it conserves packets for one round (no more sent than
delivered), then grows back; when recovery ends it restores the window it had.

Left out (as the note says): Linux's long-term bandwidth sampling for
policed paths (``lt_bw``) and the restart after idle.
"""

from __future__ import annotations

import random

from stack.tcp.congestion import CongestionControl
from stack.tcp.rate import RateSample

STARTUP, DRAIN, PROBE_BW, PROBE_RTT = "STARTUP", "DRAIN", "PROBE_BW", "PROBE_RTT"
OPEN, RECOVERY, LOSS = 0, 1, 2      # the sender's loss state on an ACK (Linux's CA states)

HIGH_GAIN = 2885 / 1000             # 2/ln(2), as Linux's BBR_UNIT arithmetic rounds it
DRAIN_GAIN = 1000 / 2885
CWND_GAIN = 2.0
PACING_GAINS = (5 / 4, 3 / 4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CYCLE_RAND = 7                      # the first phase is one of the 7 after the 3/4 one
BW_RTTS = len(PACING_GAINS) + 2     # the bandwidth filter's window, in round trips
MIN_RTT_WINDOW = 10.0               # seconds
PROBE_RTT_TIME = 0.2                # seconds at the minimum window
MIN_CWND_SEGMENTS = 4
FULL_BW_THRESH = 1.25
FULL_BW_COUNT = 3
PACING_MARGIN = 0.01                # pace 1 % under the estimate (Linux)
EXTRA_ACKED_ROUNDS = 5              # the ACK aggregation filter's window
EXTRA_ACKED_MAX = 0.1               # at most 100 ms of bandwidth of aggregation allowance
PACING_SHIFT = 10                   # a burst is about 1/1024 s of the pacing rate
GSO_MAX = 65536


class MaxFilter:
    """A windowed maximum over a virtual clock (Linux's ``lib/win_minmax.c``,
    after Kathleen Nichols): the best, second and third best samples of the
    window, so the maximum ages out without keeping every sample."""

    __slots__ = ("s", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.s = [(0.0, 0.0)] * 3      # (time, value), best first

    def get(self) -> float:
        return self.s[0][1]

    def reset(self, t: float, v: float) -> None:
        self.s = [(t, v)] * 3

    def update(self, t: float, v: float) -> float:
        s = self.s
        if v >= s[0][1] or t - s[2][0] > self.window:
            self.reset(t, v)
            return v
        if v >= s[1][1]:
            s[1] = s[2] = (t, v)
        elif v >= s[2][1]:
            s[2] = (t, v)
        dt = t - s[0][0]
        w = self.window
        if dt > w:
            # The best one left the window: the second best takes its place.
            s[0], s[1], s[2] = s[1], s[2], (t, v)
            if t - s[0][0] > w:
                s[0], s[1], s[2] = s[1], s[2], (t, v)
        elif s[1][0] == s[0][0] and dt > w / 4:
            s[1] = s[2] = (t, v)   # a quarter of the window on: take a second choice
        elif s[2][0] == s[1][0] and dt > w / 2:
            s[2] = (t, v)          # half way: a third
        return s[0][1]


class Bbr(CongestionControl):
    __slots__ = ("_rng", "bw", "ca_state", "conserving", "cwnd_gain", "cycle_idx", "cycle_start",
                 "delivered", "epoch_acked", "epoch_start", "extra_acked", "extra_idx",
                 "extra_rounds", "full_bw", "full_bw_count", "full_bw_reached", "last_app_limited",
                 "last_inflight", "last_rate", "min_rtt", "min_rtt_stamp", "mode",
                 "next_round_delivered", "pacing_gain", "prev_ca_state", "prior_cwnd",
                 "probe_rtt_done", "probe_rtt_round_done", "round_count", "round_start")

    name = "bbr"
    wants_samples = True

    def __init__(self, mss: int, initial_segments: int, seed: int = 0) -> None:
        super().__init__(mss, initial_segments, seed)
        self._rng = random.Random(seed)
        self.bw = MaxFilter(BW_RTTS)           # bytes/s over round trips
        self.min_rtt: float | None = None
        self.min_rtt_stamp = 0.0
        self.mode = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self.round_count = 0
        self.round_start = False
        self.next_round_delivered = 0
        self.delivered = 0                     # C.delivered, as the last sample saw it
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.full_bw_reached = False
        self.cycle_idx = 0
        self.cycle_start = 0.0
        self.probe_rtt_done: float | None = None
        self.probe_rtt_round_done = False
        self.prior_cwnd = 0
        self.conserving = False                # packet conservation, the first round of recovery
        self.ca_state = self.prev_ca_state = OPEN
        self.extra_acked = [0, 0]              # bytes acked beyond the model, two windows
        self.extra_idx = 0
        self.extra_rounds = 0
        self.epoch_start = 0.0
        self.epoch_acked = 0
        self.last_rate = 0.0                   # the latest valid delivery-rate sample
        self.last_app_limited = False
        self.last_inflight = 0

    # ---- the model -------------------------------------------------------------------

    def max_bw(self) -> float:
        return self.bw.get()

    def bdp(self, bw: float, gain: float) -> int:
        """``gain`` times the bandwidth-delay product, in bytes, whole segments."""
        mss = self.mss
        if self.min_rtt is None:
            return 10 * mss  # no RTT yet: the initial window (Linux TCP_INIT_CWND)
        segs = -(-int(bw * self.min_rtt * gain) // mss)
        return segs * mss

    def tso_segs(self) -> int:
        """Segments per burst at the pacing rate (Linux ``bbr_tso_segs_goal``)."""
        rate = self.pacing_rate
        n = min(int(rate) >> PACING_SHIFT, GSO_MAX) // self.mss
        least = 2 if rate >= 150_000 else 1     # 1.2 Mbit/s
        return min(max(n, least), 127)

    def quantized(self, cwnd: int) -> int:
        """Room for the bursts the pacer sends, in an even number of segments
        (Linux ``bbr_quantization_budget``)."""
        mss = self.mss
        segs = -(-cwnd // mss) + 3 * self.tso_segs()
        segs += segs & 1
        if self.mode == PROBE_BW and self.cycle_idx == 0:
            segs += 2
        return segs * mss

    def inflight(self, bw: float, gain: float) -> int:
        return self.quantized(self.bdp(bw, gain))

    # ---- what the sender tells it ---------------------------------------------------

    def on_ack(self, acked: int, now: float, rtt: float | None) -> None:
        pass  # every ACK comes through on_sample

    def on_dupack_in_recovery(self) -> None:
        pass

    def on_partial_ack(self, acked: int) -> None:
        pass

    def exit_recovery(self, flight: int, now: float, sack: bool) -> None:
        pass  # the next ACK's on_sample sees the state change and restores the window

    def _save_cwnd(self) -> None:
        if self.prev_ca_state < RECOVERY and self.mode != PROBE_RTT:
            self.prior_cwnd = self.cwnd
        elif self.cwnd > self.prior_cwnd:
            self.prior_cwnd = self.cwnd

    def enter_fast_recovery(self, flight: int, now: float, sack: bool) -> None:
        self._save_cwnd()  # the window itself is set on the ACK (packet conservation)

    def on_timeout(self, flight: int, now: float) -> None:
        """As Linux's ``tcp_enter_loss`` with BBR: one segment, the round
        ends, and the bandwidth plateau is looked for afresh."""
        self._save_cwnd()
        self.prev_ca_state = LOSS
        self.cwnd = self.mss
        self.full_bw = 0.0
        self.round_start = True

    def undo(self, cwnd: int, ssthresh: int) -> None:
        """As Linux's ``bbr_undo_cwnd``: the window stays (BBR restores its
        own at recovery's end); the bandwidth plateau is looked for again."""
        self.full_bw = 0.0
        self.full_bw_count = 0

    def take_over(self, old: CongestionControl) -> None:
        self.cwnd = old.cwnd

    def start(self, srtt: float | None) -> None:
        """The first pacing rate, before any sample (Linux
        ``bbr_init_pacing_rate_from_rtt``): the window over the RTT, times the gain."""
        self._set_pacing_rate(0.0, srtt)

    def on_sample(self, rs: RateSample | None, inflight: int, lost: int, phase: int,
                  srtt: float | None, now: float) -> None:
        """Every ACK that delivered or lost something (Linux ``bbr_main``)."""
        self.ca_state = phase
        self.last_inflight = inflight
        if rs is not None:
            if rs.rate:
                self.last_rate = rs.rate
                self.last_app_limited = rs.app_limited
            self.delivered = rs.prior_delivered + rs.delivered
            self._update_bw(rs)
            self._update_aggregation(rs, now)
            if self.mode == PROBE_BW:
                self._update_cycle(rs, inflight, lost, now)
            self._check_full_bw(rs)
            self._check_drain(inflight, now)
            self._update_min_rtt(rs, inflight, now)
        self._update_gains()
        bw = self.max_bw()
        self._set_pacing_rate(bw, srtt)
        self._set_cwnd(rs, inflight, lost, bw)

    def _update_bw(self, rs: RateSample) -> None:
        self.round_start = False
        if rs.interval <= 0 or rs.delivered <= 0:
            return
        if rs.prior_delivered >= self.next_round_delivered:
            self.next_round_delivered = self.delivered
            self.round_count += 1
            self.round_start = True
            self.conserving = False
        if rs.rate and (not rs.app_limited or rs.rate >= self.max_bw()):
            self.bw.update(self.round_count, rs.rate)

    def _update_aggregation(self, rs: RateSample, now: float) -> None:
        """How far ACKs run ahead of the model (ACK aggregation), so the
        window can cover it (Linux ``bbr_update_ack_aggregation``)."""
        if rs.acked_sacked <= 0 or rs.interval <= 0:
            return
        if self.round_start:
            self.extra_rounds += 1
            if self.extra_rounds >= EXTRA_ACKED_ROUNDS:
                self.extra_rounds = 0
                self.extra_idx ^= 1
                self.extra_acked[self.extra_idx] = 0
        expected = int(self.max_bw() * (now - self.epoch_start))
        if self.epoch_acked <= expected:
            self.epoch_acked = 0
            self.epoch_start = now
            expected = 0
        self.epoch_acked += rs.acked_sacked
        extra = self.epoch_acked - expected
        if extra > self.cwnd:
            extra = self.cwnd
        if extra > self.extra_acked[self.extra_idx]:
            self.extra_acked[self.extra_idx] = extra

    def _update_cycle(self, rs: RateSample, inflight: int, lost: int, now: float) -> None:
        full = self.min_rtt is not None and now - self.cycle_start > self.min_rtt
        gain = self.pacing_gain
        prior = inflight + rs.acked_sacked
        if gain == 1.0:
            advance = full
        elif gain > 1.0:
            advance = full and (lost > 0 or prior >= self.inflight(self.max_bw(), gain))
        else:
            advance = full or prior <= self.inflight(self.max_bw(), 1.0)
        if advance:
            self.cycle_idx = (self.cycle_idx + 1) % len(PACING_GAINS)
            self.cycle_start = now

    def _check_full_bw(self, rs: RateSample) -> None:
        if self.full_bw_reached or not self.round_start or rs.app_limited:
            return
        bw = self.max_bw()
        if bw >= self.full_bw * FULL_BW_THRESH:
            self.full_bw = bw
            self.full_bw_count = 0
            return
        self.full_bw_count += 1
        self.full_bw_reached = self.full_bw_count >= FULL_BW_COUNT

    def _check_drain(self, inflight: int, now: float) -> None:
        if self.mode == STARTUP and self.full_bw_reached:
            self.mode = DRAIN
            self.ssthresh = self.inflight(self.max_bw(), 1.0)
        if self.mode == DRAIN and inflight <= self.inflight(self.max_bw(), 1.0):
            self._enter_probe_bw(now)

    def _enter_probe_bw(self, now: float) -> None:
        self.mode = PROBE_BW
        n = len(PACING_GAINS)
        # A random phase, never the 3/4 one, so flows sharing a bottleneck
        # do not probe in step; then the next phase starts now.
        self.cycle_idx = (n - 1 - self._rng.randrange(CYCLE_RAND) + 1) % n
        self.cycle_start = now

    def _update_min_rtt(self, rs: RateSample, inflight: int, now: float) -> None:
        expired = self.min_rtt is not None and now > self.min_rtt_stamp + MIN_RTT_WINDOW
        if rs.rtt >= 0 and (self.min_rtt is None or rs.rtt < self.min_rtt or expired):
            self.min_rtt = rs.rtt
            self.min_rtt_stamp = now
        if expired and self.mode != PROBE_RTT:
            self.mode = PROBE_RTT
            self._save_cwnd()
            self.probe_rtt_done = None
        if self.mode == PROBE_RTT:
            mss = self.mss
            if self.probe_rtt_done is None and inflight <= MIN_CWND_SEGMENTS * mss:
                self.probe_rtt_done = now + PROBE_RTT_TIME
                self.probe_rtt_round_done = False
                self.next_round_delivered = self.delivered
            elif self.probe_rtt_done is not None:
                if self.round_start:
                    self.probe_rtt_round_done = True
                if self.probe_rtt_round_done and now >= self.probe_rtt_done:
                    self.min_rtt_stamp = now
                    if self.prior_cwnd > self.cwnd:
                        self.cwnd = self.prior_cwnd
                    if self.full_bw_reached:
                        self._enter_probe_bw(now)
                    else:
                        self.mode = STARTUP

    def _update_gains(self) -> None:
        mode = self.mode
        if mode == STARTUP:
            self.pacing_gain = self.cwnd_gain = HIGH_GAIN
        elif mode == DRAIN:
            self.pacing_gain, self.cwnd_gain = DRAIN_GAIN, HIGH_GAIN
        elif mode == PROBE_BW:
            self.pacing_gain, self.cwnd_gain = PACING_GAINS[self.cycle_idx], CWND_GAIN
        else:
            self.pacing_gain = self.cwnd_gain = 1.0

    def _set_pacing_rate(self, bw: float, srtt: float | None) -> None:
        if not bw:
            # No sample yet: the window over the RTT (or 1 ms), as soon as
            # there is one (Linux ``has_seen_rtt``).
            rtt = srtt if srtt else 0.001
            self.pacing_rate = HIGH_GAIN * self.cwnd / rtt * (1 - PACING_MARGIN)
            return
        rate = self.pacing_gain * bw * (1 - PACING_MARGIN)
        if self.full_bw_reached or rate > self.pacing_rate:
            self.pacing_rate = rate

    def _set_cwnd(self, rs: RateSample | None, inflight: int, lost: int, bw: float) -> None:
        """Linux ``bbr_set_cwnd``: toward ``cwnd_gain`` BDPs (plus room for
        ACK aggregation and bursts), by at most what this ACK delivered."""
        mss = self.mss
        least = MIN_CWND_SEGMENTS * mss
        acked = rs.acked_sacked if rs is not None else 0
        if acked and not self._recover_or_restore(inflight, lost, acked):
            cwnd = self.cwnd
            target = self.bdp(bw, self.cwnd_gain)
            if self.full_bw_reached:
                aggr = max(self.extra_acked)
                cap = int(bw * EXTRA_ACKED_MAX)
                target += aggr if aggr < cap else cap
            target = self.quantized(target)
            if self.full_bw_reached:
                cwnd = cwnd + acked if cwnd + acked < target else target
            elif cwnd < target or self.delivered < 10 * mss:
                cwnd += acked
            self.cwnd = cwnd if cwnd > least else least
        if self.mode == PROBE_RTT and self.cwnd > least:
            self.cwnd = least

    def _recover_or_restore(self, inflight: int, lost: int, acked: int) -> bool:
        """Loss recovery's window (Linux ``bbr_set_cwnd_to_recover_or_restore``):
        newly lost bytes leave it; the first round of recovery sends no more
        than is delivered; when recovery ends the window before it returns.
        True while conserving (the window is set)."""
        mss = self.mss
        cwnd = self.cwnd
        if lost > 0:
            cwnd = cwnd - lost if cwnd - lost > mss else mss
        phase, prev = self.ca_state, self.prev_ca_state
        if phase == RECOVERY and prev != RECOVERY:
            self.conserving = True
            self.next_round_delivered = self.delivered  # a round starts now
            cwnd = inflight + acked
        elif prev >= RECOVERY and phase < RECOVERY:
            if self.prior_cwnd > cwnd:
                cwnd = self.prior_cwnd
            self.conserving = False
        self.prev_ca_state = phase
        if self.conserving and inflight + acked > cwnd:
            cwnd = inflight + acked
        self.cwnd = cwnd
        return self.conserving

    def holds_back(self) -> bool:
        return self.mode == PROBE_RTT  # Linux: "ignore low rate samples during this mode"

    def model_key(self) -> tuple[object, ...]:
        """A trace event per round trip, and per mode or gain change."""
        return (self.mode, self.cycle_idx, self.round_count)

    def info(self) -> dict[str, object]:
        """For ``status()`` and ``ss -ti``: ``bbr:(bw:…,mrtt:…,pacing_gain:…,cwnd_gain:…)``."""
        return {"bbr_mode": self.mode, "bbr_bw": round(self.max_bw()), "bbr_min_rtt": self.min_rtt,
                "bbr_pacing_gain": self.pacing_gain, "bbr_cwnd_gain": self.cwnd_gain,
                "delivery_rate": round(self.last_rate), "app_limited": self.last_app_limited,
                "inflight": self.last_inflight, "delivered": self.delivered}
