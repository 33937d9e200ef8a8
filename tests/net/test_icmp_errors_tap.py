"""Refused, unreachable and timed out through a kernel router, the stack
next to a kernel client in the same topology:

    stack 192.0.2.2 ─TAP─ 192.0.2.1 [router: the test namespace] 203.0.113.1 ─veth─ 203.0.113.10 [host]
                                    198.51.100.1 ─veth─ 198.51.100.10 [kernel client]

The router's nftables rules reject TCP to the host's ports 81, 82, 83 with
ICMP host-unreachable, admin-prohibited and port-unreachable, and drop
port 84; UDP ports 91-93 are rejected the same three ways. Both clients
must fail the same way: EHOSTUNREACH, EHOSTUNREACH, ECONNREFUSED at once,
ETIMEDOUT after the SYN retries (one, for a quick test); a connected UDP
socket hears of the hard errors only.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import time

from stack.tcp import TcpConfig
from tests.helpers.netns import lab_fixture

lab = lab_fixture()

RULES = """
table ip lab {
    chain lab_forward {
        type filter hook forward priority 0; policy accept;
        ip daddr 203.0.113.10 tcp dport 81 reject with icmp type host-unreachable
        ip daddr 203.0.113.10 tcp dport 82 reject with icmp type admin-prohibited
        ip daddr 203.0.113.10 tcp dport 83 reject with icmp type port-unreachable
        ip daddr 203.0.113.10 tcp dport 84 drop
        ip daddr 203.0.113.10 udp dport 91 reject with icmp type host-unreachable
        ip daddr 203.0.113.10 udp dport 92 reject with icmp type admin-prohibited
        ip daddr 203.0.113.10 udp dport 93 reject with icmp type port-unreachable
    }
}
"""

# What a client does, the same code for the kernel's socket module and the stack's.
CLIENT = r'''
import errno, json, socket, sys, time

def tcp(make, port):
    s = make(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(20)
    t = time.monotonic()
    try:
        s.connect(("203.0.113.10", port))
        out = "connected"
    except OSError as e:
        out = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    s.close()
    return out, time.monotonic() - t

def udp(make, port):
    s = make(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("203.0.113.10", port))
    s.send(b"one")
    time.sleep(0.5)
    try:
        s.send(b"two")
        out = "sent"
    except OSError as e:
        out = errno.errorcode.get(e.errno, str(e.errno))
    s.close()
    return out

def run(make):
    return {"tcp": {p: tcp(make, p) for p in (81, 82, 83, 84)},
            "udp": {p: udp(make, p) for p in (91, 92, 93)}}

if __name__ == "__main__":
    print(json.dumps(run(socket.socket)))
'''


def build(lab) -> str:
    host = lab.netns("host")
    client = lab.netns("kclient")
    lab.at(None, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.veth(None, "rt-h0", "203.0.113.1/24", host, "h0", "203.0.113.10/24")
    lab.veth(None, "rt-k0", "198.51.100.1/24", client, "k0", "198.51.100.10/24")
    lab.route(host, "default", "203.0.113.1")
    lab.route(client, "default", "198.51.100.1")
    lab.ns(client, "sysctl", "-qw", "net.ipv4.tcp_syn_retries=1")
    lab.nft(None, RULES)
    return client


def test_connect_errors_through_a_rejecting_and_a_dropping_router_are_the_kernel_s(
        lab, tap_stack, tmp_path):
    client = build(lab)
    net = tap_stack(gateway="192.0.2.1", tcp_config=TcpConfig(syn_retries=1))
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    kernel = lab.popen(client, sys.executable, str(script))  # (alongside the stack's own run)
    namespace: dict = {}
    exec(compile(CLIENT, "client", "exec"), namespace)
    ours = json.loads(json.dumps(namespace["run"](net.socket)))
    out, err = kernel.communicate(timeout=60)
    assert kernel.returncode == 0, err
    theirs = json.loads(out)

    expected = {"81": "EHOSTUNREACH", "82": "EHOSTUNREACH", "83": "ECONNREFUSED",
                "84": "ETIMEDOUT"}
    for side in (ours, theirs):
        assert {p: r[0] for p, r in side["tcp"].items()} == expected, side
        for port in ("81", "82", "83"):
            assert side["tcp"][port][1] < 0.1, side  # at once: the ICMP's round trip
        assert 1.0 < side["tcp"]["84"][1] < 8.0, side  # one SYN retry, then the timeout
    # UDP: host unreachable is soft (not reported); admin prohibited and port
    # unreachable are hard: the next call fails (Linux's udp_err, no IP_RECVERR).
    assert ours["udp"] == theirs["udp"] == {"91": "sent", "92": "EHOSTUNREACH",
                                            "93": "ECONNREFUSED"}

    c = net.stats()
    assert c["icmp.in.type3"] >= 6 and c["tcp.attempt_fails"] >= 3
    # Port 91's first datagram's host unreachable, and its second's when that
    # one beats close() (a race the client loses under load).
    assert c["udp.drop.icmp_error_soft"] in (1, 2)


def test_a_dropped_syn_is_retried_then_timed_out(lab, tap_stack):
    build(lab)
    net = tap_stack(gateway="192.0.2.1", tcp_config=TcpConfig(syn_retries=2))
    s = net.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(30)
    start = time.monotonic()
    try:
        s.connect(("203.0.113.10", 84))
    except OSError as e:
        assert e.errno == errno.ETIMEDOUT
    else:
        raise AssertionError("connected through a dropping router")
    took = time.monotonic() - start
    assert 2.5 < took < 10, took  # SYN, 2 retransmissions, a last wait
    assert net.stats()["tcp.attempt_fails"] == 1
