"""chatlab: learn I/O multiplexing by building a multi-room, full-duplex chat server.

The public API, re-exported from the modules that define it:

- ``EventLoop``, ``available_backends()``: the event loop over select, poll, epoll, kqueue
  (chatlab/loop.py, chatlab/backends/).
- ``FRAME_RE``, ``FrameDecoder``, ``encode_frame``: the <RID:n> framing (chatlab/framing.py).
- ``ChatServer``, ``Limits``, ``serve()``: the chat server (chatlab/server.py).
- ``ScriptedClient``: a blocking client for notebooks and tests (chatlab/scripted.py).
- ``ChatServer(bus="redis://...")``: several servers sharing rooms through Redis
  (chatlab/bus.py; ``pip install 'chatlab[redis]'``), and ``chatlab.redis_server.RedisServer``
  to start a throwaway redis-server.
- the error classes (chatlab/errors.py).
"""

import logging
from typing import TYPE_CHECKING, Any

from .backends import FD_SETSIZE, available_backends
from .errors import (
    BackendError,
    BackendUnavailableError,
    BusError,
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

# chatlab.server is also a script (python -m chatlab.server). Importing it here would load
# it twice in that process, once as chatlab.server and once as __main__, and runpy would
# print a RuntimeWarning about it on every start. So its names are loaded on first use
# (PEP 562): `from chatlab import serve` and `chatlab.ChatServer` work as before.
_LAZY = {"ChatServer": "server", "Limits": "server", "serve": "server"}

if TYPE_CHECKING:  # a type checker (and an editor) still sees what they are
    from .server import ChatServer, Limits, serve


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "BusError",
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
