"""chatlab's event loop: one thread, many sockets, no blocking call.

Design notes, in the order a reader meets them:

1. The loop owns a *backend* (chatlab/backends): the interest set and the readiness syscall.
   The loop adds what the syscall does not know: which callback to run for which fd, timers,
   a queue of callbacks to run soon, and a way for other threads to wake it up.
2. One iteration (``run_once``) is: work out how long we may sleep (0 if callbacks are
   queued, until the next timer otherwise), ask the backend which fds are ready, run their
   callbacks, move due timers to the queue, run the queue. Nothing in it blocks but the
   syscall, which is why a handler must never block either.
3. The method names follow asyncio's (``add_reader``, ``call_later``,
   ``call_soon_threadsafe``...) so that what you learn here transfers (``run_once`` is ours:
   asyncio keeps its one iteration private, ``BaseEventLoop._run_once``); ``fd_or_sock`` is
   an int or anything with fileno().
4. Handlers may add or remove any fd, including others that are ready in the same batch.
   The loop therefore looks each fd's callback up again just before running it (libuv does
   the same): a reader removed by an earlier handler in the batch is simply not called.
5. The rule: remove a fd from the loop *before* closing it. A fd closed while still
   registered is a bug in the caller, but it must not become a busy loop, on any backend.
   select fails with EBADF and poll returns POLLNVAL on every call: those backends report
   the fd as INVALID, and the loop drops it (``dropped_fds``). epoll is subtler: closing a
   registered fd takes it out of the set only if that fd was the *last* one referring to
   its file (epoll(7), Q6). A dup(), the copy a fork()ed child inherits, or a fd sent over a
   unix socket (SCM_RIGHTS) keeps the file open, and epoll goes on reporting it under the
   closed number, which may meanwhile name another file (the dup trap, chatlab/backends/
   epoll.py; notebook 02 shows dup and fork): a loop that runs the old reader each time
   never sleeps. The loop cannot see a close(), and one
   fstat() per event would tax every healthy fd, so it uses what it knows for free: the file
   each fd named when registered (add_reader() calls fstat() anyway), and the last pass's
   ready list. A dead registration makes the backend say the same thing pass after pass; so
   on the 1st, 2nd, 4th, 8th... pass in a row that repeats the one before, the loop checks
   its fds, before their handlers run: a fd now closed, or naming another file, is dropped
   (``stale_fds``), as is a fd reported with nothing the loop asked for. A healthy fd that
   stays ready costs O(log n) fstat() calls over n passes, and the trap costs one call of the
   dead handler; more only while other fds keep every pass different, or if the fd was
   already ready pass after pass when it was closed. Edge-triggered (or when the file's
   other owner drains it), a dead registration is reported once per arrival: one spurious
   call each time, never a busy loop. Each drop is logged once, as a warning.
6. Statistics are plain counters, cheap enough to leave on. An optional trace hook receives
   one record per iteration; the notebooks plot it.
7. Work that should happen once per pass, after every handler of the pass and before the loop
   sleeps, is a *before-poll hook* (``add_before_poll``), as redis's ae.c has beforeSleep.
   The servers' writes use it (chatlab/stream.py): every handler queues, and one hook sends
   each stream's queue once, instead of each user keeping its own "already scheduled" flag.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backends import INVALID, READ, WRITE, get_backend
from .errors import FDLimitError, LoopClosedError, LoopRunningError, RegistrationError

__all__ = ["EventLoop", "Handle", "IterationTrace", "LoopStats", "TimerHandle"]

logger = logging.getLogger("chatlab.loop")


# ---------------------------------------------------------------------------- handles


class Handle:
    """A callback and its arguments, queued to run once; ``cancel()`` stops it."""

    __slots__ = ("_callback", "_args", "cancelled")

    def __init__(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._callback = callback
        self._args = args
        self.cancelled = False

    def cancel(self) -> None:
        # A cancelled timer stays in the loop's heap until it is due: drop its arguments now
        # (as asyncio does), so that it does not keep what it was about (a connection and its
        # buffers) alive meanwhile.
        self.cancelled = True
        self._args = ()

    def __repr__(self) -> str:
        name = getattr(self._callback, "__qualname__", self._callback)
        state = " cancelled" if self.cancelled else ""
        return f"<{type(self).__name__} {name}{state}>"


class TimerHandle(Handle):
    """A handle due at ``when`` (loop.time() clock). Ordered by time, then by creation."""

    __slots__ = ("when", "_seq")

    def __init__(
        self, when: float, seq: int, callback: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        super().__init__(callback, args)
        self.when = when
        self._seq = seq

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.when, self._seq) < (other.when, other._seq)


# ------------------------------------------------------------------- stats and trace


@dataclass
class LoopStats:
    """Counters kept by every loop; ``loop.statistics()`` returns a copy."""

    backend: str
    iterations: int = 0  # run_once() calls
    wakeups: int = 0  # iterations whose syscall returned at least one ready fd
    events: int = 0  # ready (fd, events) pairs, summed
    callbacks: int = 0  # callbacks run (fd handlers, timers, call_soon)
    errors: int = 0  # callbacks that raised (logged, loop kept going)
    dropped_fds: int = 0  # fds found closed while registered (see design note 5)
    stale_fds: int = 0  # ready fds no longer naming their registered file, or with no callback
    time_blocked: float = 0.0  # seconds spent inside the syscall
    time_working: float = 0.0  # seconds spent running callbacks
    registered: int = 0  # fds in the interest set now


@dataclass
class IterationTrace:
    """One loop iteration, as given to the trace hook."""

    start: float  # loop.time() when the iteration began
    timeout: float | None  # how long the syscall was allowed to block
    blocked: float  # seconds spent in the syscall
    working: float  # seconds spent in callbacks
    ready: list[tuple[int, int]] = field(default_factory=list)  # [(fd, READ|WRITE)]


# ------------------------------------------------------------------------- the loop


def _fileno(fd_or_sock: Any) -> int:
    """An int fd, or the fileno() of a socket-like object, checked for being usable."""
    if isinstance(fd_or_sock, int):
        fd = fd_or_sock
    else:
        try:
            fd = int(fd_or_sock.fileno())
        except (AttributeError, TypeError, ValueError) as exc:
            raise RegistrationError(
                f"expected an int fd or an object with fileno(), got {fd_or_sock!r}"
            ) from exc
    if fd < 0:
        raise RegistrationError(f"invalid fd {fd}: is the socket closed? ({fd_or_sock!r})")
    return fd


class EventLoop:
    """A readiness loop over one backend: ``EventLoop(backend="auto")``.

    Not thread-safe, except ``call_soon_threadsafe()`` and ``stop()``, which any thread may
    call. Use it as a context manager, or call ``close()``, to release the backend and the
    wake-up socketpair.
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        edge_triggered: bool = False,
        trace: Callable[[IterationTrace], None] | None = None,
    ) -> None:
        self._backend = get_backend(backend)(edge_triggered=edge_triggered)
        self._readers: dict[int, Handle] = {}
        self._writers: dict[int, Handle] = {}
        # Design note 5: the file each registered fd named (st_dev, st_ino), the last pass's
        # ready list, and how many passes in a row have repeated it.
        self._files: dict[int, tuple[int, int]] = {}
        self._last_ready: list[tuple[int, int]] = []
        self._repeats = 0
        self._ready: deque[Handle] = deque()
        self._before_poll: list[Callable[[], Any]] = []
        self._timers: list[TimerHandle] = []
        self._seq = itertools.count()
        self._stopping = False
        self._running = False
        self._thread_id: int | None = None
        self._closed = False
        self._trace = trace
        self._stats = LoopStats(backend=self._backend.name)
        # The self-pipe trick: another thread cannot interrupt our syscall directly, but it
        # can make a socket we watch readable. One byte in, and the loop wakes up.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self.add_reader(self._wake_r, self._drain_wakeup)
        except FDLimitError as exc:
            self.close()  # release the socketpair and the backend: nothing leaks
            raise FDLimitError(f"the loop's own wake-up socket: {exc}") from None

    # -- properties ---------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def edge_triggered(self) -> bool:
        return self._backend.edge_triggered

    @property
    def max_fd(self) -> int | None:
        """The backend's fd ceiling (select's FD_SETSIZE), or None."""
        return self._backend.max_fd

    def time(self) -> float:
        """The loop's clock (monotonic seconds), as used by call_later()."""
        return time.monotonic()

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def statistics(self) -> LoopStats:
        """A snapshot of the counters (see LoopStats)."""
        stats = LoopStats(**vars(self._stats))
        stats.registered = len(self._backend)
        return stats

    def set_trace(self, trace: Callable[[IterationTrace], None] | None) -> None:
        """Call ``trace(IterationTrace)`` after every iteration; None turns it off."""
        self._trace = trace

    # -- readers and writers ------------------------------------------------------------

    def add_reader(self, fd_or_sock: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` whenever fd_or_sock is readable.

        A fd that already has a reader gets the new callback instead, as in asyncio.
        """
        self._add(self._readers, READ, fd_or_sock, callback, args)

    def add_writer(self, fd_or_sock: Any, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` whenever fd_or_sock is writable (replaces any writer)."""
        self._add(self._writers, WRITE, fd_or_sock, callback, args)

    def remove_reader(self, fd_or_sock: Any) -> bool:
        """Stop watching for readability. False if there was no reader, as in asyncio."""
        return self._remove(self._readers, READ, fd_or_sock)

    def remove_writer(self, fd_or_sock: Any) -> bool:
        """Stop watching for writability. False if there was no writer."""
        return self._remove(self._writers, WRITE, fd_or_sock)

    def _mask(self, fd: int) -> int:
        return (READ if fd in self._readers else 0) | (WRITE if fd in self._writers else 0)

    def _add(
        self,
        table: dict[int, Handle],
        bit: int,
        fd_or_sock: Any,
        callback: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        self._check_open()
        fd = _fileno(fd_or_sock)
        old = self._mask(fd)
        if not old:
            if os.name == "posix":
                # Catch a closed fd now, with its name, rather than as EBADF from a syscall
                # three callbacks later (select would only fail then; poll would spin). The
                # answer also says which file the fd names: kept for design note 5.
                try:
                    st = os.fstat(fd)
                except OSError as exc:
                    raise RegistrationError(f"fd {fd} is not open ({exc.strerror})") from None
                self._backend.register(fd, old | bit)
                self._files[fd] = (st.st_dev, st.st_ino)
            else:
                self._backend.register(fd, old | bit)
        elif not old & bit:
            self._backend.modify(fd, old | bit)
        table[fd] = Handle(callback, args)

    def _remove(self, table: dict[int, Handle], bit: int, fd_or_sock: Any) -> bool:
        if self._closed:
            return False
        fd = _fileno(fd_or_sock)
        handle = table.pop(fd, None)
        if handle is None:
            return False
        handle.cancel()
        mask = self._mask(fd)
        if mask:
            self._backend.modify(fd, mask)
        else:
            self._backend.unregister(fd)
            self._files.pop(fd, None)
        return True

    def _check_fds(self, ready: list[tuple[int, int]]) -> None:
        """Drop the fds of a repeated pass that no longer name their registered file (note 5).

        One fstat() per fd, and only on the 1st, 2nd, 4th... repeated pass in a row."""
        if os.name != "posix":
            return  # no fstat() of a socket there; select reports closed ones (EBADF)
        for fd, _events in ready:
            if fd not in self._files:
                continue  # dropped already, or reported with nothing asked for (run_once)
            try:
                st = os.fstat(fd)
            except OSError:
                # Yet the backend reports it: a dup or a fork()ed child keeps its file open.
                self._drop(
                    fd,
                    "was closed while still registered, but a dup or a child keeps its file open",
                )
                continue
            if self._files[fd] != (st.st_dev, st.st_ino):
                # Both files are open now, so their inode numbers differ: no false alarm.
                self._drop(
                    fd, "was closed while still registered, and its number now names another file"
                )

    def _drop(self, fd: int, why: str | None = None) -> None:
        """Forget a dead registration: closed while registered (design note 5).

        ``why`` None: the backend said the fd is not open (INVALID), counted in dropped_fds.
        Otherwise the loop found it out (the dup trap, a reused number), in stale_fds."""
        for table in (self._readers, self._writers):
            handle = table.pop(fd, None)
            if handle is not None:
                handle.cancel()
        self._files.pop(fd, None)
        self._backend.unregister(fd)
        if why is None:
            self._stats.dropped_fds += 1
            why = "was closed while still registered"
        else:
            self._stats.stale_fds += 1
        logger.warning(
            "fd %d %s; the %s loop dropped it "
            "(call remove_reader()/remove_writer() before closing a socket)",
            fd,
            why,
            self._backend.name,
        )

    # -- callbacks and timers -----------------------------------------------------------

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Handle:
        """Run ``callback(*args)`` at the next iteration, after the ready fds."""
        self._check_open()
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` in ``delay`` seconds; ``handle.cancel()`` undoes it."""
        return self.call_at(self.time() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` when ``loop.time()`` reaches ``when``."""
        self._check_open()
        timer = TimerHandle(when, next(self._seq), callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> Handle:
        """call_soon() for other threads: queues the callback and wakes the loop."""
        self._check_open()
        handle = Handle(callback, args)
        self._ready.append(handle)  # deque.append is atomic
        self._wake()
        return handle

    def call_and_wait(self, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """From another thread: run ``fn(*args)`` on the loop's thread, between two handlers,
        and return its result (or raise its exception); TimeoutError if the loop does not
        get to it within ``timeout`` seconds. From the loop's own thread: just call it."""
        if self._running and threading.get_ident() == self._thread_id:
            return fn(*args)
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # handed back to the calling thread below
                box["error"] = exc
            finally:
                done.set()

        self.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError(f"the loop did not run {fn!r} within {timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the loop is going to wake up anyway
        except OSError:
            pass  # closed under us by close() in the loop thread

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def add_before_poll(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` at the start of every iteration, before the loop polls (note 7).

        It runs on every pass, busy or idle, so it must be cheap when it has nothing to do."""
        self._check_open()
        self._before_poll.append(callback)

    def remove_before_poll(self, callback: Callable[[], Any]) -> bool:
        """Stop running ``callback`` before each poll; False if it was not registered."""
        try:
            self._before_poll.remove(callback)
        except ValueError:
            return False
        return True

    # -- running ------------------------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> None:
        """One iteration: wait up to ``timeout`` seconds (None: until something happens)
        for ready fds or a due timer, then run everything that became due."""
        self._check_open()
        if self._running and threading.get_ident() != self._thread_id:
            raise LoopRunningError("run_once() called from another thread while running")
        stats = self._stats
        start = time.monotonic()
        for hook in self._before_poll:  # note 7: what the last pass's handlers left to do
            self._run_hook(hook)
        polled = time.monotonic()  # the hooks' time is work (a flush sends), not sleep
        # How long may we sleep? Not at all if callbacks are queued; not past the next timer.
        if self._ready:
            timeout = 0
        elif self._timers:
            until_timer = max(0.0, self._timers[0].when - polled)
            timeout = until_timer if timeout is None else min(timeout, until_timer)

        ready = self._backend.poll(timeout)
        woke = time.monotonic()

        # Design note 5: a dead registration makes the backend say the same thing pass after
        # pass. On the 1st, 2nd, 4th, 8th... pass in a row that repeats the one before, check
        # its fds, before their handlers run. (Comparing two lists mostly stops at their
        # lengths or their first pair.)
        if ready and ready == self._last_ready:
            self._repeats += 1
            if not self._repeats & (self._repeats - 1):
                self._check_fds(ready)
        else:
            self._repeats = 0
        self._last_ready = ready

        # Ready fds. Look each callback up again: an earlier handler may have removed it.
        for fd, events in ready:
            if not 0 < events < INVALID:  # INVALID, or none of what the loop asked for
                self._drop(fd, None if events else "was reported ready with no reader or writer")
                continue
            if events & READ:
                handle = self._readers.get(fd)
                if handle is not None:
                    self._run(handle)
            if events & WRITE:
                handle = self._writers.get(fd)
                if handle is not None:
                    self._run(handle)

        # Due timers join the queue; cancelled ones are discarded on the way.
        timers = self._timers
        if timers:
            now = time.monotonic()
            while timers and timers[0].when <= now:
                timer = heapq.heappop(timers)
                if not timer.cancelled:
                    self._ready.append(timer)

        # Run what was queued before this point; what these callbacks queue waits for the
        # next iteration, so a callback that re-queues itself cannot starve the fds.
        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if not handle.cancelled:
                self._run(handle)

        end = time.monotonic()
        stats.iterations += 1
        if ready:
            stats.wakeups += 1
            stats.events += len(ready)
        stats.time_blocked += woke - polled
        stats.time_working += (polled - start) + (end - woke)
        if self._trace is not None:
            blocked, working = woke - polled, (polled - start) + (end - woke)
            self._trace(IterationTrace(start, timeout, blocked, working, ready))

    def _run(self, handle: Handle) -> None:
        self._stats.callbacks += 1
        try:
            handle._callback(*handle._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            # As asyncio does: one failing handler is logged, and the loop serves the rest.
            self._stats.errors += 1
            logger.exception("exception in callback %r", handle)

    def _run_hook(self, hook: Callable[[], Any]) -> None:
        try:
            hook()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            self._stats.errors += 1
            logger.exception("exception in before-poll hook %r", hook)

    def run_forever(self) -> None:
        """Run iterations until stop() is called (from a callback or any thread)."""
        self._check_open()
        if self._running:
            raise LoopRunningError("the event loop is already running")
        self._running = True
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self._stopping = False
            self._running = False

    def stop(self) -> None:
        """Ask run_forever() to return after the current iteration. Safe from any thread."""
        self._stopping = True
        if not self._closed:
            self._wake()

    def close(self) -> None:
        """Release the backend and the wake-up sockets. Does not close the caller's fds.

        Idempotent; refuses while the loop is running (stop it first)."""
        if self._running:
            raise LoopRunningError("cannot close a running event loop; call stop() first")
        if self._closed:
            return
        self._closed = True
        self._readers.clear()
        self._writers.clear()
        self._files.clear()
        self._last_ready = []
        self._ready.clear()
        self._timers.clear()
        self._before_poll.clear()
        self._backend.close()
        self._wake_r.close()
        self._wake_w.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LoopClosedError("the event loop is closed")

    def __enter__(self) -> EventLoop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._running else "idle"
        return f"<EventLoop backend={self._backend.name} {state} fds={len(self._backend)}>"
