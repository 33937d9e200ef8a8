"""Congestion control (RFC 5681), pluggable.

The connection owns loss detection (duplicate ACK counting, the RTO) and tells
the controller what happened; the controller only moves ``cwnd`` and
``ssthresh`` (bytes). A new algorithm (CUBIC, ...) subclasses
:class:`CongestionControl` and registers itself in :data:`ALGORITHMS`.
"""

from __future__ import annotations


class CongestionControl:
    name = "base"
    # After a partial ACK in fast recovery: stay in recovery (NewReno) or leave it (Reno).
    partial_ack_stays = False

    def __init__(self, mss: int, initial_segments: int) -> None:
        self.mss = mss
        self.cwnd = initial_segments * mss
        self.ssthresh = 1 << 30
        self._acked = 0  # bytes counted toward the next congestion-avoidance increase

    def set_mss(self, mss: int) -> None:
        self.mss = mss

    def on_ack(self, acked: int, flight: int) -> None:
        """New data acknowledged outside fast recovery."""

    def on_fast_retransmit(self, flight: int) -> None:
        """Third duplicate ACK: enter fast recovery."""

    def on_dupack_in_recovery(self) -> None:
        """One more duplicate ACK during fast recovery."""

    def on_partial_ack(self, acked: int) -> None:
        """A partial ACK during fast recovery (only called when ``partial_ack_stays``)."""

    def on_recovery_exit(self, flight: int) -> None:
        """Fast recovery ends."""

    def on_timeout(self, flight: int) -> None:
        """Retransmission timeout."""


class Reno(CongestionControl):
    """RFC 5681: slow start, congestion avoidance, fast retransmit/recovery."""

    name = "reno"

    def on_ack(self, acked: int, flight: int) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            # Slow start, with appropriate byte counting limited to one MSS per ACK.
            self.cwnd += min(acked, mss)
        else:
            # Congestion avoidance: one MSS per cwnd's worth of acknowledged bytes.
            self._acked += acked
            if self._acked >= self.cwnd:
                self._acked -= self.cwnd
                self.cwnd += mss

    def on_fast_retransmit(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss
        self._acked = 0

    def on_dupack_in_recovery(self) -> None:
        self.cwnd += self.mss

    def on_recovery_exit(self, flight: int) -> None:
        self.cwnd = self.ssthresh

    def on_timeout(self, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss  # loss window
        self._acked = 0


class NewReno(Reno):
    """RFC 6582: partial ACKs keep fast recovery going."""

    name = "newreno"
    partial_ack_stays = True

    def on_partial_ack(self, acked: int) -> None:
        # Deflate by the amount acknowledged, add back one MSS.
        self.cwnd = max(self.cwnd - acked + self.mss, self.mss)

    def on_recovery_exit(self, flight: int) -> None:
        self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)


ALGORITHMS: dict[str, type[CongestionControl]] = {"reno": Reno, "newreno": NewReno}
