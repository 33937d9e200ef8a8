"""The relay's IO: two AF_PACKET raw sockets, one per interface, and a loop
that feeds what arrives on one into the ``Direction`` towards the other and
sends what it says is due. Whole Ethernet frames, no IP stack of its own.

The interfaces should carry frames no larger than their MTU (``topo.py``
turns TSO, GSO, GRO and checksum offload off on every veth of the path): a
kernel super-frame read here could not be sent on, and a frame whose
checksum was left to the hardware would reach the far side unfinished.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time

from bench.pathemu.core import Direction, Profile

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23         # Linux 4.20: do not read back what we send
BUFFER = 4 << 20
BATCH = 64                          # frames read from one socket before looking at timers


def open_port(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
            try:
                s.setsockopt(socket.SOL_SOCKET, force, BUFFER)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, opt, BUFFER)
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def kernel_drops(s: socket.socket) -> int:
    """Frames the kernel dropped before we read them (reading resets the count)."""
    _packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return drops


class Relay:
    """Forwards between interfaces ``a`` and ``b``, impairing both directions
    with ``profile``; ``run`` until ``stop`` is set or ``duration`` passes."""

    def __init__(self, a: str, b: str, profile: Profile) -> None:
        seeds = random.Random(profile.seed)
        self.names = (a, b)
        self.ab = Direction(profile, random.Random(seeds.getrandbits(64)))
        self.ba = Direction(profile, random.Random(seeds.getrandbits(64)))
        self.sock_a = open_port(a)
        try:
            self.sock_b = open_port(b)
        except OSError:
            self.sock_a.close()
            raise
        self.rx_drops = [0, 0]
        self.send_errors = 0
        self.rx_errors = 0
        self.stop = False

    def close(self) -> None:
        for i, s in enumerate((self.sock_a, self.sock_b)):
            try:
                self.rx_drops[i] += kernel_drops(s)
            except OSError:
                pass
            s.close()

    def _read(self, s: socket.socket, into: Direction) -> None:
        for _ in range(BATCH):
            try:
                frame = s.recv(65536)
            except BlockingIOError:
                return
            except OSError:                 # e.g. ENETDOWN: the interface went down
                self.rx_errors += 1
                return
            into.arrive(frame, time.monotonic())

    def _flush(self, direction: Direction, out: socket.socket, now: float) -> None:
        for frame in direction.due(now):
            try:
                out.send(frame)
            except OSError:                 # ENOBUFS, EMSGSIZE, ENETDOWN, EIO...: counted
                self.send_errors += 1

    def run(self, duration: float | None = None) -> None:
        poller = select.epoll()
        poller.register(self.sock_a.fileno(), select.EPOLLIN)
        poller.register(self.sock_b.fileno(), select.EPOLLIN)
        fa, fb = self.sock_a.fileno(), self.sock_b.fileno()
        end = None if duration is None else time.monotonic() + duration
        try:
            while not self.stop:
                now = time.monotonic()
                if end is not None and now >= end:
                    return
                deadlines = [t for t in (self.ab.next_deadline(), self.ba.next_deadline(), end)
                             if t is not None]
                timeout = max(0.0, min(deadlines) - now) if deadlines else 0.2
                for fd, _events in poller.poll(min(timeout, 0.2)):
                    if fd == fa:
                        self._read(self.sock_a, self.ab)
                    elif fd == fb:
                        self._read(self.sock_b, self.ba)
                now = time.monotonic()
                self._flush(self.ab, self.sock_b, now)
                self._flush(self.ba, self.sock_a, now)
        finally:
            poller.close()

    def summary(self) -> dict:
        a, b = self.names
        return {
            "a": a, "b": b,
            "a_to_b": self.ab.counters.summary(),
            "b_to_a": self.ba.counters.summary(),
            "rx_drops": {a: self.rx_drops[0], b: self.rx_drops[1]},
            "send_errors": self.send_errors,
            "rx_errors": self.rx_errors,
        }
