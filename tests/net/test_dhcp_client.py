"""The DHCP client state machine on a manual clock, with hand-built replies.

Every state and transition (INIT, SELECTING, REQUESTING, BOUND, RENEWING,
REBINDING, STOPPED), the retransmission backoff, renewal, rebinding and
expiry, NAK, RELEASE, and every hostile reply dropped and counted.
"""

from __future__ import annotations

import random
import tracemalloc

import pytest

from stack.net.dhcp import DhcpClient, DhcpConfig
from stack.trace import Trace
from stack.wire.dhcp import (
    ACK, BOOTREQUEST, DISCOVER, FLAG_BROADCAST, NAK, OFFER, OPT_CLIENT_ID, OPT_DNS,
    OPT_MESSAGE, OPT_PARAMETER_LIST, OPT_REQUESTED_IP, OPT_ROUTER, OPT_SERVER_ID,
    OPT_SUBNET_MASK, RELEASE, REQUEST, DhcpMessage, parse_dhcp,
)
from stack.wire.ipv4 import int2ip, ip2int
from tests.helpers.dhcp import MAC, OFFERED, SERVER, reply

BCAST = 0xFFFFFFFF


class FixedRng(random.Random):
    """Jitter always ``offset``; xids counted up from 1 (so each new one is known)."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__(0)
        self.offset = offset
        self.next_xid = 0

    def uniform(self, a: float, b: float) -> float:
        assert (a, b) == (-1.0, 1.0)
        return self.offset

    def getrandbits(self, k: int) -> int:
        self.next_xid += 1
        return self.next_xid


class Harness:
    def __init__(self, rng: random.Random | None = None, **config) -> None:
        self.t = 1000.0
        self.sent: list[tuple[DhcpMessage, int]] = []
        self.events: list[dict] = []
        self.trace = Trace()
        self.trace.subscribe(self.events.append)
        self.bound: list = []
        self.unbound: list = []
        self.client = DhcpClient(MAC, lambda p, d: self.sent.append((parse_dhcp(p), d)),
                                 self.trace, rng or FixedRng(), DhcpConfig(**config),
                                 on_bound=self.bound.append,
                                 on_unbound=lambda lease, why: self.unbound.append((lease, why)))

    @property
    def state(self) -> str:
        return self.client.state

    @property
    def deadline(self):
        return self.client.next_deadline()

    def at(self, t: float) -> list[tuple[DhcpMessage, int]]:
        """Move the clock to ``t`` and run the timer if due; what was sent."""
        self.t = t
        before = len(self.sent)
        if self.deadline is not None and self.deadline <= t:
            self.client.on_timer(t)
        return self.sent[before:]

    def last(self) -> DhcpMessage:
        return self.sent[-1][0]

    def feed(self, data: bytes) -> list[tuple[DhcpMessage, int]]:
        before = len(self.sent)
        self.client.receive(data, self.t)
        return self.sent[before:]

    def counter(self, name: str) -> int:
        return self.trace.counters[name]

    def states(self) -> list[tuple[str, str]]:
        return [(e["from"], e["to"]) for e in self.events
                if e["layer"] == "dhcp" and e["event"] == "state"]

    def bind(self, **kw) -> None:
        """DISCOVER, OFFER, REQUEST, ACK: bound at ``self.t``."""
        self.client.start(self.t)
        self.feed(reply(OFFER, self.last().xid))
        self.feed(reply(ACK, self.last().xid, **kw))
        assert self.state == "BOUND"


# ---- the exchange -------------------------------------------------------------------


def test_discover_offer_request_ack_binds_the_lease():
    h = Harness(host_name="lab1")
    h.client.start(h.t)
    m, dst = h.sent[-1]
    assert (m.op, m.msg_type, dst, m.ciaddr) == (BOOTREQUEST, DISCOVER, BCAST, 0)
    assert m.flags & FLAG_BROADCAST and m.chaddr == MAC
    assert m.options[OPT_CLIENT_ID] == b"\x01" + MAC
    assert set(m.options[OPT_PARAMETER_LIST]) >= {OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS}
    assert m.options[12] == b"lab1"
    assert h.state == "SELECTING" and h.deadline == h.t + 4.0

    h.t += 0.5
    sent = h.feed(reply(OFFER, m.xid))
    req, dst = sent[0]
    assert (req.msg_type, dst, req.xid, req.ciaddr) == (REQUEST, BCAST, m.xid, 0)
    assert req.options[OPT_REQUESTED_IP] == ip2int(OFFERED).to_bytes(4, "big")
    assert req.options[OPT_SERVER_ID] == ip2int(SERVER).to_bytes(4, "big")
    assert h.state == "REQUESTING"

    h.t += 0.5
    assert h.feed(reply(ACK, m.xid, t1=30, t2=90, dns=(SERVER, "198.51.100.2"))) == []
    assert h.state == "BOUND"
    (lease,) = h.bound
    assert (int2ip(lease.address), lease.prefix_len, int2ip(lease.router)) == (OFFERED, 24, SERVER)
    assert [int2ip(d) for d in lease.dns] == [SERVER, "198.51.100.2"]
    assert (lease.lease_time, lease.t1, lease.t2) == (120, 30.0, 90.0)
    assert lease.start == 1000.5  # when the REQUEST left, not when the ACK came
    assert h.deadline == 1000.5 + 30
    assert h.states() == [("INIT", "SELECTING"), ("SELECTING", "REQUESTING"),
                          ("REQUESTING", "BOUND")]
    sends = [(e["message"], e["xid"]) for e in h.events if e["event"] == "send"]
    assert sends == [("DISCOVER", f"0x{m.xid:08x}"), ("REQUEST", f"0x{m.xid:08x}")]
    got = [e["message"] for e in h.events if e["event"] == "receive"]
    assert got == ["OFFER", "ACK"]
    (bound,) = [e for e in h.events if e["event"] == "bound"]
    assert (bound["address"], bound["router"], bound["dns"], bound["lease"]) == (
        f"{OFFERED}/24", SERVER, [SERVER, "198.51.100.2"], 120)
    for name in ("dhcp.discover_out", "dhcp.offer_in", "dhcp.request_out", "dhcp.ack_in",
                 "dhcp.leases"):
        assert h.counter(name) == 1, name


def test_discover_backs_off_4_8_16_32_64_then_stays_at_64_plus_the_jitter():
    h = Harness(rng=FixedRng(offset=0.5))
    h.client.start(0.0)
    times, t = [], 0.0
    for _ in range(7):
        t = h.deadline
        sent = h.at(t)
        assert [(m.msg_type, m.xid) for m, _ in sent] == [(DISCOVER, 1)]  # the same exchange
        times.append(t)
    gaps = [round(b - a, 6) for a, b in zip([0.0] + times, times)]
    assert gaps == [4.5, 8.5, 16.5, 32.5, 64.5, 64.5, 64.5]
    assert h.last().secs == int(times[-1])
    assert h.state == "SELECTING" and h.counter("dhcp.discover_out") == 8


def test_the_jitter_comes_from_the_injected_rng():
    waits = []
    for seed in (1, 2):
        h = Harness(rng=random.Random(seed))
        h.client.start(0.0)
        waits.append(h.deadline)
        assert 3.0 <= h.deadline <= 5.0
    assert waits[0] != waits[1]
    again = Harness(rng=random.Random(1))
    again.client.start(0.0)
    assert again.deadline == waits[0]


def test_requesting_retransmits_then_goes_back_to_init_and_discovers_anew():
    h = Harness(request_tries=3)
    h.client.start(h.t)
    h.feed(reply(OFFER, 1))
    assert h.deadline == h.t + 4
    assert [m.msg_type for m, _ in h.at(h.deadline)] == [REQUEST]
    assert h.deadline == h.t + 8
    assert [m.msg_type for m, _ in h.at(h.deadline)] == [REQUEST]
    sent = h.at(h.deadline)
    assert [(m.msg_type, m.xid) for m, _ in sent] == [(DISCOVER, 2)]
    assert h.states()[-2:] == [("REQUESTING", "INIT"), ("INIT", "SELECTING")]
    # The old exchange's ACK is now of the wrong xid.
    h.feed(reply(ACK, 1))
    assert h.state == "SELECTING" and h.counter("dhcp.drop.wrong_xid") == 1


# ---- renewing, rebinding, expiry -----------------------------------------------------------


def test_renewing_at_t1_is_a_unicast_request_and_its_ack_restarts_the_lease():
    h = Harness()
    h.bind(t1=60, t2=105)
    assert h.deadline == 1060
    sent = h.at(1060)
    ((m, dst),) = sent
    assert (m.msg_type, dst, m.ciaddr) == (REQUEST, ip2int(SERVER), ip2int(OFFERED))
    assert OPT_REQUESTED_IP not in m.options and OPT_SERVER_ID not in m.options
    assert not m.flags & FLAG_BROADCAST
    assert h.state == "RENEWING"
    h.t = 1061
    h.feed(reply(ACK, m.xid, t1=60, t2=105))
    assert h.state == "BOUND" and len(h.bound) == 2 and h.bound[1].start == 1060
    assert h.deadline == 1120
    assert [e["renewal"] for e in h.events if e["event"] == "bound"] == [False, True]
    assert h.unbound == [] and h.counter("dhcp.renewals") == 1


def test_renewing_waits_half_the_time_to_t2_then_rebinds_then_the_lease_expires():
    h = Harness()
    h.bind(lease=1000)                   # T1 500, T2 875 by default
    lease = h.bound[0]
    assert (lease.t1, lease.t2) == (500.0, 875.0)
    plan = [(1500.0, "RENEWING", ip2int(SERVER)),    # T1
            (1687.5, "RENEWING", ip2int(SERVER)),    # + (875 - 500) / 2
            (1781.25, "RENEWING", ip2int(SERVER)),   # + 93.75
            (1841.25, "RENEWING", ip2int(SERVER)),   # + at least 60
            (1875.0, "REBINDING", BCAST),            # T2
            (1937.5, "REBINDING", BCAST),            # + (1000 - 875) / 2
            (1997.5, "REBINDING", BCAST)]            # + at least 60
    for t, state, dst in plan:
        assert h.deadline == t
        ((m, to),) = h.at(t)
        assert (m.msg_type, to, h.state, m.ciaddr) == (REQUEST, dst, state, ip2int(OFFERED))
    assert h.deadline == 2000.0                       # the lease's end
    assert h.unbound == []
    sent = h.at(2000.0)
    assert [m.msg_type for m, _ in sent] == [DISCOVER]
    ((gone, why),) = h.unbound
    assert gone.address == ip2int(OFFERED) and why == "lease expired"
    assert h.states()[-4:] == [("BOUND", "RENEWING"), ("RENEWING", "REBINDING"),
                               ("REBINDING", "INIT"), ("INIT", "SELECTING")]
    assert [e["reason"] for e in h.events if e["event"] == "unbound"] == ["lease expired"]


def test_rebinding_takes_an_ack_from_another_server():
    h = Harness()
    h.bind(t1=10, t2=20, lease=40)
    h.at(1010)
    h.at(1020)
    assert h.state == "REBINDING"
    h.feed(reply(ACK, h.last().xid, server="198.51.100.9", lease=40))
    assert h.state == "BOUND" and int2ip(h.client.lease.server) == "198.51.100.9"


@pytest.mark.parametrize("t1, t2, want", [
    (None, None, (60.0, 105.0)),       # RFC 2131 4.4.5: 0.5 and 0.875 of the lease
    (30, 90, (30.0, 90.0)),
    (200, None, (60.0, 105.0)),        # T1 past T2: the defaults
    (90, 60, (30.0, 60.0)),            # T1 past a good T2: half of T2
    (0, 500, (60.0, 105.0)),
])
def test_t1_and_t2_from_the_options_or_the_defaults(t1, t2, want):
    h = Harness()
    h.bind(lease=120, t1=t1, t2=t2)
    assert (h.bound[0].t1, h.bound[0].t2) == want


def test_an_infinite_lease_is_never_renewed():
    h = Harness()
    h.bind(lease=0xFFFFFFFF)
    assert h.deadline is None and h.bound[0].lease_time is None


def test_routers_off_the_subnet_and_unusable_dns_servers_are_left_out():
    h = Harness()
    h.bind(routers=("203.0.113.1", "198.51.100.254"), dns=("224.0.0.1", "198.51.100.3"))
    lease = h.bound[0]
    assert int2ip(lease.router) == "198.51.100.254"
    assert [int2ip(d) for d in lease.dns] == ["198.51.100.3"]
    assert h.counter("dhcp.routers_ignored") == 1


def test_without_a_mask_the_prefix_is_the_address_class():
    h = Harness()
    h.bind(mask=None)
    assert h.bound[0].prefix_len == 24


# ---- NAK and RELEASE ------------------------------------------------------------------------


def test_a_nak_while_requesting_means_init_and_a_new_discover_after_the_pause():
    h = Harness(restart_delay=2.0)
    h.client.start(h.t)
    h.feed(reply(OFFER, 1))
    h.feed(reply(NAK, 1, yiaddr="0.0.0.0", lease=None, mask=None, routers=(), dns=(),
                 extra={OPT_MESSAGE: b"address taken\n0.0 tcp state fake"}))
    assert h.state == "INIT" and h.unbound == [] and h.deadline == h.t + 2.0
    assert h.states()[-1] == ("REQUESTING", "INIT")
    cause = [e for e in h.events if e["event"] == "state"][-1]["cause"]
    assert cause == "NAK: address taken?0.0 tcp state fake"  # no line break into the trace
    assert [(m.msg_type, m.xid) for m, _ in h.at(h.t + 2.0)] == [(DISCOVER, 2)]


def test_a_nak_while_renewing_gives_the_address_up():
    h = Harness()
    h.bind(t1=10)
    h.at(1010)
    h.feed(reply(NAK, h.last().xid, yiaddr="0.0.0.0", lease=None))
    assert h.state == "INIT" and h.client.lease is None
    assert [why for _, why in h.unbound] == ["NAK"]
    assert h.counter("dhcp.addresses_given_up") == 1


def test_release_sends_a_release_to_the_server_and_stops():
    h = Harness()
    h.bind()
    h.client.release(1005)
    ((m, dst),) = h.sent[-1:]
    assert (m.msg_type, dst, m.ciaddr) == (RELEASE, ip2int(SERVER), ip2int(OFFERED))
    assert m.options[OPT_SERVER_ID] == ip2int(SERVER).to_bytes(4, "big")
    assert h.state == "STOPPED" and h.deadline is None
    assert [why for _, why in h.unbound] == ["released"]
    h.feed(reply(ACK, m.xid))
    assert h.counter("dhcp.drop.unexpected") == 1 and h.state == "STOPPED"


def test_release_without_a_lease_sends_nothing():
    h = Harness()
    h.client.start(h.t)
    h.client.release(h.t)
    assert [m.msg_type for m, _ in h.sent] == [DISCOVER] and h.state == "STOPPED"


def test_status_shows_the_lease_and_its_timers():
    h = Harness()
    h.bind(t1=60, t2=100)
    s = h.client.status(1010)
    assert s["state"] == "BOUND" and s["address"] == f"{OFFERED}/24"
    assert (s["renew_in"], s["rebind_in"], s["expires_in"]) == (50, 90, 110)
    assert s["router"] == SERVER and s["dns"] == [SERVER] and s["lease"] == 120


# ---- hostile replies --------------------------------------------------------------------------

HOSTILE = {
    "wrong_xid": lambda xid: reply(OFFER, xid + 1),
    "wrong_chaddr": lambda xid: reply(OFFER, xid, chaddr=bytes.fromhex("0253dc0000ff")),
    "not_reply": lambda xid: reply(OFFER, xid, op=BOOTREQUEST),
    "malformed": lambda xid: reply(OFFER, xid)[:250],          # truncated in the options
    "no_message_type": lambda xid: reply(None, xid),
    "unexpected": lambda xid: reply(ACK, xid),                 # an ACK before any REQUEST
    "no_server_id": lambda xid: reply(OFFER, xid, server=None),
    "bad_server_id": lambda xid: reply(OFFER, xid, server="255.255.255.255"),
    "bad_subnet_mask": lambda xid: reply(OFFER, xid, mask="255.0.255.0"),
}
BAD_ADDRESSES = ["0.0.0.0", "255.255.255.255", "224.0.0.251", "239.1.2.3", "127.0.0.1",
                 "240.0.0.1", "198.51.100.0", "198.51.100.255"]


def hostile_messages(xid: int) -> list[tuple[str, bytes]]:
    out = [(why, make(xid)) for why, make in HOSTILE.items()]
    out += [("bad_address", reply(OFFER, xid, yiaddr=a)) for a in BAD_ADDRESSES]
    out.append(("malformed", reply(OFFER, xid, extra={OPT_ROUTER: b"\x01\x02\x03"})))
    many = {200 + i: b"x" for i in range(50)} | {100 + i: b"y" for i in range(20)}
    out.append(("malformed", reply(OFFER, xid, extra=many)))   # a huge option list
    return out


@pytest.mark.parametrize("why, data", hostile_messages(1),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_a_hostile_offer_is_dropped_counted_and_traced(why, data):
    h = Harness()
    h.client.start(h.t)
    deadline = h.deadline
    assert h.feed(data) == []
    assert h.state == "SELECTING" and h.deadline == deadline
    assert h.counter(f"dhcp.drop.{why}") == 1
    drops = [e for e in h.events if e["event"] == "drop"]
    assert [(e["layer"], e["reason"]) for e in drops] == [("dhcp", why)]
    # ... and the real offer still works afterwards.
    h.feed(reply(OFFER, 1))
    assert h.state == "REQUESTING"


@pytest.mark.parametrize("why, data", [
    ("wrong_server", reply(ACK, 1, server="198.51.100.9")),
    ("wrong_server", reply(NAK, 1, server="198.51.100.9", lease=None)),
    ("no_lease", reply(ACK, 1, lease=None)),
    ("no_lease", reply(ACK, 1, lease=0)),
    ("unexpected", reply(OFFER, 1)),
    ("bad_address", reply(ACK, 1, yiaddr="224.0.0.1")),
])
def test_a_hostile_answer_to_a_request_is_dropped(why, data):
    h = Harness()
    h.client.start(h.t)
    h.feed(reply(OFFER, 1))
    h.feed(data)
    assert h.state == "REQUESTING" and h.counter(f"dhcp.drop.{why}") == 1 and h.bound == []


def test_a_renewal_ack_for_another_address_is_dropped():
    h = Harness()
    h.bind(t1=10)
    h.at(1010)
    h.feed(reply(ACK, h.last().xid, yiaddr="198.51.100.51"))
    assert h.state == "RENEWING" and h.counter("dhcp.drop.bad_address") == 1


def test_replies_while_bound_are_unexpected():
    h = Harness()
    h.bind()
    xid = h.last().xid
    for kind in (OFFER, ACK, NAK):
        h.feed(reply(kind, xid))
    assert h.state == "BOUND" and h.counter("dhcp.drop.unexpected") == 3 and h.unbound == []


def test_a_flood_of_hostile_replies_does_not_grow_memory():
    h = Harness()
    h.client.start(h.t)
    batch = [data for _, data in hostile_messages(1)]
    for data in batch * 20:  # warm up (trace's per-reason counters exist from here on)
        h.client.receive(data, h.t)
    h.events.clear()
    h.trace.unsubscribe(h.events.append)
    tracemalloc.start()
    try:
        for data in batch * 50:
            h.client.receive(data, h.t)
        first, _ = tracemalloc.get_traced_memory()
        for data in batch * 500:
            h.client.receive(data, h.t)
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert second - first < 16_000, (first, second)
    assert h.state == "SELECTING"
    assert sum(v for k, v in h.trace.counters.items() if k.startswith("dhcp.drop.")) == \
        len(batch) * 570


def test_mutated_offers_never_raise_and_each_is_taken_or_counted():
    rng = random.Random(2131)
    good = reply(OFFER, 1, t1=30, t2=90, dns=(SERVER, "198.51.100.2"))
    taken = 0
    for i in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(236, len(data))] = rng.randrange(256)  # cookie, options
        if i % 5 == 0:
            data = data[:rng.randrange(len(data))]
        h = Harness()
        h.client.start(h.t)
        h.client.receive(bytes(data), h.t)
        drops = sum(v for k, v in h.trace.counters.items() if k.startswith("dhcp.drop."))
        if h.state == "REQUESTING":
            taken += 1
            assert drops == 0
        else:
            assert h.state == "SELECTING" and drops == 1
    assert 300 < taken < 2700, taken  # both kinds, many times
