"""Round-trip time and the retransmission timeout (RFC 6298).

One segment per round trip is timed on the real clock (timestamps tick in
milliseconds: a LAN's RTT would measure 0). After a retransmission Karn's
rule forbids that sample; only an echoed timestamp (RFC 7323 4.1) can then
tell which copy was acknowledged, and the sender feeds those in through
:meth:`Rtt.sample`.
"""

from __future__ import annotations

from stack.tcp.config import TcpConfig
from stack.tcp.seq import seq_ge
from stack.trace import Trace


class Rtt:
    """SRTT, RTTVAR and RTO, and the segment being timed."""

    __slots__ = ("srtt", "rttvar", "rto", "min_rtt", "timed_seq", "timed_at", "karn", "_cfg", "_trace",
                 "_name")

    def __init__(self, cfg: TcpConfig, trace: Trace, name: str) -> None:
        self._cfg = cfg
        self._trace = trace
        self._name = name
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = cfg.rto_initial
        self.min_rtt: float | None = None  # the smallest clock sample (RACK's window)
        self.timed_seq: int | None = None  # the ACK that ends the timed segment
        self.timed_at = 0.0
        self.karn = False                  # retransmitted since the last timed sample

    def time(self, end: int, now: float) -> None:
        """Time the segment ending at ``end`` (unless one is being timed)."""
        if self.timed_seq is None:
            self.timed_seq = end
            self.timed_at = now

    def retransmitted(self) -> None:
        """Karn's rule: no sample across a retransmission."""
        self.timed_seq = None
        self.karn = True

    def forget(self) -> None:
        """Stop timing without Karn's rule (a SYN sent again)."""
        self.timed_seq = None

    def acked(self, ack: int, now: float) -> bool:
        """An ACK arrived: a sample if it covers the timed segment. True if so."""
        seq = self.timed_seq
        if seq is not None and seq_ge(ack, seq):
            self.sample(now - self.timed_at, now)
            self.timed_seq = None
            self.karn = False
            return True
        return False

    def sample(self, r: float, now: float, ticks: bool = False) -> None:
        """RFC 6298 section 2. ``ticks``: measured in timestamp milliseconds
        (so a LAN's sub-millisecond RTT reads 0); the trace says so."""
        cfg = self._cfg
        if not ticks and (self.min_rtt is None or r < self.min_rtt):
            self.min_rtt = r
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        # As Linux (tcp_rtt_estimator, __tcp_set_rto): the floor bounds the
        # variance term, not the sum, so the RTO is SRTT + max(4 RTTVAR,
        # rto_min); RFC 6298 2.4 floors the sum (a 1 s minimum there).
        rto = self.srtt + max(cfg.clock_granularity, 4 * self.rttvar, cfg.rto_min)
        self.rto = min(rto, cfg.rto_max)
        if self._trace.on:
            self._trace.event("tcp", "rtt", conn=self._name, sample=round(r, 6),
                              srtt=round(self.srtt, 6), rttvar=round(self.rttvar, 6),
                              rto=round(self.rto, 6), **({"source": "ts"} if ticks else {}))

    def backoff(self) -> None:
        """RFC 6298 (5.5): double the RTO after it expired."""
        self.rto = min(self.rto * 2, self._cfg.rto_max)

    def syn_lost(self) -> None:
        """RFC 6298 (5.7): a SYN was lost and nothing measured: RTO 3 s."""
        if self.srtt is None:
            self.rto = min(max(self.rto, 3.0), self._cfg.rto_max)
