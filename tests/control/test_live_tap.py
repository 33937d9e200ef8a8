"""The live views against the Linux kernel on a TAP (root, private namespace).

``stack up`` serves the kernel's curl and nc; ``stack ss -tan`` lists each
connection in the state that mirrors the kernel's own ``ss -tan`` for its end,
in the same columns. In-process, ``stack ss -ti`` prints what ``status()``
says."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from stack import control
from tests.helpers import frames
from tests.helpers.tap import kill, sh, stack_up, stop_stack_up, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process"


def columns(header: str) -> list[str]:
    """A header's column names (ss may run "Port" and "Process" together)."""
    return re.findall(r"Netid|State|Recv-Q|Send-Q|Local Address:|Peer Address:|Port|Process",
                      header)


def stack_cmd(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "stack", *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=ROOT)


def rows(text: str) -> dict[tuple[str, str], tuple[str, int, int]]:
    """ss -tan output: {(local, peer): (state, recv_q, send_q)}; checks the header."""
    lines = text.splitlines()
    assert columns(lines[0]) == columns(HEADER), lines[0]
    out = {}
    for line in lines[1:]:
        state, rq, sq, local, peer = line.split()[:5]
        out[(local, peer)] = (state, int(rq), int(sq))
    return out


def kernel_mac(tap: str) -> str:
    return re.search(r"link/ether ([0-9a-f:]{17})", sh(f"ip link show {tap}").stdout).group(1)


class Lines:
    """Collects a process's stderr lines in a thread."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def raw_syn(tap: str, src: int, sport: int, dport: int) -> None:
    """A SYN from ``src`` (a host that is not there) written on the kernel's
    side of the TAP: the stack answers it, ARP for ``src`` never completes."""
    seg = frames.tcp(src, frames.US, sport, dport, 7000, 0, frames.SYN, frames.MSS_1460)
    frame = frames.eth(frames.ipv4(src, frames.US, 6, seg), src=frames.OTHER_MAC)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((tap, 0))
        s.send(frame)


def test_stack_ss_mirrors_the_kernels_ss(netns):
    tap = "tctl0"
    up = stack_up(tap, "--serve", "http:80", "--serve", "echo:7")
    nc = blocked = None
    try:
        first = up.stderr.readline()
        assert first.startswith("stack: up"), first + up.stderr.read()
        err = Lines(up.stderr)
        sh(f"sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1", check=False)
        sh("ping -c 1 -W 2 192.0.2.2")
        before = stack_cmd("stats", "--tap", tap)
        assert before.returncode == 0, before.stderr
        # ESTAB: nc talks to echo and stays.
        nc = subprocess.Popen(["nc", "-p", "40007", "192.0.2.2", "7"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
        nc.stdin.write(b"hello\n")
        nc.stdin.flush()
        assert nc.stdout.readline() == b"hello\n"
        # TIME-WAIT: the HTTP server closes first (Connection: close), and the
        # client closes only after the server's FIN (curl may close as soon as
        # it has the body, racing the server into a simultaneous close).
        with socket.create_connection(("192.0.2.2", 80), timeout=10,
                                      source_address=("192.0.2.1", 40080)) as web:
            web.sendall(b"GET /bytes/20000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := web.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(bytes(i % 251 for i in range(19980, 20000)))
        assert sh("curl -s -o /dev/null -w '%{http_code}' http://192.0.2.2/bytes/20000").stdout == "200"
        # CLOSE-WAIT: echo is blocked sending to a kernel socket that never
        # reads, so it never reads the FIN that follows everything sent.
        blocked = socket.socket()
        blocked.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        blocked.bind(("192.0.2.1", 40017))
        blocked.connect(("192.0.2.2", 7))
        blocked.settimeout(30)
        blocked.sendall(b"z" * 3_000_000)
        blocked.shutdown(socket.SHUT_WR)
        # SYN-RECV: a SYN from 192.0.2.99, which is not there to answer.
        raw_syn(tap, frames.OTHER, 40099, 80)

        def both():
            ours = stack_cmd("ss", "-tan", "--tap", tap)
            assert ours.returncode == 0, ours.stderr
            theirs = sh("ss -tan")
            return rows(ours.stdout), rows(theirs.stdout), ours.stdout

        def settled():
            o, k, _ = both()
            return (o.get(("192.0.2.2:7", "192.0.2.1:40017"), ("",))[0] == "CLOSE-WAIT"
                    and k.get(("192.0.2.1:40017", "192.0.2.2:7"), ("",))[0] == "FIN-WAIT-2"
                    and ("192.0.2.2:80", "192.0.2.99:40099") in o)

        assert wait_for(settled, timeout=20), both()[2]
        ours, kernel, text = both()
        assert ours[("0.0.0.0:80", "0.0.0.0:*")] == ("LISTEN", 0, 128)
        assert ours[("0.0.0.0:7", "0.0.0.0:*")] == ("LISTEN", 0, 128)
        # kernel ESTAB <-> stack ESTAB
        assert ours[("192.0.2.2:7", "192.0.2.1:40007")] == ("ESTAB", 0, 0)
        assert kernel[("192.0.2.1:40007", "192.0.2.2:7")][0] == "ESTAB"
        # kernel FIN-WAIT-2 <-> stack CLOSE-WAIT, with what each side holds unread
        state, recv_q, send_q = ours[("192.0.2.2:7", "192.0.2.1:40017")]
        assert state == "CLOSE-WAIT" and recv_q > 1_000_000 and send_q > 500_000
        assert kernel[("192.0.2.1:40017", "192.0.2.2:7")][1] > 0
        # the stack closed first: TIME-WAIT here, gone in the kernel
        assert ours[("192.0.2.2:80", "192.0.2.1:40080")] == ("TIME-WAIT", 0, 0)
        assert not [k for k in kernel if k[0] == "192.0.2.1:40080"]
        # SYN-RECV for the host that never answers, which the kernel never saw
        assert ours[("192.0.2.2:80", "192.0.2.99:40099")] == ("SYN-RECV", 0, 0)
        assert not [k for k in kernel if "40099" in k[0] + k[1]]
        # state filters: ss's names
        tw = stack_cmd("ss", "-tan", "state", "time-wait", "--tap", tap).stdout.splitlines()
        assert columns(tw[0]) == columns(HEADER)[1:] and len(tw) == 2 and "192.0.2.1:40080" in tw[1]
        est = stack_cmd("ss", "-t", "-n", "state", "established", "--tap", tap).stdout
        assert "40007" in est and "40017" not in est
        listening = stack_cmd("ss", "-tln", "--tap", tap).stdout.splitlines()
        assert [line.split()[0] for line in listening[1:]] == ["LISTEN", "LISTEN"]

        # stats rise with traffic; neigh shows the kernel's MAC
        sh("curl -s -o /dev/null http://192.0.2.2/bytes/1000")
        after = stack_cmd("stats", "--tap", tap).stdout

        def count(text: str, name: str) -> int:
            m = re.search(rf"^    {name}: (\d+)$", text, re.M)
            return int(m.group(1)) if m else 0

        assert count(after, "in_segs") > count(before.stdout, "in_segs") + 100
        assert count(after, "passive_opens") >= count(before.stdout, "passive_opens") + 3
        neigh = stack_cmd("neigh", "--tap", tap).stdout.splitlines()
        assert f"192.0.2.1 dev {tap} lladdr {kernel_mac(tap)} REACHABLE" in neigh
        assert f"192.0.2.99 dev {tap} INCOMPLETE" in neigh
        assert stack_cmd("route", "--tap", tap).stdout == (
            f"192.0.2.0/24 dev {tap} proto kernel scope link src 192.0.2.2\n"
            "local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1\n")

        # SIGUSR1: the counters and the connection table
        up.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: "192.0.2.1:40017" in err.text(), timeout=5), err.text()
        table = err.text().split("stack: sockets now\n", 1)[1]
        assert table.startswith("Netid State ") and "CLOSE-WAIT" in table
    finally:
        if blocked is not None:
            blocked.close()
        kill(nc)
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=20) == 0
    gone = stack_cmd("ss", "--tap", tap)
    assert gone.returncode == 1
    assert gone.stderr == (f"stack: error: no stack on tap {tap} "
                           f"(@stack/{tap}: Connection refused)\n")


def test_control_path_is_served_and_removed(netns, tmp_path):
    tap = "tctl1"
    path = str(tmp_path / "ctl.sock")
    up = stack_up(tap, "--control", path)
    try:
        assert up.stderr.readline().startswith("stack: up")
        assert os.path.exists(path)
        r = stack_cmd("route", "--control", path)
        assert r.stdout.splitlines()[0] == (
            f"192.0.2.0/24 dev {tap} proto kernel scope link src 192.0.2.2")
        assert stack_cmd("route", "--tap", tap).returncode == 1   # not on the abstract name
        second = stack_up("tctl2", "--control", path)
        out = second.stderr.read()
        assert second.wait(timeout=20) == 1
        assert out.startswith(f"stack: error: --control {path}: ") and "Traceback" not in out
    finally:
        stop_stack_up(up)
    assert not os.path.exists(path)


def test_ss_ti_agrees_with_status(tap_stack):
    """In-process: a program that accepts and never closes, the kernel as
    client; ``stack ss -ti`` (through the control socket) against the
    connection's own status()."""
    net = tap_stack()
    srv = control.ControlServer(net, control.abstract_name(net.tap_name), tap=net.tap_name)
    server = net.create_server(("0.0.0.0", 9000))
    kernel = socket.create_connection(("192.0.2.2", 9000), timeout=10)
    try:
        conn, _ = server.accept()
        conn.settimeout(10)
        kernel.sendall(b"k" * 100_000)
        got = 0
        while got < 100_000:
            got += len(conn.recv(65536))
        conn.sendall(b"s" * 50_000)
        n = 0
        while n < 50_000:
            n += len(kernel.recv(65536))
        kport = kernel.getsockname()[1]
        tcp = net.tcp.lookup((frames.US, 9000, frames.PEER, kport))
        wait_for(lambda: tcp.status()["bytes_acked"] == 50_001)
        r = stack_cmd("ss", "-ti", "-n", "--tap", net.tap_name)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        row = next(i for i, line in enumerate(lines) if f"192.0.2.1:{kport}" in line)
        assert lines[row].split()[:5] == ["ESTAB", "0", "0", "192.0.2.2:9000",
                                          f"192.0.2.1:{kport}"]
        info = lines[row + 1]
        assert info.startswith("\t ")
        fields = dict(item.split(":", 1) for item in info.split() if ":" in item)
        st = tcp.status()
        assert info.split()[:3] == ["ts", "sack", st["congestion"]]
        assert fields["wscale"] == f"{st['snd_wscale']},{st['rcv_wscale']}"
        assert float(fields["rto"]) == round(st["rto"] * 1e6) / 1000
        srtt, rttvar = fields["rtt"].split("/")
        assert float(srtt) == round(st["srtt"] * 1e6) / 1000
        assert float(rttvar) == round(st["rttvar"] * 1e6) / 1000
        assert int(fields["mss"]) == st["mss"]
        assert int(fields["cwnd"]) == st["cwnd"] // st["mss"]
        assert int(fields["bytes_sent"]) == st["bytes_sent"] == 50_000
        assert int(fields["bytes_acked"]) == st["bytes_acked"] == 50_001
        assert int(fields["bytes_received"]) == st["bytes_received"] == 100_000
        assert int(fields["segs_out"]) <= st["segs_out"] and int(fields["segs_in"]) <= st["segs_in"]
        assert int(fields["snd_wnd"]) == st["snd_wnd"]
        # The kernel closes; the program never does: CLOSE-WAIT with no timer
        # pending, listed with its owner.
        kernel.shutdown(socket.SHUT_WR)
        wait_for(lambda: tcp.state == "CLOSE_WAIT")
        r = stack_cmd("ss", "-tanp", "state", "close-wait", "--tap", net.tap_name)
        line = r.stdout.splitlines()[1]
        assert line.split()[2:4] == ["192.0.2.2:9000", f"192.0.2.1:{kport}"]
        assert f'users:(("{open("/proc/self/comm").read().strip()}",pid={os.getpid()}))' in line
        kernel_side = sh(f"ss -tan state fin-wait-2 sport = :{kport}").stdout
        assert f"192.0.2.1:{kport}" in kernel_side
        # The program closes at last: LAST_ACK, then gone.
        conn.close()
        assert wait_for(lambda: tcp.state == "CLOSED")
        time.sleep(0.05)
        assert srv.errors == 0 and srv.requests >= 2
    finally:
        kernel.close()
        server.close()
        srv.close()
