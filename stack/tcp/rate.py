"""Delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation-02),
as Linux's ``tcp_rate.c`` does it.

Each transmission stamps its record (RACK's, ``rack.py``) with the
connection's delivery state at that moment: the bytes delivered so far
(``C.delivered``), when the last of them was (``C.delivered_time``), when
the flight in progress began (``C.first_sent_time``), and whether the
sender was short of data (``C.app_limited``). When an ACK delivers records,
cumulatively or by SACK, the most recently sent of them gives the ACK's
sample: the bytes delivered since it went out, over the longer of its send
interval and its ACK interval. Taking the longer one keeps an ACK
compression from inflating the rate (draft section 3.3).

A sample is *app-limited* when the sender was short of data during the
flight it measures: it shows what the application offered, not what the
path can carry, so a bandwidth filter keeps it only if it is higher than
what it holds (BBR does so).
"""

from __future__ import annotations

from typing import Any, NamedTuple

# The fields a record carries for this file, after RACK's own five.
DELIVERED = 5       # C.delivered when the record was (last) sent
DELIVERED_TIME = 6  # C.delivered_time then
FIRST_SENT = 7      # C.first_sent_time then
APP_LIMITED = 8     # C.app_limited was set then


class RateSample(NamedTuple):
    """What one ACK tells (draft section 3.2, Linux ``struct rate_sample``).

    ``rate`` is bytes per second over ``interval`` seconds, 0.0 when the
    ACK gave no valid sample (nothing newly delivered, or an interval
    shorter than the minimum RTT, which only ACK compression makes)."""

    rate: float
    delivered: int          # bytes delivered over the interval
    interval: float
    prior_delivered: int    # C.delivered when the newest delivered record went out
    app_limited: bool
    rtt: float              # that record's round trip (-1.0: unknown, or ambiguous)
    acked_sacked: int       # bytes this ACK newly delivered, cumulatively or by SACK


class Rate:
    """The connection's delivery state and the sample being built for one ACK."""

    __slots__ = ("_newly", "_order", "_prior_delivered", "_prior_time", "_rtt", "_send_elapsed",
                 "_app", "app_limited", "delivered", "delivered_time", "first_sent_time")

    def __init__(self) -> None:
        self.delivered = 0               # C.delivered: bytes delivered, ever
        self.delivered_time = 0.0        # C.delivered_time
        self.first_sent_time = 0.0       # C.first_sent_time
        self.app_limited = 0             # C.app_limited: 0, or the delivered count that ends it
        self._prior_time: float | None = None  # the sample under way (None: no record yet)
        self._prior_delivered = 0
        self._send_elapsed = 0.0
        self._order = -1
        self._app = False
        self._rtt = -1.0
        self._newly = 0

    def stamp(self, record: list[Any], idle: bool, now: float) -> None:
        """A transmission: ``record`` carries the state it will be measured from.
        ``idle``: nothing was in flight, so a new flight begins now (draft 3.1)."""
        if idle:
            self.first_sent_time = self.delivered_time = now
        record[DELIVERED:] = (self.delivered, self.delivered_time, self.first_sent_time,
                              self.app_limited != 0)

    def mark_app_limited(self, in_flight: int) -> None:
        """The sender has room in its windows but nothing to send: samples
        are app-limited until what is in flight now has been delivered."""
        self.app_limited = self.delivered + in_flight or 1

    def delivered_record(self, r: list[Any], order: int, ambiguous: bool, now: float) -> None:
        """An ACK delivered record ``r``, sent as transmission number
        ``order`` (the higher, the more recent), for the first time."""
        n = r[1] - r[0]
        self.delivered += n
        self.delivered_time = now
        self._newly += n
        if self._prior_time is None or order > self._order:
            self._order = order
            self._prior_delivered = r[DELIVERED]
            self._prior_time = r[DELIVERED_TIME]
            self._app = r[APP_LIMITED]
            self._send_elapsed = r[2] - r[FIRST_SENT]
            self._rtt = -1.0 if ambiguous else now - r[2]
            self.first_sent_time = r[2]

    def sample(self, min_rtt: float | None) -> RateSample | None:
        """The ACK has been taken in: its sample (None if it delivered nothing)."""
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0
        prior = self._prior_time
        newly = self._newly
        self._newly = 0
        if prior is None:
            return None
        self._prior_time = None
        ack_elapsed = self.delivered_time - prior
        interval = self._send_elapsed if self._send_elapsed > ack_elapsed else ack_elapsed
        delivered = self.delivered - self._prior_delivered
        rate = 0.0
        if interval > 0 and (min_rtt is None or interval >= min_rtt):
            rate = delivered / interval
        return RateSample(rate, delivered, interval, self._prior_delivered, self._app, self._rtt,
                          newly)
