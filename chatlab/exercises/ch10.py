"""Chapter 10: build your own chat server, one step at a time, graded by chatlab.grade.

The learner's server is a class on the standard library's ``selectors``; each step of the
chapter subclasses the previous step's class. ``Plumbing`` is what the chapter gives away
because it is not the lesson: the listening socket, the selector, and a wake-up socketpair
so that ``close()``, called from the grader's thread, can end ``serve_forever()``.

``check_step(cls, "rooms")`` grades the class in this process (``chatlab.grade.grade_class``
does the same for one step), step by step up to the one named: the earlier steps' checks run
first, so a regression shows, and grading stops at the first step that fails, as a course
lab's grader stops at the first failing stage. That also keeps a notebook full of stubs
quick: every wait in the grader is bounded, and only one step's checks fail.

Three checks of this chapter's own join the grader's:

- ``registered`` (step "accept"): a client connects and the server registers its socket on
  ``self.sel`` (it reads the server object: in-process only). The grader's ``accept`` check
  sees a server that never calls accept() only once the listen backlog is full (its 129th
  client cannot connect); this check names what is missing.
- ``echo`` (step "accept" only, since rooms replace the echo): what a client sends comes
  back to that client, and only to it.
- ``slow-dropped`` (step "limits"): a member who never reads is dropped once the server has
  buffered a bounded amount for him; without a cap the server's memory grows with the flood.
"""

from __future__ import annotations

import re
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatlab.grade import (
    CHECKS,
    STEPS,
    Check,
    Context,
    Failed,
    InProcessTarget,
    Result,
    Scoreboard,
    Skipped,
    grade,
    select_checks,
)
from chatlab.grade.checks import FLOOD_LINE, FLOOD_MESSAGES, FLOOD_TALKERS, _flood, _missing

__all__ = ["FRAME", "OWN_CHECKS", "Plumbing", "StepReport", "check_step"]

#: a frame of the protocol: <RID:n>text</RID:n> (the same n twice), text may hold newlines
FRAME = re.compile(rb"<RID:(\d+)>(.*?)</RID:\1>", re.DOTALL)

REGISTER_WAIT = 5.0  # seconds a connection may take to be accepted and registered
DROP_READ = 15.0  # seconds slow may read, after the flood, before the check gives up


class Plumbing:
    """What every step's server has and no step is about.

    - ``self.listener``: a listening, non-blocking TCP socket on 127.0.0.1, port 0 (free);
      ``self.address`` is its (host, port).
    - ``self.sel``: a ``selectors.DefaultSelector()`` (epoll on Linux, kqueue on macOS, poll
      or select elsewhere): the learner registers the listener and every connection on it.
    - a wake-up socketpair, already registered on ``self.sel``: ``close()`` (from another
      thread) sets ``self.closing`` and writes a byte to it, so a ``select()`` waiting with no
      timeout returns; its key's ``data`` is a callback that reads that byte, like the
      callbacks the learner registers (``key.data(key.fileobj, events)``).
    - ``close_all()``: closes every socket registered on the selector, the listener, the
      wake-up pair and the selector; safe to call twice.
    """

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._woken)

    def _woken(self, sock: socket.socket, events: int) -> None:
        try:
            sock.recv(64)  # the byte close() wrote: read, so the pair is not ready again
        except BlockingIOError:
            pass

    def close(self) -> None:
        """From another thread: make serve_forever() return (it sees ``self.closing``)."""
        self.closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:  # already closed: serve_forever has returned
            pass

    def wait_for_close(self) -> None:
        """A placeholder for serve_forever that serves nobody: it waits for close()."""
        self._wake_r.setblocking(True)
        while not self.closing:
            self._wake_r.recv(64)
        self.close_all()

    def close_all(self) -> None:
        """Close every registered socket, the listener, the wake-up pair, the selector."""
        registered = self.sel.get_map()
        if registered is not None:  # None once the selector is closed
            for key in list(registered.values()):
                key.fileobj.close()  # type: ignore[union-attr]
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()
        self.sel.close()


# ------------------------------------------------------------------------- own checks


def _registered(ctx: Context) -> None:
    """serve_forever() accepts a connection and registers it on the server's selector."""
    sel = getattr(getattr(ctx.target, "server", None), "sel", None)
    if not isinstance(sel, selectors.BaseSelector):
        raise Skipped("this check reads the server's selector (self.sel, from Plumbing)")
    alice = ctx.peer("alice")
    mine = alice.sock.getsockname()
    deadline = time.monotonic() + REGISTER_WAIT
    while time.monotonic() < deadline:
        if mine in _peers_registered(sel):
            return
        time.sleep(0.01)
    raise Failed(
        f"alice connected, and in {REGISTER_WAIT:.0f} s the server did not register her "
        "connection on self.sel (is serve_forever still the placeholder?)"
    )


def _peers_registered(sel: selectors.BaseSelector) -> set[Any]:
    """The remote addresses of the connected sockets registered on ``sel``."""
    for _ in range(100):  # the server's thread may change the map while we read it
        try:
            keys = list((sel.get_map() or {}).values())
            break
        except RuntimeError:
            continue
    else:
        return set()
    found = set()
    for key in keys:
        try:
            found.add(key.fileobj.getpeername())  # type: ignore[union-attr]
        except (OSError, AttributeError):  # the listener, the wake-up pair, a closed socket
            pass
    return found


def _echo(ctx: Context) -> None:
    """What a client sends comes back to it, and to no one else."""
    alice, bob = ctx.peer("alice"), ctx.peer("bob")
    first = ctx.token("echo")
    if not alice.send(first.encode()):
        raise Failed("alice could not send (the server is not reading her)")
    ctx.expect([alice], first, "alice sent it to an echo server")
    second = ctx.token("echo")
    if not bob.send(second.encode()):
        raise Failed("bob could not send (the server is not reading him)")
    ctx.expect([bob], second, "bob sent it to an echo server")
    ctx.expect_not([alice], second, "bob sent it, and an echo goes back to its sender only")
    alice.close()
    ctx.peers.remove(alice)
    third = ctx.token("echo")
    if not bob.send(third.encode()):
        raise Failed("bob could not send after alice left")
    ctx.expect([bob], third, "bob sent it after alice closed her connection")


def _slow_dropped(ctx: Context) -> None:
    """A member who never reads is dropped before the server buffers the whole flood."""
    talkers = [ctx.peer(f"talker{i}") for i in range(FLOOD_TALKERS)]
    reader, slow = ctx.peer("reader"), ctx.peer("slow", rcvbuf=4096)
    ctx.room(111, *talkers, reader, slow)
    last = ""
    for _, window in _flood(ctx, talkers, 111):
        _missing(reader, window)  # reader keeps up (slow-reader judges whether it does)
        last = window[-1]
    flood = FLOOD_MESSAGES * FLOOD_LINE
    deadline = time.monotonic() + DROP_READ
    while not slow.closed_by_server and time.monotonic() < deadline:
        slow.pump(0.05)
        if slow.saw(last):
            raise Failed(
                f"slow, who never read during a flood of {flood:,} bytes, received all of it "
                "when he finally read: nothing limits what the server buffers for a member"
            )
    if not slow.closed_by_server:
        raise Failed(
            f"slow never read during a flood of {flood:,} bytes, and {DROP_READ:.0f} s "
            f"later the server still had not closed his connection (he has {len(slow.received):,}"
            " bytes)"
        )


OWN_CHECKS = {
    "registered": Check(
        "registered",
        "accept",
        "serve_forever() accepts a connection and registers it on the server's selector.",
        "register the listener for EVENT_READ; when it is ready, accept() and register the new "
        "socket for EVENT_READ (chapters 02 and 06)",
        (),
        _registered,
    ),
    "echo": Check(
        "echo",
        "accept",
        "What a client sends comes back to it, and to no one else.",
        "register each accepted socket for EVENT_READ; when it is readable, recv() and send "
        "the bytes back on that same socket (chapter 02)",
        (),
        _echo,
    ),
    "slow-dropped": Check(
        "slow-dropped",
        "limits",
        "A member who never reads is dropped before the server buffers the whole flood.",
        "cap each member's output buffer (a named constant, e.g. 256 KiB) and drop a member "
        "whose buffer would pass it, through the one way out (chapter 07)",
        (),
        _slow_dropped,
    ),
}


def _run_own(spec: Check, start: Callable[[], Any]) -> Result:
    """One of this chapter's checks, run as chatlab.grade.grade runs the grader's."""
    target = start()
    ctx = Context(target)
    try:
        spec.run(ctx)
        ctx.expect_alive(f"during {spec.name}")
        result = Result(spec.name, "pass")
    except Skipped as exc:
        result = Result(spec.name, "skip", str(exc))
    except Failed as exc:
        result = Result(spec.name, "fail", str(exc), spec.hint)
    finally:
        ctx.close()
        output = target.stop()
    if result.outcome == "fail" and output:
        result = Result(spec.name, "fail", f"{result.detail} [{output}]", spec.hint)
    return result


# ------------------------------------------------------------------------------ grading


@dataclass
class StepReport:
    """What ``check_step`` found: one scoreboard per step graded, in order."""

    step: str
    boards: list[tuple[str, Scoreboard]] = field(default_factory=list)

    since: str = "accept"  # the first step graded after step 1 (see check_step)

    def __bool__(self) -> bool:
        graded = [name for name, _ in self.boards]
        return bool(graded) and graded[-1] == self.step and all(b for _, b in self.boards)

    def __str__(self) -> str:
        lines = []
        for name, board in self.boards:
            number = STEPS.index(name) + 1
            lines.append(f"step {number} ({name}):")
            lines += ["  " + line for line in str(board).splitlines()]
        number = STEPS.index(self.step) + 1
        if self and self.since == "accept":
            lines.append(f"step {number} ({self.step}) is done: every check up to it passes.")
        elif self:
            lines.append(
                f"step {number} ({self.step}) is done: the checks of steps "
                f"{', '.join(str(STEPS.index(name) + 1) for name, _ in self.boards)} pass."
            )
        else:
            name, _ = self.boards[-1]
            stuck = STEPS.index(name) + 1
            if stuck < number:
                lines.append(
                    f"not yet: step {stuck} ({name}) fails, so step {number} ({self.step}) "
                    f"was not graded: make step {stuck} pass first."
                )
            else:
                lines.append(f"not yet: step {number} ({self.step}) fails (see above).")
        return "\n".join(lines)

    __repr__ = __str__  # a notebook cell shows it


def _starter(cls: Callable[[], Any], servers: list[Any]) -> Callable[[], InProcessTarget]:
    """A target per check, each server kept in ``servers`` to be closed after the step."""

    def factory() -> Any:
        server = cls()
        servers.append(server)
        return server

    return lambda: InProcessTarget(factory)


def check_step(cls: Callable[[], Any], step: str, since: str = "accept") -> StepReport:
    """Grade ``cls`` (a server class, or any no-argument factory) on the steps up to
    ``step``, in order, stopping at the first step with a failure.

    ``since``: grade step 1, then only the steps from ``since`` on; so one step's
    regressions can be graded in one cell (``check_step(Step6, "writes")``) and its own
    checks in the next (``check_step(Step6, "limits", since="limits")``), each well within
    a notebook cell's time limit. Step 1 always runs: it is quick, and on a server that
    does not accept yet, nothing later could say anything useful."""
    for name in (step, since):
        if name not in STEPS:
            raise ValueError(f"no step named {name!r}; the steps: {', '.join(STEPS)}")
    if STEPS.index(since) > STEPS.index(step):
        raise ValueError(f"since={since!r} comes after step={step!r}")
    report = StepReport(step, since=since)
    graded = ["accept", *STEPS[max(1, STEPS.index(since)) : STEPS.index(step) + 1]]
    for name in graded:
        servers: list[Any] = []
        start = _starter(cls, servers)
        try:
            board = grade(start, select_checks(steps=[name]))
            for spec in OWN_CHECKS.values():
                # echo is step 1's alone: from step 2 on, a server sends a message to the
                # other members of a room, not back to its sender
                if spec.step == name and (spec.name != "echo" or step == "accept"):
                    board.results.append(_run_own(spec, start))
        finally:
            for server in servers:  # what a stub or a crash left open
                close_all = getattr(server, "close_all", None)
                if close_all is not None:
                    try:
                        close_all()
                    except Exception:
                        pass
        report.boards.append((name, board))
        if not board:
            break
    return report


assert set(OWN_CHECKS).isdisjoint(CHECKS)
