"""The RFC 5961 (section 7) budget of challenge ACKs, one per connection.

The budget is the connection's own (as Linux since 6.0). One budget shared
by the layer is the side channel of CVE-2016-5696: an off-path attacker
spends it on its own connection and counts the ACKs it gets back, which
tells whether a spoofed RST landed in some other connection's window. Each
challenge ACK answers one received segment, so the total is bounded by what
arrives.
"""

from __future__ import annotations


class ChallengeBudget:
    """At most ``limit`` challenge ACKs in each second of the clock, and
    none sooner than ``interval`` seconds after the last (Linux sends one
    per 500 ms per socket: ``tcp_invalid_ratelimit``)."""

    __slots__ = ("_last", "_second", "_spent", "interval", "limit")

    def __init__(self, limit: int, interval: float = 0.0) -> None:
        self.limit = limit
        self.interval = interval
        self._second = -1
        self._spent = 0
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """One challenge ACK may go now (and is counted), or the budget is spent."""
        if self._last is not None and now - self._last < self.interval:
            return False
        sec = int(now)
        if sec != self._second:
            self._second = sec
            self._spent = 0
        if self._spent >= self.limit:
            return False
        self._spent += 1
        self._last = now
        return True
