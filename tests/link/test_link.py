"""Link layer without privileges: memory links, capture, pcap, fault injection."""

from __future__ import annotations

import io
import random
import select
import selectors
import shutil
import struct
import subprocess

import pytest

from stack.link import (
    CaptureLink,
    ImpairLink,
    ImpairSpec,
    Link,
    LinkWrapper,
    MemoryLink,
    PcapLink,
    parse_impair,
)
from stack.link.impair import corrupt_frame
from stack.link.pcap import pcap_record


class ManualClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def readable(link: Link) -> bool:
    r, _, _ = select.select([link.fileno()], [], [], 0)
    return bool(r)


def frame(i: int, size: int = 60) -> bytes:
    """A distinct broadcast frame numbered ``i``."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + i.to_bytes(4, "big")
    return head + bytes(max(0, size - len(head)))


# -- checksum helpers, written independently of stack.native ----------------


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def udp_frame(payload: bytes) -> bytes:
    src, dst = bytes([192, 0, 2, 2]), bytes([192, 0, 2, 1])
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 4000, 5000, udp_len, 0) + payload
    csum = (~ones_sum(pseudo + udp)) & 0xFFFF or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", (~ones_sum(ip)) & 0xFFFF) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return eth + ip + udp


def checksums_ok(f: bytes) -> bool:
    ip = f[14:34]
    if ones_sum(ip) != 0xFFFF:
        return False
    total = struct.unpack("!H", ip[2:4])[0]
    udp = f[34 : 14 + total]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    return ones_sum(pseudo + udp) == 0xFFFF


# -- memory links -------------------------------------------------------------


def test_pair_round_trip_both_ways():
    a, b = MemoryLink.pair(mtu=9000)
    with a, b:
        assert a.mtu == b.mtu == 9000
        a.send(frame(1))
        a.send(bytearray(frame(2)))
        b.send(memoryview(frame(3)))
        assert b.recv_batch() == [frame(1), frame(2)]
        assert a.recv_batch() == [frame(3)]
        assert all(type(f) is bytes for f in a.recv_batch() + b.recv_batch())
        assert a.recv_batch() == [] and b.recv_batch() == []


def test_pair_readiness_with_select_and_selectors():
    a, b = MemoryLink.pair()
    with a, b:
        assert not readable(b)
        for i in range(5):
            a.send(frame(i))
        assert readable(b) and not readable(a)
        assert b.recv_batch(limit=3) == [frame(0), frame(1), frame(2)]
        assert readable(b)  # two still queued
        assert b.recv_batch(limit=3) == [frame(3), frame(4)]
        assert not readable(b)
        with selectors.DefaultSelector() as sel:
            sel.register(b, selectors.EVENT_READ)
            assert sel.select(0) == []
            a.send(frame(9))
            assert [key.fileobj for key, _ in sel.select(0)] == [b]
            b.recv_batch()
            assert sel.select(0) == []


def test_pair_bounded_queue_drops_and_counts():
    a, b = MemoryLink.pair(queue=8)
    with a, b:
        for i in range(10):
            a.send(frame(i))  # never raises
        assert a.dropped == 2
        assert b.pending() == 8
        assert b.recv_batch(100) == [frame(i) for i in range(8)]
        a.send(frame(10))
        assert b.recv_batch() == [frame(10)]
        assert a.dropped == 2


def test_default_queue_bound():
    a, b = MemoryLink.pair()
    with a, b:
        for _ in range(5000):
            a.send(b"x" * 20)
        assert b.pending() == 4096 and a.dropped == 5000 - 4096


def test_closed_links():
    a, b = MemoryLink.pair()
    b.close()
    a.send(frame(1))  # peer unplugged: a drop, not an error
    assert a.dropped == 1
    with pytest.raises(ValueError):
        b.recv_batch()
    with pytest.raises(ValueError):
        b.send(frame(1))
    with pytest.raises(ValueError):
        b.fileno()
    b.close()  # twice is fine
    a.close()


def test_capture_link():
    with CaptureLink(mtu=1400) as link:
        assert link.mtu == 1400
        assert not readable(link)
        link.send(frame(1))
        link.send(frame(2))
        assert link.sent == [frame(1), frame(2)]
        assert link.take_sent() == [frame(1), frame(2)] and link.sent == []
        link.inject(frame(7))
        assert readable(link)
        assert link.recv_batch() == [frame(7)]
        assert not readable(link) and link.recv_batch() == []


def test_link_base_defaults_and_wrapper():
    class Null(Link):
        closed = False

        def close(self):
            self.closed = True

    with Null() as n:
        assert n.mtu == 1500 and n.next_deadline() is None
        n.poll(1.0)
    assert n.closed
    inner = CaptureLink(mtu=576)
    w = LinkWrapper(inner)
    assert w.mtu == 576 and w.fileno() == inner.fileno()
    w.send(frame(1))
    inner.inject(frame(2))
    assert inner.sent == [frame(1)] and w.recv_batch() == [frame(2)]
    w.close()
    with pytest.raises(ValueError):
        inner.fileno()


# -- pcap ---------------------------------------------------------------------


def read_pcap(data: bytes) -> tuple[tuple, list[tuple[int, int, int, bytes]]]:
    header = struct.unpack_from("<IHHiIII", data, 0)
    records, off = [], 24
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        off += 16
        records.append((sec, usec, orig, data[off : off + incl]))
        off += incl
    assert off == len(data)
    return header, records


def test_pcap_writes_both_directions(tmp_path):
    path = tmp_path / "cap.pcap"
    clock = ManualClock(1_700_000_000.25)
    a, b = MemoryLink.pair()
    cap = PcapLink(a, str(path), clock=clock)
    assert cap.mtu == 1500 and cap.fileno() == a.fileno()
    out1, out2, in1 = udp_frame(b"hello"), udp_frame(b"x" * 1400), udp_frame(b"back")
    cap.send(out1)
    clock.t += 0.5
    cap.send(out2)
    b.send(in1)
    clock.t = 1_700_000_001.9999999  # rounds up into the next second
    assert cap.recv_batch() == [in1]
    assert b.recv_batch() == [out1, out2]
    cap.close()
    with pytest.raises(ValueError):
        a.fileno()  # the wrapper closed its inner link
    header, records = read_pcap(path.read_bytes())
    assert header == (0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    assert records == [
        (1_700_000_000, 250000, len(out1), out1),
        (1_700_000_000, 750000, len(out2), out2),
        (1_700_000_002, 0, len(in1), in1),
    ]
    assert cap.frames == 3


def test_pcap_to_file_object_flushes_and_leaves_it_open():
    buf = io.BytesIO()
    inner = CaptureLink()
    cap = PcapLink(inner, buf, clock=ManualClock(5.0))
    inner.inject(frame(1))
    cap.recv_batch()
    cap.send(frame(2))
    cap.close()
    assert not buf.closed
    _, records = read_pcap(buf.getvalue())
    assert [r[3] for r in records] == [frame(1), frame(2)]
    assert records[0][:2] == (5, 0)


def test_pcap_record_truncates_past_snaplen():
    rec = pcap_record(1.5, b"a" * 100, snaplen=64)
    assert struct.unpack("<IIII", rec) == (1, 500000, 64, 100)


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_pcap_readable_by_tcpdump(tmp_path):
    path = tmp_path / "cap.pcap"
    inner = CaptureLink()
    with PcapLink(inner, str(path)) as cap:
        for i in range(5):
            cap.send(udp_frame(b"ping %d" % i))
        inner.inject(udp_frame(b"pong"))
        cap.recv_batch()
    out = subprocess.run(
        ["tcpdump", "-r", str(path), "-nn"], capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6
    assert all("192.0.2.2.4000 > 192.0.2.1.5000: UDP" in line for line in lines)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_pcap_readable_by_tshark(tmp_path):
    path = tmp_path / "cap.pcap"
    with PcapLink(CaptureLink(), str(path)) as cap:
        for i in range(3):
            cap.send(udp_frame(b"x" * i))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "udp.length"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["8", "9", "10"]


# -- impair: parsing ------------------------------------------------------------


def test_parse_impair_full_and_subsets():
    spec = parse_impair("loss=0.1, dup=0.02,reorder=0.5,corrupt=1,delay=20,seed=42")
    assert spec == ImpairSpec(loss=0.1, dup=0.02, reorder=0.5, corrupt=1.0, delay=20.0, seed=42)
    assert parse_impair("") == ImpairSpec()
    assert parse_impair("delay=7.5") == ImpairSpec(delay=7.5)
    assert parse_impair("loss=5%,delay=3ms") == ImpairSpec(loss=0.05, delay=3.0)
    assert parse_impair(str(spec)) == spec
    assert str(ImpairSpec(loss=0.25, seed=3)) == "loss=0.25,seed=3"
    assert not ImpairSpec(seed=3).active and ImpairSpec(delay=1).active


@pytest.mark.parametrize(
    "text, needle",
    [
        ("los=0.1", "'los'"),
        ("loss=abc", "loss"),
        ("loss=1.5", "loss"),
        ("dup=-0.1", "dup"),
        ("corrupt=nan", "corrupt"),
        ("delay=inf", "delay"),
        ("delay=-1", "delay"),
        ("seed=1.5", "seed"),
        ("seed=-3", "seed"),
        ("loss", "'loss'"),
        ("=0.1", "'=0.1'"),
        ("loss=0.1,loss=0.2", "'loss'"),
    ],
)
def test_parse_impair_errors_name_the_culprit(text, needle):
    with pytest.raises(ValueError) as err:
        parse_impair(text)
    assert needle in str(err.value)


# -- impair: behaviour ------------------------------------------------------------


def run_tx(spec: str, frames: list[bytes]) -> tuple[list[bytes], dict]:
    inner = CaptureLink()
    link = ImpairLink(inner, spec, clock=ManualClock())
    for f in frames:
        link.send(f)
    return inner.sent, link.counts


def test_impair_is_deterministic_with_a_seed():
    frames = [frame(i) for i in range(3000)]
    spec = "loss=0.1,dup=0.1,reorder=0.1,corrupt=0.1,seed=1234"
    out1, counts1 = run_tx(spec, frames)
    out2, counts2 = run_tx(spec, frames)
    assert out1 == out2 and counts1 == counts2
    out3, _ = run_tx(spec.replace("1234", "1235"), frames)
    assert out3 != out1


def test_impair_directions_are_independent_streams():
    """Receiving frames in between does not change what happens to sent ones."""
    frames = [frame(i) for i in range(500)]
    spec = "loss=0.2,dup=0.2,reorder=0.2,corrupt=0.2,seed=9"
    alone, _ = run_tx(spec, frames)
    inner = CaptureLink()
    link = ImpairLink(inner, spec, clock=ManualClock())
    for i, f in enumerate(frames):
        inner.inject(frame(10_000 + i))
        link.recv_batch()
        link.send(f)
    assert inner.sent == alone
    assert link.counts["rx.loss"] > 0


def test_impair_rx_direction_and_random_seed():
    inner = CaptureLink()
    link = ImpairLink(inner, "loss=0.5", clock=ManualClock())
    assert isinstance(link.seed, int) and link.spec.seed == link.seed
    assert f"seed={link.seed}" in str(link.spec)
    got = []
    for i in range(2000):
        inner.inject(frame(i))
        got += link.recv_batch()
    assert len(got) + link.counts["rx.loss"] == 2000
    assert link.counts["tx.loss"] == 0
    again = ImpairLink(CaptureLink(), str(link.spec))
    assert again.seed == link.seed


@pytest.mark.parametrize(
    "spec, kind, expected",
    [("loss=0.1", "loss", 1000), ("dup=0.05", "dup", 500), ("corrupt=0.02", "corrupt", 200)],
)
def test_impair_rates_over_10000_frames(spec, kind, expected):
    frames = [frame(i) for i in range(10_000)]
    out, counts = run_tx(spec + ",seed=77", frames)
    n = counts[f"tx.{kind}"]
    sigma = (expected * (1 - expected / 10_000)) ** 0.5
    assert abs(n - expected) < 5 * sigma
    if kind == "loss":
        assert len(out) == 10_000 - n
    elif kind == "dup":
        assert len(out) == 10_000 + n
    else:
        assert len(out) == 10_000
        assert sum(a != b for a, b in zip(out, frames, strict=True)) == n


def test_reorder_rate_and_every_frame_arrives():
    frames = [frame(i) for i in range(10_000)]
    inner = CaptureLink()
    link = ImpairLink(inner, "reorder=0.1,seed=5", clock=ManualClock())
    for f in frames:
        link.send(f)
    link.poll(1.0)  # releases a frame still held at the end
    assert sorted(inner.sent) == sorted(frames)
    assert abs(link.counts["tx.reorder"] - 1000) < 200
    swapped = sum(1 for x, y in zip(inner.sent, inner.sent[1:], strict=False) if x > y)
    # one inversion per held frame, unless the very last frame was held
    assert link.counts["tx.reorder"] - swapped in (0, 1)


def test_corrupt_flips_one_to_three_bits_past_the_ethernet_header():
    rng = random.Random(3)
    seen = set()
    for _ in range(2000):
        original = bytes(rng.randrange(256) for _ in range(rng.randrange(15, 200)))
        bad = corrupt_frame(original, rng)
        assert len(bad) == len(original) and bad[:14] == original[:14]
        diff = int.from_bytes(original, "big") ^ int.from_bytes(bad, "big")
        flipped = diff.bit_count()
        assert 1 <= flipped <= 3
        seen.add(flipped)
        # all flips go the same way: every flipped bit was 0, or every one was 1
        was = int.from_bytes(original, "big") & diff
        assert was in (0, diff)
    assert seen == {1, 2, 3}
    assert corrupt_frame(b"x" * 14, rng) == b"x" * 14


def test_corrupt_on_all_zero_and_all_one_frames():
    rng = random.Random(1)
    for fill in (0x00, 0xFF):
        original = bytes([fill]) * 60
        bad = corrupt_frame(original, rng)
        assert bad != original and bad[:14] == original[:14]


def test_corrupted_frames_always_fail_a_checksum():
    inner = CaptureLink()
    link = ImpairLink(inner, "corrupt=1,seed=2024", clock=ManualClock())
    rng = random.Random(8)
    originals = [udp_frame(rng.randbytes(rng.randrange(0, 300))) for _ in range(3000)]
    assert all(checksums_ok(f) for f in originals)
    for f in originals:
        link.send(f)
    assert link.counts["tx.corrupt"] == 3000
    assert not any(checksums_ok(f) for f in inner.sent)


def test_dup_delivers_twice_and_reorder_swaps_with_next():
    out, counts = run_tx("dup=1,seed=1", [frame(1), frame(2)])
    assert out == [frame(1), frame(1), frame(2), frame(2)] and counts["tx.dup"] == 2
    out, counts = run_tx("reorder=1,seed=1", [frame(i) for i in range(4)])
    assert out == [frame(1), frame(0), frame(3), frame(2)]
    assert counts["tx.reorder"] == 2


def test_reorder_releases_a_lone_frame_after_timeout():
    clock = ManualClock(10.0)
    inner = CaptureLink()
    link = ImpairLink(inner, "reorder=1,seed=1", clock=clock, reorder_timeout=0.05)
    link.send(frame(1))
    assert inner.sent == [] and link.next_deadline() == pytest.approx(10.05)
    link.poll(10.04)
    assert inner.sent == []
    link.poll(10.05)
    assert inner.sent == [frame(1)] and link.next_deadline() is None


def test_delay_holds_frames_until_the_deadline_both_ways():
    clock = ManualClock(100.0)
    inner = CaptureLink()
    link = ImpairLink(inner, "delay=50,seed=1", clock=clock)
    assert link.next_deadline() is None
    link.send(frame(1))
    clock.t = 100.01
    link.send(frame(2))
    assert inner.sent == []
    assert link.next_deadline() == pytest.approx(100.05)
    link.poll(100.049)
    assert inner.sent == []
    link.poll(100.05)
    assert inner.sent == [frame(1)]
    assert link.next_deadline() == pytest.approx(100.06)
    link.poll(100.06)
    assert inner.sent == [frame(1), frame(2)]
    assert link.counts["tx.delay"] == 2

    # receive side: the frame is read from the inner link and held
    clock.t = 100.06
    inner.inject(frame(3))
    assert readable(link)
    assert link.recv_batch() == []
    assert not readable(link)
    assert link.next_deadline() == pytest.approx(100.11)
    link.poll(100.1)
    assert not readable(link)
    clock.t = 100.11
    link.poll(100.11)
    assert readable(link)  # released: the fd says so without new input
    assert link.recv_batch() == [frame(3)]
    assert not readable(link) and link.next_deadline() is None


def test_delay_release_by_recv_batch_alone():
    clock = ManualClock(0.0)
    inner = CaptureLink()
    link = ImpairLink(inner, "delay=10,seed=1", clock=clock)
    inner.inject(frame(1))
    assert link.recv_batch() == []
    clock.t = 0.02
    assert link.recv_batch() == [frame(1)]


def test_released_frames_beyond_limit_stay_readable():
    inner = CaptureLink()
    link = ImpairLink(inner, "dup=1,seed=1", clock=ManualClock())
    for i in range(3):
        inner.inject(frame(i))
    assert link.recv_batch(limit=4) == [frame(0), frame(0), frame(1), frame(1)]
    assert readable(link)
    assert link.recv_batch(limit=4) == [frame(2), frame(2)]
    assert not readable(link)


def test_on_impair_callback_and_counts():
    events = []
    inner = CaptureLink()
    link = ImpairLink(
        inner, "loss=1,seed=1", clock=ManualClock(), on_impair=lambda *e: events.append(e)
    )
    link.send(frame(1))
    inner.inject(frame(2))
    link.recv_batch()
    assert events == [("tx", "loss", frame(1)), ("rx", "loss", frame(2))]
    assert link.counts["tx.loss"] == 1 and link.counts["rx.loss"] == 1
    assert set(link.counts) == {
        f"{d}.{k}" for d in ("tx", "rx") for k in ("loss", "dup", "reorder", "corrupt", "delay")
    }


def test_no_impairment_is_a_plain_pass_through():
    inner = CaptureLink()
    link = ImpairLink(inner, "seed=4")
    assert link.fileno() == inner.fileno()
    link.send(frame(1))
    inner.inject(frame(2))
    assert inner.sent == [frame(1)] and link.recv_batch() == [frame(2)]
    link.close()


def test_impair_over_a_memory_pair_with_pcap():
    a, b = MemoryLink.pair()
    buf = io.BytesIO()
    clock = ManualClock()
    link = PcapLink(ImpairLink(a, "delay=5,seed=3", clock=clock), buf, clock=clock)
    b.send(frame(1))
    assert readable(link)
    assert link.recv_batch() == []
    clock.t = 0.005
    link.poll(link.next_deadline())
    assert readable(link)
    link.send(frame(2))
    assert link.recv_batch() == [frame(1)]
    link.poll(0.010)
    assert b.recv_batch() == [frame(2)]
    link.close()
    b.close()
    _, records = read_pcap(buf.getvalue())
    assert [r[3] for r in records] == [frame(2), frame(1)]
