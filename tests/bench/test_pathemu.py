"""The path emulator's impairment on a manual clock (no IO), and its command
line's errors."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from bench.pathemu import core
from bench.pathemu.core import Direction, Profile
from bench.pathemu.topo import ROOT


def run(profile: Profile, frames: list[tuple[float, bytes]], until: float, step: float = 1e-4):
    """Feed ``frames`` (arrival time, bytes) and poll every ``step``: (time, frame) sent."""
    d = Direction(profile, random.Random(profile.seed))
    sent, pending, now = [], list(frames), 0.0
    while now <= until:
        while pending and pending[0][0] <= now:
            d.arrive(pending.pop(0)[1], now)
        sent += [(now, f) for f in d.due(now)]
        now = round(now + step, 6)
    return d, sent


def numbered(count: int, gap: float, size: int = 100) -> list[tuple[float, bytes]]:
    return [(i * gap, i.to_bytes(4, "big") + bytes(size - 4)) for i in range(count)]


def test_delay_holds_every_frame_that_long():
    d, sent = run(Profile(delay=10), numbered(5, 0.001), 0.1)
    assert [round(t, 3) for t, _ in sent] == [0.010, 0.011, 0.012, 0.013, 0.014]
    assert d.counters.summary()["mean_delay_ms"] == pytest.approx(10.0, abs=0.05)


def test_the_same_seed_makes_the_same_decisions():
    frames = numbered(2000, 0.0005)
    profile = Profile(delay=5, jitter=3, loss=0.05, reorder=0.05, seed=9)
    _, one = run(profile, frames, 1.2)
    _, two = run(profile, frames, 1.2)
    _, other = run(Profile(delay=5, jitter=3, loss=0.05, reorder=0.05, seed=10), frames, 1.2)
    assert one == two and one != other


def test_the_rate_limit_spaces_frames_by_their_length():
    # 1500-byte frames at 12 Mbit/s: one every 1 ms once the 2-frame burst is spent.
    d, sent = run(Profile(rate=12, burst=3000, queue=100), numbered(10, 0.0, 1500), 0.05)
    times = [round(t, 3) for t, _ in sent]
    assert times == [0.0, 0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008]
    assert d.counters.max_queue == 8              # the two in the burst never waited


def test_a_full_queue_drops_at_the_tail():
    d, sent = run(Profile(rate=12, burst=1514, queue=4), numbered(10, 0.0, 1500), 0.05)
    # The first leaves at once; four wait; the other five find the queue full.
    assert [int.from_bytes(f[:4], "big") for _, f in sent] == [0, 1, 2, 3, 4]
    assert d.counters.queue_drops == 5 and d.counters.max_queue == 4


def test_the_delay_line_is_bounded(monkeypatch):
    monkeypatch.setattr(core, "LINE_LIMIT", 5)
    d, sent = run(Profile(delay=10), numbered(8, 0.0), 0.05)
    assert len(sent) == 5 and d.counters.line_drops == 3
    assert d.counters.summary()["line_drops"] == 3


def test_a_reordered_frame_goes_right_after_the_next_one():
    # Every frame held (reorder=1) would wait its full hold; with 0.3 some
    # frames are held and each is sent straight after a later frame.
    d, sent = run(Profile(reorder=0.3, seed=4), numbered(200, 0.001), 0.3)
    order = [int.from_bytes(f[:4], "big") for _, f in sent]
    assert sorted(order) == list(range(200))
    c = d.counters
    late = sum(seq < max(order[:i]) for i, seq in enumerate(order) if i)
    assert c.reordered > 30 and c.out_of_order == c.reordered == late
    # Held until the next unheld frame passed (a run of held frames waits for
    # the same one), never for the whole 10 ms hold.
    assert c.max_delay < 0.0099


def test_a_held_frame_with_no_successor_goes_at_the_end_of_its_hold():
    d, sent = run(Profile(reorder=1.0, reorder_hold=7), numbered(1, 0.0), 0.05)
    assert [round(t, 3) for t, _ in sent] == [0.007]


def test_normal_jitter_spreads_delays_around_the_delay():
    d, sent = run(Profile(delay=20, jitter=4, distribution="normal", seed=1),
                  numbered(2000, 0.0005), 1.2)
    delays = sorted(t - int.from_bytes(f[:4], "big") * 0.0005 for t, f in sent)
    mean = sum(delays) / len(delays)
    sd = (sum((x - mean) ** 2 for x in delays) / len(delays)) ** 0.5
    assert mean == pytest.approx(0.020, abs=0.0005)
    assert sd == pytest.approx(0.004, rel=0.1)
    assert d.counters.out_of_order > 100          # jitter reorders, as on netem


@pytest.mark.parametrize("flags, message", [
    (["--a", "x"], "the following arguments are required: --b"),
    (["--a", "x", "--b", "y", "--loss", "1.5"], "--loss is a probability in [0, 1], got 1.5"),
    (["--a", "x", "--b", "y", "--delay", "-1"], "--delay must be >= 0, got -1"),
    (["--a", "x", "--b", "y", "--queue", "0"], "--queue must be at least 1 packet, got 0"),
    (["--a", "x", "--b", "y", "--rate", "fast"], "argument --rate: invalid float value: 'fast'"),
    (["--a", "x", "--b", "x"], "--a and --b must be different interfaces"),
    (["--a", "nosuchif0", "--b", "lo"], "no such interface: nosuchif0"),
])
def test_bad_flags_are_one_error_line_and_exit_2(flags, message):
    done = subprocess.run([sys.executable, "-m", "bench.pathemu", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == f"pathemu: error: {message}\n" and done.stdout == ""
