"""The small interface every backend implements, and the base that poll and epoll share.

A backend answers one question for the event loop: "which of these file descriptors are
ready, and for what?". It keeps the *interest set* (fd -> READ and/or WRITE) and turns it
into one system call per loop iteration. It knows nothing of callbacks, timers or sockets:
that is the loop's job (chatlab/loop.py). Keeping the backends this small is what lets a
reader put select, poll and epoll side by side and see that they differ in one place only:
where the interest set lives and what each call has to copy.

Events are a bit mask: READ, WRITE, and INVALID, which a backend reports for a fd that was
closed while still registered (poll's POLLNVAL, select's EBADF, a fd epoll's fresh set
could not take) so the loop can drop it instead of spinning on it. A closed fd whose file is
still open elsewhere (a dup, a fork()ed child) is another matter on epoll: see epoll.py.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

READ = 1
WRITE = 2
INVALID = 4  # the fd was closed behind the loop's back; the loop drops it and logs why


class Backend(ABC):
    """Interest set + one readiness system call. Level-triggered unless told otherwise."""

    #: the name users pass to EventLoop(backend=...)
    name: str = "?"
    #: the largest fd the syscall can watch, plus one (select's FD_SETSIZE); None: no limit
    max_fd: int | None = None
    #: only epoll can be edge-triggered; the others refuse the option
    supports_edge_triggered = False

    def __init__(self, *, edge_triggered: bool = False) -> None:
        if edge_triggered and not self.supports_edge_triggered:
            raise ValueError(
                f"the {self.name} backend is level-triggered only; "
                "edge-triggered mode needs backend='epoll'"
            )
        self.edge_triggered = edge_triggered
        # fd -> READ|WRITE mask; the loop's view of the interest set, kept for every backend
        # so that statistics and error messages need no syscall.
        self._interest: dict[int, int] = {}

    @classmethod
    def available(cls) -> bool:
        """True when this platform's select module has the syscall."""
        return True

    def __len__(self) -> int:
        return len(self._interest)

    def register(self, fd: int, events: int) -> None:
        """Start watching fd, which must not be registered yet."""
        self._interest[fd] = events

    def modify(self, fd: int, events: int) -> None:
        """Change what a registered fd is watched for."""
        self._interest[fd] = events

    def unregister(self, fd: int) -> None:
        """Stop watching fd. Never fails: the fd may already be closed."""
        self._interest.pop(fd, None)

    @abstractmethod
    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to timeout seconds (None: forever, 0: not at all) -> [(fd, events)]."""

    def close(self) -> None:
        self._interest.clear()


class PollLikeBackend(Backend):
    """What poll and epoll have in common: an object that holds the interest set.

    With poll() the set lives in *our* process and is copied into the kernel on every call,
    so each call costs O(registered fds). With epoll the set lives in the *kernel*, changed
    only by register/modify/unregister, and a wait costs O(ready fds). The code is the same
    shape; the subclasses only name the object, its flags and its timeout unit.
    """

    _IN = _OUT = _ERR = 0  # the syscall's flag values, set by each subclass

    def __init__(self, *, edge_triggered: bool = False) -> None:
        super().__init__(edge_triggered=edge_triggered)
        self._extra = 0  # flags added to every registration (EPOLLET)
        self._poller = self._make_poller()

    @abstractmethod
    def _make_poller(self): ...

    def _flags(self, events: int) -> int:
        flags = self._extra
        if events & READ:
            flags |= self._IN
        if events & WRITE:
            flags |= self._OUT
        return flags

    def register(self, fd: int, events: int) -> None:
        self._poller.register(fd, self._flags(events))
        super().register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._poller.modify(fd, self._flags(events))
        super().modify(fd, events)

    def unregister(self, fd: int) -> None:
        super().unregister(fd)
        try:
            self._poller.unregister(fd)
        except KeyError:
            pass  # poll: not in our array (epoll overrides this: see the dup trap there)

    def _events(self, fd: int, flags: int) -> int:
        """Translate the syscall's flags into READ/WRITE, as asked for.

        An error or hang-up (POLLHUP, POLLERR) is reported as *both* readable and writable,
        as CPython's selectors does: the handler's next recv() or send() then returns the EOF
        or raises the error, so the one place that handles them does so.
        """
        events = 0
        if flags & ~self._OUT:
            events |= READ
        if flags & ~self._IN:
            events |= WRITE
        return events & self._interest.get(fd, 0)

    @staticmethod
    def _timeout_ms(timeout: float | None) -> int:
        # Round *up*: a 0.1 ms timer rounded down to 0 ms would make the loop spin.
        if timeout is None:
            return -1
        return max(0, math.ceil(timeout * 1e3))

    def close(self) -> None:
        super().close()
        close = getattr(self._poller, "close", None)
        if close is not None:
            close()
