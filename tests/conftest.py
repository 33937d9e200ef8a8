"""Test fixtures, reachable from every folder. Every TAP a test creates lives in a
private network namespace.

``scripts/test`` runs pytest under ``unshare --net``; when pytest is started
any other way as root, this module moves the test process into a fresh
network namespace itself (before any thread exists), so no frame a test
sends can reach a real network.

Tests that need root, a TAP or the kernel's network tools get the ``tap``
marker here, automatically (see ``pytest_collection_modifyitems``), so that
``pytest -m "not tap"`` as an ordinary user runs everything else.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess

import pytest

CLONE_NEWNET = 0x40000000


def _netns() -> str:
    return os.readlink("/proc/self/ns/net")


def _private_netns() -> bool:
    """True when this run created the namespace it is in (STACK_TEST_NETNS names it)."""
    return os.environ.get("STACK_TEST_NETNS") == _netns()


if os.geteuid() == 0 and not _private_netns():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    os.environ["STACK_TEST_NETNS"] = _netns()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

_tap_ids = itertools.count()


@pytest.fixture
def netns():
    """Asserts we run as root in a private network namespace."""
    if os.geteuid() != 0 or not _private_netns():
        pytest.fail("TAP tests need root in a private network namespace: run scripts/test")
    return True


@pytest.fixture
def tap_stack(netns, tmp_path):
    """Factory: a stack on a fresh TAP with the kernel side at 192.0.2.1/24."""
    from stack import Stack

    made = []

    def make(**kw):
        n = next(_tap_ids)
        kw.setdefault("address", "192.0.2.2/24")
        kw.setdefault("host_address", "192.0.2.1/24")
        kw.setdefault("trace", str(tmp_path / f"trace{n}.jsonl"))
        name = kw.pop("name", f"tst{n}")
        # Any TAP left over from an earlier stack is gone before we start.
        subprocess.run(["ip", "link", "del", name], capture_output=True)
        net = Stack.tap(name, **kw)
        net.tap_name = name
        # IPv6 on the kernel side only adds router/neighbour solicitations.
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"],
                       capture_output=True)
        made.append(net)
        return net

    yield make
    for net in made:
        net.close()
    # Leave no neighbour entries behind for the next stack on the same address.
    subprocess.run(["ip", "neigh", "flush", "all"], capture_output=True)


# Fixtures that only work as root in the private namespace: a test using one
# (directly or through another fixture) is a TAP test.
TAP_FIXTURES = {"netns", "tap_stack", "devices", "differ"}  # (the last two: tests/conformance)


def pytest_collection_modifyitems(config, items):
    """Mark as ``tap`` every test that needs root: every test in a ``*_tap.py``
    module and every test that uses a fixture from ``TAP_FIXTURES``."""
    for item in items:
        if item.path.name.endswith("_tap.py") or TAP_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.tap)
