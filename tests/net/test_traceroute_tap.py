"""Traceroute from the stack through a chain of kernel routers:

    stack 192.0.2.2 ─TAP─ 192.0.2.1 [r1: the test namespace] 198.51.100.1 ─veth─
        198.51.100.2 [r2] 198.51.100.5 ─veth─ 198.51.100.6 [r3] 203.0.113.1 ─veth─ 203.0.113.10 [host]

Each router answers the probe whose TTL runs out there with a time
exceeded from the address facing us; the host answers with a port
unreachable. With ``filtered``, r3 drops its own time exceeded messages
(nftables, output hook), so its hop is ``* * *`` and the trace goes on.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.netns import lab_fixture

lab = lab_fixture()

HOPS = ["192.0.2.1", "198.51.100.2", "198.51.100.6", "203.0.113.10"]
NO_TIME_EXCEEDED = """
table ip quiet {
    chain out {
        type filter hook output priority 0; policy accept;
        icmp type time-exceeded drop
    }
}
"""


def chain(lab, filtered: bool = False) -> None:
    r2 = lab.netns("r2", forward=True)
    r3 = lab.netns("r3", forward=True)
    host = lab.netns("host")
    lab.at(None, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.veth(None, "rt-r2", "198.51.100.1/30", r2, "r2-a", "198.51.100.2/30")
    lab.veth(r2, "r2-b", "198.51.100.5/30", r3, "r3-a", "198.51.100.6/30")
    lab.veth(r3, "r3-b", "203.0.113.1/24", host, "h0", "203.0.113.10/24")
    lab.route(None, "198.51.100.4/30", "198.51.100.2")
    lab.route(None, "203.0.113.0/24", "198.51.100.2")
    lab.route(r2, "192.0.2.0/24", "198.51.100.1")
    lab.route(r2, "203.0.113.0/24", "198.51.100.6")
    lab.route(r3, "default", "198.51.100.5")
    lab.route(host, "default", "203.0.113.1")
    if filtered:
        lab.nft(r3, NO_TIME_EXCEEDED)


def test_traceroute_lists_the_routers_in_order_then_the_host(lab, tap_stack):
    chain(lab)
    net = tap_stack(gateway="192.0.2.1")
    hops = net.traceroute("203.0.113.10", probes=3, timeout=2.0)
    assert [h.ttl for h in hops] == [1, 2, 3, 4]
    assert [[p.address for p in h.probes] for h in hops] == [[a] * 3 for a in HOPS]
    assert all(0 < p.rtt < 1.0 for h in hops for p in h.probes)
    assert all(p.flag == "" for h in hops for p in h.probes)
    c = net.stats()
    assert c["udp.traceroute_answers"] == 12 and c.get("udp.traceroute_timeouts", 0) == 0
    assert c["icmp.in.type11"] == 9 and c["icmp.in.type3"] == 3


def test_a_router_that_filters_its_time_exceeded_is_a_star(lab, tap_stack):
    chain(lab, filtered=True)
    net = tap_stack(gateway="192.0.2.1")
    hops = net.traceroute("203.0.113.10", probes=2, timeout=0.5)
    assert [[p.address for p in h.probes] for h in hops] == [
        [HOPS[0]] * 2, [HOPS[1]] * 2, [None, None], [HOPS[3]] * 2]
    assert net.stats()["udp.traceroute_timeouts"] == 2


def test_max_hops_short_of_the_host(lab, tap_stack):
    chain(lab)
    net = tap_stack(gateway="192.0.2.1")
    hops = net.traceroute("203.0.113.10", max_hops=2, probes=1, timeout=1.0)
    assert [[p.address for p in h.probes] for h in hops] == [[HOPS[0]], [HOPS[1]]]


def test_stack_traceroute_prints_like_traceroute(lab, netns):
    chain(lab, filtered=True)
    subprocess.run(["ip", "link", "del", "tsttr"], capture_output=True)
    r = subprocess.run([sys.executable, "-m", "stack", "traceroute", "--tap", "tsttr",
                        "--host-address", "192.0.2.1/24", "--gateway", "192.0.2.1",
                        "-q", "2", "-w", "0.5", "203.0.113.10"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == \
        "traceroute to 203.0.113.10 (203.0.113.10), 30 hops max, 60 byte packets"
    lines = r.stdout.splitlines()
    ms = r"\d+\.\d{3} ms"
    assert len(lines) == 4, r.stdout
    assert re.fullmatch(rf" 1  192\.0\.2\.1  {ms}  {ms}", lines[0]), lines[0]
    assert re.fullmatch(rf" 2  198\.51\.100\.2  {ms}  {ms}", lines[1]), lines[1]
    assert lines[2] == " 3  * *"
    assert re.fullmatch(rf" 4  203\.0\.113\.10  {ms}  {ms}", lines[3]), lines[3]


@pytest.mark.parametrize("args,message", [
    (["-m", "0", "203.0.113.10"], "-m/--max-hops"),
    (["-w", "soon", "203.0.113.10"], "-w/--wait"),
    (["--serve", "echo:7", "203.0.113.10"], "--serve"),
    (["-p", "65530", "203.0.113.10"], "--port 65530"),
])
def test_bad_arguments_are_one_error_line(netns, args, message):
    subprocess.run(["ip", "link", "del", "tsttr"], capture_output=True)
    r = subprocess.run([sys.executable, "-m", "stack", "traceroute", "--tap", "tsttr",
                        "--host-address", "192.0.2.1/24", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("stack: error:") and message in line, line
    subprocess.run(["ip", "link", "del", "tsttr"], capture_output=True)
