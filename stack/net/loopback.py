"""The loopback interface, Linux's ``lo``: packets this host sends to itself.

Every packet to 127.0.0.0/8 or to the stack's own address goes out through
this interface instead of Ethernet, so it never reaches the link. Like
Linux's ``lo`` (whose transmit only queues the packet on the receive
backlog), :meth:`Loopback.send` queues the packet and :meth:`Loopback.deliver`
hands it up later, from the runtime loop: a protocol answering a packet it
is handed never re-enters itself.

It is seen like any other link: counters ``link.lo.tx_packets``,
``tx_bytes``, ``rx_packets``, ``rx_bytes`` (what ``ip -s link show lo``
counts), trace events ``link``/``tx`` and ``link``/``rx`` with ``dev: "lo"``
and what the packet carries, and a bounded queue whose overflow is a counted
drop (``link.drop.lo_backlog_full``, Linux's netdev_max_backlog).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from stack.net.arp import describe_packet
from stack.trace import Trace

LO_MTU = 65536          # Linux's lo
LO_BACKLOG = 1000       # packets waiting at once (Linux's netdev_max_backlog)
DELIVER_BATCH = 4096    # packets handed up per call, so the link gets its turn too


class Loopback:
    """One host's ``lo``. ``receive(packet, now)`` takes what comes back up."""

    name = "lo"
    mtu = LO_MTU

    def __init__(self, trace: Trace, receive: Callable[[memoryview, float], None],
                 backlog: int = LO_BACKLOG) -> None:
        self.trace = trace
        self.receive = receive
        self.backlog = backlog
        self.queue: deque[bytes] = deque()

    def send(self, packet: bytes) -> None:
        """Transmit one IPv4 packet to ourselves (delivered by :meth:`deliver`)."""
        trace = self.trace
        if len(self.queue) >= self.backlog:
            trace.drop("link", "lo_backlog_full", dev=self.name, length=len(packet))
            return
        counters = trace.counters
        counters["link.lo.tx_packets"] += 1
        counters["link.lo.tx_bytes"] += len(packet)
        if trace.on and trace.wants("link", "tx"):
            trace.event("link", "tx", dev=self.name, length=len(packet),
                        **describe_packet(packet, outgoing=True))
        self.queue.append(packet)

    def deliver(self, now: float) -> None:
        """Hand up what is queued, also what that makes the stack send to
        itself, up to :data:`DELIVER_BATCH` packets (the rest stays due)."""
        queue = self.queue
        trace = self.trace
        counters = trace.counters
        for _ in range(DELIVER_BATCH):
            if not queue:
                return
            packet = queue.popleft()
            counters["link.lo.rx_packets"] += 1
            counters["link.lo.rx_bytes"] += len(packet)
            if trace.on and trace.wants("link", "rx"):
                trace.event("link", "rx", dev=self.name, length=len(packet),
                            **describe_packet(packet, outgoing=False))
            self.receive(memoryview(packet), now)
