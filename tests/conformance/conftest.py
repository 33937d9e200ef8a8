"""The two devices of the differential suite, made once per run (see
tests/helpers/conformance.py): the Linux kernel behind one TAP, the stack
behind another, both at 192.0.2.1 in the test's private namespace."""

from __future__ import annotations

import itertools
import os

import pytest

_ports = itertools.count(20000)


@pytest.fixture(scope="session")
def devices():
    if os.geteuid() != 0 or os.environ.get("STACK_TEST_NETNS") != os.readlink("/proc/self/ns/net"):
        pytest.fail("the conformance suite needs root in a private network namespace")
    from tests.helpers.conformance import linux_device, stack_device

    linux = linux_device("tcfk")
    stack = stack_device("tcfs")
    yield linux, stack
    stack.close()
    linux.close()


@pytest.fixture
def differ(devices):
    """``differ(script)`` → (linux transcript, stack transcript), on fresh ports."""
    from tests.helpers.conformance import run_case

    def run(script: str) -> tuple[list[str], list[str]]:
        port = next(_ports)
        tport = port + 20000
        return run_case(devices[0], script, port, tport), run_case(devices[1], script, port, tport)

    return run
