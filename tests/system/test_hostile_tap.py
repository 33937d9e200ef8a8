"""Hostile input over a real TAP: attack frames crafted with scapy and
written to the kernel side of the TAP (``sendp(..., iface=net.tap_name)``),
so they reach the stack exactly as a hostile host on the link would send them.

Each test sends one batch of attacks twice. After the first round it checks
that every attack was dropped or answered as the RFCs say, by the counters
in ``net.stats()``; after each round that nothing escaped the receive loop
(``eth.drop.internal_error`` stays 0), that the stack still answers ping and
serves HTTP to the kernel's curl, that every bounded structure is within its
limit, and that the Python memory held by the stack's own code (tracemalloc,
allocations made in ``stack/``) has not grown by more than ``MEMORY_BOUND``
over its warmed-up baseline. (Reassembly buffers live in C and are checked
through ``bytes_held`` instead.)

tests/system/test_fuzz_receive.py covers mutated frames of every kind in memory;
these are the named attacks, end to end against the kernel.
"""

from __future__ import annotations

import socket
import time
import tracemalloc

import pytest

scapy_all = pytest.importorskip("scapy.all")
from scapy.all import (ARP, ICMP, IP, TCP, Ether, IPerror, IPOption, Raw, TCPerror,  # noqa: E402
                       UDPerror, conf)

from stack.wire.ipv4 import ip2int  # noqa: E402
from tests.helpers.tap import sh, wait_for  # noqa: E402
from tests.helpers.target import KERNEL, US, Target, stack_memory  # noqa: E402

conf.verb = 0

ATTACKER_MAC = "02:66:66:66:66:66"


@pytest.fixture
def target(tap_stack):
    tracemalloc.start()
    t = Target(tap_stack())
    try:
        t.healthy()          # warm up: ARP both ways, one connection, every code path once
        t.healthy()
        t.baseline = stack_memory()
        yield t
    finally:
        t.close()
        tracemalloc.stop()


# ---- Ethernet ----------------------------------------------------------------------


def test_truncated_and_foreign_frames(target):
    t = target
    frames = [
        t.ether(type=0x0800),                                  # Ethernet header, no IP at all
        t.ether(type=0x0800) / Raw(bytes(IP(src=KERNEL, dst=US))[:10]),  # half an IP header
        t.ether(type=0x86DD) / Raw(bytes(40)),                 # IPv6
        t.ether(type=0x8100) / Raw(bytes.fromhex("0001 0800") + bytes(IP(src=KERNEL, dst=US)
                                                                       / ICMP())),  # VLAN tag
        t.ether(type=0x88CC) / Raw(bytes(20)),                 # LLDP
        t.ether(dst="02:00:00:00:00:99") / IP(src=KERNEL, dst=US) / ICMP(),  # another host's MAC
        t.ether(dst="01:00:5e:00:00:01") / IP(src=KERNEL, dst=US) / ICMP(),  # multicast MAC
        t.ether(type=0x0806) / Raw(bytes(10)),                 # truncated ARP
    ]
    t.attack(frames, {"ip.drop.malformed": 2, "eth.drop.unsupported_ethertype": 3,
                      "eth.drop.not_for_us": 1, "eth.drop.multicast": 1,
                      "arp.drop.malformed": 1})


def test_oversized_frames(target):
    """Frames beyond the link MTU (the kernel side's MTU raised to send them):
    the TAP delivers them whole and the stack answers, as Linux does; the
    reply leaves in fragments that fit the MTU. Trailing bytes beyond the IP
    total length are cut off."""
    t = target
    sh(f"ip link set dev {t.iface} mtu 65521")
    try:
        echo = t.ip() / ICMP(id=7, seq=1)
        frames = [
            echo / Raw(bytes(8972)),                                   # a 9000-byte packet
            t.ip(id=99) / ICMP(id=7, seq=2) / Raw(bytes(65521 - 28)),  # the largest frame
            t.ether(type=0x0800) / Raw(bytes(IP(src=KERNEL, dst=US) / ICMP(id=7, seq=3)
                                             / Raw(bytes(56)))
                            + b"\xee" * 8000),                           # junk trailer
        ]
        delta = t.send(frames)
        assert delta.get("icmp.out.type0", 0) == 3, delta
        assert delta.get("ip.fragmented", 0) == 2, delta
        assert delta.get("ip.drop.malformed", 0) == 0, delta
    finally:
        sh(f"ip link set dev {t.iface} mtu 1500")
    t.after_round()


# ---- IPv4 header -------------------------------------------------------------------


def test_ipv4_header_fields_out_of_range(target):
    t = target
    echo = ICMP(id=9, seq=1) / Raw(b"x" * 8)
    frames = [
        t.ip(version=6) / echo,
        t.ip(ihl=4) / echo,                                   # IHL < 5
        t.ip(ihl=15) / echo,                                  # header longer than the packet
        t.ip(len=1000) / echo,                                # total length beyond the frame
        t.ip(len=12) / echo,                                  # total length below the header
        t.ip(chksum=0xDEAD) / echo,                           # bad header checksum
        t.ip(flags=4) / echo,                                 # the reserved ("evil") bit
        t.ip(frag=8189) / Raw(bytes(100)),                    # ends at 65,612: ping of death
    ]
    frames += [
        t.ip(dst="192.0.2.99") / echo,                        # not our address
        t.ip(src="127.0.0.1") / echo,
        t.ip(src="224.0.0.5") / echo,
        t.ip(src="0.0.0.0") / echo,
        t.ip(src="192.0.2.255") / echo,                       # a broadcast source (smurf)
        t.ip(src="255.255.255.255") / echo,
        t.ip(src=US) / TCP(sport=80, dport=80, flags="S"),   # land attack
    ]
    frames += [
        t.ip(proto=99) / Raw(b"unknown protocol"),
        t.ip(len=36) / echo / Raw(b"\xee" * 30),             # padding after total length
        t.ip(options=[IPOption(b"\x01\x01\x01\x00")]) / echo,  # NOP options
        t.ip(options=[IPOption(b"\x07\x00\x00\x00")]) / echo,  # an option of length 0
        t.ip(ttl=0, tos=0xFF) / echo,                         # TTL 0 and every TOS bit
    ]
    delta = t.attack(frames, {"ip.drop.malformed": 8, "ip.drop.not_for_us": 1,
                              "ip.drop.martian_source": 6, "ip.drop.unknown_protocol": 1,
                              "icmp.out.type3": 1})
    # IP options are carried, not interpreted: even a malformed one does not
    # stop the echo (RFC 1122 3.2.1.8 leaves unknown options to be ignored).
    # A host does not discard a datagram for its TTL (RFC 1122 3.2.1.7).
    assert delta["icmp.out.type0"] == 4


# ---- fragments ---------------------------------------------------------------------


def _frag(t, ident: int, offset: int, payload: bytes, more: bool, proto: int = 1):
    return t.ip(id=ident, proto=proto, flags="MF" if more else 0, frag=offset // 8) / Raw(payload)


def test_fragment_attacks(target):
    t = target
    echo = bytes(ICMP(id=11, seq=1) / Raw(bytes(range(56))))     # 64 bytes
    nops = [("NOP", None)] * 4  # 24-byte headers: a non-final fragment holds 8k bytes
    syn = bytes(IP(src=KERNEL, dst=US) / TCP(sport=45000, dport=80, flags="S", seq=1,
                                             options=nops))[20:]
    ack = bytes(IP(src=KERNEL, dst=US) / TCP(sport=45001, dport=80, flags="A", seq=1,
                                             options=nops))[20:]
    frames = [
        # Teardrop: the second fragment overlaps the first (and, in the
        # classic form, is a last fragment ending inside it).
        _frag(t, 0xA001, 0, echo[:40], True), _frag(t, 0xA001, 24, echo[24:48], True),
        _frag(t, 0xA002, 0, echo[:40], True), _frag(t, 0xA002, 24, echo[24:28], False),
        # RFC 1858 overlap: a harmless ACK header, then a fragment at offset 8
        # rewriting the flags into a SYN. Inside bytes already held it is
        # ignored (the first bytes stay); reaching past them, it drops the datagram.
        _frag(t, 0xA003, 0, ack, True, proto=6), _frag(t, 0xA003, 8, syn[8:], False, proto=6),
        _frag(t, 0xA00D, 0, ack, True, proto=6),
        _frag(t, 0xA00D, 8, syn[8:] + bytes(8), False, proto=6),
        # Ping of death, both ways: a fragment past 65,535 bytes (refused as it
        # is parsed), and a last fragment that would make the datagram too long.
        _frag(t, 0xA004, 0, bytes(1480), True), _frag(t, 0xA004, 65120, bytes(1480), False),
        _frag(t, 0xA005, 0, bytes(1480), True), _frag(t, 0xA005, 65000, bytes(520), False),
        # Tiny fragments, 8 bytes each (RFC 1858): harmless, reassembled first.
        *[_frag(t, 0xA006, i, echo[i:i + 8], i + 8 < len(echo)) for i in range(0, 64, 8)],
        *[_frag(t, 0xA007, i, syn[i:i + 8], i + 8 < len(syn), proto=6) for i in range(0, 24, 8)],
        # Lengths: not a multiple of 8 before the end; an empty fragment.
        _frag(t, 0xA008, 0, bytes(13), True), _frag(t, 0xA009, 8, b"", True),
        # An exact duplicate is ignored; the datagram still completes.
        _frag(t, 0xA00A, 0, echo[:32], True), _frag(t, 0xA00A, 0, echo[:32], True),
        _frag(t, 0xA00A, 32, echo[32:], False),
        # Too many pieces: 65 separate 8-byte pieces (the limit is 64).
        *[_frag(t, 0xA00B, 16 * i, bytes(8), True) for i in range(65)],
        # Two different ends.
        _frag(t, 0xA00C, 80, bytes(8), False), _frag(t, 0xA00C, 160, bytes(8), False),
    ]
    delta = t.attack(frames, {"ip.drop.fragment_overlap": 2, "ip.drop.fragment_conflict": 2,
                              "ip.drop.malformed": 1, "ip.drop.fragment_beyond_end": 1,
                              "ip.drop.fragment_length": 2, "ip.drop.fragment_duplicate": 2,
                              "ip.drop.too_many_fragments": 1, "ip.reassembled": 3})
    assert delta["icmp.out.type0"] == 2          # the tiny and the duplicated echo
    assert delta["tcp.out_segs"] == 1            # only the tiny-fragment SYN reached TCP


# ---- TCP header --------------------------------------------------------------------


def test_tcp_header_and_flag_attacks(target):
    t = target

    def tcp(sport, dport=80, flags="S", dst=US, eth_dst=None, **kw):
        frame = t.ether(dst=eth_dst) / IP(src=KERNEL, dst=dst)
        return frame / TCP(sport=sport, dport=dport, flags=flags, seq=1000, **kw)

    def with_options(sport, raw: bytes):
        return tcp(sport, dataofs=5 + len(raw) // 4) / Raw(raw)

    frames = [
        tcp(41001, dataofs=4),                                 # data offset below 5
        tcp(41002, dataofs=15),                                # beyond the segment
        tcp(41003, chksum=0xBAD),
        t.ip(proto=6) / Raw(bytes(10)),                        # shorter than a header
        with_options(41004, b"\x02\x00\x05\xb4"),              # option length 0
        with_options(41005, b"\x08\x01\x00\x00"),              # option length 1
        with_options(41006, b"\x02\xff\x05\xb4"),              # option length 255
        with_options(41007, b"\x01\x01\x01\x08"),              # a kind with no length byte
        tcp(41010, flags="SF"),                                # SYN+FIN
        tcp(41011, flags="SR"),                                # SYN+RST
        tcp(41012, flags=0xFF),                                # every flag
        tcp(41013, flags=0),                                   # no flags: a listener ignores it
        tcp(41014, dport=81, flags=0),                         # ... a closed port resets it
        tcp(41015, flags="FPU"),                               # Xmas scan, listener
        tcp(41016, dport=81, flags="FPU"),                     # Xmas scan, closed port
        tcp(41017, dport=0),
        tcp(0, dport=80),
        tcp(41018, dst="192.0.2.255", eth_dst="ff:ff:ff:ff:ff:ff"),  # SYN to broadcast
        tcp(41019, flags="A", ack=123456),                     # stray ACK to a listener
        tcp(41020, flags="R"),                                 # RST to a listener
    ]
    t.attack(frames, {"tcp.drop.bad_data_offset": 2, "tcp.drop.bad_checksum": 1,
                      "tcp.drop.bad_length": 1, "tcp.drop.bad_options": 4,
                      "tcp.drop.bad_flags": 3, "tcp.drop.no_syn": 2, "tcp.drop.no_conn": 2,
                      "tcp.drop.port_zero": 2, "tcp.drop.broadcast": 1,
                      "tcp.drop.ack_to_listener": 1, "tcp.drop.rst_to_listener": 1,
                      "tcp.out_rsts": 3})


def test_known_option_with_wrong_length_is_ignored(target):
    """An MSS option of length 3 is skipped, as Linux does: the SYN is answered."""
    t = target
    events = []
    t.net.trace.subscribe(events.append)
    frame = t.ip() / TCP(sport=41100, dport=80, flags="S", seq=5, dataofs=6) / Raw(b"\x02\x03\x05\x00")
    t.send([frame])
    assert wait_for(lambda: any(e.get("event") == "seg" and e.get("dir") == "out"
                                and e.get("flags") == "S." and ":41100" in e.get("conn", "")
                                for e in list(events)))
    t.after_round()


# ---- ARP ---------------------------------------------------------------------------


def test_arp_attacks(target):
    t = target
    bcast = "ff:ff:ff:ff:ff:ff"

    def arp(**kw):
        kw.setdefault("hwsrc", ATTACKER_MAC)
        kw.setdefault("psrc", "192.0.2.66")
        kw.setdefault("pdst", US)
        return Ether(src=ATTACKER_MAC, dst=bcast) / ARP(**kw)

    frames = [
        arp(hwlen=7), arp(plen=5), arp(hwtype=6), arp(ptype=0x86DD), arp(op=3),
        Ether(src=ATTACKER_MAC, dst=bcast, type=0x0806) / Raw(bytes(ARP(psrc=KERNEL))[:20]),
        arp(op=1, psrc=US),                                     # claims our address
        arp(op=2, psrc=US, hwdst=t.mac),
        arp(op=1, hwsrc="01:00:5e:00:00:01"),                   # multicast sender MAC
        arp(op=1, hwsrc="00:00:00:00:00:00"),
        arp(op=2, psrc="192.0.2.77", hwdst=t.mac),              # unsolicited reply
    ]
    t.attack(frames, {"arp.drop.malformed": 6, "arp.drop.sender_is_us": 2,
                      "arp.drop.bad_sender_mac": 2, "arp.drop.unsolicited_reply": 1})
    neigh = t.net.neighbours()
    assert "192.0.2.77" not in neigh and US not in neigh
    assert neigh[KERNEL] == t.kmac


# ---- ICMP errors -------------------------------------------------------------------


def test_icmp_errors_for_connections_that_do_not_exist(target):
    t = target

    def err(type_, code, quote, **kw):
        return t.ip() / ICMP(type=type_, code=code, **kw) / quote

    tcp_quote = IPerror(src=US, dst=KERNEL) / TCPerror(sport=80, dport=55555, seq=1)
    frames = [
        err(3, 3, tcp_quote),                                       # port unreachable
        err(3, 1, tcp_quote),                                       # host unreachable
        err(3, 4, tcp_quote, nexthopmtu=68),                        # frag needed
        err(11, 0, tcp_quote),                                      # time exceeded
        err(3, 3, IPerror(src=US, dst=KERNEL) / UDPerror(sport=9999, dport=53)),
        err(3, 3, IPerror(src="192.0.2.50", dst=KERNEL) / TCPerror(sport=80, dport=1)),
        err(3, 3, Raw(bytes(IPerror(src=US, dst=KERNEL, proto=6))[:20])),  # quote too short
        err(3, 3, Raw(b"\x44" + bytes(IPerror(src=US, dst=KERNEL, proto=6))[1:] + bytes(8))),
        err(5, 1, tcp_quote, gw="192.0.2.66"),                      # redirect
        err(4, 0, tcp_quote),                                       # source quench
        t.ip() / ICMP(type=42) / Raw(bytes(8)),
        t.ip() / ICMP(chksum=0xBAD) / Raw(b"ping"),
        t.ip() / ICMP(type=0, id=4242, seq=1) / Raw(b"nobody asked"),  # unsolicited reply
        t.ether(dst="ff:ff:ff:ff:ff:ff") / IP(src=KERNEL, dst="192.0.2.255") / ICMP(),  # smurf
    ]
    t.attack(frames, {"tcp.drop.icmp_no_conn": 4, "udp.drop.icmp_error_unmatched": 1,
                      "icmp.drop.bad_quote": 2, "icmp.drop.short_quote": 1,
                      "icmp.drop.ignored_type": 2, "icmp.drop.unsupported_type": 1,
                      "icmp.drop.malformed": 1, "icmp.drop.unexpected_echo_reply": 1,
                      "icmp.drop.broadcast_echo": 1, "tcp.out_rsts": 0})


# ---- RFC 5961 against a live connection --------------------------------------------


def test_blind_injection_against_a_live_connection(target):
    """RFC 5961: a RST must hit rcv_nxt exactly; in-window RSTs and SYNs get a
    challenge ACK; out-of-window RSTs are dropped; ACKs for data never sent
    are answered and dropped. The connection (the kernel's, to our echo
    service) keeps working until the exact RST."""
    t, net = target, target.net
    s = socket.create_connection((US, 7), timeout=5)
    s.sendall(b"hello")
    assert s.recv(100) == b"hello"
    sport = s.getsockname()[1]
    key = (ip2int(US), 7, ip2int(KERNEL), sport)
    time.sleep(0.2)  # let delayed ACKs settle
    with net.lock:
        conn = net.tcp.lookup(key)
        rcv_nxt, snd_una, snd_max = conn.status()["rcv_nxt"], conn.status()["snd_una"], conn.status()["snd_max"]
        wnd = conn.status()["rcv_wnd"]
        ts = [("Timestamp", (conn.status()["ts_recent"], 0))] if conn.status()["timestamps"] else []
    assert wnd > 1000

    def seg(flags, seq, ack=0, payload=b""):
        frame = t.ip() / TCP(sport=sport, dport=7, flags=flags, seq=seq & 0xFFFFFFFF,
                             ack=ack & 0xFFFFFFFF, window=65535, options=ts)
        return frame / Raw(payload) if payload else frame

    def inject(frame, **expect):
        if expect.get("challenge_acks"):
            time.sleep(0.55)  # one challenge ACK per 500 ms per connection, as Linux
        delta = t.send([frame])
        for name, n in expect.items():
            key_ = "tcp." + name.replace("__", ".")
            assert delta.get(key_, 0) == n, f"{key_}: {delta}"
        with net.lock:
            assert conn.state == "ESTABLISHED"
        return delta

    inject(seg("R", rcv_nxt + (1 << 30)), drop__rst_out_of_window=1, challenge_acks=0)
    inject(seg("R", rcv_nxt + 1), drop__rst_not_exact=1, challenge_acks=1, in_rsts=0)
    inject(seg("RA", rcv_nxt + wnd - 1, snd_max), drop__rst_not_exact=1, challenge_acks=1)
    inject(seg("S", rcv_nxt + 10), drop__syn_in_window=1, challenge_acks=1)
    inject(seg("S", rcv_nxt - 100000), drop__out_of_window=1)
    inject(seg("A", rcv_nxt, snd_max + 100000), drop__ack_unsent=1)
    inject(seg("A", rcv_nxt, snd_una - (1 << 30)), drop__ack_too_old=1, challenge_acks=1)
    inject(seg("PA", rcv_nxt + (1 << 31) - 10, snd_max, b"evil"), drop__out_of_window=1)
    # ICMP errors quoting the connection: a stale sequence number is ignored;
    # a current one is only a soft error for an established connection.
    quote = IPerror(src=US, dst=KERNEL) / TCPerror(sport=7, dport=sport, seq=snd_una + 77777)
    delta = t.send([t.ip() / ICMP(type=3, code=3) / quote])
    assert delta.get("tcp.drop.icmp_stale", 0) == 1
    quote = IPerror(src=US, dst=KERNEL) / TCPerror(sport=7, dport=sport, seq=snd_una)
    t.send([t.ip() / ICMP(type=3, code=1) / quote])
    with net.lock:
        assert conn.state == "ESTABLISHED" and conn.error is None

    # Nothing got through: the echo stream is intact.
    s.sendall(b"still here")
    assert s.recv(100) == b"still here"
    t.after_round()

    # The exact RST resets it.
    time.sleep(0.2)
    with net.lock:
        rcv_nxt = conn.status()["rcv_nxt"]
    delta = t.send([seg("R", rcv_nxt)])
    assert delta.get("tcp.in_rsts", 0) == 1
    with net.lock:
        assert conn.state == "CLOSED" and net.tcp.lookup(key) is None
    s.sendall(b"x")  # the stack answers this with a RST
    with pytest.raises(ConnectionResetError):
        s.recv(100)
    s.close()
    t.after_round()


def test_bad_ack_to_a_half_open_connection(target):
    """A spoofed handshake-completing ACK with the wrong ack number gets a
    RST (RFC 9293 3.10.7.4, SYN_RECEIVED) and the half-open connection stays.
    The spoofed source (on the link, but nobody) never answers, so the
    SYN,ACK and the RST wait in the ARP queue and are dropped there."""
    t, net = target, target.net
    ghost = "192.0.2.66"
    t.send([t.ip(src=ghost) / TCP(sport=42000, dport=80, flags="S", seq=7000)])
    key = (ip2int(US), 80, ip2int(ghost), 42000)
    with net.lock:
        conn = net.tcp.lookup(key)
        assert conn.state == "SYN_RECEIVED"
    delta = t.send([t.ip(src=ghost) / TCP(sport=42000, dport=80, flags="A", seq=7001,
                                          ack=conn.status()["iss"] + 5000)])
    assert delta.get("tcp.drop.bad_ack", 0) == 1 and delta.get("tcp.out_rsts", 0) == 1
    with net.lock:
        assert net.tcp.lookup(key) is conn and conn.state == "SYN_RECEIVED"
    t.after_round()
