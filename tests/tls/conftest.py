"""Fixtures for the TLS tests: the throwaway PKI and kernel-side TLS peers."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests.helpers.certs import Pki, make_pki
from tests.helpers.tap import kill

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def kernel_peer(pki):
    """Factory: start tests/helpers/tls_peer.py in MODE on the kernel side
    (192.0.2.1, a port of its choosing); returns (process, port)."""
    started = []

    def start(mode: str, address: str = "192.0.2.1"):
        p = subprocess.Popen([sys.executable, "-m", "tests.helpers.tls_peer", mode,
                              str(pki.cert), str(pki.key), address, "0"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        started.append(p)
        line = p.stdout.readline()
        assert line.startswith("ready "), (line, p.stderr.read() if p.poll() is not None else "")
        return p, int(line.split()[1])

    yield start
    kill(*started)


@pytest.fixture
def s_server(pki):
    """Factory: ``openssl s_server -www`` on 192.0.2.1:PORT; returns the process."""
    started = []

    def start(port: int = 4433):
        p = subprocess.Popen(["openssl", "s_server", "-accept", f"192.0.2.1:{port}",
                              "-cert", str(pki.cert), "-key", str(pki.key), "-www"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        started.append(p)
        lines = []
        while not lines or "ACCEPT" not in lines[-1]:
            lines.append(p.stdout.readline())
            assert lines[-1], (lines, p.stderr.read())
        return p

    yield start
    kill(*started)
