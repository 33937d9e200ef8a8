"""The stack on a TAP as a scapy attacker on the link sees it (test_hostile_tap, test_floods_tap).

Importing this module needs scapy; the tests using it need root in the test namespace.
"""

from __future__ import annotations

import gc
import os
import subprocess
import tracemalloc

from scapy.all import IP, Ether, get_if_hwaddr, sendp

import stack
from stack.services import parse_service, start_service
from stack.wire.eth import mac2str
from tests.helpers.services import expected_bytes
from tests.helpers.tap import sh, wait_for

US = "192.0.2.2"
KERNEL = "192.0.2.1"
STACK_FILES = os.path.join(os.path.dirname(stack.__file__), "*")
MEMORY_BOUND = 1 << 20   # bytes of Python memory the stack may gain from one batch of attacks
# ... and from repeating it: a leak would show here. Each round's health check
# (curl) leaves one connection in TIME_WAIT for 60 s, holding its buffers and
# timer; 64 KB was measured to be exceeded by that alone (73,794 bytes once).
ROUND_SLACK = 192 << 10


def stack_memory() -> int:
    """Bytes currently allocated by code in the stack package (tracemalloc)."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, STACK_FILES)])
    return sum(s.size for s in snap.statistics("filename"))


class Target:
    """The stack under attack, its services, and the attacker's view of the link."""

    def __init__(self, net) -> None:
        self.net = net
        self.iface = net.tap_name
        self.kmac = get_if_hwaddr(self.iface)
        self.mac = mac2str(net.mac)
        self.services = [start_service(net, parse_service("http:80")),
                         start_service(net, parse_service("echo:7"))]
        self.baseline = 0

    # -- frames ------------------------------------------------------------------

    def ether(self, dst: str | None = None, **kw):
        return Ether(src=self.kmac, dst=dst or self.mac, **kw)

    def ip(self, src: str = KERNEL, dst: str = US, **kw):
        return self.ether() / IP(src=src, dst=dst, **kw)

    def seen(self) -> int:
        """Frames the stack has taken off the link (whatever it made of them)."""
        s = self.net.stats()
        return (s.get("eth.frames_in", 0) + s.get("eth.drop.short", 0)
                + s.get("eth.drop.not_for_us", 0) + s.get("eth.drop.multicast", 0))

    def send(self, frames) -> dict[str, int]:
        """Send ``frames``; once the stack has handled them all, return the
        counters that changed (stats() takes the stack lock, so a frame counted
        is a frame fully processed)."""
        frames = list(frames)
        before = self.net.stats()
        seen = self.seen()
        sendp(frames, iface=self.iface)
        assert wait_for(lambda: self.seen() >= seen + len(frames), 10), "frames never arrived"
        after = self.net.stats()
        return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}

    # -- checks --------------------------------------------------------------------

    def healthy(self) -> None:
        r = sh(f"ping -c 1 -W 2 {US}", check=False)
        assert r.returncode == 0, f"no ping reply after the attack\n{r.stdout}"
        r = subprocess.run(["curl", "-s", "--max-time", "5", f"http://{US}/bytes/5000"],
                           capture_output=True, timeout=10)
        assert r.returncode == 0 and r.stdout == expected_bytes(5000), "HTTP broken"
        assert self.net.stats().get("eth.drop.internal_error", 0) == 0

    def bounded(self) -> None:
        net = self.net
        with net.lock:
            r = net.ip.reassembler
            assert len(r.datagrams) <= r.config.max_datagrams
            assert r.bytes_held <= r.config.max_bytes
            assert r.bytes_held == sum(d.held for d in r.datagrams.values())
            arp = net.eth
            assert len(arp.pending) <= arp.config.max_pending_hosts
            assert all(len(p.packets) <= arp.config.max_pending_per_host
                       for p in arp.pending.values())
            assert len(arp.cache) <= arp.config.max_entries
            tcp = net.tcp
            assert len(tcp.connections()) <= tcp.config.max_connections
            for lst in tcp.listeners():
                assert lst.half_open() <= tcp.config.syn_backlog

    def attack(self, frames, expect: dict[str, int]) -> dict[str, int]:
        """Two rounds of ``frames``; counters checked after the first."""
        frames = list(frames)
        delta = self.send(frames)
        for key, n in expect.items():
            assert delta.get(key, 0) == n, f"{key}: {delta.get(key, 0)} != {n}\n{delta}"
        self.after_round()
        first = stack_memory()
        self.send(frames)
        self.after_round()
        second = stack_memory()
        assert second - first <= ROUND_SLACK, f"memory grew {second - first} bytes in round 2"
        return delta

    def after_round(self) -> None:
        self.healthy()
        self.bounded()
        grown = stack_memory() - self.baseline
        assert grown <= MEMORY_BOUND, f"stack memory grew {grown} bytes"

    def close(self) -> None:
        for svc in self.services:
            svc.close()
