"""Shared fixtures: every behaviour test runs once per backend chatlab knows.

A backend this platform lacks (kqueue on Linux, epoll on macOS) is skipped with the reason,
never silently dropped from the list.
"""

from __future__ import annotations

import socket
import sys

import pytest

from chatlab.backends import BACKENDS, available_backends

try:
    import resource
except ImportError:  # Windows
    resource = None


def pytest_configure(config):
    # Tests open a few thousand fds; raise the soft limit to the hard one (never above it).
    if resource is not None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.fixture(params=list(BACKENDS))
def backend(request) -> str:
    """The name of each backend in turn; skipped with the reason where unavailable."""
    name = request.param
    if name not in available_backends():
        pytest.skip(
            f"{name} is not available on {sys.platform} "
            f"(available: {', '.join(available_backends())})"
        )
    return name


@pytest.fixture
def socketpair():
    """socketpair() factory; every pair it made is closed after the test."""
    made: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield make
    for sock in made:
        sock.close()
