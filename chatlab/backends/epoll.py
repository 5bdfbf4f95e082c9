"""epoll (Linux): the interest set lives in the kernel, so a wait costs O(ready), not O(n).

Cost model. epoll_ctl() adds, changes or removes one fd in a kernel-side set, once, when the
program's interest changes. epoll_wait() then sleeps until some of them are ready and copies
out *only the ready ones*. 10,000 idle connections cost nothing per wait; they cost a
syscall each when they connect and when they go.

Edge-triggered mode (EPOLLET) reports a fd only when it *becomes* ready. A handler that
reads part of what arrived and returns will not be told again: the rest waits forever
(notebook 07 shows the hang). Level-triggered, the default, repeats the event until the fd
is drained, like select and poll.

The dup trap (epoll(7), Q6). The set holds (fd number, open file) pairs and reports events
under the number. Closing a registered fd does NOT take it out of the set by itself: the
kernel drops an entry only when its *file* is released, that is when the LAST fd referring
to it is closed. A dup(), the copies a fork()ed child inherits, a fd sent over a unix
socket (SCM_RIGHTS) keep it open (notebook 02 shows dup and fork live). Close a registered
fd while such a copy lives, and the entry stays, reported under the closed number, on
every wait if the file is readable. No epoll_ctl() can
remove it (measured on Linux 6.x): DEL by the closed number fails with EBADF; by the copy's
number, ENOENT (another key); once the number is reused, DEL and MOD fail with ENOENT and
ADD succeeds, so two entries answer to one number. Only a fd with the same number *and* the
same file could remove it (dup2() the copy back, then DEL), and the loop has none. What
works is a new set. So when an epoll_ctl() on a fd we registered fails, this backend
replaces the set by a fresh one holding the interest set: O(registered fds) syscalls, paid
only after the caller closed a fd before removing it. The fds the fresh set cannot take
(closed as well) are reported INVALID at the next poll, as poll's POLLNVAL is. The loop
finds the trap when no epoll_ctl() is made (chatlab/loop.py, design note 5) and unregisters
the fd, which lands here. A fresh set is also the cure after fork(): parent and child share
one epoll set, and each one's epoll_ctl() changes the other's.

Not used here, shown in notebook 02: EPOLLONESHOT (one report until re-armed by MOD, for
several threads on one set), EPOLLEXCLUSIVE (wakes "one or more" of several sets watching
one listener, not all: the thundering herd), EPOLLRDHUP (the peer's half-close).
Edge-triggered, a handler that reads one busy fd until EAGAIN starves the others: read a
bounded amount per turn, and keep your own list of fds still readable.
"""

from __future__ import annotations

import select

from .base import INVALID, PollLikeBackend


class EpollBackend(PollLikeBackend):
    name = "epoll"
    supports_edge_triggered = True

    @classmethod
    def available(cls) -> bool:
        return hasattr(select, "epoll")

    def _make_poller(self):
        self._IN, self._OUT = select.EPOLLIN, select.EPOLLOUT
        self._unwatched: set[int] = set()  # in the interest set, closed: see _rebuild()
        if self.edge_triggered:
            self._extra = select.EPOLLET
        return select.epoll()

    def register(self, fd: int, events: int) -> None:
        try:
            super().register(fd, events)
        except FileExistsError:
            # This very file is in the set already, put there by a process that shares it
            # (a fork()ed parent or child): make the set ours.
            self._interest[fd] = events
            self._rebuild()

    def modify(self, fd: int, events: int) -> None:
        try:
            super().modify(fd, events)
        except OSError:
            # ENOENT: the number names a file the set does not hold; EBADF: it names none.
            # Either way the file registered under it was closed behind our back, and may
            # still be in the set (the dup trap): start afresh.
            self._interest[fd] = events
            self._rebuild()

    def unregister(self, fd: int) -> None:
        self._interest.pop(fd, None)
        if fd in self._unwatched:
            self._unwatched.discard(fd)  # not in the fresh set: nothing to remove
            return
        try:
            self._poller.unregister(fd)
        except OSError:
            self._rebuild()  # the dup trap: no epoll_ctl() can remove the old entry

    def _rebuild(self) -> None:
        """Replace the kernel set by a fresh one holding the interest set (the dup trap)."""
        old, self._poller = self._poller, select.epoll()
        old.close()
        self._unwatched.clear()
        for fd, events in self._interest.items():
            try:
                self._poller.register(fd, self._flags(events))
            except OSError:
                self._unwatched.add(fd)  # closed as well: reported INVALID by poll()

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        # epoll takes seconds as a float (-1: forever); round up to whole ms as poll does.
        # (Fds a fresh set could not take are due now, as INVALID: no sleeping first.)
        ms = 0 if self._unwatched else self._timeout_ms(timeout)
        # maxevents: at most one event per registered fd, so one call gets them all.
        max_ev = max(len(self._interest), 1)
        ready = [
            (fd, self._events(fd, flags))
            for fd, flags in self._poller.poll(-1 if ms < 0 else ms / 1e3, max_ev)
        ]
        if self._unwatched:
            ready += [(fd, INVALID) for fd in self._unwatched]
        return ready
