"""Issue 7 over a real TAP against the Linux kernel: window scaling,
timestamps and SACK negotiated in both directions (read back from a capture
with tshark and from the kernel's own ``ss``), and a lossy transfer repaired
with SACK, byte-exact.

The kernel side of the TAP is 192.0.2.1/24, the stack 192.0.2.2/24 (see
conftest).
"""

from __future__ import annotations

import json
import os
import socket
import threading

from stack.services import parse_service, start_service
from tests.helpers.tap import sh

STACK = "192.0.2.2"
HOST = "192.0.2.1"


def tshark(pcap, display: str, *fields: str) -> list[list[str]]:
    """One row per packet matching ``display``: the ``fields`` (empty if absent)."""
    args = " ".join(f"-e {f}" for f in fields)
    r = sh(f"tshark -n -r {pcap} -Y '{display}' -T fields -E separator=/t {args}")
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def syn_options(pcap) -> dict[str, list[str]]:
    """For the SYN and the SYN,ACK: [source, wscale shift, sack_perm, tsval, tsecr]."""
    rows = tshark(pcap, "tcp.flags.syn == 1", "tcp.flags.ack", "ip.src",
                  "tcp.options.wscale.shift", "tcp.options.sack_perm",
                  "tcp.options.timestamp.tsval", "tcp.options.timestamp.tsecr")
    out = {}
    for ack, *rest in rows:
        out.setdefault("SYN,ACK" if ack in ("1", "True") else "SYN", rest)
    return out


def assert_all_three(opts: list[str], src: str) -> None:
    source, shift, sack_perm, tsval, _tsecr = opts
    assert source == src, opts
    assert shift.isdigit() and 0 <= int(shift) <= 14, opts   # window scale offered
    assert sack_perm not in ("", "0"), opts                   # SACK permitted
    assert tsval.isdigit(), opts                              # timestamps


TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4


def kernel_view(sock: socket.socket) -> tuple[int, int, int]:
    """The kernel's own view of a connection (``struct tcp_info``): its
    ``tcpi_options`` bits, the shift it applies to our windows and the one
    it applies to its own."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info[5], info[6] & 15, info[6] >> 4


def test_kernel_client_to_stack_server_negotiates_all_three(tap_stack, tmp_path):
    pcap = tmp_path / "in.pcap"
    net = tap_stack(pcap=str(pcap))
    svc = start_service(net, parse_service("echo:7"))
    try:
        with socket.create_connection((STACK, 7), timeout=5) as s:
            s.sendall(b"x" * 200_000)
            got = bytearray()
            while len(got) < 200_000:
                got += s.recv(65536)
            options, snd_shift, rcv_shift = kernel_view(s)
            conns = net.tcp.connections()
            st = [c.status() for c in conns if c.local[1] == 7][0]
    finally:
        svc.close()
        net.close()
    assert bytes(got) == b"x" * 200_000
    opts = syn_options(pcap)
    assert_all_three(opts["SYN"], HOST)
    assert_all_three(opts["SYN,ACK"], STACK)
    assert opts["SYN,ACK"][1] == "7"            # 4 MB receive buffer: shift 7
    assert opts["SYN,ACK"][4] == opts["SYN"][3]  # our TSecr echoes the kernel's TSval
    # The kernel agrees: timestamps, SACK and window scaling in use, with
    # the shifts the other way round from ours.
    assert options & 7 == TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE
    assert (snd_shift, rcv_shift) == (7, int(opts["SYN"][1]))
    assert (st["snd_wscale"], st["rcv_wscale"]) == (rcv_shift, snd_shift)
    assert st["timestamps"] and st["sack"]
    # Every later segment from the stack carries timestamps; its windows are
    # scaled beyond 64 KB.
    rows = tshark(pcap, f"ip.src == {STACK} && tcp.flags.syn == 0 && tcp.flags.reset == 0",
                  "tcp.options.timestamp.tsval", "tcp.window_size_value")
    assert rows and all(tsval for tsval, _ in rows)
    assert max(int(w) for _, w in rows) << 7 > 65535


def test_stack_client_to_kernel_server_negotiates_all_three(tap_stack, tmp_path):
    pcap = tmp_path / "out.pcap"
    net = tap_stack(pcap=str(pcap))
    srv = socket.create_server((HOST, 0))
    port = srv.getsockname()[1]
    data = os.urandom(300_000)
    got = bytearray()
    view = []

    def serve():
        conn, _ = srv.accept()
        view.append(kernel_view(conn))
        with conn:
            while len(got) < len(data):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got.extend(chunk)
            conn.sendall(b"done")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with net.create_connection((HOST, port), timeout=5) as s:
            s.sendall(data)
            assert s.recv(10) == b"done"
            st = s.status()
    finally:
        t.join(5)
        srv.close()
        net.close()
    assert bytes(got) == data
    opts = syn_options(pcap)
    assert_all_three(opts["SYN"], STACK)
    assert_all_three(opts["SYN,ACK"], HOST)
    assert opts["SYN"][1] == "7" and opts["SYN"][4] == "0"
    assert opts["SYN,ACK"][4] == opts["SYN"][3]  # the kernel echoes our TSval
    options, snd_shift, rcv_shift = view[0]
    assert options & 7 == TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE
    assert (snd_shift, rcv_shift) == (7, int(opts["SYN,ACK"][1]))
    assert st["timestamps"] and st["sack"] and st["rcv_wscale"] == 7
    assert st["snd_wscale"] == int(opts["SYN,ACK"][1])
    assert st["mss"] == 1448  # 1460 less 12 bytes of timestamps


def covered(seq: int, n: int, ranges: set[tuple[int, int]]) -> bool:
    """Whether [seq, seq + n) lies inside the union of ``ranges`` (seq, len), mod 2**32."""
    need = [(0, n)]
    for start, length in ranges:
        off = (start - seq) % (1 << 32)
        if off >= (1 << 31):
            off -= 1 << 32
        lo, hi = off, off + length
        need = [piece for a, b in need
                for piece in ((a, min(b, lo)), (max(a, hi), b)) if piece[0] < piece[1]]
        if not need:
            return True
    return not need


def test_lossy_transfer_repaired_with_sack_byte_exact(tap_stack, tmp_path):
    """2 % of frames lost both ways (seeded): 3 MB echoed through the stack.
    The kernel's ACKs SACK what the stack sent past a loss, the stack's ACKs
    SACK what the kernel sent past one, the stack resends holes from its
    scoreboard, and every byte comes back in order."""
    pcap = tmp_path / "lossy.pcap"
    trace = tmp_path / "lossy.jsonl"
    net = tap_stack(pcap=str(pcap), trace=str(trace), impair="loss=0.02,seed=3")
    svc = start_service(net, parse_service("echo:7"))
    data = os.urandom(3 << 20)
    got = bytearray()
    try:
        with socket.create_connection((STACK, 7), timeout=10) as s:
            s.settimeout(30)
            sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
            sender.start()
            while len(got) < len(data):
                chunk = s.recv(1 << 20)
                assert chunk, f"EOF after {len(got)} bytes"
                got += chunk
            sender.join(10)
    finally:
        svc.close()
        net.close()
    assert bytes(got) == data
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    impair = [e for e in events if e.get("event") == "impair"]
    assert impair and impair[0]["spec"] == "loss=0.02,seed=3"
    # SACK blocks both ways, in the capture and in the trace.
    from_kernel = tshark(pcap, f"ip.src == {HOST} && tcp.options.sack_le", "tcp.options.sack_le")
    from_stack = tshark(pcap, f"ip.src == {STACK} && tcp.options.sack_le", "tcp.options.sack_le")
    assert from_kernel and from_stack
    segs = [e for e in events if e.get("event") == "seg"]
    assert any(o.startswith("sack ") for e in segs if e["dir"] == "in" for o in e["options"])
    assert any(o.startswith("sack ") for e in segs if e["dir"] == "out" for o in e["options"])
    # The stack's retransmissions were chosen by RACK from what the SACKs
    # reported: the holes after the first in a recovery went as RACK marked
    # them lost (not one per round trip), every data segment the injector
    # took from the stack was sent again, and hardly anything else was.
    resent = [e for e in events if e.get("event") == "retransmit"]
    reasons = {e["reason"] for e in resent}
    assert "rack" in reasons, reasons
    lost = {(e["seq"], e["len"]) for e in events
            if e.get("event") == "impaired" and e["dir"] == "tx" and e.get("len")}
    again = {(e["seq"], e["len"]) for e in resent}
    # Every lost byte went out again, though a resend may start elsewhere
    # (after an RTO the go-back segments need not match the lost ones).
    uncovered = [(seq, n) for seq, n in lost
                 if not covered(seq, n, again)]
    assert lost and not uncovered, uncovered
    starts = {seq for seq, _ in lost}
    extra = [seq for seq, _ in again if seq not in starts]
    assert len(extra) <= max(5, len(lost) // 4), (len(lost), sorted(extra))
    # Its congestion window moved (trace events for the plot) and RTTs were measured.
    assert any(e.get("event") == "cwnd" and e.get("why") == "fast_retransmit" for e in events)
    assert any(e.get("event") == "rtt" for e in events)


def test_tso_download_with_offload_byte_exact(tap_stack, tmp_path):
    """With the TAP's offloads the stack hands the kernel segments of many
    MSS (TcpLayer.segment_max) and the kernel cuts them: a 20 MB download
    arrives byte-exact (byte i is i % 251), with timestamps on every cut segment."""
    import hashlib

    pcap = tmp_path / "tso.pcap"
    net = tap_stack(offload=True, trace=None, pcap=str(pcap))   # the capture keeps TSO on
    svc = start_service(net, parse_service("http:80"))
    size = 20_000_000
    out = tmp_path / "download"
    try:
        sh(f"curl -sS --max-time 60 -o {out} http://{STACK}/bytes/{size}", timeout=70)
    finally:
        svc.close()
        net.close()
    period = bytes(range(251))
    want = hashlib.sha256((period * (size // 251 + 1))[:size]).hexdigest()
    assert out.stat().st_size == size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
    # The capture (taken above the link) shows segments larger than one MSS.
    rows = tshark(pcap, f"ip.src == {STACK} && tcp.len > 1448", "tcp.len")
    assert rows and max(int(n) for (n,) in rows) > 10 * 1448
