"""Microbenchmarks of the per-segment path: TCP and IPv4 parse/build, and one
full-sized data segment through the whole receive path of a stack.

The receive-path case runs a stack with no thread on a manual clock over a
``CaptureLink``, with one connection established by a real handshake. Each
round feeds one prebuilt frame (Ethernet + IPv4 + TCP with timestamps, 1448
bytes of data, the next sequence number) to ``net.receive_frame(frame, now)``;
what is timed is everything the stack does for it: Ethernet and IPv4 checks,
TCP checksum and parse, demultiplexing, the connection's receive processing
and, every second segment, the ACK it builds and sends. Between rounds (not
timed) the test reads the received bytes, as an application would, so the
window stays open, and builds the next frame.

Run: ``python -m pytest bench/test_bench_path.py --benchmark-only -q``.
At 1500-byte frames, 1 Gbit/s is about 83,000 segments/s, 12 µs per segment.
"""

from __future__ import annotations

import random

from stack.link.memory import CaptureLink
from stack.runtime import Stack
from stack.tcp.states import ESTABLISHED
from stack.wire.ipv4 import PROTO_TCP, Ipv4Header, build_ipv4, parse_ipv4
from stack.wire.tcp import ACK, PSH, SYN, build_tcp, parse_tcp

US, PEER = 0xC0000202, 0xC0000201          # 192.0.2.2 (the stack), 192.0.2.1
US_MAC = bytes.fromhex("0253c0000202")
PEER_MAC = bytes.fromhex("525400123456")
SPORT, DPORT = 40000, 80
MSS_DATA = 1448                              # 1500 - 20 (IP) - 20 (TCP) - 12 (timestamps)
PAYLOAD = random.Random(7).randbytes(MSS_DATA)
ROUNDS = 5000


def test_parse_tcp(benchmark):
    benchmark.group = "tcp wire"
    seg = build_tcp(PEER, US, SPORT, DPORT, 1000, 2000, ACK | PSH, 502, PAYLOAD,
                    timestamps=(123456, 654321))
    view = memoryview(seg)
    parsed = benchmark(parse_tcp, PEER, US, view)
    assert parsed.seq == 1000 and len(parsed.payload) == MSS_DATA


def test_build_tcp_data(benchmark):
    benchmark.group = "tcp wire"
    seg = benchmark(build_tcp, US, PEER, DPORT, SPORT, 1000, 2000, ACK | PSH, 502, PAYLOAD,
                    timestamps=(123456, 654321))
    assert len(seg) == 32 + MSS_DATA


def test_build_tcp_ack(benchmark):
    benchmark.group = "tcp wire"
    seg = benchmark(build_tcp, US, PEER, DPORT, SPORT, 1000, 2000, ACK, 502,
                    timestamps=(123456, 654321))
    assert len(seg) == 32


def test_parse_ipv4(benchmark):
    benchmark.group = "ipv4 wire"
    packet = build_ipv4(Ipv4Header(PEER, US, PROTO_TCP, ident=1, df=True), PAYLOAD + bytes(32))
    header, payload = benchmark(parse_ipv4, memoryview(packet))
    assert header.src == PEER and len(payload) == MSS_DATA + 32


def test_build_ipv4(benchmark):
    benchmark.group = "ipv4 wire"
    header = Ipv4Header(US, PEER, PROTO_TCP, ident=1, df=True)
    packet = benchmark(build_ipv4, header, PAYLOAD + bytes(32))
    assert len(packet) == 1500


def _frame(seg: bytes, ident: int) -> bytes:
    ip = build_ipv4(Ipv4Header(PEER, US, PROTO_TCP, ident=ident, df=True), seg)
    return US_MAC + PEER_MAC + b"\x08\x00" + ip


class Receiver:
    """A stack on a manual clock with one established passive connection."""

    def __init__(self) -> None:
        self.t = 1.0
        self.link = CaptureLink()
        self.net = Stack(self.link, address="192.0.2.2/24", thread=False,
                         clock=lambda: self.t, seed=1)
        # The peer announces itself, so replies need no ARP round.
        self.net.receive_frame(b"\xff" * 6 + PEER_MAC + b"\x08\x06"
                               + bytes.fromhex("0001080006040001") + PEER_MAC
                               + PEER.to_bytes(4, "big") + bytes(6) + US.to_bytes(4, "big"),
                               self.t)
        listener = self.net.tcp.listen((US, DPORT), 8, self.t)
        self.link.take_sent()
        self.ident = 0
        self.tsval = 1000
        self.seq = 0x10000000
        syn = build_tcp(PEER, US, SPORT, DPORT, self.seq, 0, SYN, 64240, mss=1460, wscale=7,
                        sack_perm=True, timestamps=(self.tsval, 0))
        self.feed(syn)
        synack = [f for f in self.link.take_sent() if f[12:14] == b"\x08\x00"][-1]
        header, tcp = parse_ipv4(memoryview(synack)[14:])
        reply = parse_tcp(header.src, header.dst, tcp)
        assert reply.flags == SYN | ACK, reply
        self.seq += 1
        self.ack = (reply.seq + 1) & 0xFFFFFFFF
        self.peer_ts = reply.timestamps[0] if reply.timestamps else 0
        self.feed(build_tcp(PEER, US, SPORT, DPORT, self.seq, self.ack, ACK, 502,
                            timestamps=(self.tsval, self.peer_ts)))
        self.conn = listener.accept()
        assert self.conn is not None and self.conn.state == ESTABLISHED
        self.received = 0
        self.built = 0

    def feed(self, seg: bytes) -> None:
        self.ident = (self.ident + 1) & 0xFFFF
        self.net.receive_frame(_frame(seg, self.ident), self.t)

    def next_frame(self) -> tuple[tuple, dict]:
        """pytest-benchmark setup: drain what arrived, then build the next segment."""
        while True:
            data = self.conn.recv(1 << 20, self.t)
            if not data:
                break
            self.received += len(data)
        self.link.take_sent()
        self.t += 0.00001
        self.tsval += 1
        seg = build_tcp(PEER, US, SPORT, DPORT, self.seq, self.ack, ACK | PSH, 502, PAYLOAD,
                        timestamps=(self.tsval, self.peer_ts))
        self.seq = (self.seq + MSS_DATA) & 0xFFFFFFFF
        self.built += 1
        self.ident = (self.ident + 1) & 0xFFFF
        return (_frame(seg, self.ident), self.t), {}


def test_receive_data_segment(benchmark):
    """One 1448-byte data segment, in order, through net.receive_frame."""
    benchmark.group = "receive path"
    r = Receiver()
    benchmark.pedantic(r.net.receive_frame, setup=r.next_frame, rounds=ROUNDS,
                       warmup_rounds=100)
    r.next_frame()  # drains the last segment fed (and builds one never fed)
    assert r.received == (r.built - 1) * MSS_DATA > 0
    assert r.net.stats().get("eth.drop.internal_error", 0) == 0


class Sender(Receiver):
    """The same connection, sending: each round the application writes one
    full segment, which goes out at once; the peer's ACK for it is fed
    between rounds (not timed), so the windows stay open."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_bytes = 0
        self.acked = self.ack

    def next_send(self) -> tuple[tuple, dict]:
        for frame in self.link.take_sent():
            header, tcp = parse_ipv4(memoryview(frame)[14:])
            seg = parse_tcp(header.src, header.dst, tcp)
            self.sent_bytes += len(seg.payload)
            self.acked = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
            self.peer_ts = seg.timestamps[0] if seg.timestamps else self.peer_ts
        self.t += 0.00001
        self.tsval += 1
        self.feed(build_tcp(PEER, US, SPORT, DPORT, self.seq, self.acked, ACK, 4000,
                            timestamps=(self.tsval, self.peer_ts)))
        self.link.take_sent()
        return (PAYLOAD, self.t), {}


def test_send_data_segment(benchmark):
    """One 1448-byte write that leaves at once as one segment: conn.send
    through TCP output, IPv4 and Ethernet to the link."""
    benchmark.group = "send path"
    s = Sender()
    n = benchmark.pedantic(s.conn.send, setup=s.next_send, rounds=ROUNDS, warmup_rounds=100)
    assert n == MSS_DATA
    s.next_send()
    assert s.sent_bytes == (ROUNDS + 100) * MSS_DATA


class Lives:
    """Two stacks with no thread on a manual clock, joined by an in-memory
    link: each round is one connection's whole life, client and server both
    (SYN, SYN,ACK, ACK, a 100-byte request, a 1-byte answer, the server's
    close, the client's, every ACK), until the client's side is gone and the
    server's, which closed first, is in TIME_WAIT (as an HTTP/1.0 server's)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.a, self.b = Stack.pair(thread=False, clock=lambda: self.t, seed=1)
        self.listener = self.b.tcp.listen((0, DPORT), 128, self.t)
        self.port = 30000

    def pump(self) -> None:
        for _ in range(20):
            if not (self.a.step(self.t) + self.b.step(self.t)):
                return

    def life(self) -> None:
        self.port += 1
        client = self.a.tcp.connect(self.a.address, (self.b.address, DPORT), self.t,
                                    local_port=self.port)
        self.pump()
        server = self.listener.accept()
        client.send(b"q" * 100, self.t)
        self.pump()
        server.recv(1000, self.t)
        server.send(b"a", self.t)
        server.close(self.t)
        self.pump()
        client.recv(1000, self.t)
        client.close(self.t)
        self.pump()
        self.t += 0.001
        assert server.state == "TIME_WAIT" and client.state == "CLOSED", (server.state, client.state)


def test_connection_life(benchmark):
    """What one connection's life costs the two stacks together (the SYN to
    TIME_WAIT of ab's every request, without the sockets and the TAP)."""
    benchmark.group = "connection life"
    lives = Lives()
    benchmark.pedantic(lives.life, rounds=2000, warmup_rounds=50)
    assert lives.b.stats().get("eth.drop.internal_error", 0) == 0
