"""IPv4 fragment reassembly (RFC 791, RFC 815), bounded and timed.

Datagrams are keyed by (src, dst, id, proto). Each collects fragments in a
:class:`stack.native.Reassembly` byte-range buffer. Policy, as Linux since
4.19: a fragment that partly overlaps one already held drops the whole
datagram; an exact duplicate is ignored. Limits: concurrent datagrams, total
bytes held, and a timeout after which an incomplete datagram is dropped (and,
if its first fragment arrived, ICMP time exceeded is sent, RFC 792). When a
new datagram finds the table or the byte budget full, the oldest incomplete
datagrams are dropped to make room (as FreeBSD reuses its oldest queue), so a
fragment flood cannot lock every other sender out until its datagrams time
out; a single datagram larger than the whole budget is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.native import Reassembly
from stack.trace import Trace
from stack.wire.ipv4 import IPV4_MAX_LEN, Ipv4Header, int2ip


@dataclass
class ReassemblyConfig:
    timeout: float = 30.0            # seconds (Linux ipfrag_time)
    max_datagrams: int = 256         # incomplete datagrams held at once
    max_bytes: int = 4 * 1024 * 1024  # buffer bytes held across all of them (Linux ipfrag_high_thresh)
    max_fragments: int = 64          # disjoint pieces per datagram


# (src, dst, id, proto): which datagram a fragment belongs to (RFC 791).
_Key = tuple[int, int, int, int]


class _Datagram:
    __slots__ = ("buf", "total", "deadline", "first", "first_payload", "held")

    def __init__(self, cfg: ReassemblyConfig, deadline: float) -> None:
        self.buf = Reassembly(IPV4_MAX_LEN, cfg.max_fragments)
        self.total: int | None = None
        self.deadline = deadline
        self.first: Ipv4Header | None = None       # header of the offset-0 fragment
        self.first_payload = b""                   # its first 8 bytes, for ICMP quoting
        # Bytes charged to the memory bound: the buffer grows to the highest
        # offset stored, so that is what a datagram costs (not the bytes in it).
        self.held = 0


class FragmentReassembler:
    def __init__(self, trace: Trace, config: ReassemblyConfig | None = None) -> None:
        self.trace = trace
        self.config = config or ReassemblyConfig()
        self.datagrams: dict[_Key, _Datagram] = {}
        self.bytes_held = 0

    def add(self, h: Ipv4Header, payload: memoryview, now: float) -> tuple[Ipv4Header, bytes] | None:
        """Take one fragment; return (first header, whole payload) when complete."""
        cfg = self.config
        n = len(payload)
        if h.mf and (n == 0 or n % 8):
            self.trace.drop("ip", "fragment_length", id=h.ident, length=n)
            return None
        key = (h.src, h.dst, h.ident, h.proto)
        d = self.datagrams.get(key)
        if d is None:
            if len(self.datagrams) >= cfg.max_datagrams:
                self._evict(next(iter(self.datagrams)))
            d = self.datagrams[key] = _Datagram(cfg, now + cfg.timeout)
        end = h.frag_offset + n
        grow = end - d.held if n and end > d.held else 0
        if self.bytes_held + grow > cfg.max_bytes:
            if d.held + grow > cfg.max_bytes:
                self._discard(key, d)
                self.trace.drop("ip", "reassembly_memory", id=h.ident, src=int2ip(h.src))
                return None
            while self.bytes_held + grow > cfg.max_bytes:
                self._evict(next(k for k in self.datagrams if k != key))
        if not h.mf:
            # The last fragment fixes the end; it may not fall short of data
            # already held (Linux: end < q.len discards the queue).
            if (d.total is not None and d.total != end) or end < d.held:
                self._discard(key, d)
                self.trace.drop("ip", "fragment_conflict", id=h.ident)
                return None
            d.total = end
        if (d.total is not None and end > d.total) or end > IPV4_MAX_LEN - 20:
            self._discard(key, d)
            self.trace.drop("ip", "fragment_beyond_end", id=h.ident, end=end)
            return None
        if d.buf.overlaps(h.frag_offset, n):
            if self._covered(d, h.frag_offset, end):
                self.trace.drop("ip", "fragment_duplicate", id=h.ident, offset=h.frag_offset)
                return None
            self._discard(key, d)
            self.trace.drop("ip", "fragment_overlap", id=h.ident, offset=h.frag_offset)
            return None
        added = d.buf.insert(h.frag_offset, payload)
        if added < 0:
            self._discard(key, d)
            self.trace.drop("ip", "too_many_fragments" if added == -2 else "fragment_range",
                            id=h.ident)
            return None
        d.held += grow
        self.bytes_held += grow
        if h.frag_offset == 0:
            d.first = h
            d.first_payload = bytes(payload[:8])
        if self.trace.on:
            self.trace.event("ip", "fragment", src=int2ip(h.src), id=h.ident,
                             offset=h.frag_offset, length=n, more=h.mf)
        if d.total is None or d.buf.contiguous() < d.total:
            return None
        del self.datagrams[key]
        self.bytes_held -= d.held
        data = d.buf.pop(d.total)
        self.trace.count("ip", "reassembled")
        if self.trace.on:
            self.trace.event("ip", "reassembled", src=int2ip(h.src), id=h.ident, length=d.total)
        assert d.first is not None
        # The header now describes the whole datagram, as Linux's ip_frag_reasm
        # leaves it: no MF, the full length (ICMP errors quote it).
        return d.first._replace(mf=False, total_length=d.first.header_length + d.total), data

    @staticmethod
    def _covered(d: _Datagram, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in d.buf.ranges())

    def _evict(self, key: _Key) -> None:
        """Drop the incomplete datagram ``key`` to make room for a newer one."""
        self._discard(key, self.datagrams[key])
        self.trace.drop("ip", "reassembly_evicted", id=key[2], src=int2ip(key[0]))

    def _discard(self, key: _Key, d: _Datagram) -> None:
        self.datagrams.pop(key, None)
        self.bytes_held -= d.held
        d.held = 0

    def next_deadline(self) -> float | None:
        if not self.datagrams:
            return None
        return min(d.deadline for d in self.datagrams.values())

    def expire(self, now: float) -> list[tuple[Ipv4Header, bytes]]:
        """Drop timed-out datagrams; return (first header, 8 bytes) of those whose
        first fragment arrived, for ICMP time exceeded."""
        out = []
        for key, d in list(self.datagrams.items()):
            if d.deadline > now:
                continue
            self._discard(key, d)
            self.trace.drop("ip", "reassembly_timeout", id=key[2], src=int2ip(key[0]))
            if d.first is not None:
                out.append((d.first, d.first_payload))
        return out
