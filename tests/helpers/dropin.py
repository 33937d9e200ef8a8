"""Helpers for the drop-in tests: kernel-side peers (tests/dropin/peer.py,
run as their own process, so their sockets are the kernel's while the test
process is patched) and what the trace says about connections."""

from __future__ import annotations

import pathlib
import subprocess
import sys

PEER = pathlib.Path(__file__).resolve().parents[1] / "dropin" / "peer.py"
KERNEL = "192.0.2.1"  # the kernel side of every TAP the tests make
STACK = "192.0.2.2"


def start_peer(mode: str, *args: object) -> subprocess.Popen:
    """Start ``peer.py MODE ARGS...`` and wait for its ``ready`` line."""
    p = subprocess.Popen([sys.executable, str(PEER), mode, *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if line != "ready\n":
        p.kill()
        raise AssertionError(f"peer {mode} did not start: {line!r} {p.communicate()[1]}")
    return p


def run_peer(mode: str, *args: object, timeout: float = 60) -> str:
    """Run a kernel-side client (``peer.py MODE ARGS...``) to its end; its stdout."""
    r = subprocess.run([sys.executable, str(PEER), mode, *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def established(events: list[dict], port: int) -> list[str]:
    """The TCP connections with an end on ``port`` that reached ESTABLISHED
    (their trace names, ``local-remote``)."""
    return sorted({e["conn"] for e in events if e.get("event") == "state"
                   and e.get("to") == "ESTABLISHED"
                   and any(end.endswith(f":{port}") for end in e["conn"].split("-"))})


async def echo_once(host: str, port: int, i: int) -> bool:
    """One asyncio connection to an echo server: a line out, the same line back."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port)
    line = f"line {i}\n".encode()
    writer.write(line)
    await writer.drain()
    got = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return got == line
