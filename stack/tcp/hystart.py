"""HyStart++ (RFC 9406): leave slow start before the first loss, when the
round trip starts to grow (a queue is forming), instead of doubling into an
overflowing buffer.

Each round trip (an ACK passing the SND.NXT of the round's start) keeps the
smallest RTT of its first ``N_RTT_SAMPLE`` ACKs. When a round's minimum is
above the last one's by more than an eighth of it (between 4 and 16 ms),
slow start turns into Conservative Slow Start (CSS): the window grows four
times slower, for at most ``CSS_ROUNDS`` rounds, and then congestion
avoidance begins. If the RTT falls back below the baseline during CSS, the
rise was a blip: slow start resumes.

:class:`HyStart` only decides; CUBIC applies (``congestion.py``).
"""

from __future__ import annotations

MIN_RTT_THRESH = 0.004
MAX_RTT_THRESH = 0.016
MIN_RTT_DIVISOR = 8
N_RTT_SAMPLE = 8
CSS_GROWTH_DIVISOR = 4
CSS_ROUNDS = 5

SLOW_START, CSS, DONE = "slow_start", "css", "done"


class HyStart:
    __slots__ = ("baseline", "css_rounds", "current", "last", "phase", "samples")

    def __init__(self) -> None:
        self.phase = SLOW_START
        self.last: float | None = None      # lastRoundMinRTT
        self.current: float | None = None   # currentRoundMinRTT
        self.samples = 0                    # rttSampleCount
        self.baseline = 0.0                 # cssBaselineMinRtt
        self.css_rounds = 0

    def ack(self, rtt: float | None, round_start: bool) -> str:
        """An ACK in slow start, with its RTT sample (None: none) and whether
        it starts a round. Returns the phase: ``slow_start``, ``css``, or
        ``done`` (congestion avoidance should begin now)."""
        if self.phase == DONE:
            return DONE
        if round_start:
            self.last = self.current
            self.current = None
            self.samples = 0
            if self.phase == CSS:
                self.css_rounds += 1
                if self.css_rounds >= CSS_ROUNDS:
                    self.phase = DONE
                    return DONE
        if rtt is not None:
            if self.current is None or rtt < self.current:
                self.current = rtt
            self.samples += 1
        cur, last = self.current, self.last
        if self.phase == SLOW_START:
            if self.samples >= N_RTT_SAMPLE and cur is not None and last is not None:
                thresh = last / MIN_RTT_DIVISOR
                thresh = MIN_RTT_THRESH if thresh < MIN_RTT_THRESH else (
                    MAX_RTT_THRESH if thresh > MAX_RTT_THRESH else thresh)
                if cur >= last + thresh:
                    self.phase = CSS
                    self.baseline = cur
                    self.css_rounds = 0
        elif cur is not None and self.samples >= N_RTT_SAMPLE and cur < self.baseline:
            self.phase = SLOW_START   # the RTT rise was spurious (RFC 9406 4.2)
        return self.phase

    def over(self) -> None:
        """A loss (or the end of slow start otherwise): no more HyStart++."""
        self.phase = DONE
