"""The path emulator's statistics, measured through it by kernel traffic
between two namespaces (bench/pathemu/topo.py builds them inside the test's
private namespace and deletes them): loss within binomial bounds, delay and
jitter in ping's RTTs, reordering seen by a UDP receiver, a rate limit in a
TCP flow's goodput and a queue limit bounding the queueing delay."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from bench.pathemu.core import Profile
from bench.pathemu.topo import ROOT, Path

SERVER = "198.51.100.1"
PORT = 5001


@pytest.fixture
def path(netns):
    with Path(f"pe{os.getpid()}") as p:
        yield p


class UdpSink:
    """A UDP receiver in the server namespace: the sequence numbers it got, in order."""

    def __init__(self, path: Path) -> None:
        with path.inside("s"):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((SERVER, PORT))
        self.sock.settimeout(0.5)
        self.seqs: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                return
            except OSError:
                return
            self.seqs.append(struct.unpack_from("!I", data)[0])

    def join(self) -> list[int]:
        self.thread.join(10)
        self.sock.close()
        return self.seqs


def udp_send(path: Path, count: int, size: int = 64, pps: float = 20000) -> None:
    """``count`` datagrams numbered from 0 from the client, at about ``pps``."""
    with path.inside("c"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes(size - 4)
    start = time.monotonic()
    for i in range(count):
        s.sendto(struct.pack("!I", i) + pad, (SERVER, PORT))
        if i % 50 == 49:
            ahead = start + (i + 1) / pps - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    s.close()


def ping(path: Path, count: int, interval: float = 0.02) -> list[float]:
    done = path.at("c", "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2",
                   SERVER, check=False)
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", done.stdout)]


def clean(counters: dict) -> None:
    """Nothing was lost outside the emulator's own decisions."""
    assert counters["send_errors"] == 0 and counters["rx_errors"] == 0
    assert sum(counters["rx_drops"].values()) == 0


def test_loss_is_within_binomial_bounds(path):
    n, p = 20000, 0.01
    emu = path.start(Profile(loss=p, seed=3))
    sink = UdpSink(path)
    udp_send(path, n)
    got = sink.join()
    counters = emu.stop()
    clean(counters)
    lost = n - len(got)
    sd = (n * p * (1 - p)) ** 0.5                    # 14.1 frames
    assert abs(lost - n * p) <= 4.5 * sd, lost
    assert counters["a_to_b"]["lost"] == lost        # every loss is the emulator's
    assert counters["a_to_b"]["forwarded"] == len(got)


def test_delay_and_jitter_show_in_the_rtt(path):
    emu = path.start(Profile(delay=10))
    rtts = ping(path, 30)
    clean(emu.stop())
    assert len(rtts) == 30
    assert min(rtts) >= 20.0 and sum(rtts) / len(rtts) <= 22.5, rtts
    assert max(rtts) - min(rtts) < 3.0, rtts

    emu = path.start(Profile(delay=10, jitter=5, seed=2))
    rtts = ping(path, 60)
    clean(emu.stop())
    assert len(rtts) == 60
    mean = sum(rtts) / len(rtts)
    sd = (sum((r - mean) ** 2 for r in rtts) / len(rtts)) ** 0.5
    # Two uniform ±5 ms draws a round trip: 20 ms ± 10, standard deviation 4.1 ms.
    assert 10.0 <= min(rtts) and max(rtts) <= 33.0, rtts
    assert 18.0 <= mean <= 24.0, mean
    assert 2.5 <= sd <= 6.0, sd


def test_reordering_shows_at_about_the_set_rate(path):
    n, p = 5000, 0.02
    emu = path.start(Profile(reorder=p, seed=5))
    sink = UdpSink(path)
    udp_send(path, n, pps=10000)
    got = sink.join()
    counters = emu.stop()
    clean(counters)
    assert sorted(got) == list(range(n))             # reordered, never lost
    late, highest = 0, -1
    for seq in got:
        if seq < highest:
            late += 1
        highest = max(highest, seq)
    sd = (n * p * (1 - p)) ** 0.5                    # 9.9 frames
    assert abs(late - n * p) <= 4.5 * sd, late
    assert counters["a_to_b"]["out_of_order"] == late


def test_rate_limit_sets_the_goodput_and_the_queue_bounds_the_delay(path):
    emu = path.start(Profile(delay=5, rate=50, queue=100))
    with path.inside("s"):
        server = socket.socket()
    server.bind((SERVER, PORT))
    server.listen()
    received = [0, 0.0, 0.0]                         # bytes, first and last arrival

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 16):
                now = time.monotonic()
                if not received[0]:
                    received[1] = now
                received[0] += len(data)
                received[2] = now

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    with path.inside("c"):
        client = socket.create_connection((SERVER, PORT), timeout=5)
    chunk = bytes(1 << 16)
    end = time.monotonic() + 3.0
    with client:
        while time.monotonic() < end:
            client.sendall(chunk)
    thread.join(10)
    server.close()
    counters = emu.stop()
    clean(counters)
    mbit = received[0] * 8 / (received[2] - received[1]) / 1e6
    # 50 Mbit/s of 1514-byte frames carries at most 47.8 Mbit/s of TCP payload.
    assert 40.0 <= mbit <= 50.0, mbit
    assert counters["a_to_b"]["max_queue"] <= 100

    # A UDP flood at 80 Mbit/s into the 50 Mbit/s limit fills the 100-packet
    # queue: frames are dropped at its tail and no frame waits longer than
    # 100 frames take to send (24.2 ms), which ping sees.
    emu = path.start(Profile(rate=50, queue=100))
    sink_ = UdpSink(path)
    flood = threading.Thread(target=udp_send, args=(path, 13000, 1472, 6800))
    flood.start()
    time.sleep(0.3)
    rtts = ping(path, 40, 0.03)
    flood.join()
    sink_.join()
    counters = emu.stop()
    clean(counters)
    ab = counters["a_to_b"]
    assert ab["queue_drops"] > 1000, ab
    assert ab["max_queue"] == 100, ab
    assert ab["max_delay_ms"] <= 24.2 + 3.0, ab
    assert len(rtts) >= 30 and 15.0 <= sorted(rtts)[len(rtts) // 2] <= 24.2 + 4.0, rtts


def test_the_namespaces_go_when_the_run_fails(netns):
    tag = f"pf{os.getpid()}"
    with pytest.raises(RuntimeError, match="pathemu did not start"):
        with Path(tag) as p:
            assert {f"{tag}-c", f"{tag}-e", f"{tag}-s"} <= set(netns_names())
            p.ports = ("ea", "nosuch")              # the emulator cannot open it
            p.start(Profile())
    assert not [n for n in netns_names() if n.startswith(tag + "-")]


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_the_stack_on_its_tap_goes_through_the_emulator(netns, tmp_path):
    with Path(f"pk{os.getpid()}", stack=True) as p:
        emu = p.start(Profile(delay=10, seed=4))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = p.popen("e", sys.executable, "-m", "stack.cli", "up", "--tap", "tap0",
                       "--address", "203.0.113.2/24", "--serve", "http:80",
                       "--control", str(tmp_path / "ctl"), env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15              # the stack starting, then ARP
            while p.at("s", "ping", "-n", "-c", "1", "-W", "1", "203.0.113.2",
                       check=False).returncode and time.monotonic() < deadline:
                pass
            done = p.at("s", "ping", "-n", "-c", "10", "-i", "0.02", "-W", "1",
                        "203.0.113.2", check=False)
            rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", done.stdout)]
            assert len(rtts) == 10 and 20.0 <= min(rtts) and max(rtts) <= 25.0, rtts
            out = tmp_path / "body"
            got = p.at("s", "curl", "-s", "--max-time", "20", "-o", str(out),
                       "http://203.0.113.2/bytes/300000", check=False)
            assert got.returncode == 0
            assert out.read_bytes() == (bytes(range(251)) * 1200)[:300000]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        counters = emu.stop()
    clean(counters)
    # The stack's answers left through the TAP and were delayed like the rest.
    assert counters["a_to_b"]["bytes_forwarded"] > 300000
    assert 10.0 <= counters["a_to_b"]["mean_delay_ms"] <= 12.0


def test_the_cli_refuses_a_loop_and_survives_a_down_interface(netns):
    tag = f"pl{os.getpid() % 100000}"
    a, b, c, d = (f"{tag}{x}" for x in "abcd")
    try:
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        subprocess.run(["ip", "link", "add", c, "type", "veth", "peer", "name", d], check=True)
        for dev in (a, b):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        cli = [sys.executable, "-m", "bench.pathemu", "--duration", "0.5"]
        done = subprocess.run([*cli, "--a", a, "--b", b], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == (f"pathemu: error: --a {a} and --b {b} are the two ends of one "
                               "veth pair: a loop\n")
        # c is down: a frame for it cannot be sent, and is counted.
        proc = subprocess.Popen([*cli, "--a", a, "--b", c], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None and "forwarding" in proc.stderr.readline()
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind((b, 0))
            raw.send(b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(46))
        out, _err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        counters = json.loads(out)
        assert counters["a_to_b"]["forwarded"] >= 1 and counters["send_errors"] >= 1
    finally:
        for dev in (a, c):
            subprocess.run(["ip", "link", "del", dev], capture_output=True)
