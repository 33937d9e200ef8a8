"""``stack trace``'s live and layer views against the Linux kernel on a TAP.

* ``stack trace --follow`` started before a curl prints that connection's
  handshake within a second, while ``stack up`` keeps running.
* ``ping -s 4000`` and a fragmented UDP datagram show in ``--layer ip`` with
  their fragment counts, both ways.
* A connect to an address on the subnet that nobody has fails with
  EHOSTUNREACH; the ARP view and the connect's timeline both say ``no ARP
  reply for X after N requests``, the timeline that the host unreachable
  ended the attempt.
* Port unreachable, both ways, shows in ``--layer icmp`` by name with the
  datagram it quotes; a curl to a closed port is a refused two-row ladder.
* A ``--from/--to`` ladder of a lossy transfer shows the duplicate ACKs and
  SACK blocks before a fast retransmit; the plot data of the window agrees.
"""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from stack import tracetool
from stack.services import parse_service, start_service
from stack.tcp import TcpConfig
from tests.helpers.tap import kill, sh, stack_up, stop_stack_up, wait_for

STACK = "192.0.2.2"
HOST = "192.0.2.1"


def _stack_trace(*args: str, code: int = 0) -> str:
    r = subprocess.run([sys.executable, "-m", "stack", "trace", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


class Lines:
    """A subprocess's stdout lines, each with the time it was read."""

    def __init__(self, p: subprocess.Popen) -> None:
        self.got: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._read, args=(p,), daemon=True)
        self._t.start()

    def _read(self, p: subprocess.Popen) -> None:
        for line in p.stdout:
            self.got.append((time.monotonic(), line.rstrip("\n")))

    def first(self, *words: str) -> float | None:
        for t, line in self.got:
            if all(w in line for w in words):
                return t
        return None


def test_follow_prints_a_curls_handshake_within_a_second_while_the_stack_runs(netns, tmp_path):
    trace = tmp_path / "live.jsonl"
    up = stack_up("tapfw", "--serve", "http:80", "--trace", str(trace))
    fol = None
    try:
        assert up.stderr.readline().startswith("stack: up")
        sh("sysctl -qw net.ipv6.conf.tapfw.disable_ipv6=1", check=False)
        fol = subprocess.Popen([sys.executable, "-m", "stack", "trace", "--follow", str(trace)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = Lines(fol)
        time.sleep(0.5)   # the follower is reading the file before the connection starts
        started = time.monotonic()
        r = sh(f"curl -sS --max-time 10 -o /dev/null -w '%{{http_code}}' http://{STACK}/bytes/100")
        assert r.stdout == "200"
        assert wait_for(lambda: lines.first("LISTEN -> SYN_RECEIVED"), timeout=2.0)
        assert wait_for(lambda: lines.first("SYN_RECEIVED -> ESTABLISHED"), timeout=2.0)
        est = lines.first("SYN_RECEIVED -> ESTABLISHED")
        assert est - started < 1.0, lines.got
        assert up.poll() is None and fol.poll() is None       # both still running
        syn = lines.first("LISTEN -> SYN_RECEIVED")
        assert f"{STACK}:80-{HOST}:" in [ln for t, ln in lines.got if t == syn][0]
        fol.send_signal(signal.SIGINT)
        assert fol.wait(timeout=5) == 0
        assert "Traceback" not in fol.stderr.read()
        stop_stack_up(up)
    finally:
        kill(fol, up)


def test_ping_and_udp_fragments_appear_in_the_ip_view(tap_stack, tmp_path):
    path = tmp_path / "frag.jsonl"
    net = tap_stack(trace=str(path))
    svc = start_service(net, parse_service("udp-echo:7"))
    try:
        sh(f"ping -c 1 -W 2 -s 4000 {STACK}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(bytes(2000), (STACK, 7))
            data, _ = s.recvfrom(4000)
            assert len(data) == 2000
    finally:
        svc.close()
    net.trace.flush()
    out = _stack_trace(str(path), "--layer", "ip")
    # ICMP echo of 4000 bytes: 4008 bytes of IP payload, 3 fragments each way.
    assert "fragments at offsets 0,1480,2960, reassembled 4008 bytes in " in out, out
    assert "4008 bytes in 3 fragments at offsets 0,1480,2960 (MTU 1500)" in out, out
    # UDP of 2000 bytes: 2008 bytes, 2 fragments each way.
    assert "2 fragments at offsets 0,1480, reassembled 2008 bytes in " in out, out
    assert "2008 bytes in 2 fragments at offsets 0,1480 (MTU 1500)" in out, out
    assert out.splitlines()[-1] == ("ip: 2 datagrams fragmented out (5 fragments), 2 reassembled "
                                    "in (5 fragments), 0 reassembly timeouts")
    icmp = _stack_trace(str(path), "--layer", "icmp")
    assert f"in  from {HOST}  echo request" in icmp and f"out to   {HOST}  echo reply" in icmp


def test_arp_failure_is_in_the_arp_view_and_the_connects_cause(tap_stack, tmp_path):
    path = tmp_path / "arp.jsonl"
    net = tap_stack(trace=str(path), tcp_config=TcpConfig(syn_retries=2))
    s = net.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError) as e:
        s.connect(("192.0.2.99", 80))     # on the subnet; nobody answers ARP for it
    assert e.value.errno == errno.EHOSTUNREACH  # after 3 s, as Linux
    s.close()
    net.trace.flush()
    arp = _stack_trace(str(path), "--layer", "arp")
    assert "request who-has 192.0.2.99 (attempt 3)" in arp
    assert "failed: no ARP reply for 192.0.2.99 after 3 requests" in arp
    out = _stack_trace(str(path), "--conn", "192.0.2.99:80")
    assert "SYN_SENT -> CLOSED    icmp host_unreachable" in out, out
    assert "icmp host_unreachable for seq=" in out and "a hard error: the connection attempt ends" in out
    assert "arp: no ARP reply for 192.0.2.99 after 3 requests" in out, out
    assert "final state CLOSED (no ARP reply for 192.0.2.99 after 3 requests)" in out


def test_port_unreachable_both_ways_and_a_refused_curl(tap_stack, tmp_path):
    path = tmp_path / "icmp.jsonl"
    net = tap_stack(trace=str(path))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as k:   # the kernel to a closed stack port
        k.bind((HOST, 0))
        kport = k.getsockname()[1]
        k.sendto(b"anyone?", (STACK, 9999))
        time.sleep(0.3)
    u = net.socket(socket.AF_INET, socket.SOCK_DGRAM)             # the stack to a closed kernel port
    u.bind(("0.0.0.0", 5353))
    u.sendto(b"hello", (HOST, 9))
    time.sleep(0.3)
    u.close()
    r = sh(f"curl -sS --max-time 5 http://{STACK}:81/", check=False)
    assert r.returncode == 7, r          # connection refused
    net.trace.flush()
    icmp = _stack_trace(str(path), "--layer", "icmp")
    assert (f"out to   {HOST}  destination unreachable: port unreachable\n"
            f"                  quoting udp {HOST}:{kport} > {STACK}:9999 ") in icmp, icmp
    assert (f"in  from {HOST}  destination unreachable: port unreachable\n"
            f"                  quoting udp {STACK}:5353 > {HOST}:9 ") in icmp, icmp
    assert "type 3" not in icmp
    udp = _stack_trace(str(path), "--layer", "udp")
    assert f"socket {STACK}:5353: 0 in (0 bytes), 1 out (5 bytes)" in udp
    assert "port 9999 x1" in udp
    ladder = _stack_trace(str(path), "--conn", ":81", "--format", "ladder")
    blocks = ladder.strip().split("\n\n")
    assert "(refused: nothing listening)" in blocks[0].splitlines()[0]
    rows = blocks[0].splitlines()[3:]
    assert "(SYN_SENT)" in rows[0] and "SYN seq=" in rows[0]
    assert "RST,ACK" in rows[1] and rows[1].endswith("CLOSED")


def test_window_ladder_of_a_lossy_transfer_shows_dup_acks_and_sack_before_fast_retransmit(
        tap_stack, tmp_path):
    path = tmp_path / "lossy.jsonl"
    net = tap_stack(trace=str(path), impair="loss=0.02,seed=3")
    svc = start_service(net, parse_service("http:80"))
    try:
        r = sh(f"curl -sS --max-time 60 -o /dev/null -w '%{{size_download}}' "
               f"http://{STACK}/bytes/2000000", timeout=70)
        assert r.stdout == "2000000"
    finally:
        svc.close()
    net.trace.flush()
    events, _ = tracetool.load(str(path))
    fast = [e for e in events if e["event"] == "retransmit" and e.get("reason") == "fast"]
    assert fast, [e.get("reason") for e in events if e["event"] == "retransmit"]
    rex = fast[0]
    name = rex["conn"]
    # The window: from the first ACK that stopped at the hole to the retransmission.
    first_ack = min(float(e["t"]) for e in events if e.get("conn") == name and e["event"] == "seg"
                    and e["dir"] == "in" and e.get("ack") == rex["seq"])
    lo, hi = first_ack, float(rex["t"])
    out = _stack_trace(str(path), "--conn", name.split("-")[1], "--format", "ladder",
                       "--from", f"{lo:.6f}", "--to", f"{hi:.6f}")
    rows = [ln for ln in out.splitlines() if ln[:12].strip().replace(".", "").isdigit()]
    i = next(i for i, ln in enumerate(rows) if "(retransmission: fast)" in ln)
    before = rows[:i]
    dups = [ln for ln in before if "dup ACK #" in ln and f"ack={rex['seq']}" in ln]
    assert dups and any("SACK " in ln for ln in dups), out
    assert f"seq={rex['seq']}" in rows[i]
    assert all(lo - 1e-6 <= float(ln.split()[0]) <= hi + 1e-6 for ln in rows)
    # The plot of the same window: the retransmission is in it, nothing outside it is.
    data = tracetool.plot_data(events, name, t_from=lo, t_to=hi)
    t0 = data["t0"]
    rel = (rex["seq"] - data["isn"]) % (1 << 32)
    assert (round(hi - t0, 6), rel) in [(round(t, 6), s) for t, s, _ in data["retransmissions"]]
    for key in ("segments", "acks", "window"):
        assert all(lo - t0 - 1e-9 <= p[0] <= hi - t0 + 1e-9 for p in data[key]), key
    assert any(a == rel for _, a in data["acks"])       # the ACKs stuck at the hole
    png = tmp_path / "window.png"
    out = _stack_trace(str(path), "--conn", name.split("-")[1], "--plot", str(png),
                       "--from", f"{lo:.6f}", "--to", f"{hi:.6f}")
    assert png.read_bytes()[:4] == b"\x89PNG" and f"from {lo:.6f} to {hi:.6f}" in out


def test_trace_dash_streams_readable_lines_to_stderr(netns, tap_stack):
    up = stack_up("tapdash", "--serve", "http:80", "--trace", "-")
    try:
        lines: list[str] = []

        def read_until(pred, timeout=5.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = up.stderr.readline()
                if not line:
                    break
                lines.append(line.rstrip("\n"))
                if pred(lines[-1]):
                    return lines[-1]
            return None

        assert read_until(lambda ln: ln.startswith("stack: up")), lines
        sh("sysctl -qw net.ipv6.conf.tapdash.disable_ipv6=1", check=False)
        sh(f"curl -sS --max-time 10 -o /dev/null http://{STACK}/bytes/10")
        got = read_until(lambda ln: "LISTEN -> SYN_RECEIVED (rcv SYN seq=" in ln)
        assert got is not None, lines
        assert got.split()[1:3] == ["tcp", "state"] and not got.lstrip().startswith("{")
        assert any(" CLOSED -> LISTEN (user listen)" in ln for ln in lines)
        stop_stack_up(up)
    finally:
        kill(up)
    net = tap_stack(trace="-")          # the Python API's trace="-" is the same
    assert net.trace.sink is sys.stderr and net.trace.fmt == "text"
