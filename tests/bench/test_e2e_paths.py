"""The bench's ``paths`` table from a recorded compare.py report (no run), and
the emulator's count of pure ACKs (what measures the ACKs a server sends)."""

from __future__ import annotations

import random
import sys

from bench.pathemu.core import Direction, Profile, pure_ack
from bench.pathemu.topo import ROOT
from stack.wire.tcp import build_tcp

sys.path.insert(0, str(ROOT / "bench"))
import e2e_paths  # noqa: E402  (bench/'s modules import each other by bare name)

BBR_REFUSED = ("stack: error: --congestion: bbr is not implemented in this stack yet "
               "(choose from cubic, newreno, reno) (see 'stack up --help')")


def result(mbit: float, **extra) -> dict:
    return {"bytes": 5_000_000, "seconds": 40 / mbit, "mbit": mbit, "sha256": "x",
            "path": {"forwarded": 1, "lost": 0, "queue_drops": 0, "mean_delay_ms": 1.0,
                     "pure_acks_in": 3}, **extra}


REPORT = {
    "size": 5_000_000,
    "columns": ["stack cubic", "stack bbr", "linux cubic"],     # a kernel without bbr
    "profiles": {
        "10ms-1%loss": {"results": {
            "stack cubic": result(9.44), "stack bbr": {"error": BBR_REFUSED},
            "linux cubic": result(60.25)}},
        "50Mbit-100pkt-20ms": {"results": {
            "stack cubic": result(35.9, rtt={"idle_ms": 40.6, "loaded_ms": 61.25,
                                             "loaded_p90_ms": 64.0, "samples": 30,
                                             "inflation_ms": 20.65}),
            "stack bbr": {"error": BBR_REFUSED},
            "linux cubic": result(37.93, rtt={"idle_ms": 40.5, "loaded_ms": None,
                                              "loaded_p90_ms": None, "samples": 0,
                                              "inflation_ms": None})}},
    },
}


def test_the_markdown_table_has_a_row_per_profile_and_the_rtt_row():
    text = e2e_paths.paths_table(REPORT, markdown=True)
    lines = text.splitlines()
    assert lines[0] == ("| bad paths, 5 MB curl download | stack CUBIC | stack BBR | Linux CUBIC "
                        "| Linux BBR |")
    assert lines[1] == "|---|---:|---:|---:|---:|"
    assert lines[2] == "| 10ms-1%loss (Mbit/s) | 9.4 | - | 60.2 | - |"
    assert lines[3] == "| 50Mbit-100pkt-20ms (Mbit/s) | 35.9 | - | 37.9 | - |"
    # No echo came back during Linux's download: no figure rather than a wrong one.
    assert lines[4] == ("| 50Mbit-100pkt-20ms: RTT inflation, ms (idle → during) "
                        "| +20.6 (40.6 → 61.2) | - | - | - |")
    # Each `-` says why, once for all the profiles it covers.
    assert lines[5:] == [
        f"paths: stack BBR `-` in every profile: {BBR_REFUSED}",
        "paths: Linux BBR `-` in every profile: the kernel offers no bbr "
        "(net.ipv4.tcp_available_congestion_control)",
    ]


def test_the_terminal_table_is_aligned():
    lines = e2e_paths.paths_table(REPORT).splitlines()
    table = [line for line in lines if not line.startswith("paths: ")]
    assert len({len(line) for line in table}) == 1
    cells = table[2].split(" | ")
    assert cells[0].startswith("10ms-1%loss (Mbit/s) ")           # labels to the left
    assert [c.strip() for c in cells[1:]] == ["9.4", "-", "60.2", "-"]
    assert all(c.startswith(" ") for c in cells[1:])              # figures to the right


def frame(flags: int, data: bytes = b"") -> bytes:
    src, dst = 0xC6336401, 0xC6336402
    seg = build_tcp(src, dst, 80, 5555, 1, 1, flags, 1024, data)
    total = 20 + len(seg)
    ip = bytes([0x45, 0, total >> 8, total & 0xFF, 0, 0, 0x40, 0, 64, 6, 0, 0]) \
        + src.to_bytes(4, "big") + dst.to_bytes(4, "big")
    return bytes(12) + b"\x08\x00" + ip + seg


def test_pure_acks_are_told_from_data_syn_fin_and_fragments():
    assert pure_ack(frame(0x10))
    assert pure_ack(frame(0x10) + bytes(6))            # Ethernet padding is no payload
    assert not pure_ack(frame(0x10, b"x"))
    assert not pure_ack(frame(0x12)) and not pure_ack(frame(0x11)) and not pure_ack(frame(0x14))
    frag = bytearray(frame(0x10))
    frag[20] |= 0x20                                    # more fragments
    assert not pure_ack(bytes(frag))
    d = Direction(Profile(loss=1.0), random.Random(1))
    for f in (frame(0x10), frame(0x10, b"data"), frame(0x10)):
        d.arrive(f, 0.0)
    assert d.counters.pure_acks_in == 2 and d.counters.lost == 3
