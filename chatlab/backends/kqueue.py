"""kqueue (BSD, macOS): like epoll, the interest set lives in the kernel; O(ready) per wait.

Cost model. The same as epoll's, with one difference of shape: kqueue watches *filters*,
not masks, so "readable" and "writable" are two separate registrations of the same fd
(KQ_FILTER_READ, KQ_FILTER_WRITE), and a change is a list of kevents applied by the next
control() call. Unlike epoll, kqueue ties its filters to the *fd*, not to the file: close()
removes the kevents that reference that fd (kqueue(2)), even while a dup() keeps the file
open, and a kqueue is not inherited by fork(). So epoll's dup trap cannot happen here; a fd
closed while registered simply goes quiet (chatlab/loop.py, design note 5, still applies).

CI runs on Linux, where select.kqueue does not exist: this file is kept as small as the
others so it can be read beside them, but it is not exercised by the test suite.
"""

from __future__ import annotations

import select

from .base import READ, WRITE, Backend


class KqueueBackend(Backend):
    name = "kqueue"

    @classmethod
    def available(cls) -> bool:
        return hasattr(select, "kqueue")

    def __init__(self, *, edge_triggered: bool = False) -> None:
        super().__init__(edge_triggered=edge_triggered)
        self._kq = select.kqueue()

    def _change(self, fd: int, old: int, new: int) -> None:
        changes = []
        for bit, kfilter in ((READ, select.KQ_FILTER_READ), (WRITE, select.KQ_FILTER_WRITE)):
            if new & bit and not old & bit:
                changes.append(select.kevent(fd, kfilter, select.KQ_EV_ADD))
            elif old & bit and not new & bit:
                changes.append(select.kevent(fd, kfilter, select.KQ_EV_DELETE))
        if changes:
            self._kq.control(changes, 0, 0)

    def register(self, fd: int, events: int) -> None:
        self._change(fd, 0, events)
        super().register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._change(fd, self._interest.get(fd, 0), events)
        super().modify(fd, events)

    def unregister(self, fd: int) -> None:
        old = self._interest.get(fd, 0)
        super().unregister(fd)
        try:
            self._change(fd, old, 0)
        except OSError:
            pass  # already closed: the kernel dropped its filters with the fd

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is not None and timeout < 0:
            timeout = 0
        # Up to two filters per fd can fire.
        kevents = self._kq.control(None, 2 * max(len(self._interest), 1), timeout)
        ready: dict[int, int] = {}
        for kev in kevents:
            bit = READ if kev.filter == select.KQ_FILTER_READ else WRITE
            ready[kev.ident] = ready.get(kev.ident, 0) | bit
        return list(ready.items())

    def close(self) -> None:
        super().close()
        self._kq.close()
