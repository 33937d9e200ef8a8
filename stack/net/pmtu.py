"""Path MTU per destination (RFC 1191), as Linux keeps it in its route
exceptions (``fnhe``): learnt from an ICMP "fragmentation needed" that
quotes a datagram one of our sockets sent, forgotten after ``expires``
seconds (Linux's ``net.ipv4.route.mtu_expires``, 600).

Like Linux's ``__ip_rt_update_pmtu``: an MTU below ``min_pmtu`` (552,
``net.ipv4.route.min_pmtu``) counts as ``min_pmtu`` (a forged ICMP cannot
cut segments to nothing); an MTU that is not smaller than the path's
current one changes nothing (one above the link's is dropped and counted);
the same MTU again renews the entry once it is past half its life. The table is bounded: the entry
learnt longest ago goes first. Sans-IO: ``now`` comes in; the entry that
expires first is :meth:`PmtuCache.next_deadline`.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.trace import Trace
from stack.wire.ipv4 import int2ip


@dataclass
class PmtuConfig:
    expires: float = 600.0   # seconds an entry lives (mtu_expires)
    min_pmtu: int = 552      # the smallest path MTU believed (min_pmtu)
    max_entries: int = 4096  # destinations remembered at once


class PmtuCache:
    def __init__(self, trace: Trace, config: PmtuConfig | None = None) -> None:
        self.trace = trace
        self.config = config or PmtuConfig()
        # dst -> (mtu, expires at); in the order learnt (renewed ones move to the end),
        # so with one lifetime for all the first entry is the next to expire.
        self.entries: dict[int, tuple[int, float]] = {}

    def get(self, dst: int) -> int | None:
        """The path MTU to ``dst`` if one is known (an expired one is gone by
        the time :meth:`expire` has run at its deadline)."""
        e = self.entries.get(dst)
        return e[0] if e is not None else None

    def learn(self, dst: int, mtu: int, link_mtu: int, now: float) -> int | None:
        """A "fragmentation needed" with ``mtu`` for a datagram of ours to
        ``dst``: the path MTU now recorded, or None when nothing changed."""
        cfg = self.config
        if mtu > link_mtu:
            self.trace.drop("ip", "pmtu_above_link", dst=int2ip(dst), mtu=mtu, link_mtu=link_mtu)
            return None
        if mtu < cfg.min_pmtu:
            self.trace.count("ip", "pmtu_clamped")
            mtu = cfg.min_pmtu
        entry = self.entries.get(dst)
        current = entry[0] if entry is not None else link_mtu
        if mtu > current or (mtu == current and entry is None):
            self.trace.count("ip", "pmtu_not_smaller")
            return None
        if entry is not None and mtu == current and now < entry[1] - cfg.expires / 2:
            self.trace.count("ip", "pmtu_same")  # (renewed only in its second half, as Linux)
            return None
        self.entries.pop(dst, None)
        while len(self.entries) >= cfg.max_entries:
            self.trace.count("ip", "pmtu_evicted")
            del self.entries[next(iter(self.entries))]
        self.entries[dst] = (mtu, now + cfg.expires)
        self.trace.count("ip", "pmtu_learnt")
        if self.trace.on:
            self.trace.event("ip", "pmtu", dst=int2ip(dst), mtu=mtu, expires=cfg.expires)
        return mtu

    def next_deadline(self) -> float | None:
        if not self.entries:
            return None
        return self.entries[next(iter(self.entries))][1]

    def expire(self, now: float) -> None:
        """Forget every entry whose time is up (back to the link's MTU)."""
        entries = self.entries
        while entries:
            dst = next(iter(entries))
            mtu, at = entries[dst]
            if at > now:
                break
            del entries[dst]
            self.trace.count("ip", "pmtu_expired")
            if self.trace.on:
                self.trace.event("ip", "pmtu_expire", dst=int2ip(dst), mtu=mtu)

    def view(self, now: float) -> list[tuple[int, int, float]]:
        """(destination, path MTU, seconds left) for each entry, as ``ip route get`` shows."""
        return [(dst, mtu, max(0.0, at - now)) for dst, (mtu, at) in self.entries.items()]
