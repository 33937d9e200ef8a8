"""Two TcpLayers through a bottleneck on a manual clock: segments from A to
B wait in a FIFO drained at ``rate`` bytes per second (tail drop past
``queue`` packets), then cross ``delay`` seconds; B's segments (the ACKs)
cross ``delay`` only. Every frame the queue holds and when it leaves is
known, so tests can read the queueing delay a congestion control causes."""

from __future__ import annotations

import heapq
import random

from stack.tcp import TcpConfig

from tests.helpers.tcp import LossyNet


class BottleneckNet(LossyNet):
    def __init__(self, seed: int, rate: float, delay: float, queue: int = 100,
                 loss: float = 0.0, config: TcpConfig | None = None):
        self.rate, self.qlimit, self.one_way = rate, queue, delay
        self.free_at = 0.0            # when the bottleneck finishes what it holds
        self.queue_delays: list[float] = []  # seconds each A->B frame waited in the queue
        self.drops = 0
        super().__init__(seed, loss=loss, delay=delay, config=config, trace_events=False)
        self.qrng = random.Random(seed + 1)

    def _sender(self, me: int):
        if me != self.A:
            return super()._sender(me)

        def send(src, dst, proto, payload):
            now = self.now
            wire = len(payload) + 20 + 14
            start = self.free_at if self.free_at > now else now
            if (start - now) * self.rate > self.qlimit * 1514:
                self.drops += 1       # the queue is full: tail drop
                return
            if self.loss and self.qrng.random() < self.loss:
                self.stats["lost"] += 1
                return
            self.queue_delays.append(start - now)
            self.free_at = start + wire / self.rate
            self._n += 1
            heapq.heappush(self.queue, (self.free_at + self.one_way, self._n, src, dst,
                                        bytes(payload)))
        return send

    def download(self, size: int, limit: float = 120.0, sample=None) -> tuple[bytes, bytes]:
        """A sends ``size`` bytes to B; returns (sent, received). ``sample``,
        if given, is called with (now, A's connection) after every step."""
        data = random.Random(self.seed).randbytes(size)
        lst = self.b.listen((0, 80), 8, self.now)
        conn = self.a.connect(self.A, (self.B, 80), self.now)
        got = bytearray()
        sent = 0
        server = None
        while self.now < limit and len(got) < size:
            if server is None:
                server = lst.accept()
            if conn.state == "ESTABLISHED" and sent < size:
                sent += conn.send(memoryview(data)[sent:sent + 262144], self.now)
            if server is not None:
                while chunk := server.recv(1 << 20):
                    got += chunk
            if sample is not None:
                sample(self.now, conn)
            if not self.step():
                break
        self.conn = conn
        return data, bytes(got)
