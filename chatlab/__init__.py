"""chatlab: learn I/O multiplexing by building a multi-room, full-duplex chat server.

The public API, re-exported from the modules that define it:

- ``EventLoop``, ``available_backends()``: the event loop over select, poll, epoll, kqueue
  (chatlab/loop.py, chatlab/backends/).
- ``FRAME_RE``, ``FrameDecoder``, ``encode_frame``: the <RID:n> framing (chatlab/framing.py).
- ``ChatServer``, ``Limits``, ``serve()``: the chat server (chatlab/server.py).
- ``ScriptedClient``: a blocking client for notebooks and tests (chatlab/scripted.py).
- the error classes (chatlab/errors.py).
"""

import logging

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
from .framing import FRAME_RE, FrameDecoder, encode_frame
from .loop import EventLoop, Handle, IterationTrace, LoopStats, TimerHandle
from .scripted import ExpectTimeout, ScriptedClient
from .server import ChatServer, Limits, serve

# A library logs, the application decides where to: without this, Python's last-resort
# handler would print our warnings from server threads into whatever notebook cell runs.
logging.getLogger("chatlab").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "FD_SETSIZE",
    "FRAME_RE",
    "ChatServer",
    "FrameDecoder",
    "Limits",
    "ExpectTimeout",
    "ScriptedClient",
    "encode_frame",
    "serve",
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
