"""``stack up --address dhcp`` end to end, against dnsmasq on a real TAP.

* With a server: the ``stack: up`` line comes once bound and names the
  leased address; ``stack stats`` shows the lease; the kernel pings the
  address; SIGTERM sends RELEASE (seen in dnsmasq's log) and exits 0.
* Without one: one ``stack: error:`` line after ``--dhcp-timeout``, exit 1,
  and no TAP left behind.
* ``stack run --address dhcp``: the program's lookups go to the lease's DNS server.
* SIGTERM before a lease came: exit 0 at once, without the ``stack: up`` line.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import subprocess
import sys
import time

from stack.link.tap import interface_exists
from tests.helpers.cli import ENV, ROOT, assert_one_error, run_stack
from tests.helpers.dhcp import KERNEL, RANGE, dhcp_link
from tests.helpers.tap import kill, wait_for


def test_stack_up_address_dhcp_leases_serves_and_releases(netns, tmp_path):
    tap = "tcdhcp0"
    with dhcp_link(tap, tmp_path) as server:
        p = subprocess.Popen([sys.executable, "-m", "stack", "up", "--tap", tap,
                              "--address", "dhcp", "--dhcp-timeout", "20"],
                             stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
        try:
            line = p.stderr.readline()
            assert line.startswith("stack: up"), line
            m = re.search(r" address=([\d.]+)/24 ", line)
            assert m, line
            address = m.group(1)
            lo, hi = (ipaddress.IPv4Address(a) for a in RANGE)
            assert lo <= ipaddress.IPv4Address(address) <= hi
            assert f"router={KERNEL}" in line and f"dns={KERNEL}" in line, line
            ping = subprocess.run(["ping", "-c", "1", "-W", "2", address], capture_output=True,
                                  text=True)
            assert ping.returncode == 0, ping.stdout
            stats = run_stack("stats", "--tap", tap)
            assert stats.returncode == 0, stats.stderr
            assert "dhcp lease:" in stats.stdout
            assert "    state: BOUND" in stats.stdout
            assert f"    address: {address}/24" in stats.stdout
            assert "leases: 1" in stats.stdout  # the dhcp layer's counters
            p.send_signal(signal.SIGTERM)
            rest = p.communicate(timeout=15)[1]
            assert p.returncode == 0, rest
            assert "Traceback" not in rest
        finally:
            kill(p)
        assert wait_for(lambda: server.logged(f"DHCPRELEASE({tap}) {address}"), timeout=5)


def test_no_lease_in_time_is_one_error_line(netns):
    tap = "tcdhcp1"
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    started = time.monotonic()
    r = run_stack("up", "--tap", tap, "--address", "dhcp", "--dhcp-timeout", "1.5",
                  "--host-address", "198.51.100.1/24")
    took = time.monotonic() - started
    line = assert_one_error(r, 1, "--address dhcp", tap, "1.5 s")
    assert "lease" in line
    assert 1.5 <= took < 10
    assert not interface_exists(tap)


def test_stack_run_address_dhcp_resolves_through_the_leased_dns_server(netns, tmp_path):
    tap = "tcdhcp2"
    with dhcp_link(tap, tmp_path, dns=True):
        r = run_stack("run", "--tap", tap, "--address", "dhcp", "--", "-c",
                      "import socket; print(socket.gethostbyname('www.lab.test'))", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{KERNEL}\n"
    assert r.stderr.startswith("stack: up") and f"dns={KERNEL}" in r.stderr.splitlines()[0]


def test_sigterm_while_waiting_for_a_lease_ends_it_at_once(netns):
    tap = "tcdhcp3"
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    p = subprocess.Popen([sys.executable, "-m", "stack", "up", "--tap", tap, "--address", "dhcp",
                          "--host-address", "198.51.100.1/24"],
                         stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert wait_for(lambda: interface_exists(tap), timeout=10)
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        started = time.monotonic()
        err = p.communicate(timeout=10)[1]
        assert time.monotonic() - started < 5  # (the lease wait was 30 s)
        assert p.returncode == 0, err
        assert "Traceback" not in err and "stack: up" not in err
    finally:
        kill(p)
    assert not interface_exists(tap)
