"""Floods over a real TAP, bounded in count and time: 20,000 SYNs from
spoofed sources that never answer, and 20,000 incomplete fragmented
datagrams. Afterwards the kernel is served at once (curl within ~2 s,
fragmented pings answered) and every bounded structure stayed within its
limit throughout.

Frames are written raw to the kernel side of the TAP with the stack's MAC as
destination, in chunks; each chunk waits until the stack has taken every
frame off the link, so all 20,000 reach it (none is lost in the kernel's TAP
queue) and the bounds are checked between chunks.

Memory: tracemalloc would slow the stack fourfold here, so the floods check
the bounded structures between chunks and the process's resident size
(which a leak of 20,000 of anything would show) at the end.
"""

from __future__ import annotations

import errno
import random
import socket
import subprocess
import time

import pytest

from stack.wire.ipv4 import ip2int
from tests.helpers.frames import MSS_1460, SYN, ipv4, tcp
from tests.helpers.services import expected_bytes
from tests.helpers.tap import sh, wait_for

pytest.importorskip("scapy.all")
from tests.helpers.target import KERNEL, US, Target  # noqa: E402

FLOOD = 20_000
CHUNK = 500
SPOOFED = [ip2int(f"198.51.100.{i}") for i in range(1, 255)]   # nobody answers for these
RSS_BOUND = 32 << 20     # resident bytes the process may gain from a flood


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def syn(src: int, dst: int, sport: int, dport: int, seq: int) -> bytes:
    return tcp(src, dst, sport, dport, seq, 0, SYN, options=MSS_1460)


class Flooder:
    def __init__(self, target: Target) -> None:
        self.t = target
        self.eth = (bytes.fromhex(target.mac.replace(":", ""))
                    + bytes.fromhex(target.kmac.replace(":", "")) + b"\x08\x00")
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind((target.iface, 0))

    def flood(self, packets: list[bytes], check, deadline: float = 60.0) -> float:
        """Send IPv4 ``packets`` in chunks, calling ``check()`` after each; returns seconds.
        ``rss_before`` is the resident size when it starts (the packets built)."""
        self.rss_before = rss()
        start = time.monotonic()
        for i in range(0, len(packets), CHUNK):
            chunk = packets[i:i + CHUNK]
            seen = self.t.seen()
            for p in chunk:
                frame = self.eth + p
                while True:
                    try:
                        self.sock.send(frame)
                        break
                    except OSError as e:  # the TAP queue is full: let the stack catch up
                        if e.errno != errno.ENOBUFS:
                            raise
                        time.sleep(0.001)
            target = seen + len(chunk)
            assert wait_for(lambda target=target: self.t.seen() >= target, 10, 0.002), \
                f"the stack took {self.t.seen() - seen} of {len(chunk)} frames"
            check()
            assert time.monotonic() - start < deadline, "flood took too long"
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def flood_target(tap_stack):
    made = []

    def make(**kw):
        t = Target(tap_stack(trace=None, **kw))
        t.healthy()
        t.healthy()
        f = Flooder(t)
        made.append((t, f))
        return t, f

    yield make
    for t, f in made:
        f.close()
        t.close()


def curl_time(path: str = "/bytes/100000") -> float:
    start = time.monotonic()
    r = subprocess.run(["curl", "-s", "--max-time", "5", f"http://{US}{path}"],
                       capture_output=True, timeout=10)
    took = time.monotonic() - start
    assert r.returncode == 0 and r.stdout == expected_bytes(int(path.rsplit("/", 1)[1])), \
        f"curl failed: {r.returncode} {r.stderr!r}"
    return took


def test_syn_flood_then_curl_is_served(flood_target):
    """20,000 SYNs from spoofed 198.51.100.x (the stack's SYN,ACKs go to its
    gateway, the kernel, which drops them). The listener keeps 256 half-open
    connections and answers the rest with SYN cookies; the kernel's curl
    completes through a cookie, within 2 seconds of the flood's end."""
    t, f = flood_target(gateway=KERNEL)
    net = t.net
    rng = random.Random(20_000)
    us = ip2int(US)
    packets = []
    for i in range(FLOOD):
        src = SPOOFED[i % len(SPOOFED)]
        packets.append(ipv4(src, us, 6, syn(src, us, 1024 + i % 60000, 80, rng.getrandbits(32)),
                            ident=i & 0xFFFF))
    lst = net.tcp.listener((0, 80))
    peak = {"half": 0, "conns": 0}

    def check():
        with net.lock:
            peak["half"] = max(peak["half"], lst.half_open())
            peak["conns"] = max(peak["conns"], len(net.tcp.connections()))

    took = f.flood(packets, check)
    print(f"SYN flood: {FLOOD} SYNs in {took:.2f} s")
    served = curl_time()
    print(f"curl after the flood: {served:.3f} s")
    assert served < 2.0
    st = net.stats()
    syn_backlog = net.tcp.config.syn_backlog
    assert peak["half"] == syn_backlog and peak["conns"] <= syn_backlog + 4
    assert st["tcp.syncookies_sent"] >= FLOOD - syn_backlog
    assert st["tcp.syncookies_recv"] >= 1            # curl's handshake came back with a cookie
    # A connection made from a cookie keeps the kernel's window scale, SACK
    # and timestamps (hidden in our SYN,ACK's timestamp).
    with socket.create_connection((US, 80), timeout=5) as s:
        key = (ip2int(US), 80, ip2int(KERNEL), s.getsockname()[1])
        assert wait_for(lambda: net.tcp.lookup(key) is not None, 2)
        with net.lock:
            conn = net.tcp.lookup(key)
            status = conn.status()
            assert status["snd_wscale"] is not None and status["timestamps"] and status["sack"]
            assert 1 <= status["snd_wscale"] <= 14  # the kernel offers 7 or more
    assert net.stats()["tcp.syncookies_recv"] == st["tcp.syncookies_recv"] + 1
    assert st.get("eth.drop.internal_error", 0) == 0
    grown = rss() - f.rss_before
    print(f"resident size grown by {grown} bytes")
    assert grown < RSS_BOUND
    t.healthy()
    t.bounded()


def test_syn_flood_from_spoofed_onlink_addresses_bounds_the_arp_queue(flood_target):
    """SYNs from 2,000 on-link addresses nobody owns: every SYN,ACK waits for
    ARP. The pending queue stays within its bounds and the kernel is served."""
    t, f = flood_target()
    net = t.net
    us = ip2int(US)
    packets = [ipv4(ip2int(f"192.0.2.{10 + i % 240}"), us, 6,
                    syn(ip2int(f"192.0.2.{10 + i % 240}"), us, 2000 + i, 80, i * 7919), ident=0)
               for i in range(2000)]
    cfg = net.eth.config

    def check():
        with net.lock:
            assert len(net.eth.pending) <= cfg.max_pending_hosts
            assert all(len(p.packets) <= cfg.max_pending_per_host for p in net.eth.pending.values())

    f.flood(packets, check)
    assert net.stats()["arp.drop.pending_hosts_full"] > 0
    assert curl_time() < 2.0
    t.healthy()
    t.bounded()


def test_fragment_flood_then_fragmented_pings_work(flood_target):
    """20,000 first, middle and far fragments of datagrams that never
    complete, with distinct ids, from spoofed sources. The reassembly table
    and its bytes stay within their limits all along (the oldest datagrams
    make room), and `ping -s 4000` from the kernel is answered right after."""
    t, f = flood_target()
    net = t.net
    r = net.ip.reassembler
    us = ip2int(US)
    packets = []
    for i in range(FLOOD):
        src = SPOOFED[i % len(SPOOFED)]
        # Offsets 0, 8,000, 24,000 and 48,000: the far ones cost their buffer's length.
        offset = (0, 8000, 24000, 48000)[i % 4]
        packets.append(ipv4(src, us, 1, bytes(1000), ident=i & 0xFFFF,
                            mf=True, offset=offset))
    peak = {"datagrams": 0, "bytes": 0}

    def check():
        with net.lock:
            peak["datagrams"] = max(peak["datagrams"], len(r.datagrams))
            peak["bytes"] = max(peak["bytes"], r.bytes_held)
            assert len(r.datagrams) <= r.config.max_datagrams
            assert r.bytes_held <= r.config.max_bytes
            assert r.bytes_held == sum(d.held for d in r.datagrams.values())

    took = f.flood(packets, check)
    print(f"fragment flood: {FLOOD} fragments in {took:.2f} s; peak {peak['datagrams']} "
          f"datagrams, {peak['bytes']} bytes")
    reassembled = net.stats().get("ip.reassembled", 0)
    r_ = sh(f"ping -c 3 -i 0.2 -W 2 -s 4000 {US}", check=False)
    assert "3 received" in r_.stdout, r_.stdout
    assert net.stats()["ip.reassembled"] >= reassembled + 3
    st = net.stats()
    assert st["ip.drop.reassembly_evicted"] > 0 and st.get("eth.drop.internal_error", 0) == 0
    assert peak["bytes"] <= r.config.max_bytes and peak["datagrams"] <= r.config.max_datagrams
    grown = rss() - f.rss_before
    print(f"resident size grown by {grown} bytes")
    assert grown < RSS_BOUND
    t.healthy()
    t.bounded()
