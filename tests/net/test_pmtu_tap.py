"""Path MTU discovery through a kernel router with a 1400-byte link:

    stack 192.0.2.2 ─TAP 1500─ 192.0.2.1 [router 1: the test namespace] 198.51.100.1
        ─veth 1400─ 198.51.100.2 [router 2] 203.0.113.1 ─veth 1500─ 203.0.113.10 [host]

Both ends offer MSS 1460; the stack's full-size DF segments reach router
1's 1400-byte link, which answers with ICMP "fragmentation needed" (MTU
1400). The stack's segments shrink, the path MTU is recorded for the host
(``stack route``: ``cache expires ...sec mtu 1400``), a new connection
offers MSS 1360, UDP with IP_PMTUDISC_DO and a DF ping bigger than 1400
bytes are EMSGSIZE, and a UDP datagram without DF is fragmented to 1400.
"""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from stack.livecmd import route_line
from stack.socket_dgram import IP_MTU, IP_MTU_DISCOVER, IP_PMTUDISC_DO
from tests.helpers.netns import lab_fixture
from tests.helpers.tap import wait_for

lab = lab_fixture()

SERVER = r'''
import socket, sys, threading

def tcp():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("203.0.113.10", 5001))
    srv.listen()
    while True:
        c, _ = srv.accept()
        n = 0
        while True:
            data = c.recv(65536)
            if not data:
                break
            n += len(data)
        c.sendall(str(n).encode())
        c.close()

def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("203.0.113.10", 5002))
    while True:
        data, peer = u.recvfrom(65536)
        u.sendto(str(len(data)).encode(), peer)

threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
'''


@pytest.fixture
def path(lab, tap_stack, tmp_path):
    r2 = lab.netns("r2", forward=True)
    host = lab.netns("host")
    lab.at(None, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.veth(None, "rt-r2", "198.51.100.1/30", r2, "r2-a", "198.51.100.2/30", mtu=1400)
    lab.veth(r2, "r2-b", "203.0.113.1/24", host, "h0", "203.0.113.10/24")
    lab.route(None, "203.0.113.0/24", "198.51.100.2")
    lab.route(r2, "192.0.2.0/24", "198.51.100.1")
    lab.route(host, "default", "203.0.113.1")
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    server = lab.popen(host, sys.executable, str(script))
    assert server.stdout.readline().strip() == "ready"
    events: list[dict] = []
    net = tap_stack(gateway="192.0.2.1")
    net.trace.subscribe(events.append)
    return net, events


def upload(net, size: int) -> int:
    with net.create_connection(("203.0.113.10", 5001), timeout=20) as s:
        s.sendall(bytes(size))
        s.shutdown(socket.SHUT_WR)
        return int(s.recv(100))


def test_pmtud_through_a_1400_byte_link(path):
    net, events = path
    assert upload(net, 300_000) == 300_000

    icmp = [e for e in events if e["layer"] == "icmp" and e["event"] == "in" and e["type"] == 3]
    assert icmp and icmp[0]["code"] == 4 and icmp[0]["mtu"] == 1400
    assert icmp[0]["src"] == "192.0.2.1"
    [entry] = [r for r in net.routes() if r.get("cache")]
    assert entry["dst"] == "203.0.113.10" and entry["cache"]["mtu"] == 1400
    assert 590 <= entry["cache"]["expires"] <= 600
    assert route_line(entry).startswith("203.0.113.10 via 192.0.2.1 dev tst")
    assert route_line(entry).endswith(f"cache expires {entry['cache']['expires']}sec mtu 1400")
    # After the ICMP, no segment carries more than the new MTU allows.
    at = icmp[0]["t"]
    later = [e["len"] for e in events if e["layer"] == "tcp" and e["event"] == "seg"
             and e["dir"] == "out" and e["t"] > at]
    assert later and max(later) <= 1400 - 40
    assert net.stats()["ip.pmtu_learnt"] == 1

    # A new connection starts with the path's MSS.
    assert upload(net, 10_000) == 10_000
    syns = [e for e in events if e["layer"] == "tcp" and e["event"] == "seg" and e["dir"] == "out"
            and e["flags"] == "S"]
    assert [s["options"][0] for s in syns] == ["mss 1460", "mss 1360"]


def test_udp_and_ping_honour_the_path_mtu(path):
    net, events = path
    assert upload(net, 100_000) == 100_000  # (learns the path MTU)
    s = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.setsockopt(0, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.connect(("203.0.113.10", 5002))
    assert s.getsockopt(0, IP_MTU) == 1400
    with pytest.raises(OSError) as e:
        s.send(bytes(1400 - 28 + 1))
    assert e.value.errno == errno.EMSGSIZE
    s.send(bytes(1400 - 28))
    assert s.recv(100) == b"1372"
    loose = net.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loose.settimeout(5)
    loose.sendto(bytes(3000), ("203.0.113.10", 5002))
    assert loose.recvfrom(100)[0] == b"3000"
    frag = [e for e in events if e["layer"] == "ip" and e["event"] == "fragmented"]
    assert frag and frag[-1]["mtu"] == 1400 and frag[-1]["fragments"] == 3
    with pytest.raises(OSError) as e:
        net.ping("203.0.113.10", size=1400 - 28 + 1, df=True)
    assert e.value.errno == errno.EMSGSIZE
    assert net.ping("203.0.113.10", size=1400 - 28, df=True) < 1.0
    s.close()
    loose.close()


def test_stack_route_shows_the_entry_of_a_running_stack(lab, tmp_path):
    """``stack route`` against a running ``stack up``: the learnt MTU and its time left."""
    from tests.helpers.tap import kill, sh, stack_up, stop_stack_up

    r2 = lab.netns("r2", forward=True)
    host = lab.netns("host")
    lab.at(None, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.veth(None, "rt-r2", "198.51.100.1/30", r2, "r2-a", "198.51.100.2/30", mtu=1400)
    lab.veth(r2, "r2-b", "203.0.113.1/24", host, "h0", "203.0.113.10/24")
    lab.route(None, "203.0.113.0/24", "198.51.100.2")
    lab.route(r2, "192.0.2.0/24", "198.51.100.1")
    lab.route(host, "default", "203.0.113.1")
    p = stack_up("tstroute", "--gateway", "192.0.2.1", "--serve", "chargen:19")
    try:
        assert p.stderr.readline().startswith("stack: up")
        # The host downloads from the stack's chargen: the stack sends full-size segments.
        got = lab.at(host, "timeout", "10", sys.executable, "-c",
                     "import socket; s = socket.create_connection(('192.0.2.2', 19), 5); "
                     "n = 0\nwhile n < 200000: n += len(s.recv(65536))\nprint(n)")
        assert int(got.stdout) >= 200000
        out = wait_for(lambda: "mtu 1400" in (r := sh(
            f"{sys.executable} -m stack route --tap tstroute")).stdout and r.stdout, timeout=5)
        assert out, "no cached route"
        [line] = [x for x in out.splitlines() if "cache" in x]
        assert line.startswith("203.0.113.10 via 192.0.2.1 dev tstroute src 192.0.2.2 cache expires ")
        assert line.endswith("sec mtu 1400")
        stop_stack_up(p)
    finally:
        kill(p)
