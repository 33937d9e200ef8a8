"""Fixtures for the service tests: services started on 127.0.0.1, closed after the test."""

from __future__ import annotations

import pytest

from stack.services import ServiceSpec, start_service
from tests.helpers.services import HOST, NET


@pytest.fixture
def serve():
    """Start services on 127.0.0.1 port 0; all are closed afterwards."""
    running = []

    def start(kind: str, directory=None, **options):
        svc = start_service(NET, ServiceSpec(kind, 0, directory), HOST, **options)
        running.append(svc)
        return svc

    yield start
    for svc in running:
        svc.close()


@pytest.fixture
def web(serve):
    return serve("http")
