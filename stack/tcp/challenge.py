"""The RFC 5961 (section 7) budget of challenge ACKs, one per connection.

The budget is the connection's own (as Linux since 6.0). One budget shared
by the layer is the side channel of CVE-2016-5696: an off-path attacker
spends it on its own connection and counts the ACKs it gets back, which
tells whether a spoofed RST landed in some other connection's window. Each
challenge ACK answers one received segment, so the total is bounded by what
arrives.

The 500 ms spacing is also the one of the duplicate ACKs that answer pure
ACKs failing PAWS (``out_of_window``): Linux keeps one clock for both,
``tp->last_oow_ack_time``, so that neither kind of answer feeds an ACK loop.
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

    def out_of_window(self, now: float) -> bool:
        """One ACK for an out-of-window segment may go now (Linux's
        ``__tcp_oow_rate_limited``): none sooner than ``interval`` after the
        last of these or of the challenge ACKs, the one clock Linux keeps
        for both (``last_oow_ack_time``); no per-second limit."""
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True

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
