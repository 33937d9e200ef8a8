"""Bulk transfers with the kernel through an impaired link: 5% loss, 2%
duplication, 5% reordering and 1% corruption in both directions. curl
downloads and uploads several megabytes through the HTTP service and every
byte arrives intact (sha256 on both sides).

The fault injector's seed is printed (``pytest -s``) and named in every
failure; ``STACK_IMPAIR_SEED=N`` replays a run. (The kernel's own timing
still varies, so a replay impairs the same frame numbers, not necessarily
the same segments.)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess

import pytest

from stack.services import parse_service, start_service

US = "192.0.2.2"
SIZE = 5 * 1000 * 1000


def expected_bytes(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


@pytest.fixture
def impaired(tap_stack):
    seed = int(os.environ.get("STACK_IMPAIR_SEED", random.randrange(1 << 31)))
    spec = f"loss=0.05,dup=0.02,reorder=0.05,corrupt=0.01,seed={seed}"
    print(f"\nimpair: {spec}")
    net = tap_stack(impair=spec, trace=None)
    svc = start_service(net, parse_service("http:80"))
    yield net, seed
    svc.close()
    print(f"impair: {spec}: {impair_counts(net)}")


def impair_counts(net) -> dict[str, int]:
    return {k[5:]: v for k, v in net.stats().items()
            if k.startswith("link.") and k.split(".")[1] in ("tx", "rx")}


def curl(*args: str, seed: int) -> subprocess.CompletedProcess:
    r = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "90", *args],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, f"seed {seed}: curl {args} exited {r.returncode}: {r.stderr!r}"
    return r


def test_download_through_impaired_link_is_byte_exact(impaired, tmp_path):
    net, seed = impaired
    out = tmp_path / "download.bin"
    curl("-o", str(out), f"http://{US}/bytes/{SIZE}", seed=seed)
    got = hashlib.sha256(out.read_bytes()).hexdigest()
    assert out.stat().st_size == SIZE, f"seed {seed}: {out.stat().st_size} bytes"
    assert got == hashlib.sha256(expected_bytes(SIZE)).hexdigest(), f"seed {seed}: corrupted"
    counts = impair_counts(net)
    assert counts.get("tx.loss", 0) > 0 and counts.get("tx.corrupt", 0) > 0, counts
    assert net.stats().get("eth.drop.internal_error", 0) == 0


def test_upload_through_impaired_link_is_byte_exact(impaired, tmp_path):
    net, seed = impaired
    body = random.Random(seed).randbytes(SIZE)
    src = tmp_path / "upload.bin"
    src.write_bytes(body)
    r = curl("-T", str(src), f"http://{US}/upload.bin", seed=seed)
    answer = json.loads(r.stdout)
    assert answer == {"bytes": SIZE, "sha256": hashlib.sha256(body).hexdigest()}, \
        f"seed {seed}: {answer}"
    counts = impair_counts(net)
    assert counts.get("rx.loss", 0) > 0 and counts.get("rx.corrupt", 0) > 0, counts
    # Corrupted frames were caught by checksums, never delivered as data.
    st = net.stats()
    assert st.get("tcp.drop.bad_checksum", 0) + st.get("ip.drop.malformed", 0) > 0
    assert st.get("eth.drop.internal_error", 0) == 0
