"""Test helpers for TCP conversations and back-to-back runs on a manual clock.

Imported by the TCP tests (tests/tcp/, tests/system/test_hostile.py).
"""

from __future__ import annotations

import heapq
import random

from stack.tcp import TcpConfig, TcpLayer
from stack.trace import Trace
from stack.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, build_tcp, parse_tcp

US = 0xC6336401      # 198.51.100.1, the stack under test
PEER = 0xC6336402    # 198.51.100.2, the test speaking for the other end
US_PORT = 4000
PEER_PORT = 5555
ISS = 1000           # the stack's initial sequence number in conversations
IRS = 5000           # the test peer's initial sequence number

FLAGS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, ".": ACK, "U": URG}


def syn_options(config: TcpConfig | None = None, now: float = 0.0) -> str:
    """The options of the stack's own SYN in tcpdump form, at time ``now``
    (the harness pins the timestamp clock's offset to 0: TS val is in ms)."""
    from stack.tcp.handshake import wscale_for

    cfg = config or TcpConfig()
    opts = [f"mss {cfg.mss}"]
    if cfg.sack:
        opts.append("sackOK")
    if cfg.timestamps:
        opts.append(f"TS val {int(now * 1000)} ecr 0")
    if cfg.window_scaling:
        opts.append(f"wscale {wscale_for(cfg.rcvbuf)}")
    return ",".join(opts)


def flag_bits(spec: str) -> int:
    bits = 0
    for ch in spec:
        bits |= FLAGS[ch]
    return bits


class Conversation:
    """One TcpLayer, a manual clock, and the segments it sends.

    ``feed`` hands it a segment built by the test; ``expect`` checks, in
    tcpdump form, exactly the segments it sent since the last check.
    """

    def __init__(self, config: TcpConfig | None = None, iss: int = ISS, seed: int = 1,
                 trace_level: str = "all"):
        self.now = 0.0
        self.events: list[dict] = []
        self.trace = Trace(clock=lambda: self.now, level=trace_level)
        self.trace.subscribe(self.events.append)
        self.out: list = []
        self.config = config or TcpConfig()
        self.iss = iss
        self.layer = TcpLayer(self._ip_send, self.trace, self.config, rng=random.Random(seed),
                              isn=lambda *a: iss, ts_offset=lambda *a: 0)
        self.conn = None
        self.listener = None

    def _ip_send(self, src: int, dst: int, proto: int, payload: bytes) -> None:
        assert proto == 6
        self.out.append((self.now, dst, parse_tcp(src, dst, payload)))

    # -- driving ------------------------------------------------------------------

    def feed(self, flags: str, seq: int, ack: int = 0, win: int = 65535, data: bytes = b"",
             src_port: int = PEER_PORT, dst_port: int = US_PORT, **opts) -> None:
        raw = build_tcp(PEER, US, src_port, dst_port, seq, ack, flag_bits(flags), win, data,
                        **opts)
        self.layer.receive(PEER, US, raw, self.now)

    def feed_raw(self, raw: bytes, src: int = PEER, dst: int = US) -> None:
        self.layer.receive(src, dst, raw, self.now)

    def run_until(self, t: float) -> None:
        """Advance the clock to ``t``, firing every timer due on the way, at its time."""
        while True:
            d = self.layer.next_deadline()
            if d is None or d > t:
                break
            self.now = max(self.now, d)
            self.layer.on_timer(self.now)
        self.now = t

    def advance(self, dt: float) -> None:
        self.run_until(self.now + dt)

    # -- checking ----------------------------------------------------------------------

    def sent(self) -> list[str]:
        out = [str(seg) for _src, _dst, seg in self.out]
        self.out.clear()
        return out

    def sent_at(self) -> list[tuple[float, str]]:
        """(time sent, tcpdump line) for each segment since the last check."""
        out = [(round(t, 9), str(seg)) for t, _dst, seg in self.out]
        self.out.clear()
        return out

    def sent_segments(self) -> list:
        segs = [seg for _src, _dst, seg in self.out]
        self.out.clear()
        return segs

    def expect(self, *lines: str) -> None:
        got = self.sent()
        assert got == list(lines), "\n got: " + "\n      ".join(got or ["(nothing)"])

    def expect_nothing(self) -> None:
        self.expect()

    def states(self, conn_name: str | None = None) -> list[tuple[str, str]]:
        return [(e["from"], e["to"]) for e in self.events
                if e["event"] == "state" and (conn_name is None or e["conn"] == conn_name)]

    def drops(self) -> dict[str, int]:
        return self.trace.drops()

    # -- putting a connection in a state ------------------------------------------------

    def open_active(self, peer_mss: int | None = 1460, peer_win: int = 65535):
        """CLOSED -> SYN_SENT -> ESTABLISHED; the stack connected to the peer."""
        self.conn = self.layer.connect(US, (PEER, PEER_PORT), self.now, local_port=US_PORT)
        w = min(self.config.rcvbuf, 65535)
        self.expect(f"Flags [S], seq {self.iss}, win {w}, "
                    f"options [{syn_options(self.config, self.now)}], length 0")
        self.feed("S.", IRS, self.iss + 1, win=peer_win, mss=peer_mss)
        self.expect(f"Flags [.], seq {self.iss + 1}, ack {IRS + 1}, win {w}, length 0")
        assert self.conn.state == "ESTABLISHED"
        return self.conn

    def open_passive(self, peer_mss: int | None = 1460, peer_win: int = 65535, backlog: int = 5):
        """LISTEN -> SYN_RECEIVED -> ESTABLISHED; the peer connected to the stack."""
        self.listener = self.layer.listen((0, US_PORT), backlog, self.now)
        self.feed("S", IRS, win=peer_win, mss=peer_mss)
        w = min(self.config.rcvbuf, 65535)
        self.expect(f"Flags [S.], seq {self.iss}, ack {IRS + 1}, win {w}, "
                    "options [mss 1460], length 0")
        self.feed(".", IRS + 1, self.iss + 1, win=peer_win)
        self.expect_nothing()
        self.conn = self.listener.accept()
        assert self.conn is not None and self.conn.state == "ESTABLISHED"
        return self.conn

    # -- state builders: public API only, each asserts the state it reached ---------

    def _reached(self, state: str):
        """Forget what was sent on the way; check ``state`` through the public view."""
        self.sent()
        assert self.conn.state == state, f"{self.conn.state} != {state}"
        assert self.conn.status()["state"] == state
        return self.conn

    def syn_sent(self):
        """CLOSED -> SYN_SENT: the stack sent its SYN to the peer."""
        self.conn = self.layer.connect(US, (PEER, PEER_PORT), self.now, local_port=US_PORT)
        return self._reached("SYN_SENT")

    def syn_received(self):
        """SYN_SENT -> SYN_RECEIVED by simultaneous open: the peer's bare SYN crossed ours."""
        self.syn_sent()
        self.feed("S", IRS)
        return self._reached("SYN_RECEIVED")

    def established(self, passive: bool = False, **kw):
        """ESTABLISHED by an active (``open_active``) or passive (``open_passive``) open."""
        (self.open_passive if passive else self.open_active)(**kw)
        return self._reached("ESTABLISHED")

    def fin_wait_1(self):
        """ESTABLISHED -> FIN_WAIT_1: the application closed; our FIN is unacknowledged."""
        self.established()
        self.conn.close(self.now)
        return self._reached("FIN_WAIT_1")

    def fin_wait_2(self):
        """FIN_WAIT_1 -> FIN_WAIT_2: the peer acknowledged our FIN."""
        self.fin_wait_1()
        self.feed(".", IRS + 1, self.iss + 2)
        return self._reached("FIN_WAIT_2")

    def close_wait(self):
        """ESTABLISHED -> CLOSE_WAIT: the peer's FIN arrived first."""
        self.established()
        self.feed("F.", IRS + 1, self.iss + 1)
        return self._reached("CLOSE_WAIT")

    def closing(self):
        """FIN_WAIT_1 -> CLOSING: the FINs crossed (the peer's does not ack ours)."""
        self.fin_wait_1()
        self.feed("F.", IRS + 1, self.iss + 1)
        return self._reached("CLOSING")

    def last_ack(self):
        """CLOSE_WAIT -> LAST_ACK: the application closed after the peer's FIN."""
        self.close_wait()
        self.conn.close(self.now)
        return self._reached("LAST_ACK")

    def time_wait(self):
        """FIN_WAIT_1 -> TIME_WAIT: the peer's FIN also acknowledges ours (the stack takes
        the ACK first, so the trace passes through FIN_WAIT_2)."""
        self.fin_wait_1()
        self.feed("F.", IRS + 1, self.iss + 2)
        return self._reached("TIME_WAIT")

    def to(self, state: str):
        """The builder for ``state`` (a name such as ``"FIN_WAIT_1"``), run."""
        return getattr(self, state.lower())()


def established(config: TcpConfig | None = None, **kw) -> Conversation:
    """A conversation whose connection was opened actively (``open_active(**kw)``)."""
    c = Conversation(config)
    c.established(**kw)
    return c


def to_state(state: str, config: TcpConfig | None = None) -> Conversation:
    """A conversation whose connection (the stack's ISS 1000, the peer's IRS 5000)
    is in ``state``, reached by the builder of that name; nothing left unsent."""
    c = Conversation(config)
    c.to(state)
    return c


class LossyNet:
    """Two TcpLayers joined through a seeded queue that loses, duplicates,
    reorders (by random delay) and corrupts segments, on a manual clock.

    ``keyed``: whether a segment is lost depends only on the seed, on what
    it is (sender, sequence number and length, or for a pure ACK the
    acknowledgment number) and on how many times the same segment went
    before, not on the order of everything sent. Two runs with the same seed
    then lose the same data, so their retransmissions compare fairly.
    """

    A = 0xC0000201   # 192.0.2.1
    B = 0xC0000202   # 192.0.2.2

    def __init__(self, seed: int, loss=0.0, dup=0.0, corrupt=0.0, delay=0.001, jitter=0.0,
                 config: TcpConfig | None = None, trace_events: bool = True,
                 keyed: bool = False):
        self.seed = seed
        self.keyed = keyed
        self._seen: dict[tuple, int] = {}
        self.rng = random.Random(seed)
        self.loss, self.dup, self.corrupt = loss, dup, corrupt
        self.delay, self.jitter = delay, jitter
        self.now = 0.0
        self.events: list[dict] = []
        self.queue: list = []
        self._n = 0
        self.stats = {"sent": 0, "lost": 0, "dup": 0, "corrupt": 0}
        self.traces = {}
        layers = {}
        for name, addr in (("a", self.A), ("b", self.B)):
            tr = Trace(clock=lambda: self.now)
            if trace_events:
                tr.subscribe(lambda e, n=name: self.events.append(dict(e, node=n)))
            self.traces[name] = tr
            layers[name] = TcpLayer(self._sender(addr), tr, config or TcpConfig(),
                                    rng=random.Random(seed * 7 + len(layers)))
        self.a, self.b = layers["a"], layers["b"]
        self._by_addr = {self.A: self.a, self.B: self.b}

    def _sender(self, me: int):
        def send(src, dst, proto, payload):
            assert src == me
            self.stats["sent"] += 1
            rng = self.rng
            copies = 1
            if self.keyed:
                seg = parse_tcp(src, dst, payload)
                n = len(seg.payload)
                key = (src, seg.seq, n, seg.flags & (SYN | FIN)) if n or seg.flags & (SYN | FIN) \
                    else (src, seg.ack)
                nth = self._seen[key] = self._seen.get(key, 0) + 1
                lost = random.Random(hash((self.seed, *key, nth))).random() < self.loss
            else:
                lost = rng.random() < self.loss
            if lost:
                self.stats["lost"] += 1
                return
            if rng.random() < self.dup:
                self.stats["dup"] += 1
                copies = 2
            for _ in range(copies):
                data = bytes(payload)
                if rng.random() < self.corrupt:
                    self.stats["corrupt"] += 1
                    b = bytearray(data)
                    i = rng.randrange(len(b))
                    b[i] ^= 1 << rng.randrange(8)
                    data = bytes(b)
                at = self.now + self.delay + rng.random() * self.jitter
                self._n += 1
                heapq.heappush(self.queue, (at, self._n, src, dst, data))
        return send

    def next_time(self) -> float | None:
        times = [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        if self.queue:
            times.append(self.queue[0][0])
        return min(times) if times else None

    def step(self) -> bool:
        """Run the next event (a delivery or a timer); False when nothing is left."""
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        while self.queue and self.queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self.queue)
            self._by_addr[dst].receive(src, dst, data, self.now)
        for layer in (self.a, self.b):
            d = layer.next_deadline()
            if d is not None and d <= self.now:
                layer.on_timer(self.now)
        return True
