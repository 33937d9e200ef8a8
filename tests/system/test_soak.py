"""Soak: thousands of connection lifecycles between two stacks, then nothing
left behind.

Two stacks on ``Stack.pair()`` (threaded, an in-memory link) with TIME_WAIT
shortened to 0.1 s. Client threads on one stack run 3,000 times
connect / send / receive the echo / close against the echo service on the
other; the run is bounded in count and in time. Once TIME_WAIT has expired
on every connection, both TCP layers must hold no connection, no timer,
no half-open or queued connection and no port binding, no thread may be
left, and the memory allocated by the stack's code (tracemalloc) must be
back near its warmed-up baseline.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc

import stack
from stack import Stack
from stack.services import parse_service, start_service
from stack.tcp import TcpConfig

from tests.helpers.tap import wait_for

LIFECYCLES = 3000
CLIENTS = 4
TIME_LIMIT = 60.0
MEMORY_SLACK = 256 << 10  # bytes the stack's code may still hold over its baseline
STACK_FILES = os.path.join(os.path.dirname(stack.__file__), "*")


def stack_memory() -> int:
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, STACK_FILES)])
    return sum(s.size for s in snap.statistics("filename"))


def run_lifecycles(client: Stack, server_addr: str, count: int, deadline: float) -> int:
    """``count`` lifecycles spread over CLIENTS threads; returns how many completed."""
    done = [0] * CLIENTS
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(k, count, CLIENTS):
                if time.monotonic() > deadline:
                    return
                msg = f"lifecycle {i} ".encode() * (1 + i % 50)
                with client.create_connection((server_addr, 7), timeout=10) as s:
                    s.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        chunk = s.recv(65536)
                        assert chunk, f"EOF after {len(got)} of {len(msg)} bytes"
                        got += chunk
                    assert got == msg
                done[k] += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 15)
    if errors:
        raise errors[0]
    return sum(done)


def quiet(net: Stack) -> bool:
    """No connection, no timer, nothing half-open, queued or pending."""
    with net.lock:
        tcp = net.tcp
        return (not tcp.connections() and tcp.next_deadline() is None and not tcp.status()["timers"]
                and all(not lst.half_open() and not lst.queued() for lst in tcp.listeners())
                and not net.eth.pending and not net.ip.local
                and not net.ip.reassembler.datagrams)


def test_thousands_of_lifecycles_leave_nothing_behind():
    cfg = TcpConfig(msl=0.05)
    a, b = Stack.pair(tcp_config=cfg)
    threads_before = set(threading.enumerate())
    tracemalloc.start()
    try:
        svc = start_service(b, parse_service("echo:7"))
        start = time.monotonic()
        # Warm up (every code path, caches, counters' keys), then the baseline.
        assert run_lifecycles(a, b.address_str, 40, start + TIME_LIMIT) == 40
        assert wait_for(lambda: quiet(a) and quiet(b), 5)
        baseline = stack_memory()

        n = run_lifecycles(a, b.address_str, LIFECYCLES, start + TIME_LIMIT)
        took = time.monotonic() - start
        print(f"\n{n} lifecycles in {took:.1f} s")
        assert n == LIFECYCLES, f"only {n} lifecycles in {TIME_LIMIT} s"

        # TIME_WAIT (0.1 s) expires; the server's side ends in LAST_ACK -> CLOSED.
        assert wait_for(lambda: quiet(a) and quiet(b), 5), \
            f"left: {a.tcp.connections()[:5]} {b.tcp.connections()[:5]}"
        grown = stack_memory() - baseline
        print(f"stack memory over baseline: {grown} bytes")
        assert grown <= MEMORY_SLACK

        st_a, st_b = a.stats(), b.stats()
        assert st_a["tcp.active_opens"] >= LIFECYCLES
        assert st_b["tcp.passive_opens"] >= LIFECYCLES
        assert st_a.get("eth.drop.internal_error", 0) == st_b.get("eth.drop.internal_error", 0) == 0
        assert st_a.get("tcp.estab_resets", 0) == st_b.get("tcp.estab_resets", 0) == 0

        svc.close()
        with b.lock:
            assert not b.tcp.status()["listeners"] and not b.tcp.status()["bound"]
        with a.lock:
            assert not a.tcp.status()["bound"]
        assert wait_for(lambda: set(threading.enumerate()) <= threads_before, 5), \
            set(threading.enumerate()) - threads_before
    finally:
        tracemalloc.stop()
        a.close()
        b.close()
