"""Live traces: a written event reaches the file within FLUSH_DELAY, without a
flush per event; the network thread of a running stack honours the deadline."""

from __future__ import annotations

import io

from stack.link.memory import CaptureLink
from stack.runtime import Stack
from stack.trace import FLUSH_DELAY, Trace
from tests.helpers.tap import wait_for


class CountingSink(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_flush_deadline_follows_the_oldest_unflushed_event():
    now = [1.0]
    sink = CountingSink()
    tr = Trace(sink, "jsonl", clock=lambda: now[0])
    assert tr.next_flush() is None
    tr.event("tcp", "state", conn="a", to="LISTEN")
    now[0] = 1.05
    tr.event("tcp", "state", conn="a", to="CLOSED")
    assert tr.next_flush() == 1.0 + FLUSH_DELAY    # the oldest event decides
    tr.flush_due(1.0 + FLUSH_DELAY / 2)
    assert sink.flushes == 0
    tr.flush_due(1.0 + FLUSH_DELAY)
    assert sink.flushes == 1 and tr.next_flush() is None
    tr.flush_due(5.0)
    assert sink.flushes == 1                          # nothing new: no system call


def test_many_events_cost_one_flush():
    sink = CountingSink()
    tr = Trace(sink, "text", clock=lambda: 2.0)
    for i in range(1000):
        tr.event("ip", "fragment", id=i)
    tr.flush_due(2.0 + FLUSH_DELAY)
    assert sink.flushes == 1


class SlowFile:
    """A file whose writes stay invisible until flush(), like a 64 KB buffer."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.visible: list[str] = []

    def write(self, text: str) -> int:
        self.pending.append(text)
        return len(text)

    def flush(self) -> None:
        self.visible.extend(self.pending)
        self.pending.clear()


def test_running_stack_flushes_an_event_from_a_user_thread_within_the_delay():
    sink = SlowFile()
    net = Stack(CaptureLink(), trace=Trace(sink, "jsonl"))   # type: ignore[arg-type]
    try:
        wait_for(lambda: sink.visible, timeout=1.0)  # "link up" is flushed by the loop
        sink.visible.clear()
        with net.lock:
            net.trace.event("socket", "probe")
            net.kick()
        assert wait_for(lambda: any("probe" in ln for ln in sink.visible),
                        timeout=FLUSH_DELAY * 3), sink.pending
    finally:
        net.close()


def test_an_event_written_without_the_lock_or_a_kick_is_flushed_within_the_delay():
    """A user thread's event (a socket call, say) that nothing else follows:
    the loop, asleep for up to a second, is woken to flush it in time."""
    sink = SlowFile()
    net = Stack(CaptureLink(), trace=Trace(sink, "jsonl"))   # type: ignore[arg-type]
    try:
        wait_for(lambda: sink.visible, timeout=1.0)
        sink.visible.clear()
        wait_for(lambda: False, timeout=0.3)  # let the loop settle into its long sleep
        net.trace.event("socket", "lonely")
        assert wait_for(lambda: any("lonely" in ln for ln in sink.visible),
                        timeout=FLUSH_DELAY * 3), sink.pending
    finally:
        net.close()
