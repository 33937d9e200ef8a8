"""A connection's timers: one absolute deadline (or None) per kind.

The parts of a connection start and stop them; the connection runs the ones
that are due (:meth:`TcpConnection.on_timer`) and the layer keeps one heap
entry per connection for the earliest (:meth:`Timers.deadline`).
"""

from __future__ import annotations

RTO = 0          # retransmission (RFC 6298)
PERSIST = 1      # zero-window probes (RFC 9293 3.8.6.1)
DELACK = 2       # delayed ACK (RFC 9293 3.8.6.3)
KEEPALIVE = 3    # RFC 1122 4.2.3.6
TIME_WAIT = 4    # 2 MSL
FIN_WAIT_2 = 5   # an orphan's FIN_WAIT_2 (Linux tcp_fin_timeout)
REO = 6          # RACK's reordering window (RFC 8985 6.3)
PACE = 7         # the pacer lets the next burst go (pacing.py)

NAMES = ("rto", "persist", "delack", "keepalive", "time_wait", "fin_wait_2", "reo", "pace")


class Timers:
    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: list[float | None] = [None] * len(NAMES)

    def start(self, kind: int, when: float) -> None:
        self.at[kind] = when

    def start_if_idle(self, kind: int, when: float) -> None:
        if self.at[kind] is None:
            self.at[kind] = when

    def stop(self, kind: int) -> None:
        self.at[kind] = None

    def stop_all(self) -> None:
        self.at = [None] * len(NAMES)

    def armed(self, kind: int) -> bool:
        return self.at[kind] is not None

    def due(self, kind: int, now: float) -> bool:
        t = self.at[kind]
        return t is not None and now >= t

    def deadline(self) -> float | None:
        d = None
        for t in self.at:
            if t is not None and (d is None or t < d):
                d = t
        return d

    def pending(self) -> dict[str, float]:
        """The armed timers by name (for ``status()``)."""
        return {NAMES[k]: t for k, t in enumerate(self.at) if t is not None}
