"""select(): the oldest readiness call, and the one the classic chat room was built on.

Cost model. Every call passes three sets of fds (read, write, error) into the kernel as
bitmaps of FD_SETSIZE bits, the kernel checks every fd in them, and overwrites the sets with
the ready ones, so user space must rebuild them for the next call. Each call is therefore
O(highest fd), whether one fd is ready or none. And the bitmaps have a fixed size: an fd
numbered 1024 or more cannot be put in one at all (Python raises "filedescriptor out of
range in select()"). Which client gets fd 1024 depends on what the process holds first:
``python -m chatlab.server --backend select`` holds 7 fds before any client (stdin, stdout,
stderr, the loop's wake-up socketpair, the listener, a spare fd), so its 1,018th client is
the first to hit the wall (notebook 02 shows it). We refuse such an fd at registration,
with a message that says what to use instead.

A fd closed while registered fails the whole call with EBADF: poll() below finds which and
reports it INVALID, so the loop drops it. Like poll, select watches fd *numbers*: a number
reused by another file is watched for the old callback until the loop notices (design
note 5 in chatlab/loop.py).
"""

from __future__ import annotations

import os
import select
import sys

from ..errors import FDLimitError
from .base import INVALID, READ, WRITE, Backend

# CPython builds its select module with the platform's FD_SETSIZE: 1024 on Linux and macOS.
# (On Windows it is 512 sockets, counted by number rather than by fd value.)
FD_SETSIZE = 512 if sys.platform == "win32" else 1024


class SelectBackend(Backend):
    name = "select"
    max_fd = FD_SETSIZE

    def __init__(self, *, edge_triggered: bool = False) -> None:
        super().__init__(edge_triggered=edge_triggered)
        self._readers: set[int] = set()
        self._writers: set[int] = set()

    def register(self, fd: int, events: int) -> None:
        if fd >= FD_SETSIZE:
            raise FDLimitError(
                f"select() cannot watch fd {fd} (FD_SETSIZE is {FD_SETSIZE}); "
                "use --backend poll or epoll"
            )
        super().register(fd, events)
        self._update(fd, events)

    def modify(self, fd: int, events: int) -> None:
        super().modify(fd, events)
        self._update(fd, events)

    def unregister(self, fd: int) -> None:
        super().unregister(fd)
        self._update(fd, 0)

    def _update(self, fd: int, events: int) -> None:
        (self._readers.add if events & READ else self._readers.discard)(fd)
        (self._writers.add if events & WRITE else self._writers.discard)(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is not None and timeout < 0:
            timeout = 0
        try:
            # The whole interest set crosses into the kernel on every call: this is the O(n).
            r, w, _ = select.select(self._readers, self._writers, [], timeout)
        except (OSError, ValueError):
            # One closed fd fails the whole call (EBADF), and select cannot say which one.
            # Find the culprits so the loop can drop them instead of failing forever.
            bad = [(fd, INVALID) for fd in self._interest if not _is_open(fd)]
            if not bad:
                raise
            return bad
        ready = dict.fromkeys(r, READ)
        for fd in w:
            ready[fd] = ready.get(fd, 0) | WRITE
        return list(ready.items())


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
