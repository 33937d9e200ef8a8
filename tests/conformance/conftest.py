"""The two devices of the differential suite, made once per module and removed
after it (later TAP tests use the same addresses; see
tests/helpers/conformance.py): the Linux kernel behind one TAP, the stack
behind another, both at 192.0.2.1 in the test's private namespace.

With ``STACK_CONFORMANCE_LINUX_TWICE=1`` in the environment the second run of
every case is the kernel's again, and the suite checks that Linux agrees with
itself (no case is flaky): ``STACK_CONFORMANCE_LINUX_TWICE=1 scripts/test
tests/conformance``. Two things differ then, by necessity: the second run
uses other ports (its transcript shows the first run's), and the kernel's
per-host ICMP rate limit (``icmp_ratelimit``) is off, since two runs back to
back would spend twice the budget the cases are arranged for."""

from __future__ import annotations

import itertools
import os
import subprocess

import pytest

from tests.helpers.conformance import LINUX_TWICE

_ports = itertools.count(20000)


@pytest.fixture(scope="module")
def devices():
    if os.geteuid() != 0 or os.environ.get("STACK_TEST_NETNS") != os.readlink("/proc/self/ns/net"):
        pytest.fail("the conformance suite needs root in a private network namespace")
    from tests.helpers.conformance import linux_device, stack_device

    linux = linux_device("tcfk")
    stack = stack_device("tcfs")
    limit = "net.ipv4.icmp_ratelimit"
    if LINUX_TWICE:
        was = subprocess.run(["sysctl", "-n", limit], capture_output=True, text=True).stdout
        subprocess.run(["sysctl", "-qw", f"{limit}=0"], check=True)
    yield linux, stack
    if LINUX_TWICE:
        subprocess.run(["sysctl", "-qw", f"{limit}={was.strip()}"], check=True)
    stack.close()
    linux.close()


@pytest.fixture
def differ(devices):
    """``differ(script)`` → (linux transcript, stack transcript), on fresh ports
    (with LINUX_TWICE, the second transcript is the kernel's again)."""
    from tests.helpers.conformance import run_case

    second = devices[0] if LINUX_TWICE else devices[1]

    def run(script: str) -> tuple[list[str], list[str]]:
        port = next(_ports)
        tport = port + 20000
        first = run_case(devices[0], script, port, tport)
        if not LINUX_TWICE:
            return first, run_case(second, script, port, tport)
        port2 = next(_ports)
        again = run_case(second, script, port2, port2 + 20000)
        return first, [line.replace(str(port2 + 20000), str(tport)).replace(str(port2), str(port))
                       for line in again]

    return run
