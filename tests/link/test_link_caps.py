"""Links declare what they can do; wrappers keep it; the stack builds on it.

No privileges: in-memory links only. The TAP side of the same promises is in
test_link_caps_tap.py.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import threading

import pytest

from stack.link import CaptureLink, ImpairLink, Link, LinkWrapper, MemoryLink, PcapLink
from stack.link.base import TSO_SEGMENT_MAX
from stack.native import checksum
from stack.runtime import Stack
from stack.wire.eth import ETHERTYPE_IPV4, build_eth
from stack.wire.ipv4 import PROTO_TCP, Ipv4Header, build_ipv4, ip2int
from stack.wire.tcp import ACK, build_tcp, parse_tcp

CAPS = ("mtu", "offload", "gso", "segment_max", "defer_writes")


def caps(link: Link) -> tuple:
    return (link.mtu, link.offload, link.gso, link.segment_max, link.defer_writes)


class ThreadSafeDevice(CaptureLink):
    """A device whose send() may run outside the stack lock (as a TAP's)."""

    defer_writes = True


DEVICES = {
    "plain": lambda: CaptureLink(),
    "jumbo-tso": lambda: CaptureLink(mtu=9000, offload=True),
    "deferred": lambda: ThreadSafeDevice(mtu=1400),
}

WRAPPERS = {
    "wrapper": lambda inner: LinkWrapper(inner),
    "pcap": lambda inner: PcapLink(inner, io.BytesIO()),
    "impair-idle": lambda inner: ImpairLink(inner, "seed=1"),
    "pcap-impair": lambda inner: PcapLink(ImpairLink(inner, "seed=1"), io.BytesIO()),
    "impair-pcap": lambda inner: ImpairLink(PcapLink(inner, io.BytesIO()), "seed=1"),
}


def test_the_base_link_declares_a_plain_device():
    class Bare(Link):
        def close(self) -> None:
            pass

    link = Bare()
    assert caps(link) == (1500, False, False, None, False)
    assert link.inner is None and link.chain() == [link] and link.counters() == {}
    assert caps(CaptureLink(mtu=9000, offload=True)) == (9000, True, False, TSO_SEGMENT_MAX, False)
    assert TSO_SEGMENT_MAX == 65535 - 20


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_every_wrapper_keeps_its_device_capabilities(device, wrapper):
    dev = DEVICES[device]()
    link = WRAPPERS[wrapper](dev)
    assert caps(link) == caps(dev), CAPS
    assert link.chain()[-1] is dev and link.chain()[0] is link
    # Not defaults by accident: the devices differ, and so do their wrappers.
    assert len({caps(DEVICES[d]()) for d in DEVICES}) == len(DEVICES)


def test_an_active_injector_is_written_under_the_stack_lock():
    dev = ThreadSafeDevice(mtu=9000, offload=True)
    injector = ImpairLink(dev, "loss=0.1,seed=4")
    top = PcapLink(injector, io.BytesIO())
    # It holds frames back (the loop must learn its deadlines under the lock)
    # and reports to the trace: no deferred writes; the rest is the device's.
    assert injector.defer_writes is False and top.defer_writes is False
    assert (top.mtu, top.offload, top.segment_max) == (9000, True, TSO_SEGMENT_MAX)
    assert ImpairLink(dev, "seed=4").defer_writes is True  # idle: a pass-through


def test_chain_and_counters_reach_the_stack_stats():
    dev = CaptureLink(queue=1)
    injector = ImpairLink(dev, "loss=1,seed=2")
    top = PcapLink(injector, io.BytesIO())
    assert top.chain() == [top, injector, dev]
    dev.inject(b"\xff" * 60)
    dev.inject(b"\xff" * 60)  # the queue holds one: dropped, counted
    assert dev.counters() == {"drop.capturelink_queue_full": 1}
    net = Stack(top, thread=False, clock=lambda: 0.0)   # its gratuitous ARP is lost
    assert net.injector is injector
    assert injector.counters()["tx.loss"] == injector.counts["tx.loss"] == 1
    stats = net.stats()
    assert stats["link.tx.loss"] == 1 and stats["link.rx.loss"] == 0
    assert stats["link.drop.capturelink_queue_full"] == 1
    assert top.counters() == {}
    net.close()


def test_a_stack_without_injector_has_none():
    net = Stack(PcapLink(CaptureLink(), io.BytesIO()), thread=False, clock=lambda: 0.0)
    assert net.injector is None
    net.close()


# -- TSO through wrappers: what TCP hands to the link ------------------------

A, B = "192.0.2.1", "192.0.2.2"


def _pcap_frames(data: bytes) -> list[bytes]:
    out, off = [], 24
    while off < len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


def _bulk(a_link: Link, b_link: Link, size: int) -> tuple[bytes, Stack]:
    """Send ``size`` bytes from a stack on ``a_link`` to one on ``b_link``;
    return what arrived."""
    net_a = Stack(a_link, address=f"{A}/24")
    net_b = Stack(b_link, address=f"{B}/24")
    try:
        srv = net_b.create_server((B, 0))
        port = srv.getsockname()[1]
        got = bytearray()

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                while chunk := conn.recv(1 << 20):
                    got.extend(chunk)

        t = threading.Thread(target=serve)
        t.start()
        data = random.Random(size).randbytes(size)
        with net_a.create_connection((B, port), timeout=10) as c:
            c.sendall(data)
        t.join(timeout=30)
        assert not t.is_alive()
        srv.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        return bytes(got), net_a
    finally:
        net_a.close()
        net_b.close()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_tcp_hands_super_frames_to_a_wrapped_offload_link(offload):
    a, b = MemoryLink.pair(offload=offload)
    buf = io.BytesIO()
    injector = ImpairLink(a, "seed=7")
    _, net_a = _bulk(PcapLink(injector, buf), b, 2_000_000)
    ours = [f for f in _pcap_frames(buf.getvalue())
            if f[6:12] == net_a.mac and f[12:14] == b"\x08\x00" and f[23] == PROTO_TCP]
    longest = max(len(f) for f in ours)
    if offload:
        # Whole MSS multiples, up to 64 KB, as the link takes them.
        assert longest > 10 * 1514 and longest <= 14 + 65535
        in_super = sum(len(f) for f in ours if len(f) > 1514)
        assert in_super > 0.9 * sum(len(f) for f in ours)
    else:
        assert longest <= 1514


# -- the injector's corruption with offload ----------------------------------


def _tcp_frame(payload_len: int) -> bytes:
    src, dst = ip2int(A), ip2int(B)
    seg = build_tcp(src, dst, 80, 40000, 1000, 1, ACK, 65535,
                    bytes(i % 251 for i in range(payload_len)))
    ip = build_ipv4(Ipv4Header(src=src, dst=dst, proto=PROTO_TCP, ident=7), seg)
    return build_eth(b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01",
                     ETHERTYPE_IPV4, ip)


def _caught(frame: bytes) -> bool:
    """Would a receiver that checks only the IPv4 header checksum drop it?"""
    return checksum(frame[14:34]) != 0


def _tcp_ok(frame: bytes) -> bool:
    try:
        parse_tcp(ip2int(A), ip2int(B), frame[34:])
    except ValueError:
        return False
    return True


def test_corrupting_a_super_frame_hits_the_checked_ipv4_header():
    dev = CaptureLink(offload=True)
    injector = ImpairLink(dev, "corrupt=1,seed=11")
    big = _tcp_frame(30000)
    for _ in range(300):
        injector.send(big)
    assert injector.counts["tx.corrupt"] == 300
    for bad in dev.sent:
        # Flips past the version/IHL byte and inside the 20-byte IPv4 header:
        # the device refills the TCP checksum, so only this one still tells.
        diff = [i for i in range(len(big)) if bad[i] != big[i]]
        assert diff and 15 <= min(diff) and max(diff) < 34
        assert _caught(bad)


def test_corrupting_frames_the_stack_checksums_itself_goes_anywhere():
    small, big = _tcp_frame(1000), _tcp_frame(30000)
    # A small frame over an offload link, and a super-frame over a link that
    # does not refill checksums, are corrupted anywhere past Ethernet; a
    # received super-frame too (the TAP completed its checksums).
    cases = [(CaptureLink(offload=True), small, "tx"), (CaptureLink(mtu=65535), big, "tx"),
             (CaptureLink(offload=True), big, "rx")]
    for dev, frame, direction in cases:
        injector = ImpairLink(dev, "corrupt=1,seed=12")
        out = []
        for _ in range(200):
            if direction == "tx":
                injector.send(frame)
            else:
                dev.inject(frame)
                out += injector.recv_batch()
        out = out or dev.sent
        assert len(out) == 200
        in_tcp = [f for f in out if f[14:34] == frame[14:34]]
        assert in_tcp and not any(_tcp_ok(f) for f in in_tcp), (direction, len(frame))
        assert all(_caught(f) or not _tcp_ok(f) for f in out)


class SlowDevice(CaptureLink):
    """A device written outside the stack lock whose send takes a while (as
    a TAP's cut super-frame does: 45 writes with the GIL let go)."""

    defer_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.sending = threading.Event()

    def send(self, frame: bytes) -> None:
        self.log.append("send")
        self.sending.set()
        threading.Event().wait(0.2)
        super().send(frame)
        self.log.append("sent")

    def close(self) -> None:
        self.log.append("close")
        super().close()


def test_close_waits_for_a_writer_still_in_its_last_frame():
    link = SlowDevice()
    net = Stack(link, address="192.0.2.2/24")
    link.log.clear()
    link.sending.clear()

    def writer() -> None:
        with net.lock:
            net.eth.announce()   # a gratuitous ARP, written as the lock is let go

    t = threading.Thread(target=writer)
    t.start()
    assert link.sending.wait(2)  # the writer is inside send, the queue empty
    net.close(grace=0)
    t.join()
    assert link.log == ["send", "sent", "close"]
