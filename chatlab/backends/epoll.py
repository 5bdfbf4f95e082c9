"""epoll (Linux): the interest set lives in the kernel, so a wait costs O(ready), not O(n).

Cost model. epoll_ctl() adds, changes or removes one fd in a kernel-side set, once, when the
program's interest changes. epoll_wait() then sleeps until some of them are ready and copies
out *only the ready ones*. 10,000 idle connections cost nothing per wait; they cost a
syscall each when they connect and when they go.

Two things to know:
- Edge-triggered mode (EPOLLET) reports a fd only when it *becomes* ready. A handler that
  reads part of what arrived and returns will not be told again: the rest waits forever
  (notebook 07 shows the hang). Level-triggered, the default, repeats the event until the
  fd is drained, like select and poll.
- The kernel removes a fd from the set when its file is closed, so a fd closed while
  registered is never reported at all (no POLLNVAL). If its number is reused by a new
  socket, modify() finds it gone (ENOENT) and registers the new one instead.
"""

from __future__ import annotations

import select

from .base import PollLikeBackend


class EpollBackend(PollLikeBackend):
    name = "epoll"
    supports_edge_triggered = True

    @classmethod
    def available(cls) -> bool:
        return hasattr(select, "epoll")

    def _make_poller(self):
        self._IN, self._OUT = select.EPOLLIN, select.EPOLLOUT
        poller = select.epoll()
        if self.edge_triggered:
            self._extra = select.EPOLLET
        return poller

    def modify(self, fd: int, events: int) -> None:
        try:
            super().modify(fd, events)
        except FileNotFoundError:
            # The old file with this number was closed (and forgotten by the kernel) and
            # the number now names a new one: register it afresh.
            self._poller.register(fd, self._flags(events))
            self._interest[fd] = events

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        # epoll takes seconds as a float (-1: forever); round up to whole ms as poll does.
        ms = self._timeout_ms(timeout)
        # maxevents: at most one event per registered fd, so one call gets them all.
        max_ev = max(len(self._interest), 1)
        return [
            (fd, self._events(fd, flags))
            for fd, flags in self._poller.poll(-1 if ms < 0 else ms / 1e3, max_ev)
        ]
