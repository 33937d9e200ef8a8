"""A connect() to a silent on-link address, the kernel's and the stack's, in the same run.

192.0.2.77 is on the TAP's subnet and nobody has it, so neither side gets an
ARP reply. The kernel (a socket of this test process, on the TAP's host
side 192.0.2.1) and the stack (192.0.2.2) try at the same time; both must
fail with EHOSTUNREACH after about 3 s (Linux: mcast_solicit requests
retrans_time apart), the stack within a second of the kernel; with a
timeout shorter than that, both time out first.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

SILENT = ("192.0.2.77", 80)


def attempt(make, timeout: float | None, out: dict, key: str) -> None:
    s = make()
    s.settimeout(timeout)
    start = time.monotonic()
    try:
        s.connect(SILENT)
        out[key] = (None, time.monotonic() - start)
    except OSError as e:
        out[key] = (e, time.monotonic() - start)
    finally:
        s.close()


def race(net, timeout: float | None) -> dict:
    """The kernel's connect and the stack's, side by side: {side: (error, seconds)}."""
    out: dict = {}
    threads = [threading.Thread(target=attempt, args=(make, timeout, out, side))
               for side, make in (("kernel", socket.socket), ("stack", net.socket))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def neigh_setting(tap: str, name: str) -> int:
    with open(f"/proc/sys/net/ipv4/neigh/{tap}/{name}") as f:
        return int(f.read())


def test_blocking_and_timed_connect_fail_like_the_kernel(tap_stack):
    net = tap_stack()
    # What the kernel's timing comes from (the defaults of a fresh namespace).
    assert neigh_setting(net.tap_name, "mcast_solicit") == 3
    assert neigh_setting(net.tap_name, "retrans_time_ms") == 1000
    for timeout in (None, 10.0):
        got = race(net, timeout)
        for side in ("kernel", "stack"):
            err, took = got[side]
            assert isinstance(err, OSError) and err.errno == errno.EHOSTUNREACH, (timeout, side, err)
            assert 2.0 < took < 5.0, (timeout, side, took)
        assert abs(got["stack"][1] - got["kernel"][1]) < 1.0, (timeout, got)
    got = race(net, 1.0)
    for side in ("kernel", "stack"):
        err, took = got[side]
        assert isinstance(err, TimeoutError), (side, err)
        assert 0.9 < took < 2.0, (side, took)
    c = net.stats()
    assert c["icmp.neighbour_unreachable"] >= 2 and c["tcp.attempt_fails"] >= 3
    assert c["arp.drop.unresolved"] == c["icmp.neighbour_unreachable"]
