"""chatlab: learn I/O multiplexing by building a multi-room, full-duplex chat server.

The public API, re-exported from the modules that define it:

- ``EventLoop``, ``available_backends()``: the event loop over select, poll, epoll, kqueue
  (chatlab/loop.py, chatlab/backends/).
- the error classes (chatlab/errors.py).
"""

from .backends import FD_SETSIZE, available_backends
from .errors import (
    BackendError,
    BackendUnavailableError,
    ChatlabError,
    FDLimitError,
    LoopClosedError,
    LoopRunningError,
    RegistrationError,
    UnknownBackendError,
)
from .loop import EventLoop, Handle, IterationTrace, LoopStats, TimerHandle

__version__ = "0.1.0"

__all__ = [
    "FD_SETSIZE",
    "BackendError",
    "BackendUnavailableError",
    "ChatlabError",
    "EventLoop",
    "FDLimitError",
    "Handle",
    "IterationTrace",
    "LoopClosedError",
    "LoopRunningError",
    "LoopStats",
    "RegistrationError",
    "TimerHandle",
    "UnknownBackendError",
    "available_backends",
]
