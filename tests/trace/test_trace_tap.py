"""Tracing over a real TAP: the kernel (curl) against the stack's http service.

* A curl download shows, in ``stack trace`` output, the whole passive open and
  close of its connection with the causes.
* Through the fault injector, retransmit events appear, and each data
  segment the injector threw away on its way out was retransmitted later.
* The capture (``--pcap``) wraps the injector: it holds what the stack sent
  and what the stack received, so a frame lost on the way in is not in it,
  while a frame lost on the way out is. A kernel-side tcpdump shows the wire.
* ``stack up --trace-level state`` writes only state changes, drops,
  retransmissions and the link's up/down/impair; SIGUSR1 and exit print the
  counters grouped by layer.
"""

from __future__ import annotations

import json
import re
import signal
import struct
import subprocess
import sys
import time
from collections import Counter

from stack import tracetool
from stack.services import parse_service, start_service
from tests.helpers.tap import kill, sh, stack_up, stop_stack_up, wait_for

STACK = "192.0.2.2"
STACK_MAC = bytes.fromhex("0253c0000202")


def _trace(path) -> list[dict]:
    events, bad = tracetool.load(str(path))
    assert bad == 0
    return events


def _stack_trace(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "stack", "trace", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _server_conns(net):
    with net.lock:
        return [c for c in net.tcp.connections() if c.local[1] == 80 and c.remote[1] != 0]


def _download(n: int, timeout: int = 60) -> None:
    r = sh(f"curl -sS --max-time {timeout} -o /dev/null -w '%{{size_download}}' "
           f"http://{STACK}/bytes/{n}", timeout=timeout + 10)
    assert r.stdout == str(n), r


def _stops_growing(path, quiet: float = 0.5, timeout: float = 10.0) -> bool:
    """Whether the file at ``path`` kept one size for ``quiet`` seconds within ``timeout``."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
        time.sleep(0.05)
    return False


def _tcp_fields(frame: bytes):
    """(src, sport, dst, dport, seq, payload length) of an IPv4 TCP frame, or None."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 15) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    tcp = 14 + ihl
    sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
    doff = (frame[tcp + 12] >> 4) * 4
    src = ".".join(map(str, frame[26:30]))
    dst = ".".join(map(str, frame[30:34]))
    return src, sport, dst, dport, seq, total - ihl - doff


def _read_pcap(path) -> list[bytes]:
    data = open(path, "rb").read()
    magic = struct.unpack_from("<I", data)[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(order + "IIII", data, off)
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


def test_curl_download_shows_passive_open_and_close_with_causes(tap_stack, tmp_path):
    path = tmp_path / "curl.jsonl"
    net = tap_stack(trace=str(path))
    svc = start_service(net, parse_service("http:80"))
    try:
        _download(2_000_000)
        # curl closes first: the stack goes CLOSE_WAIT, closes, LAST_ACK, CLOSED.
        assert wait_for(lambda: not _server_conns(net), timeout=10), _server_conns(net)
    finally:
        svc.close()
    net.trace.flush()
    out = _stack_trace(str(path), "--conn", f"{STACK}:80")
    lines = out.splitlines()
    (start,) = [i for i, ln in enumerate(lines) if ln.startswith(f"connection {STACK}:80-")]
    assert "(passive open from 192.0.2.1:" in lines[start]
    rows = [ln.split(None, 4) for ln in lines[start + 2:start + 7]]
    assert [r[1:4] for r in rows] == [
        ["LISTEN", "->", "SYN_RECEIVED"],
        ["SYN_RECEIVED", "->", "ESTABLISHED"],
        ["ESTABLISHED", "->", "CLOSE_WAIT"],
        ["CLOSE_WAIT", "->", "LAST_ACK"],
        ["LAST_ACK", "->", "CLOSED"],
    ], out
    causes = [r[4] for r in rows]
    assert re.fullmatch(r"rcv SYN seq=\d+", causes[0])
    assert re.fullmatch(r"rcv ACK seq=\d+ ack=\d+", causes[1])
    assert re.match(r"rcv FIN,ACK seq=\d+ ack=\d+", causes[2])
    assert causes[3].startswith("user ")
    assert re.fullmatch(r"rcv ACK seq=\d+ ack=\d+", causes[4])
    times = [float(r[0]) for r in rows]
    assert times == sorted(times)
    summary = lines[start + 7:start + 12]
    assert "final state CLOSED" in summary[0]
    sent = int(re.search(r"sent\s+(\d+) bytes", out).group(1))
    received = int(re.search(r"received\s+(\d+) bytes", out).group(1))
    assert sent >= 2_000_000 and 60 <= received <= 400   # the body and headers; curl's GET
    assert "rtt       min " in out
    ladder = _stack_trace(str(path), "--conn", f"{STACK}:80", "--format", "ladder")
    chart = ladder.strip().splitlines()[1:]   # after the connection's name: header, rule, rows
    assert chart[2].split()[1] == "(SYN_SENT)" and chart[2].endswith("> SYN_RECEIVED")
    assert "SYN,ACK" in chart[3] and chart[3].lstrip().split()[1].startswith("<")
    assert any(ln.endswith("> CLOSE_WAIT") and "FIN" in ln for ln in chart)
    assert chart[-1].endswith("> CLOSED") and "ACK" in chart[-1]


def test_impaired_transfer_retransmits_what_the_injector_dropped(tap_stack, tmp_path):
    path = tmp_path / "lossy.jsonl"
    net = tap_stack(trace=str(path), impair="loss=0.03,seed=5")
    injector = net.link
    assert type(injector).__name__ == "ImpairLink"
    losses = []

    def on_impair(direction, kind, frame):
        if kind == "loss":
            losses.append((net.clock() - net.started, direction, _tcp_fields(frame)))

    injector.on_impair = on_impair
    svc = start_service(net, parse_service("http:80"))
    try:
        _download(3_000_000, timeout=90)
        wait_for(lambda: not _server_conns(net), timeout=10)
    finally:
        svc.close()
    net.trace.flush()
    events = _trace(path)
    rex = [e for e in events if e["event"] == "retransmit"]
    counts = injector.counts
    assert rex, counts
    assert counts["tx.loss"] + counts["rx.loss"] == len(losses) > 0
    # Every data segment the injector dropped on the way out was sent again
    # later: a retransmit event covers its first byte.
    lost_data = [(t, f) for t, d, f in losses if d == "tx" and f is not None and f[5] > 0]
    assert lost_data, losses
    for t, (src, sport, dst, dport, seq, n) in lost_data:
        conn = f"{src}:{sport}-{dst}:{dport}"
        assert any(e["conn"] == conn and e["t"] >= t
                   and (seq - e["seq"]) % (1 << 32) < max(e["len"], 1) for e in rex), \
            (t, conn, seq, n)
    # And nothing was retransmitted before the injector first dropped a frame.
    assert min(e["t"] for e in rex) >= min(t for t, _, _ in losses)
    # The tool counts and draws exactly these retransmissions.
    conns = tracetool.connections(events)
    target = tracetool.busiest(conns)
    data = tracetool.plot_data(target.events, target.name)
    mine = [e for e in rex if e["conn"] == target.name]
    assert len(data["retransmissions"]) == len(mine) > 0
    png = tmp_path / "lossy.png"
    out = _stack_trace(str(path), "--plot", str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"{len(mine)} retransmissions)" in out
    assert re.search(r"sent\s+\d+ bytes in \d+ segments, \d+ retransmissions? of \d+ bytes", out)
    assert "link impair: spec=loss=0.03,seed=5 seed=5" in out


def test_capture_holds_what_the_stack_sent_and_received_not_what_the_injector_dropped_inbound(
        tap_stack, tmp_path):
    pcap = tmp_path / "cap.pcap"
    net = tap_stack(pcap=str(pcap), impair="loss=0.05,seed=9")
    injector = net.link.inner
    assert type(net.link).__name__ == "PcapLink" and type(injector).__name__ == "ImpairLink"
    lost = {"tx": [], "rx": []}
    injector.on_impair = lambda d, kind, frame: kind == "loss" and lost[d].append(bytes(frame))
    svc = start_service(net, parse_service("http:80"))
    try:
        _download(1_000_000)
        wait_for(lambda: not _server_conns(net), timeout=10)
    finally:
        svc.close()
    net.close()
    captured = Counter(_read_pcap(pcap))
    rx_tcp = [f for f in lost["rx"] if _tcp_fields(f) is not None]
    assert rx_tcp and lost["tx"], {k: len(v) for k, v in lost.items()}
    # Lost on the way in: the stack never saw it, neither did the capture.
    # (Every kernel TCP frame differs at least in its IP ID, so bytes identify it.)
    assert [f for f in rx_tcp if captured[f]] == []
    # Lost on the way out: the stack sent it, the capture has it.
    assert all(captured[f] for f in lost["tx"])
    assert net.stats()["link.rx.loss"] == len(lost["rx"])


def _counters_block(text: str, header: str) -> dict[str, int]:
    """The ``name: value`` lines of the counters block that follows ``header``."""
    block = text.split(header, 1)[1]
    out: dict[str, int] = {}
    layer = None
    for line in block.splitlines()[1:]:
        if line.startswith("stack: "):
            break
        if not line.startswith(" ") and line.endswith(":"):
            layer = line[:-1]
            continue
        name, _, value = line.strip().rpartition(": ")
        if line.startswith("        "):
            name = f"drop.{name}"
        out[f"{layer}.{name}"] = int(value)
    return out


def test_stack_up_state_level_capture_and_counters(netns, tmp_path):
    """``stack up --impair --pcap --trace-level state``, with tcpdump on the kernel side."""
    trace, pcap, wire = tmp_path / "up.jsonl", tmp_path / "up.pcap", tmp_path / "wire.pcap"
    p = stack_up("tapsl", "--serve", "http:80", "--impair", "loss=0.05,seed=4",
                 "--pcap", str(pcap), "--trace", str(trace), "--trace-level", "state")
    dump = None
    try:
        line = p.stderr.readline()
        assert line.startswith("stack: up") and "seed=4" in line, line
        sh("sysctl -qw net.ipv6.conf.tapsl.disable_ipv6=1", check=False)
        # A 64 MB capture buffer and no batching: with the default 2 MB
        # tcpdump drops frames of a fast download on a busy machine.
        dump = subprocess.Popen(["tcpdump", "-i", "tapsl", "-U", "--immediate-mode",
                                 "-B", "65536", "-n", "-w", str(wire)],
                                stderr=subprocess.PIPE, text=True)
        assert "listening on" in dump.stderr.readline()
        _download(1_000_000)
        time.sleep(0.5)
        # tcpdump may still hold frames the kernel gave it (it lags on a busy
        # machine, by up to a second of batching): those still in its buffer
        # when the stack's exit removes the TAP are lost ("The interface
        # disappeared"), so let its capture file stop growing first.
        assert _stops_growing(wire), "tcpdump kept writing"
        p.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        err = stop_stack_up(p)
        # The TAP is gone with the stack; tcpdump has written every frame (-U).
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=5)
    finally:
        kill(dump, p)
    # Counters: on SIGUSR1 and at exit, grouped by layer, drops by reason.
    assert "stack: counters now (t=" in err and "stack: counters at exit (t=" in err
    final = _counters_block(err, "stack: counters at exit")
    assert final["link.rx.loss"] > 0 and final["link.tx.loss"] > 0, final
    assert final["tcp.out_segs"] > 600 and final["eth.frames_in"] > 0
    assert re.search(r"^tcp:\n(    \S+: \d+\n)+", err, re.M)
    # The state-level trace holds nothing but state changes, drops, retransmissions, link events.
    events = _trace(trace)
    kinds = Counter(e["event"] for e in events)
    assert set(kinds) <= {"state", "drop", "retransmit", "up", "down", "impair"}
    assert kinds["state"] >= 5 and kinds["retransmit"] > 0, kinds
    assert any(e["event"] == "impair" and e.get("spec") == "loss=0.05,seed=4" for e in events)
    assert "-> SYN_RECEIVED  rcv SYN seq=" in _stack_trace(str(trace))
    # The stack's capture against the wire (tcpdump on the kernel side of the TAP),
    # TCP only: ARP and IPv6 may have passed before tcpdump started.
    ours = Counter(f for f in _read_pcap(pcap) if _tcp_fields(f) is not None)
    theirs = Counter(f for f in _read_pcap(wire) if _tcp_fields(f) is not None)
    kernel_sent = Counter({f: n for f, n in theirs.items() if f[6:12] != STACK_MAC})
    stack_sent = Counter({f: n for f, n in ours.items() if f[6:12] == STACK_MAC})
    seen_by_stack = Counter({f: n for f, n in ours.items() if f[6:12] != STACK_MAC})
    on_wire_from_stack = Counter({f: n for f, n in theirs.items() if f[6:12] == STACK_MAC})
    # Nothing is invented: what the stack saw came over the wire, what the wire
    # carried from the stack the stack sent.
    assert not seen_by_stack - kernel_sent
    assert not on_wire_from_stack - stack_sent
    # The difference is the injector's work: frames lost inbound are on the wire
    # only, frames lost outbound are in the capture only.
    in_only_wire = kernel_sent - seen_by_stack
    in_only_capture = stack_sent - on_wire_from_stack
    assert in_only_wire and sum(in_only_wire.values()) <= final["link.rx.loss"]
    assert in_only_capture and sum(in_only_capture.values()) <= final["link.tx.loss"]


def test_stack_up_trace_layers_keeps_only_those_layers(netns, tmp_path):
    trace = tmp_path / "layers.jsonl"
    p = stack_up("taply", "--serve", "http:80", "--trace", str(trace), "--trace-layers", "tcp,icmp")
    try:
        assert p.stderr.readline().startswith("stack: up")
        sh("ping -c 2 -i 0.2 -W 2 192.0.2.2")
        _download(100_000)
        time.sleep(0.3)
        err = stop_stack_up(p)
    finally:
        kill(p)
    events = [json.loads(ln) for ln in trace.read_text().splitlines()]
    layers = Counter(e["layer"] for e in events)
    assert set(layers) == {"tcp", "icmp"}, layers
    assert {e["event"] for e in events if e["layer"] == "tcp"} >= {"state", "seg"}
    # ARP still happened and was counted, just not written.
    assert re.search(r"^arp:\n(    \S+: \d+\n)*    requests_in: [1-9]", err, re.M), err
