"""Fuzz the whole receive path: valid frames of every kind, then mutated.

Hypothesis builds valid frames (ARP requests and replies, ICMP echo, UDP,
IPv4 fragments, TCP segments, ICMP errors quoting our own datagrams) and
mutates them: bit flips, truncation, extension, field edits, optionally
followed by recomputing the checksums so the mutation reaches the layer
behind them. Each example feeds a few such frames to a fresh stack with
small limits, moving a manual clock between frames (one test instead keeps
one stack for all its examples, so that state piles up), and checks:

* ``receive_frame`` never raises and ``eth.drop.internal_error`` stays 0
  (the runtime turns any exception into that counter: each one is a bug);
* bounded structures stay bounded (reassembly datagrams and bytes, ARP
  pending hosts and queues, the neighbour cache), and reassembly's byte
  count matches what its datagrams hold;
* every frame the stack sends is well formed: Ethernet from our MAC, ARP
  about us, IPv4 from us with a header checksum and a transport checksum
  that the reference implementation (tests.helpers.checksum) accepts;
* once time has run out, no reassembly state is left.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.link.memory import CaptureLink
from stack.net.arp import ArpConfig
from stack.net.reassembly import ReassemblyConfig
from stack.net.udp import UdpEndpoint
from stack.runtime import Stack
from tests.helpers.checksum import ref_checksum, ref_pseudo
from tests.helpers.frames import (BCAST, FAR, GATEWAY, GW_MAC, OTHER, OTHER_MAC, PEER, PEER_MAC,
                                  SUBNET_BCAST, US, US_MAC, arp, eth, fragment, icmp, ipv4, udp)
from tests.helpers.frames import tcp as tcp_segment

ARP_LIMITS = ArpConfig(max_pending_per_host=4, max_pending_hosts=4, max_entries=8)
REASSEMBLY_LIMITS = ReassemblyConfig(max_datagrams=4, max_bytes=16384, max_fragments=8)

SETTINGS = settings(max_examples=2000, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ valid frames

# Each frame draws its shape (kind, addresses, payload) from Hypothesis and its
# minor fields (ids, TTL, MACs, options...) from one seeded Random: every draw
# costs Hypothesis far more than running the stack, and these fields matter less.
# Strategies are built once, here; building them inside a draw is slow too.
u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
seeds = st.integers(0, 2**32)
payloads = st.binary(max_size=1400)
sources = st.one_of(st.sampled_from([PEER, OTHER, FAR, GATEWAY]), u32)
our_dst = st.sampled_from([(US, US_MAC), (US, BCAST), (SUBNET_BCAST, BCAST), (0xFFFFFFFF, BCAST)])
arp_ops = st.sampled_from([1, 2])
arp_senders = st.one_of(st.sampled_from([PEER, OTHER, GATEWAY, 0, US]), u32)
arp_targets = st.sampled_from([US, PEER, OTHER])
udp_dports = st.sampled_from([7, 8, 9, 9999])
MACS = [PEER_MAC, OTHER_MAC, GW_MAC]
IP_OPTIONS = [b"", b"", b"", b"\x01\x01\x01\x00", bytes.fromhex("94040000"),
              bytes.fromhex("94040000 01010100"), bytes.fromhex("07070400000000 00")]


def ident_from(rng: random.Random) -> int:
    # Few distinct ids, so that fragments of different frames meet.
    return rng.choice([1, 2, 0xFFFF]) if rng.random() < 0.5 else rng.getrandbits(16)


@st.composite
def arp_frames(draw) -> list[bytes]:
    op, sip, tip = draw(arp_ops), draw(arp_senders), draw(arp_targets)
    rng = random.Random(draw(seeds))
    tmac = US_MAC if op == 2 else b"\x00" * 6
    return [arp(op, rng.choice(MACS), sip, tmac, tip, rng.choice([BCAST, US_MAC]))]


@st.composite
def echo_frames(draw) -> list[bytes]:
    src, (dst, mac), data = draw(sources), draw(our_dst), draw(payloads)
    rng = random.Random(draw(seeds))
    msg = icmp(8, 0, rng.randbytes(4), data)
    return [eth(ipv4(src, dst, 1, msg, ident=ident_from(rng), tos=rng.randrange(256),
                     ttl=rng.randint(1, 255), options=rng.choice(IP_OPTIONS)),
                dst=mac, src=rng.choice(MACS))]


@st.composite
def udp_frames(draw) -> list[bytes]:
    src, (dst, mac), dport, data = draw(sources), draw(our_dst), draw(udp_dports), draw(payloads)
    rng = random.Random(draw(seeds))
    datagram = udp(src, dst, rng.choice([9, 53, 5555]), dport, data,
                   csum=0 if rng.random() < 0.3 else None)
    return [eth(ipv4(src, dst, 17, datagram, ident=ident_from(rng), options=rng.choice(IP_OPTIONS)),
                dst=mac, src=rng.choice(MACS))]


TCP_OPTIONS = [
    bytes.fromhex("020405b4"),                                   # MSS 1460
    bytes.fromhex("0402"),                                       # SACK permitted
    bytes.fromhex("080a0000000100000000"),                       # timestamps
    bytes.fromhex("01030307"),                                   # NOP, window scale 7
    bytes.fromhex("0101050a0000000100000010"),                   # SACK one block
]
tcp_flags = st.sampled_from([0x02, 0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x3F, 0x00])
tcp_dports = st.sampled_from([80, 81])
tcp_payloads = st.binary(max_size=200)


@st.composite
def tcp_frames(draw) -> list[bytes]:
    flags, dport, data = draw(tcp_flags), draw(tcp_dports), draw(tcp_payloads)
    rng = random.Random(draw(seeds))
    src = rng.choice([PEER, OTHER, FAR])
    options = b"".join(rng.sample(TCP_OPTIONS, rng.randint(0, 4)))[:40]
    seq = rng.choice([0, 1, 0xFFFFFFFF]) if rng.random() < 0.3 else rng.getrandbits(32)
    seg = tcp_segment(src, US, rng.choice([40000, 40001]), dport, seq, rng.getrandbits(32), flags,
                      options, data)
    return [eth(ipv4(src, US, 6, seg, ident=ident_from(rng)), src=rng.choice(MACS))]


fragment_kinds = st.sampled_from(["echo", "udp", "tcp", "raw"])
fragment_sizes = st.integers(16, 3000)
fragment_counts = st.integers(2, 12)


@st.composite
def fragment_frames(draw) -> list[bytes]:
    kind, size, count = draw(fragment_kinds), draw(fragment_sizes), draw(fragment_counts)
    rng = random.Random(draw(seeds))
    src = rng.choice([PEER, OTHER, FAR])
    data = rng.randbytes(size)
    if kind == "echo":
        proto, payload = 1, icmp(8, 0, b"\x00\x01\x00\x01", data)
    elif kind == "udp":
        proto, payload = 17, udp(src, US, 5555, rng.choice([7, 9999]), data)
    elif kind == "tcp":
        proto, payload = 6, tcp_segment(src, US, 40000, 80, 1, 0, 0x02, b"", data)
    else:
        proto, payload = rng.choice([99, 253]), data
    piece = max(8, (len(payload) // count) & ~7)
    frags = fragment(src, US, proto, payload, ident_from(rng), piece)
    order = frags[:]
    if rng.random() < 0.7:
        rng.shuffle(order)
    keep = len(order) if rng.random() < 0.5 else rng.randint(1, len(order))   # some lost
    extra = [rng.choice(frags) for _ in range(rng.choice([0, 0, 1, 3]))]         # duplicates
    mac = rng.choice(MACS)
    return [eth(f, src=mac) for f in order[:keep] + extra]


error_protos = st.sampled_from([17, 6, 1, 99])
error_types = st.sampled_from([3, 4, 5, 11, 12])


@st.composite
def icmp_error_frames(draw) -> list[bytes]:
    """Errors about datagrams we sent (UDP to the connected endpoint, TCP), or about anything."""
    proto, type_ = draw(error_protos), draw(error_types)
    rng = random.Random(draw(seeds))
    if proto == 17:
        inner = udp(US, PEER, rng.choice([7, 8]), rng.choice([9, 10]), b"question")
    elif proto == 6:
        inner = tcp_segment(US, PEER, 80, 40000, 5, 6, 0x12, b"", b"")
    elif proto == 1:
        inner = icmp(8, 0, b"\x00\x01\x00\x01", b"echo")
    else:
        inner = b"12345678"
    quoted = ipv4(rng.choice([US, PEER]), PEER, proto, inner)
    quoted = quoted[:rng.choice([len(quoted), len(quoted), 28, rng.randrange(len(quoted) + 1)])]
    msg = icmp(type_, rng.randrange(16), rng.randbytes(4), quoted)
    return [eth(ipv4(rng.choice([PEER, GATEWAY]), US, 1, msg))]


# ------------------------------------------------------------------ mutations


def refix(frame: bytes) -> bytes:
    """Recompute IPv4 and transport checksums where the mutated layout still allows."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return frame
    b = bytearray(frame)
    hlen = (b[14] & 0x0F) * 4
    if hlen < 20 or 14 + hlen > len(b):
        return frame
    b[24:26] = b"\x00\x00"
    b[24:26] = ref_checksum(bytes(b[14:14 + hlen])).to_bytes(2, "big")
    total = int.from_bytes(b[16:18], "big")
    if int.from_bytes(b[20:22], "big") & 0x3FFF or total < hlen or 14 + total > len(b):
        return bytes(b)
    start, end = 14 + hlen, 14 + total
    proto, src, dst = b[23], int.from_bytes(b[26:30], "big"), int.from_bytes(b[30:34], "big")
    seg = bytearray(b[start:end])
    if proto == 1 and len(seg) >= 4:
        seg[2:4] = b"\x00\x00"
        seg[2:4] = ref_checksum(bytes(seg)).to_bytes(2, "big")
    elif proto == 17 and len(seg) >= 8 and seg[6:8] != b"\x00\x00":
        ulen = int.from_bytes(seg[4:6], "big")
        if 8 <= ulen <= len(seg):
            seg[6:8] = b"\x00\x00"
            csum = ref_checksum(ref_pseudo(src, dst, 17, ulen) + bytes(seg[:ulen])) or 0xFFFF
            seg[6:8] = csum.to_bytes(2, "big")
    elif proto == 6 and len(seg) >= 20:
        seg[16:18] = b"\x00\x00"
        seg[16:18] = ref_checksum(ref_pseudo(src, dst, 6, len(seg)) + bytes(seg)).to_bytes(2, "big")
    b[start:end] = seg
    return bytes(b)


# Offsets (in the frame) of the fields worth editing, with their widths.
FIELDS = [(12, 2), (14, 1), (15, 1), (16, 2), (18, 2), (20, 2), (22, 1), (23, 1), (26, 4), (30, 4),
          (34, 1), (35, 1), (36, 2), (38, 2), (40, 2), (42, 2), (44, 4), (46, 1), (47, 1)]
INTERESTING = [0, 1, 7, 8, 0x14, 0x45, 0x4F, 0x7F, 0x80, 0xFF, 0x1FFF, 0x2000, 0x3FFF, 0x4000,
               0x7FFF, 0x8000, 0xFFFF, US, PEER, SUBNET_BCAST, 0xFFFFFFFF]


mutations = st.sampled_from(["none", "flip", "truncate", "extend", "byte", "field", "field"])


def mutate(draw, frame: bytes) -> bytes:
    """One mutation, its details from a seed: every draw costs Hypothesis more than the test."""
    how = draw(mutations)
    if how == "none":
        return frame
    rng = random.Random(draw(seeds))
    b = bytearray(frame)
    if how == "flip" and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del b[rng.randrange(max(1, len(b))):]
    elif how == "extend":
        b += rng.randbytes(rng.randint(1, 64))
    elif how == "byte" and b:
        b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
    elif how == "field":
        offset, width = rng.choice(FIELDS)
        if offset + width <= len(b):
            value = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.getrandbits(32)
            b[offset:offset + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "big")
    out = bytes(b)
    if rng.random() < 0.5:
        out = refix(out)
    return out


mutation_plans = st.sampled_from(["clean", "one", "one", "each", "each"])


@st.composite
def mutated(draw, kind) -> list[bytes]:
    """Frames of one kind: all clean, one of them mutated, or each one maybe mutated.
    (Mutating every fragment would rarely let a datagram complete.)"""
    frames = draw(kind)
    plan = draw(mutation_plans)
    if plan == "clean":
        return frames
    if plan == "one":
        i = draw(u16) % len(frames)
        return frames[:i] + [mutate(draw, frames[i])] + frames[i + 1:]
    return [mutate(draw, f) for f in frames]


clock_steps = st.sampled_from([0.0, 0.0, 0.001, 0.5, 1.0, 31.0])


def stream(kind, max_groups: int = 4):
    """Groups of frames, each followed by how far the clock moves."""
    return st.lists(st.tuples(mutated(kind), clock_steps), min_size=1, max_size=max_groups)


# ------------------------------------------------------------------ the stack and the checks


class Fuzzed:
    """One stack on a CaptureLink. ``gro``: frames go in as one batch through
    the link and ``Stack.step``, so software GRO sees them together;
    otherwise each goes straight to ``receive_frame``."""

    def __init__(self, gro: bool = False) -> None:
        self.t = 100.0
        self.gro = gro
        self.link = CaptureLink()
        self.net = Stack(self.link, address="192.0.2.2/24", gateway="192.0.2.254", thread=False,
                         clock=lambda: self.t, seed=0, arp_config=ARP_LIMITS, gro=gro)
        self.net.ip.reassembler.config = REASSEMBLY_LIMITS
        self.errors: list[dict] = []
        self.net.trace.subscribe(self._event)
        udp_layer = self.net.udp
        self.ep7 = UdpEndpoint(rcvbuf=4096)
        udp_layer.bind(self.ep7, 0, 7)
        self.ep8 = UdpEndpoint()
        udp_layer.bind(self.ep8, 0, 8)
        self.ep8.remote = (PEER, 9)
        if self.net.tcp is not None:
            self.net.tcp.listen((0, 80), 4, self.t)
        # The peer is known, so answers to it leave at once; others wait for ARP.
        self.net.receive_frame(arp(1, PEER_MAC, PEER, b"\x00" * 6, US, BCAST), self.t)
        self.check()

    def _event(self, ev: dict) -> None:
        if ev.get("reason") == "internal_error":
            self.errors.append(ev)

    def feed(self, frames: list[bytes], dt: float) -> None:
        if self.gro:
            for frame in frames:
                self.link.inject(frame)
            self.net.step(self.t)
            self.check()
        else:
            for frame in frames:
                self.net.receive_frame(frame, self.t)
                self.check()
        self.t += dt
        self.net.step(self.t)
        self.check()

    def finish(self) -> None:
        """Let every timer run out: no reassembly state may be left."""
        for _ in range(8):
            self.t += 40.0
            self.net.step(self.t)
            self.check()
        r = self.net.ip.reassembler
        assert r.datagrams == {} and r.bytes_held == 0
        self.net.close()

    def check(self) -> None:
        net = self.net
        assert net.trace.counters["eth.drop.internal_error"] == 0, self.errors
        assert not self.errors, self.errors
        r = net.ip.reassembler
        assert len(r.datagrams) <= REASSEMBLY_LIMITS.max_datagrams
        assert 0 <= r.bytes_held <= REASSEMBLY_LIMITS.max_bytes
        assert r.bytes_held == sum(d.held for d in r.datagrams.values())
        # A reassembly buffer reaches its highest stored offset: that is the memory used.
        extent = sum(max((end for _, end in d.buf.ranges()), default=0) for d in r.datagrams.values())
        assert extent <= REASSEMBLY_LIMITS.max_bytes
        eth_ = net.eth
        assert len(eth_.pending) <= ARP_LIMITS.max_pending_hosts
        assert all(len(p.packets) <= ARP_LIMITS.max_pending_per_host for p in eth_.pending.values())
        assert len(eth_.cache) <= ARP_LIMITS.max_entries
        assert self.ep7.queued <= self.ep7.rcvbuf + 65535
        for frame in self.link.take_sent():
            check_sent(frame)


def check_sent(frame: bytes) -> None:
    """What the stack sends must be well formed, by the reference's judgement."""
    assert frame[6:12] == US_MAC, frame.hex()
    ethertype = frame[12:14]
    if ethertype == b"\x08\x06":
        assert len(frame) == 42
        assert frame[14:22] in (bytes.fromhex("0001080006040001"), bytes.fromhex("0001080006040002"))
        assert frame[22:28] == US_MAC and frame[28:32] == US.to_bytes(4, "big")
        return
    assert ethertype == b"\x08\x00", frame.hex()
    p = frame[14:]
    hlen = (p[0] & 0x0F) * 4  # (answers carry a record route or timestamp back)
    assert p[0] >> 4 == 4 and 20 <= hlen <= 60
    assert ref_checksum(p[:hlen]) == 0
    assert int.from_bytes(p[2:4], "big") == len(p) <= 1500
    assert p[12:16] == US.to_bytes(4, "big")
    assert p[8] > 0
    frag = int.from_bytes(p[6:8], "big")
    assert not frag & 0x8000
    if frag & 0x3FFF:
        return
    proto, dst, seg = p[9], int.from_bytes(p[16:20], "big"), p[hlen:]
    if proto == 1:
        assert ref_checksum(seg) == 0
    elif proto == 17:
        assert int.from_bytes(seg[4:6], "big") == len(seg)
        assert ref_checksum(ref_pseudo(US, dst, 17, len(seg)) + seg) == 0
    elif proto == 6:
        assert ref_checksum(ref_pseudo(US, dst, 6, len(seg)) + seg) == 0
    else:
        raise AssertionError(f"sent protocol {proto}")


def run(groups, gro: bool = False) -> None:
    f = Fuzzed(gro)
    for frames, dt in groups:
        f.feed(frames, dt)
    f.finish()


# ------------------------------------------------------------------ the fuzz tests


@SETTINGS
@given(stream(arp_frames()))
def test_fuzz_arp(groups):
    run(groups)


@SETTINGS
@given(stream(echo_frames()))
def test_fuzz_icmp_echo(groups):
    run(groups)


@SETTINGS
@given(stream(udp_frames()))
def test_fuzz_udp(groups):
    run(groups)


@SETTINGS
@given(stream(fragment_frames()))
def test_fuzz_fragments(groups):
    run(groups)


@SETTINGS
@given(stream(tcp_frames()))
def test_fuzz_tcp(groups):
    run(groups)


@SETTINGS
@given(stream(icmp_error_frames()))
def test_fuzz_icmp_errors(groups):
    run(groups)


@st.composite
def tcp_runs(draw) -> list[bytes]:
    """The next segments of one flow, as GRO merges them (then maybe mutated)."""
    rng = random.Random(draw(seeds))
    n, size = rng.randint(2, 12), rng.randint(1, 300)
    seq, ack = rng.getrandbits(32), rng.getrandbits(32)
    src, dport = rng.choice([PEER, OTHER]), rng.choice([80, 81])
    options = rng.choice([b"", bytes.fromhex("0101080a0000000100000000")])
    frames = []
    for i in range(n):
        flags = 0x18 if i == n - 1 and rng.random() < 0.5 else 0x10
        seg = tcp_segment(src, US, 40000, dport, (seq + i * size) & 0xFFFFFFFF, ack, flags,
                          options, rng.randbytes(size))
        frames.append(eth(ipv4(src, US, 6, seg, ident=ident_from(rng)), src=PEER_MAC))
    return frames


@SETTINGS
@given(stream(tcp_runs()))
def test_fuzz_tcp_runs_through_gro(groups):
    run(groups, gro=True)


def test_a_clean_run_is_merged_by_gro():
    f = Fuzzed(gro=True)
    seg = [tcp_segment(PEER, US, 40000, 80, 1000 + i * 100, 7, 0x10, b"", bytes(100))
           for i in range(5)]
    f.feed([eth(ipv4(PEER, US, 6, s, ident=i), src=PEER_MAC) for i, s in enumerate(seg)], 0.0)
    assert f.net.stats()["tcp.gro_merged"] == 4
    f.finish()


noise = st.tuples(st.sampled_from([b"", US_MAC + PEER_MAC + b"\x08\x00", US_MAC + PEER_MAC + b"\x08\x06"]),
                  st.binary(max_size=128)).map(lambda t: [t[0] + t[1]])
any_frames = st.one_of(arp_frames(), echo_frames(), udp_frames(), fragment_frames(), tcp_frames(),
                       icmp_error_frames(), noise)


@pytest.fixture(scope="module")
def long_lived():
    f = Fuzzed()
    yield f
    f.finish()


@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(groups=stream(any_frames))
def test_fuzz_one_stack_all_kinds(long_lived, groups):
    # One stack for every example: state piles up over thousands of frames of
    # every kind, and the bounds must hold all along (checked after each frame;
    # at the end of the module every timer runs out and nothing may be left).
    for frames, dt in groups:
        long_lived.feed(frames, dt)


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(groups=stream(st.one_of(any_frames, tcp_runs())))
def test_fuzz_all_kinds_in_batches_through_gro(groups):
    run(groups, gro=True)


def test_fuzzer_reaches_every_layer():
    # The strategies are only useful if valid frames get through: feed one of
    # each kind unmutated and see each layer answer.
    f = Fuzzed()
    f.net.receive_frame(arp(1, OTHER_MAC, OTHER, b"\x00" * 6, US, BCAST), f.t)
    f.net.receive_frame(eth(ipv4(PEER, US, 1, icmp(8, 0, b"\x00\x01\x00\x01", b"hi"))), f.t)
    f.net.receive_frame(eth(ipv4(PEER, US, 17, udp(PEER, US, 9, 7, b"hello"))), f.t)
    f.net.receive_frame(eth(ipv4(PEER, US, 17, udp(PEER, US, 9, 9999, b"closed"))), f.t)
    for frag in fragment(PEER, US, 1, icmp(8, 0, b"\x00\x01\x00\x02", bytes(3000)), 77, 1480):
        f.net.receive_frame(eth(frag), f.t)
    f.net.receive_frame(eth(ipv4(PEER, US, 6, tcp_segment(PEER, US, 40000, 80, 1, 0, 0x02,
                                                          TCP_OPTIONS[0], b""))), f.t)
    c = f.net.trace.counters
    assert c["arp.replies_out"] == 2
    assert c["icmp.out.type0"] == 2 and c["ip.reassembled"] == 1
    assert f.ep7.pop() == (b"hello", (PEER, 9))
    assert c["icmp.out.type3"] == 1
    sent = f.link.take_sent()
    for frame in sent:
        check_sent(frame)
    # A SYN-ACK (flags 0x12) from port 80 to the peer.
    assert any(fr[12:14] == b"\x08\x00" and fr[23] == 6 and fr[14 + 20 + 13] == 0x12 for fr in sent)
    f.finish()
