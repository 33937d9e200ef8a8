"""Fixtures for the drop-in tests: a stack on a TAP with its trace events at
hand, and kernel-side peers that are stopped after the test."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.dropin import start_peer
from tests.helpers.tap import kill


@pytest.fixture
def net(tap_stack):
    """A stack on a fresh TAP (kernel side 192.0.2.1); ``net.events`` collects
    its trace events."""
    n = tap_stack()
    n.events = []
    n.trace.subscribe(n.events.append)
    return n


@pytest.fixture
def peer():
    """Factory: a kernel-side server from tests/dropin/peer.py, ready."""
    started: list[subprocess.Popen] = []

    def start(mode: str, *args: object) -> subprocess.Popen:
        p = start_peer(mode, *args)
        started.append(p)
        return p

    yield start
    kill(*started)
