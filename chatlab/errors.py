"""Every error chatlab raises on purpose, in one place.

Each class says in one sentence when it is raised; each message says what to do next.
They derive from ``ChatlabError`` (catch everything of ours) and from the built-in class a
caller would naturally expect (``ValueError``, ``RuntimeError``), so ``except ValueError``
keeps working for people who do not know our names.
"""


class ChatlabError(Exception):
    """Base class of every error chatlab raises on purpose."""


class BackendError(ChatlabError, ValueError):
    """A backend name was asked for that cannot be used here."""


class UnknownBackendError(BackendError):
    """The backend name is not one chatlab knows (a typo, usually)."""


class BackendUnavailableError(BackendError):
    """The backend exists, but not on this platform (epoll on macOS, kqueue on Linux)."""


class RegistrationError(ChatlabError, ValueError):
    """A file descriptor cannot be registered with the event loop (closed, negative...)."""


class FDLimitError(RegistrationError):
    """The fd is too large for the backend: select() cannot watch fds >= FD_SETSIZE."""


class LoopClosedError(ChatlabError, RuntimeError):
    """The event loop was used after close()."""


class LoopRunningError(ChatlabError, RuntimeError):
    """run_forever()/run_once() was called while the loop is already running."""


class BusError(ChatlabError, ValueError):
    """The Redis bus cannot be set up as asked: a bad redis:// URL, or hiredis not installed."""


class RedisServerError(ChatlabError, RuntimeError):
    """redis-server (for notebooks, tests, benchmarks) is not installed, or did not start."""
