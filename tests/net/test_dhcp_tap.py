"""The DHCP client against a real dnsmasq on the kernel side of a TAP.

The stack gets an address in dnsmasq's range, the gateway and the DNS
server (which then answers its lookups); the kernel pings the leased
address; a renewal happens (dnsmasq's shortest lease is 2 minutes, so T1
is made short with option 58: ``--dhcp-option=option:T1,3``) and is seen
both in the stack's trace and in dnsmasq's log; close() sends RELEASE and
the lease leaves dnsmasq's lease file. Without the broadcast flag dnsmasq
answers unicast to the offered address, and the stack takes that too.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from stack import Stack
from tests.helpers.dhcp import KERNEL, RANGE, dhcp_link
from tests.helpers.tap import wait_for


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def in_range(address: str) -> bool:
    lo, hi = (ipaddress.IPv4Address(a) for a in RANGE)
    return lo <= ipaddress.IPv4Address(address) <= hi


def test_a_lease_from_dnsmasq_renewed_and_released(netns, tmp_path):
    tap, trace = "tdhcp0", tmp_path / "trace.jsonl"
    with dhcp_link(tap, tmp_path, extra=("--dhcp-option=option:T1,3",), dns=True) as server:
        net = Stack.tap(tap, address="dhcp", trace=str(trace))
        try:
            lease = net.dhcp.wait(20)
            assert lease is not None, net.dhcp.status()
            assert net.stats()["dhcp.discover_out"] == 1  # the first DISCOVER was answered
            address = net.address_str
            assert in_range(address) and net.prefix_len == 24
            status = net.dhcp.status()
            assert (status["state"], status["router"], status["dns"], status["server"]) == (
                "BOUND", KERNEL, [KERNEL], KERNEL)
            assert status["lease"] == 120 and status["t1"] == 3
            assert net.routes()[0]["via"] == KERNEL
            # dnsmasq knows the lease; the kernel reaches the leased address.
            assert any(address in line and "02:53:dc" in line for line in server.lease_lines())
            ping = subprocess.run(["ping", "-c", "1", "-W", "2", address], capture_output=True,
                                  text=True)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            # The lease's DNS server answers the stack's lookups.
            assert net.gethostbyname("www.lab.test") == KERNEL
            # A renewal at T1: unicast REQUEST, ACK, still bound to the same address.
            assert wait_for(lambda: net.stats().get("dhcp.renewals", 0) >= 1, timeout=10)
            assert net.address_str == address
            assert len(server.logged(f"DHCPACK({tap}) {address}")) >= 2
        finally:
            net.close()
        assert net.stats()["dhcp.release_out"] == 1
        assert wait_for(lambda: server.logged(f"DHCPRELEASE({tap}) {address}"), timeout=5)
        assert wait_for(lambda: not any(address in line for line in server.lease_lines()),
                        timeout=5)
    trace_events = [e for e in events(trace) if e["layer"] == "dhcp"]
    messages = [(e["event"], e["message"]) for e in trace_events
                if e["event"] in ("send", "receive")]
    assert messages[:4] == [("send", "DISCOVER"), ("receive", "OFFER"), ("send", "REQUEST"),
                            ("receive", "ACK")]
    renew = [e for e in trace_events if e["event"] == "send" and e["ciaddr"] == address
             and e["message"] == "REQUEST"]
    assert renew and renew[0]["dst"] == KERNEL  # unicast to the server
    assert messages[-1] == ("send", "RELEASE")
    states = [(e["from"], e["to"]) for e in trace_events if e["event"] == "state"]
    assert states[:3] == [("INIT", "SELECTING"), ("SELECTING", "REQUESTING"),
                          ("REQUESTING", "BOUND")]
    assert ("BOUND", "RENEWING") in states and ("RENEWING", "BOUND") in states
    assert states[-1] == ("BOUND", "STOPPED")
    bound = [e for e in trace_events if e["event"] == "bound"]
    assert bound[0]["address"] == f"{address}/24" and bound[0]["router"] == KERNEL
    assert [e["reason"] for e in trace_events if e["event"] == "unbound"] == ["released"]


def test_unicast_replies_before_an_address_exists(netns, tmp_path):
    """Without the broadcast flag dnsmasq sends OFFER and ACK to the offered
    address and our MAC; the stack, still at 0.0.0.0, takes them."""
    from stack.net.dhcp import DhcpConfig

    tap, trace = "tdhcp1", tmp_path / "trace.jsonl"
    with dhcp_link(tap, tmp_path) as server:
        net = Stack.tap(tap, address="dhcp", trace=str(trace),
                        dhcp_config=DhcpConfig(broadcast_flag=False))
        try:
            assert net.dhcp.wait(10) is not None, net.dhcp.status()
            assert in_range(net.address_str)
        finally:
            net.close()
        assert not server.logged("broadcast response")
    udp_in = [e for e in events(trace) if e["layer"] == "udp" and e["event"] == "in"]
    assert len(udp_in) == 2 and all(e["dst"].endswith(":68") for e in udp_in)
    assert all(in_range(e["dst"].split(":")[0]) for e in udp_in)  # unicast to the offer
