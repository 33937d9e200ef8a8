"""Offload survives the link wrappers, against the real kernel (issue 10).

``stack up --offload`` with ``--pcap`` or ``--impair`` used to turn TSO off
silently, because the wrappers did not say the TAP under them could take
super-frames. Here curl downloads a few megabytes from the stack's http
service over an offload TAP seen through a capture and/or a fault injector,
and the kernel's own counters say what it received: frames many MSS long
(the TAP counts one packet per frame the stack wrote, however the kernel
cuts it later). The bytes are checked with sha256.

With corruption on, a super-frame's TCP checksum is filled in by the kernel
(the TAP hands it over partial, and the kernel trusts it), so the injector
flips bits of its IPv4 header instead: every corrupted frame must show up in
the kernel's checksum error counters, and the download must still be exact.

Needs root in a private network namespace (see conftest).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct

import pytest
from tests.helpers.tap import kernel_counters, sh

from stack.services import parse_service, start_service

pytestmark = pytest.mark.tap

STACK = "192.0.2.2"
MSS_FRAME = 1514   # the largest frame of one MSS at MTU 1500


def _pattern_sha256(n: int) -> str:
    return hashlib.sha256((bytes(range(251)) * (n // 251 + 1))[:n]).hexdigest()


def _download(net, tmp_path, size: int, what: str) -> None:
    svc = start_service(net, parse_service("http:80"))
    out = tmp_path / "download"
    try:
        sh(f"curl -sS --max-time 90 -o {out} http://{STACK}/bytes/{size}", timeout=100)
    finally:
        svc.close()
    assert out.stat().st_size == size, what
    assert hashlib.sha256(out.read_bytes()).hexdigest() == _pattern_sha256(size), what


def _kernel_rx(name: str) -> tuple[int, int]:
    """(frames, bytes) the kernel received on the TAP: what the stack wrote."""
    rx = json.loads(sh(f"ip -s -j link show dev {name}").stdout)[0]["stats64"]["rx"]
    return rx["packets"], rx["bytes"]


def _pcap_frames(path) -> list[bytes]:
    data = path.read_bytes()
    out, off = [], 24
    while off < len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig, "frame cut short in the capture"
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


CASES = {
    "pcap": dict(offload=True, pcap=True),
    "impair-idle": dict(offload=True, impair="seed=21"),
    "impair-loss+pcap": dict(offload=True, impair="loss=0.002,seed=21", pcap=True),
    "no-offload+pcap": dict(offload=False, pcap=True),   # the control
}


@pytest.mark.parametrize("case", CASES)
def test_offload_keeps_tso_under_capture_and_injector(tap_stack, tmp_path, case):
    kw = dict(CASES[case])
    pcap = tmp_path / "cap.pcap"
    if kw.pop("pcap", False):
        kw["pcap"] = str(pcap)
    net = tap_stack(trace=None, **kw)
    frames0, bytes0 = _kernel_rx(net.tap_name)
    _download(net, tmp_path, 4_000_000, case)
    frames1, bytes1 = _kernel_rx(net.tap_name)
    per_frame = (bytes1 - bytes0) / (frames1 - frames0)
    net.close()
    if kw["offload"]:
        assert net.link.offload and net.tcp.segment_max is not None
        # Most frames the stack wrote were super-frames of many MSS.
        assert per_frame > 4 * MSS_FRAME, (case, per_frame)
    else:
        assert per_frame <= MSS_FRAME, (case, per_frame)
    if "pcap" not in kw:
        return
    ours = [f for f in _pcap_frames(pcap) if f[6:12] == net.mac and f[12:14] == b"\x08\x00"]
    longest = max(len(f) for f in ours)
    if not kw["offload"]:
        assert longest <= MSS_FRAME
        return
    assert longest > 10 * MSS_FRAME and longest <= 14 + 65535
    # The capture holds them whole, IP total length and all, and tshark reads them so.
    big = sh(f"tshark -r {pcap} -Y 'ip.src == {STACK} && ip.len > 1500 && tcp.len > 1460' "
             f"-T fields -e ip.len -e tcp.checksum.status -o tcp.check_checksum:TRUE",
             timeout=120).stdout.split("\n")
    rows = [r.split("\t") for r in big if r]
    assert rows and max(int(n) for n, _ in rows) == longest - 14
    assert {status for _, status in rows} == {"1"}   # tshark: checksum "Good"


def test_offload_corruption_is_caught_by_the_kernel(tap_stack, tmp_path):
    seed = int(os.environ.get("STACK_IMPAIR_SEED", random.randrange(1 << 31)))
    spec = f"corrupt=0.05,seed={seed}"
    print(f"\nimpair: {spec}")
    net = tap_stack(trace=None, offload=True, impair=spec)
    corrupted: list[int] = []
    net.injector.on_impair = lambda d, kind, f: (
        d == "tx" and kind == "corrupt" and f[12:14] == b"\x08\x00" and corrupted.append(len(f)))
    before = kernel_counters()
    _download(net, tmp_path, 10_000_000, spec)
    after = kernel_counters()
    supers = [n for n in corrupted if n > MSS_FRAME]
    assert supers, (spec, corrupted)
    ip_bad = after["Ip.InHdrErrors"] - before["Ip.InHdrErrors"]
    ip_csum = after["IpExt.InCsumErrors"] - before["IpExt.InCsumErrors"]
    tcp_csum = after["Tcp.InCsumErrors"] - before["Tcp.InCsumErrors"]
    # Each corrupted super-frame failed the kernel's IPv4 header check ...
    assert ip_csum >= len(supers), (spec, ip_csum, supers)
    # ... and every corrupted IPv4 frame was dropped by one check or the other.
    assert ip_bad + tcp_csum == len(corrupted), (spec, ip_bad, tcp_csum, len(corrupted))
