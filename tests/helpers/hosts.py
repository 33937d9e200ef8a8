"""A stack on a capture link, driven by a manual clock, as the IPv4 and ARP tests use it."""

from __future__ import annotations

import pytest

from stack.link.memory import CaptureLink
from stack.net.arp import ArpConfig
from stack.runtime import Stack
from tests.helpers.frames import BCAST, PEER, PEER_MAC, PROTO_TEST, US, US_MAC, arp, eth


class IpHost:
    """A stack on a capture link with a manual clock; the peer is in its ARP cache.

    Packets of protocol ``PROTO_TEST`` delivered to it are kept in ``got``.
    """

    def __init__(self, mtu: int = 1500, gateway: str | None = None, learn: bool = True) -> None:
        self.t = 100.0
        self.link = CaptureLink(mtu=mtu)
        self.net = Stack(self.link, address="192.0.2.2/24", gateway=gateway, thread=False,
                         clock=lambda: self.t, seed=1)
        self.link.take_sent()
        self.got: list[tuple] = []
        self.net.ip.handlers[PROTO_TEST] = lambda h, p, now: self.got.append((h, bytes(p)))
        if learn:
            self.learn(PEER, PEER_MAC)

    def learn(self, ip: int, mac: bytes) -> None:
        self.feed(arp(1, mac, ip, b"\x00" * 6, US, dst=BCAST))

    def feed(self, frame: bytes) -> list[bytes]:
        self.net.receive_frame(frame, self.t)
        return self.link.take_sent()

    def feed_ip(self, *packets: bytes, src_mac: bytes = PEER_MAC, dst_mac: bytes = US_MAC) -> list[bytes]:
        """Give IPv4 packets to the stack; return the IPv4 packets it sent to the peer."""
        sent = []
        for p in packets:
            sent += self.feed(eth(p, dst_mac, src_mac))
        return self.ip_out(sent, src_mac)

    def ip_out(self, frames: list[bytes], mac: bytes = PEER_MAC) -> list[bytes]:
        for f in frames:
            assert f[:14] == mac + US_MAC + b"\x08\x00", f[:14].hex()
        return [f[14:] for f in frames]

    def at(self, t: float) -> list[bytes]:
        self.t = t
        self.net.step(t)
        return self.link.take_sent()

    def counter(self, name: str) -> int:
        return self.net.stats().get(name, 0)


class ArpHost:
    """One stack on a capture link, and the test's clock; nothing learnt yet.

    ``boot`` holds the frames the stack sent when it came up.
    """

    def __init__(self, **arp_kwargs) -> None:
        self.t = 100.0
        self.link = CaptureLink()
        self.net = Stack(self.link, address="192.0.2.2/24", thread=False, clock=lambda: self.t,
                         arp_config=ArpConfig(**arp_kwargs))
        self.boot = self.link.take_sent()

    def feed(self, frame: bytes) -> list[bytes]:
        self.net.receive_frame(frame, self.t)
        return self.link.take_sent()

    def at(self, t: float) -> list[bytes]:
        """Move the clock to ``t``, run what is due; return what was sent."""
        self.t = t
        self.net.step(t)
        return self.link.take_sent()

    def send_ip(self, dst: int, payload: bytes) -> list[bytes]:
        self.net.ip.send(US, dst, PROTO_TEST, payload, self.t)
        return self.link.take_sent()

    def counter(self, name: str) -> int:
        return self.net.stats().get(name, 0)

    def learn(self, ip: int, mac: bytes) -> None:
        """``ip`` asks for us; the stack learns it and answers."""
        assert len(self.feed(arp(1, mac, ip, b"\x00" * 6, US))) == 1


def host_fixture(cls):
    """A pytest fixture: a factory of ``cls(**kw)`` hosts, all closed after the test."""

    @pytest.fixture
    def host():
        made = []

        def make(**kw):
            made.append(cls(**kw))
            return made[-1]

        yield make
        for x in made:
            x.net.close()

    return host
