"""poll(): select() without the FD_SETSIZE wall, but with the same O(n) per call.

Cost model. The interest set is an array of (fd, events) structs that lives in our process;
every call copies the whole array into the kernel, which checks each fd and writes back the
ready ones. No limit on fd values (only on how many fds the process may open), but a loop
with 10,000 idle connections still pays for 10,000 entries to find the one that is ready.

A fd that was closed while registered comes back as POLLNVAL on every call, at once: a
loop that ignored it would spin at full CPU. We report it as INVALID and the loop drops it.
poll watches fd *numbers*: once the number is reused by another file, poll watches that
file for the old callback; the loop catches that itself (chatlab/loop.py, design note 5).
"""

from __future__ import annotations

import select

from .base import INVALID, PollLikeBackend


class PollBackend(PollLikeBackend):
    name = "poll"

    @classmethod
    def available(cls) -> bool:
        return hasattr(select, "poll")

    def _make_poller(self):
        self._IN, self._OUT = select.POLLIN, select.POLLOUT
        return select.poll()

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        ready = []
        for fd, flags in self._poller.poll(self._timeout_ms(timeout)):
            if flags & select.POLLNVAL:
                ready.append((fd, INVALID))
            else:
                ready.append((fd, self._events(fd, flags)))
        return ready
