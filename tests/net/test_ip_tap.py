"""Issue 2 over a real TAP: the Linux kernel pings the stack.

Each test runs in the private namespace set up by conftest; the kernel side
of the TAP is 192.0.2.1/24 and the stack is 192.0.2.2/24.
"""

from __future__ import annotations

import json
import re

from tests.helpers.tap import kill, sh, stack_up, stop_stack_up


def _loss(output: str) -> float:
    m = re.search(r"([\d.]+)% packet loss", output)
    assert m, output
    return float(m.group(1))


def test_ping_small_no_loss(tap_stack):
    tap_stack()
    r = sh("ping -c 20 -i 0.05 -W 1 192.0.2.2")
    assert _loss(r.stdout) == 0.0
    assert r.stdout.count("bytes from 192.0.2.2") == 20


def test_ping_largest_unfragmented_with_df(tap_stack):
    tap_stack()
    r = sh("ping -c 3 -i 0.1 -W 1 -M do -s 1472 192.0.2.2")
    assert _loss(r.stdout) == 0.0
    assert "1480 bytes from 192.0.2.2" in r.stdout
    # One byte more cannot leave the kernel unfragmented with DF set.
    r = sh("ping -c 1 -W 1 -M do -s 1473 192.0.2.2", check=False)
    assert r.returncode != 0


def test_ping_fragmented_4000(tap_stack):
    net = tap_stack()
    r = sh("ping -c 5 -i 0.1 -W 1 -s 4000 192.0.2.2")
    assert _loss(r.stdout) == 0.0
    assert "4008 bytes from 192.0.2.2" in r.stdout
    stats = net.stats()
    assert stats["ip.reassembled"] >= 5
    assert stats["ip.fragmented"] >= 5


def test_ping_fragmented_65000(tap_stack):
    net = tap_stack()
    r = sh("ping -c 3 -i 0.2 -W 2 -s 65000 192.0.2.2")
    assert _loss(r.stdout) == 0.0
    assert "65008 bytes from 192.0.2.2" in r.stdout
    assert net.stats()["ip.reassembled"] >= 3


def test_ping_largest_datagram(tap_stack):
    tap_stack()
    r = sh("ping -c 2 -i 0.2 -W 2 -s 65507 192.0.2.2")
    assert _loss(r.stdout) == 0.0
    assert "65515 bytes from 192.0.2.2" in r.stdout


def test_ping_flood(tap_stack):
    tap_stack(trace=None)
    r = sh("ping -f -c 2000 -W 1 192.0.2.2", timeout=60)
    assert _loss(r.stdout) <= 1.0, r.stdout


def test_ip_neigh_shows_stack_mac(tap_stack):
    net = tap_stack()
    sh("ping -c 1 -W 1 192.0.2.2")
    r = sh(f"ip neigh show dev {net.tap_name}")
    assert "192.0.2.2" in r.stdout
    assert "02:53:c0:00:02:02" in r.stdout
    # The stack learned the kernel's MAC from the kernel's request.
    assert "192.0.2.1" in net.neighbours()


def test_stack_pings_the_kernel(tap_stack):
    net = tap_stack()
    rtt = net.ping("192.0.2.1", size=56, timeout=2)
    assert 0 < rtt < 1
    rtt = net.ping("192.0.2.1", size=5000, timeout=2)  # fragmented both ways
    assert 0 < rtt < 1


def test_pcap_checksums_valid_in_tshark(tap_stack, tmp_path):
    pcap = tmp_path / "cap.pcap"
    net = tap_stack(pcap=str(pcap))
    sh("ping -c 3 -i 0.1 -W 1 192.0.2.2")
    sh("ping -c 2 -i 0.1 -W 1 -s 3000 192.0.2.2")
    net.close()
    r = sh(f"tshark -r {pcap} -o ip.check_checksum:TRUE -Y ip "
           "-T fields -e ip.checksum.status -e icmp.checksum.status")
    rows = [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]
    # 3 small pings + 2 pings of 3 fragments, each way; 1 means "Good".
    assert len(rows) == 3 * 2 + 2 * 3 * 2
    assert all(ip_status == "1" for ip_status, _ in rows), rows
    icmp = [icmp_status for _, icmp_status in rows if icmp_status]
    assert len(icmp) == 3 * 2 + 2 * 2 and set(icmp) == {"1"}, rows
    r = sh(f"tshark -r {pcap} -Y 'icmp.type == 0 && ip.src == 192.0.2.2' -T fields -e frame.number")
    assert len(r.stdout.split()) == 5


def test_stack_up_command(netns, tmp_path):
    """`stack up` prints the ready line, answers ping, exits 0 on SIGTERM, removes its TAP."""
    trace = tmp_path / "up.jsonl"
    p = stack_up("tapup", "--address", "192.0.2.2/24", "--trace", str(trace))
    try:
        line = p.stderr.readline()
        assert line.startswith("stack: up"), line
        assert "tap=tapup" in line and "192.0.2.2" in line and "mac=02:53:c0:00:02:02" in line
        sh("ping -c 3 -i 0.1 -W 1 192.0.2.2")
        rest = stop_stack_up(p, timeout=10)
    finally:
        kill(p)
    assert "stack: down" in rest
    assert re.search(r"in\.type8: [3-9]", rest), rest  # counters printed at exit
    assert sh("ip link show tapup", check=False).returncode != 0
    events = [json.loads(ln) for ln in trace.read_text().splitlines()]
    assert any(e["layer"] == "icmp" and e["event"] == "in" for e in events)
    assert all({"t", "layer", "event"} <= e.keys() for e in events)


def test_busy_poll_answers_and_then_sleeps(tap_stack):
    """--busy-poll keeps polling after traffic, then goes back to sleeping."""
    import resource
    import time

    net = tap_stack(busy_poll=0.005)
    assert net.busy_poll == 0.005
    r = sh("ping -c 20 -i 0.002 -W 1 192.0.2.2")
    assert _loss(r.stdout) == 0.0
    time.sleep(0.1)  # the polling window (5 ms) is long over
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.1, f"idle stack used {cpu:.3f} s of CPU in 0.5 s"
