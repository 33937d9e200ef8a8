"""What tracing costs per TCP segment: off, level "state", level "all".

Two TcpLayers exchange a 2 MB transfer through an in-order queue on a manual
clock (no thread, no link, no sleeping), so the time measured is protocol
work plus whatever the trace adds. The figure of interest is the time per
segment (both directions counted), in ``extra_info["us_per_segment"]`` (from
the fastest round) and ``["us_per_segment_median"]``.

Run: ``python -m pytest bench/test_bench_trace.py --benchmark-only -q``
(add ``--benchmark-json out.json`` to keep the per-segment figures).
"""

from __future__ import annotations

import random
from collections import deque

import pytest

from stack.tcp import TcpConfig, TcpLayer
from stack.trace import Trace

A = 0xC0000201  # 192.0.2.1
B = 0xC0000202  # 192.0.2.2
PORT = 80
SIZE = 2 * 1024 * 1024
DELAY = 0.0005  # one-way, seconds of manual clock
CHUNK = 64 * 1024


class Transfer:
    """Sends SIZE bytes from a to b and closes; returns the segments exchanged."""

    def __init__(self, make_trace) -> None:
        self.now = 0.0
        self.queue: deque = deque()
        clock = lambda: self.now  # noqa: E731
        self.traces = [make_trace(clock), make_trace(clock)]
        cfg = TcpConfig()
        self.a = TcpLayer(self._wire(B), self.traces[0], cfg, rng=random.Random(1))
        self.b = TcpLayer(self._wire(A), self.traces[1], cfg, rng=random.Random(2))
        self.layer_at = {A: self.a, B: self.b}

    def _wire(self, dst_layer_addr: int):
        def send(src, dst, proto, payload):
            self.queue.append((self.now + DELAY, src, dst, bytes(payload)))
        return send

    def _step(self) -> None:
        times = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
        if self.queue:
            times.append(self.queue[0][0])
        self.now = max(self.now, min(times))
        q = self.queue
        while q and q[0][0] <= self.now:
            _, src, dst, data = q.popleft()
            self.layer_at[dst].receive(src, dst, data, self.now)
        for layer in (self.a, self.b):
            d = layer.next_deadline()
            if d is not None and d <= self.now:
                layer.on_timer(self.now)

    def run(self, data: bytes) -> int:
        lst = self.b.listen((B, PORT), 8, self.now)
        client = self.a.connect(A, (B, PORT), self.now)
        server = None
        sent = received = 0
        while received < len(data):
            if server is None:
                server = lst.accept()
            if client.state == "ESTABLISHED" and sent < len(data):
                sent += client.send(data[sent:sent + CHUNK], self.now)
            if server is not None:
                while True:
                    chunk = server.recv(1 << 20, self.now)
                    if not chunk:
                        break
                    received += len(chunk)
            self._step()
        client.close(self.now)
        server.close(self.now)
        for _ in range(200):
            if not self.queue:
                break
            self._step()
        return sum(t.counters["tcp.out_segs"] for t in self.traces)


def _off(clock):
    return Trace(clock=clock)


def _state(path):
    def make(clock):
        return Trace(open(path, "a", buffering=1 << 16), "jsonl", clock=clock, level="state")
    return make


def _all(path, fmt):
    def make(clock):
        return Trace(open(path, "a", buffering=1 << 16), fmt, clock=clock)
    return make


@pytest.mark.parametrize("mode", ["off", "state", "all-jsonl", "all-text"])
def test_trace_cost_per_segment(benchmark, mode, tmp_path):
    benchmark.group = "2 MB TCP transfer, two TcpLayers, manual clock"
    path = tmp_path / "trace.out"
    make = {"off": _off, "state": _state(path), "all-jsonl": _all(path, "jsonl"),
            "all-text": _all(path, "text")}[mode]
    data = random.Random(5).randbytes(SIZE)
    segments = []

    def once():
        t = Transfer(make)
        segments.append(t.run(data))
        for tr in t.traces:
            if tr.sink is not None:
                tr.sink.close()

    benchmark.pedantic(once, rounds=10, iterations=1, warmup_rounds=1)
    stats = benchmark.stats.stats
    benchmark.extra_info["segments"] = segments[-1]
    # The minimum is the least disturbed by other work on the machine.
    benchmark.extra_info["us_per_segment"] = round(stats.min / segments[-1] * 1e6, 2)
    benchmark.extra_info["us_per_segment_median"] = round(stats.median / segments[-1] * 1e6, 2)
    assert len(set(segments)) == 1, "the transfer is deterministic"
    assert segments[-1] > SIZE // 1460
    if mode != "off":
        assert path.stat().st_size > 0
