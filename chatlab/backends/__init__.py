"""The backends, and the ranked probe that picks one.

``available_backends()`` lists the names usable here, best first: the kernel-side interest
sets (epoll, kqueue) before the O(n) calls (poll, then select, which also has the FD_SETSIZE
wall). ``"auto"`` is the first of them, as ``selectors.DefaultSelector`` is.
"""

from __future__ import annotations

import sys

from ..errors import BackendUnavailableError, UnknownBackendError
from .base import INVALID, READ, WRITE, Backend
from .epoll import EpollBackend
from .kqueue import KqueueBackend
from .poll import PollBackend
from .select_ import FD_SETSIZE, SelectBackend

__all__ = [
    "BACKENDS",
    "FD_SETSIZE",
    "INVALID",
    "READ",
    "WRITE",
    "Backend",
    "available_backends",
    "get_backend",
]

#: every backend chatlab has, best first
BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (EpollBackend, KqueueBackend, PollBackend, SelectBackend)
}


def available_backends() -> list[str]:
    """The backend names usable on this platform, best first."""
    return [name for name, cls in BACKENDS.items() if cls.available()]


def get_backend(name: str = "auto") -> type[Backend]:
    """The backend class for a name, or "auto" for the best one here."""
    available = available_backends()
    if name == "auto":
        name = available[0]
    if name not in BACKENDS:
        raise UnknownBackendError(
            f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)} "
            f"(available on {sys.platform}: {', '.join(available)})"
        )
    if name not in available:
        raise BackendUnavailableError(
            f"backend {name!r} is not available on {sys.platform}; "
            f"available here: {', '.join(available)}"
        )
    return BACKENDS[name]
