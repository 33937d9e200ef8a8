"""Traceroute by UDP probes, as traceroute(8)'s default method (sans-IO).

Each probe is a UDP datagram from one port of ours to the destination's
port ``port + n`` (33434 upwards; n counts the probes sent), with the IP TTL
of its hop. A router where the TTL runs out answers with an ICMP time
exceeded; the destination answers with a port unreachable. The answer is
matched to its probe by what it quotes: our source port (the ICMP layer
hands us every error quoting it, :attr:`IcmpLayer.probe_watchers`), the
destination address and the probe's destination port. One probe is out at
a time; one with no answer within ``timeout`` is a ``*``. The trace stops
after the hop where the destination answered (or any other unreachable,
shown as traceroute's ``!H``, ``!N``, ``!P``, ``!X`` ...) or at ``max_hops``.

An error quoting a probe that is not the one out (a late answer, a forged
one) is dropped and counted (``icmp.drop.traceroute_unmatched``); errors
quoting nothing of ours never get here (the ICMP and UDP layers drop them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stack.net.icmp import IcmpLayer
from stack.net.udp import UdpEndpoint, UdpLayer
from stack.trace import Trace
from stack.wire.ipv4 import PROTO_UDP, int2ip

# What traceroute(8) prints after an answer that is an unreachable, by code.
UNREACHABLE_FLAGS = {0: "!N", 1: "!H", 2: "!P", 4: "!F", 5: "!S", 6: "!N", 7: "!H", 8: "!H",
                     9: "!N", 10: "!H", 11: "!N", 12: "!H", 13: "!X", 14: "!V", 15: "!C"}
TIME_EXCEEDED, DEST_UNREACHABLE, PORT_UNREACHABLE = 11, 3, 3


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """One probe: who answered and after how long (both None: ``*``), and
    traceroute's flag for an unreachable other than the port's."""

    address: str | None
    rtt: float | None
    flag: str = ""


@dataclass(slots=True)
class Hop:
    ttl: int
    probes: list[ProbeAnswer] = field(default_factory=list)


class Traceroute:
    def __init__(self, udp: UdpLayer, icmp: IcmpLayer, trace: Trace, dst: int,
                 max_hops: int = 30, probes: int = 3, timeout: float = 5.0, port: int = 33434,
                 size: int = 60, on_change: Callable[[], None] | None = None) -> None:
        if not 1 <= max_hops <= 255 or not 1 <= probes <= 10 or timeout <= 0:
            raise ValueError("max_hops 1..255, probes 1..10, timeout > 0")
        if not 1 <= port <= 65535 - max_hops * probes:
            raise ValueError(f"port {port}: the probes' ports must stay below 65536")
        self.udp, self.icmp, self.trace = udp, icmp, trace
        self.dst = dst
        self.max_hops, self.per_hop, self.timeout = max_hops, probes, timeout
        self.port, self.payload = port, bytes(range(64, 64 + max(0, size - 28)))
        self.on_change = on_change
        self.hops: list[Hop] = []
        self.done = False
        self.ep = UdpEndpoint()
        self._sent = 0
        self._out: tuple[int, float] | None = None  # the probe out: (its port, when sent)
        self._reached = False

    # -- driving (now comes in, the deadline goes out) -------------------------------------

    def start(self, now: float) -> None:
        """Bind a port, register for the errors quoting it, send the first probe.
        Raises what sending raises (ENETUNREACH with no route)."""
        self.udp.bind(self.ep, 0, 0)
        assert self.ep.local is not None
        self.icmp.probe_watchers[(PROTO_UDP, self.ep.local[1])] = self.answer
        if self.trace.on:
            self.trace.event("udp", "traceroute", dst=int2ip(self.dst), port=self.ep.local[1],
                             max_hops=self.max_hops, probes=self.per_hop)
        try:
            self._probe(now)
        except OSError:
            self.close()
            raise

    def next_deadline(self) -> float | None:
        return None if self._out is None else self._out[1] + self.timeout

    def on_timer(self, now: float) -> None:
        """The probe out had no answer in time: a ``*``, and the next."""
        if self._out is not None and now >= self._out[1] + self.timeout:
            self.trace.count("udp", "traceroute_timeouts")
            self._record(ProbeAnswer(None, None), now)

    def close(self) -> None:
        if self.ep.local is not None:
            self.icmp.probe_watchers.pop((PROTO_UDP, self.ep.local[1]), None)
        self.udp.unbind(self.ep)
        self._out = None
        self.done = True

    # -- answers -----------------------------------------------------------------------------

    def answer(self, type_: int, code: int, router: int, quoted: bytes, now: float) -> None:
        """An ICMP error quoting a datagram from our port (the ICMP layer's
        ``probe_watchers``): the answer to the probe out, or dropped."""
        hlen = (quoted[0] & 0x0F) * 4
        qdst = int.from_bytes(quoted[16:20], "big")
        dport = int.from_bytes(quoted[hlen + 2:hlen + 4], "big")
        out = self._out
        if out is None or qdst != self.dst or dport != out[0] or type_ not in (TIME_EXCEEDED,
                                                                                DEST_UNREACHABLE):
            self.trace.drop("icmp", "traceroute_unmatched", src=int2ip(router), type=type_,
                            code=code, port=dport)
            return
        flag = ""
        if type_ == DEST_UNREACHABLE:
            self._reached = True
            if code != PORT_UNREACHABLE:
                flag = UNREACHABLE_FLAGS.get(code, f"!<{code}>")
        self.trace.count("udp", "traceroute_answers")
        self._record(ProbeAnswer(int2ip(router), now - out[1], flag), now)

    def _record(self, answer: ProbeAnswer, now: float) -> None:
        hop = self.hops[-1]
        hop.probes.append(answer)
        self._out = None
        if self.trace.on:
            self.trace.event("udp", "traceroute_probe", ttl=hop.ttl, address=answer.address,
                             rtt=answer.rtt, flag=answer.flag or None)
        if len(hop.probes) == self.per_hop and (self._reached or hop.ttl >= self.max_hops):
            self.close()
        else:
            try:
                self._probe(now)
            except OSError as e:  # (the route went away: the trace ends here)
                self.trace.drop("udp", "traceroute_unsendable", error=e.errno)
                self.close()
        if self.on_change is not None:
            self.on_change()

    def _probe(self, now: float) -> None:
        if not self.hops or len(self.hops[-1].probes) == self.per_hop:
            self.hops.append(Hop(len(self.hops) + 1))
        port = self.port + self._sent
        self._sent += 1
        self._out = (port, now)
        self.udp.send(self.ep, self.payload, (self.dst, port), now, ttl=self.hops[-1].ttl)


def format_hop(hop: Hop) -> str:
    """One line as traceroute(8) -n prints it: ``' 1  192.0.2.1  0.412 ms  0.380 ms  *'``,
    the address again only where it changes."""
    out = [f"{hop.ttl:2d} "]
    last = None
    for p in hop.probes:
        if p.address is None or p.rtt is None:
            out.append(" *")
            continue
        if p.address != last:
            out.append(f" {p.address}")
            last = p.address
        out.append(f"  {p.rtt * 1000:.3f} ms" + (f" {p.flag}" if p.flag else ""))
    return "".join(out)
