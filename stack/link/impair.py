"""Fault injection wrapper: loss, duplication, reordering, corruption, delay.

``ImpairLink(inner, "loss=0.01,dup=0.01,reorder=0.02,corrupt=0.001,delay=20,seed=7")``
impairs frames in both directions, each independently: frames the stack
sends ("tx") and frames it receives ("rx"). Each frame draws four numbers
from its direction's random stream, one per kind, whatever the spec enables,
so the same seed and the same frame sequence give the same impairments in a
direction no matter how the two directions interleave. Per frame, in order:

* loss: the frame is dropped.
* corrupt: 1-3 bits past the 14-byte Ethernet header are flipped, all in the
  same direction (all 0->1 or all 1->0). A same-direction flip of at most
  three bits changes a ones-complement sum by a nonzero amount below 2 x
  0xffff that is not 0xffff, so the IPv4, ICMP, TCP and UDP checksums always
  catch it (UDP only if the sender filled its checksum in).
* dup: the frame is delivered twice.
* reorder: the frame is held back and delivered right after the next frame of
  its direction, or after ``reorder_timeout`` seconds if none comes (then
  ``next_deadline``/``poll`` release it). One frame at most is held.
* delay: every frame is held ``delay`` milliseconds.

Over a link with software GSO (``inner.gso``) a TCP super-frame the stack
sends is cut here first, and every frame is impaired on its own, as on the
wire. Over a link with offload (``inner.offload``) a frame the stack sends may be
a TCP super-frame of up to 64 KB, and it is impaired as one frame, as a lossy
wire behind a NIC with TSO would lose its segments together: loss or delay
hit all of them at once. The device below fills in the TCP checksum of such
a frame (a TAP hands it to the kernel as partial, and the kernel trusts it),
so a flip in its TCP header or data would reach the peer unnoticed. Its
corruption therefore flips bits of the IPv4 header after the version/IHL
byte, which the receiver always checks: the whole super-frame is dropped
there (the kernel counts IpInHdrErrors). Received super-frames come up with
their checksums complete and are corrupted anywhere, as any frame.

Held frames are released by ``poll(now)`` at ``next_deadline()``; received
frames that become due are returned by a later ``recv_batch``. ``fileno()``
is an epoll descriptor over the inner link's fd and an internal "frames
ready" signal, so select() wakes up both for new frames and for released
ones.

The wrapper keeps the inner link's ``mtu``, ``offload`` and ``segment_max``.
It keeps ``defer_writes`` only while it impairs nothing (a plain pass-through):
an active injector may hold a frame back, which the runtime's loop must learn
under its lock (``next_deadline``), and reports each impairment to a callback
that writes the stack's trace.

``counts`` holds per-direction counters such as ``counts["tx.loss"]``
(``counters()`` returns them too);
``on_impair(direction, kind, frame)`` is called for each impairment (the
frame is the corrupted one for ``corrupt``). ``seed`` is the seed in use,
chosen at random when the spec has none; ``spec`` always includes it, so
``str(link.spec)`` reproduces the run.
"""

from __future__ import annotations

import math
import random
import secrets
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Callable

from stack.link.base import Link, LinkWrapper, ReadySignal, earliest, gso_cut

ETH_HEADER = 14
DIRECTIONS = ("tx", "rx")
KINDS = ("loss", "dup", "reorder", "corrupt", "delay")
_PROBABILITIES = ("loss", "dup", "reorder", "corrupt")


@dataclass(frozen=True, slots=True)
class ImpairSpec:
    """What to impair: probabilities per frame, delay in ms, and the seed."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    seed: int | None = None

    @property
    def active(self) -> bool:
        return any(getattr(self, k) for k in KINDS)

    def __str__(self) -> str:
        parts = [f"{k}={getattr(self, k):g}" for k in KINDS if getattr(self, k)]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return ",".join(parts)


def _number(key: str, text: str) -> float:
    scale = 1.0
    if key in _PROBABILITIES and text.endswith("%"):
        text, scale = text[:-1], 0.01
    elif key == "delay" and text.endswith("ms"):
        text = text[:-2]
    try:
        value = float(text) * scale
    except ValueError:
        raise ValueError(f"impair: {key}={text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"impair: {key}={text!r} must be a finite number >= 0")
    if key in _PROBABILITIES and value > 1:
        raise ValueError(f"impair: {key}={text!r} is a probability, must be between 0 and 1")
    return value


def parse_impair(spec: str) -> ImpairSpec:
    """Parse ``loss=P,dup=P,reorder=P,corrupt=P,delay=MS,seed=N`` (any subset).

    Raises ValueError naming the bad key or value.
    """
    known = {f.name for f in fields(ImpairSpec)}
    values: dict[str, float | int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ValueError(f"impair: expected KEY=VALUE, got {item!r}")
        if key not in known:
            raise ValueError(f"impair: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key in values:
            raise ValueError(f"impair: key {key!r} given twice")
        if key == "seed":
            try:
                values[key] = int(text, 10)
            except ValueError:
                raise ValueError(f"impair: seed={text!r} is not an integer") from None
            if values[key] < 0:
                raise ValueError(f"impair: seed={text!r} must be >= 0")
        else:
            values[key] = _number(key, text)
    return ImpairSpec(**values)  # type: ignore[arg-type]


def _bit(buf: bytes | bytearray, pos: int) -> int:
    return (buf[pos >> 3] >> (7 - (pos & 7))) & 1


def corrupt_frame(frame: bytes, rng: random.Random, start: int = ETH_HEADER,
                  end: int | None = None) -> bytes:
    """``frame`` with 1-3 distinct bits of ``frame[start:end]`` flipped the same way.

    The first bit is drawn uniformly; the others are drawn among bits that
    hold the same value, so every flip goes 0->1 or every flip goes 1->0.
    Returns ``frame`` unchanged when that range is empty.
    """
    stop = len(frame) if end is None else min(end, len(frame))
    nbits = (stop - start) * 8
    if nbits <= 0:
        return frame
    base = start * 8
    want = rng.randint(1, 3)
    chosen = [base + rng.randrange(nbits)]
    value = _bit(frame, chosen[0])
    for _ in range(64):
        if len(chosen) == want:
            break
        pos = base + rng.randrange(nbits)
        if pos not in chosen and _bit(frame, pos) == value:
            chosen.append(pos)
    buf = bytearray(frame)
    for pos in chosen:
        buf[pos >> 3] ^= 0x80 >> (pos & 7)
    return bytes(buf)


class _Direction:
    """One direction's random streams and held frames."""

    __slots__ = ("name", "decide", "bits", "held", "held_since", "delayed", "out")

    def __init__(self, name: str, seed: int, out: Callable[[bytes], None]) -> None:
        self.name = name
        # String seeds hash with SHA-512: stable across runs and processes.
        self.decide = random.Random(f"{seed}:{name}:decide")
        self.bits = random.Random(f"{seed}:{name}:bits")
        self.held: tuple[bytes, int] | None = None
        self.held_since = 0.0
        self.delayed: deque[tuple[float, bytes]] = deque()
        self.out = out


class ImpairLink(LinkWrapper):
    """Wrap ``inner`` and impair frames both ways as ``spec`` says."""

    def __init__(
        self,
        inner: Link,
        spec: str | ImpairSpec,
        clock: Callable[[], float] = time.monotonic,
        on_impair: Callable[[str, str, bytes], None] | None = None,
        reorder_timeout: float = 0.05,
    ) -> None:
        super().__init__(inner)
        if isinstance(spec, str):
            spec = parse_impair(spec)
        self.seed = spec.seed if spec.seed is not None else secrets.randbits(32)
        self.spec = replace(spec, seed=self.seed)
        self.clock = clock
        self.on_impair = on_impair
        self.reorder_timeout = reorder_timeout
        self.counts = {f"{d}.{k}": 0 for d in DIRECTIONS for k in KINDS}
        self._delay = spec.delay / 1000.0
        self._lock = threading.RLock()
        self._ready: deque[bytes] = deque()
        self._tx = _Direction("tx", self.seed, inner.send)
        self._rx = _Direction("rx", self.seed, self._ready.append)
        self._active = spec.active
        # Frames the stack sends larger than this are TCP super-frames whose
        # checksum the device below fills in (see the module docstring).
        self._offload_above = inner.mtu + ETH_HEADER if inner.offload else None
        # Frames larger than this are TCP super-frames the link below cuts in
        # software; they are cut here, before the impairments.
        self._cut_above = inner.mtu + ETH_HEADER if inner.gso else None
        self._signal: ReadySignal | None = None
        self._epoll: select.epoll | None = None
        if self._active:
            self._signal = ReadySignal()
            self._epoll = select.epoll()
            self._epoll.register(inner.fileno(), select.EPOLLIN)
            self._epoll.register(self._signal.fileno(), select.EPOLLIN)

    # -- the Link interface -------------------------------------------------

    @property
    def defer_writes(self) -> bool:  # type: ignore[override]
        return self.inner.defer_writes and not self._active

    def counters(self) -> dict[str, int]:
        return dict(self.counts)

    def fileno(self) -> int:
        if self._epoll is None:
            return self.inner.fileno()
        return self._epoll.fileno()

    def send(self, frame: bytes) -> None:
        if not self._active:
            self.inner.send(frame)
            return
        now = self.clock()
        with self._lock:
            if self._cut_above is not None and len(frame) > self._cut_above:
                # Software GSO below: the wire carries the cut frames, each
                # impaired on its own.
                for piece in gso_cut(frame, self.inner.mtu):
                    self._process(self._tx, piece, now)
            else:
                self._process(self._tx, frame, now)

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        if not self._active:
            return self.inner.recv_batch(limit)
        now = self.clock()
        with self._lock:
            ready = self._ready
            # Frames already released are returned first; pull only what fits.
            if len(ready) < limit:
                for frame in self.inner.recv_batch(limit - len(ready)):
                    self._process(self._rx, frame, now)
            self._release(self._rx, now)
            if len(ready) <= limit:
                out = list(ready)
                ready.clear()
            else:
                out = [ready.popleft() for _ in range(limit)]
            self._update_signal()
            return out

    def next_deadline(self) -> float | None:
        inner = self.inner.next_deadline()
        if not self._active:
            return inner
        with self._lock:
            found = [inner]
            for d in (self._tx, self._rx):
                if d.delayed:
                    found.append(d.delayed[0][0])
                if d.held is not None:
                    found.append(d.held_since + self.reorder_timeout)
            return earliest(*found)

    def poll(self, now: float) -> None:
        if self._active:
            with self._lock:
                self._release(self._tx, now)
                self._release(self._rx, now)
                self._update_signal()
        self.inner.poll(now)

    def close(self) -> None:
        with self._lock:
            for d in (self._tx, self._rx):
                d.held = None
                d.delayed.clear()
            self._ready.clear()
            if self._epoll is not None:
                self._epoll.close()
                self._epoll = None
            if self._signal is not None:
                self._signal.close()
            self._active = False
        self.inner.close()

    # -- the pipeline -------------------------------------------------------

    def _note(self, d: _Direction, kind: str, frame: bytes) -> None:
        self.counts[f"{d.name}.{kind}"] += 1
        if self.on_impair is not None:
            self.on_impair(d.name, kind, frame)

    def _process(self, d: _Direction, frame: bytes, now: float) -> None:
        spec = self.spec
        rnd = d.decide.random
        lose, corrupt, dup, reorder = rnd(), rnd(), rnd(), rnd()
        if lose < spec.loss:
            self._note(d, "loss", frame)
            return
        if corrupt < spec.corrupt and len(frame) > ETH_HEADER:
            if d is self._tx and self._checksummed_below(frame):
                # Only the IPv4 header keeps a checksum the peer verifies.
                end = ETH_HEADER + (frame[ETH_HEADER] & 0x0F) * 4
                frame = corrupt_frame(frame, d.bits, ETH_HEADER + 1, end)
            else:
                frame = corrupt_frame(frame, d.bits)
            self._note(d, "corrupt", frame)
        copies = 1
        if dup < spec.dup:
            copies = 2
            self._note(d, "dup", frame)
        if reorder < spec.reorder and d.held is None:
            d.held = (frame, copies)
            d.held_since = now
            self._note(d, "reorder", frame)
            return
        self._emit(d, frame, copies, now)
        if d.held is not None:
            held, d.held = d.held, None
            self._emit(d, held[0], held[1], now)

    def _checksummed_below(self, frame: bytes) -> bool:
        """Whether the device below fills in this outgoing frame's TCP checksum."""
        above = self._offload_above
        return (above is not None and len(frame) > above and frame[12:14] == b"\x08\x00"
                and frame[23] == 6)

    def _emit(self, d: _Direction, frame: bytes, copies: int, now: float) -> None:
        for _ in range(copies):
            if self._delay > 0:
                d.delayed.append((now + self._delay, frame))
                self._note(d, "delay", frame)
            else:
                d.out(frame)

    def _release(self, d: _Direction, now: float) -> None:
        if d.held is not None and now >= d.held_since + self.reorder_timeout:
            held, d.held = d.held, None
            self._emit(d, held[0], held[1], now)
        delayed = d.delayed
        while delayed and delayed[0][0] <= now:
            d.out(delayed.popleft()[1])

    def _update_signal(self) -> None:
        if self._signal is None:
            return
        if self._ready:
            self._signal.set()
        else:
            self._signal.clear()
