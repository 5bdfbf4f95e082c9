"""Checks for notebook 08's exercises (scaling): what the learner computes from measurements.

None of them judges a speed: a shared machine can make any server slow. Each checks a
number or a verdict that follows from the measurements, whatever they are:

- ``check_select_room(select_room)``: 08.1, how many more sockets this process could still
  hand to select(): checked by opening sockets until one's fd number reaches FD_SETSIZE;
- ``check_sends_per_pass(sends)``: 08.2, how many ``transport.write()`` calls the asyncio
  yardstick makes for a burst of messages in one loop pass, plain and coalescing: checked
  by counting them, on the yardstick's own code;
- ``check_ratio_spread(ratio_spread)``: 08.3, the ratio of two costs repeat by repeat, as
  median, min and max: checked on samples measured live and on a case built to catch a
  ratio of medians;
- ``check_verdict(verdict)``: 08.4, "a cheaper", "b cheaper" or "within noise" from two
  lists of repeats: checked on figures from docs/bench/08-scaling.json and on edge cases.

Every check closes what it opens (sockets, event loops), whatever the answer does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from ..backends.base import READ
from ..backends.select_ import FD_SETSIZE, SelectBackend
from ..errors import FDLimitError
from . import Check, Verdict

__all__ = [
    "VERDICTS",
    "check_ratio_spread",
    "check_select_room",
    "check_sends_per_pass",
    "check_verdict",
    "reference_ratio_spread",
    "reference_verdict",
]

DATA = Path(__file__).resolve().parent.parent.parent / "docs" / "bench" / "08-scaling.json"


# -- 08.1 ------------------------------------------------------------------------------


def _fill_below_fd_setsize() -> tuple[int, str]:
    """Open sockets until one gets an fd number >= FD_SETSIZE; return how many got a number
    below it, and the message select's backend gives for the first one that did not."""
    opened: list[socket.socket] = []
    message = ""
    try:
        for _ in range(FD_SETSIZE + 1):  # bounded: at most one past the limit
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            opened.append(sock)
            if sock.fileno() >= FD_SETSIZE:
                try:  # the backend itself: an EventLoop would open wake-up sockets first
                    SelectBackend().register(sock.fileno(), READ)
                except FDLimitError as exc:
                    message = str(exc)
                break
        return sum(1 for s in opened if s.fileno() < FD_SETSIZE), message
    finally:
        for sock in opened:
            sock.close()


def check_select_room(select_room: Callable[[], int]) -> Verdict:
    """08.1: ``select_room()`` returns how many more fds this process could open and still
    watch with select(): the free fd numbers below FD_SETSIZE (1024), holes included.

    The check opens 40 sockets and closes every third (holes below the highest fd), asks
    the answer, then opens sockets until one's number reaches 1024 and counts the others."""
    from ..bench._util import raise_fd_limit

    check = Check("08.1", "select's room in this process")
    raise_fd_limit(2 * FD_SETSIZE + 256)
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
    try:
        for sock in held[::3]:
            sock.close()
        for _attempt in range(2):  # once more if another thread opened or closed an fd meanwhile
            ok, answer = check.call(select_room)
            if not ok:
                break
            truth, message = _fill_below_fd_setsize()
            if answer == truth:
                break
        if ok:
            check.expect(
                isinstance(answer, int) and not isinstance(answer, bool),
                f"select_room() should return an int, not {type(answer).__name__}",
            )
            check.expect(
                answer == truth,
                f"select_room() said {answer!r}, but {truth} more sockets got an fd number"
                f" below {FD_SETSIZE} here; the next one got a number select cannot watch"
                f" ({message}). Count the free numbers below {FD_SETSIZE}: the kernel gives"
                " each new socket the lowest free number, so holes are filled first, and the"
                " fds already open (the kernel's own, this check's) take their numbers."
                + (
                    " (Off by one: os.listdir('/proc/self/fd') also lists the fd it reads the"
                    " directory with, closed as soon as it returns.)"
                    if isinstance(answer, int) and abs(answer - truth) == 1
                    else ""
                ),
            )
    finally:
        for sock in held:
            sock.close()
    return check.verdict("select's limit is on fd numbers, not on a count of connections")


# -- 08.2 ------------------------------------------------------------------------------


class _CountingTransport:
    """What baseline_asyncio's Member needs of a transport, counting the writes."""

    def __init__(self, port: int) -> None:
        self.writes = 0
        self._port = port

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("127.0.0.1", self._port)
        if name == "socket":
            return _NoSocket()
        return default


class _NoSocket:
    def setsockopt(self, *args: object) -> None:
        pass


class _OnePass:
    """What ``Chat`` needs of an asyncio loop: ``call_soon``. ``end()`` runs what was
    scheduled, as a loop does once the handlers of its pass are done. (A real loop cannot
    run here: a notebook's kernel already runs one in this thread.)"""

    def __init__(self) -> None:
        self.soon: list[tuple[Callable[..., object], tuple]] = []

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        self.soon.append((callback, args))

    def end(self) -> None:
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)


def count_writes(members: int, messages: int, coalesce: bool) -> int:
    """The asyncio yardstick's own code (chatlab/bench/baseline_asyncio.py): ``members``
    join room 1, then one of them sends ``messages`` messages that arrive in one read, so
    they are handled in one loop pass. Returns the transport.write() calls that burst made."""
    from ..bench.baseline_asyncio import Chat, Member

    one_pass = _OnePass()
    chat = Chat(cast(Any, one_pass), coalesce)
    room = []
    for i in range(members):
        member = Member(chat)
        member.connection_made(cast(Any, _CountingTransport(40000 + i)))
        member.data_received(b"<RID:1></RID:1>")  # join (no text: nothing to broadcast)
        room.append(member)
    one_pass.end()  # the joins' coalesced writes, if any, are flushed here
    before = sum(cast(Any, m.transport).writes for m in room)
    burst = b"".join(b"<RID:1>message %d</RID:1>" % i for i in range(messages))
    room[0].data_received(burst)  # one read: one loop pass
    one_pass.end()  # the pass ends: a coalescing Chat flushes now
    return sum(cast(Any, m.transport).writes for m in room) - before


SENDS_CASES = [(10, 1, False), (10, 5, False), (10, 5, True), (3, 4, True), (50, 3, False)]


def check_sends_per_pass(sends: Callable[[int, int, bool], int]) -> Verdict:
    """08.2: ``sends(members, messages, coalesce)``: the writes the asyncio yardstick makes
    when one member of a room of ``members`` sends ``messages`` messages read in one pass."""
    check = Check("08.2", "writes per loop pass, plain and coalescing")
    for members, messages, coalesce in SENDS_CASES:
        ok, answer = check.call(sends, members, messages, coalesce)
        if not ok:
            break
        counted = count_writes(members, messages, coalesce)
        mode = "coalescing" if coalesce else "plain"
        check.expect(
            answer == counted,
            f"sends({members}, {messages}, coalesce={coalesce}) said {answer!r}; the {mode}"
            f" asyncio yardstick made {counted} transport.write() calls for that burst"
            " (the sender does not get its own messages"
            + ("; a coalescing member is written once per pass" if coalesce else "")
            + ")",
        )
    return check.verdict(
        "plain asyncio writes once per member per message; coalescing, once per member per pass"
    )


# -- 08.3 ------------------------------------------------------------------------------


def reference_ratio_spread(values, references) -> tuple[float, float, float]:
    """(median, min, max) of values[i] / references[i]: ratios taken repeat by repeat."""
    r = [v / ref for v, ref in zip(values, references, strict=True)]
    return statistics.median(r), min(r), max(r)


def _live_loop_samples(repeats: int = 3) -> tuple[list[float], list[float]]:
    """poll with 300 idle fds and with none, CPU us per iteration, alternating, per repeat."""
    from ..backends import available_backends
    from ..bench import loop as loop_bench

    backend = "poll" if "poll" in available_backends() else "select"
    busy: list[float] = []
    quiet: list[float] = []
    for _ in range(repeats):
        for n, out in ((300, busy), (0, quiet)):
            s = loop_bench.measure(backend, n, 200, time.thread_time)
            out.append(1e6 * s if s else float("nan"))
    return busy, quiet


#: a slow repeat hits both servers: the ratio of medians (2 / 2 = 1) misses what every
#: repeat but one says (0.5)
TRAP = ([1.0, 2.0, 4.0], [2.0, 2.0, 8.0])


def _close(a: object, b: tuple[float, ...]) -> bool:
    try:
        seq = tuple(cast(Any, a))
        return len(seq) == len(b) and all(
            abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(seq, b, strict=True)
        )
    except (TypeError, ValueError):
        return False


def check_ratio_spread(ratio_spread: Callable[[list, list], tuple]) -> Verdict:
    """08.3: ``ratio_spread(values, references)`` -> (median, min, max) of the per-repeat
    ratios. Checked on loop costs measured now (poll among 300 idle fds over poll with none)
    and on a case where the ratio of the medians says something else."""
    check = Check("08.3", "ratios taken repeat by repeat")
    busy, quiet = _live_loop_samples()
    cases = [("the live loop samples", busy, quiet), ("a case with one slow repeat", *TRAP)]
    for what, values, refs in cases:
        ok, answer = check.call(ratio_spread, list(values), list(refs))
        if not ok:
            break
        want = reference_ratio_spread(values, refs)
        check.expect(
            _close(answer, want),
            f"on {what} ({_fmt(values)} over {_fmt(refs)}) ratio_spread said {answer!r}; the"
            f" per-repeat ratios are {_fmt([v / r for v, r in zip(values, refs, strict=True)])},"
            f" so (median, min, max) = {_fmt(want)}",
        )
    return check.verdict("a noisy repeat slows both sides of its ratio, and cancels out")


def _fmt(xs) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


# -- 08.4 ------------------------------------------------------------------------------

VERDICTS = ("a cheaper", "b cheaper", "within noise")


def reference_verdict(a, b) -> str:
    """'a cheaper' if every repeat of a cost less than every repeat of b, 'b cheaper' the
    other way round, else 'within noise' (the ranges overlap, or touch)."""
    if max(a) < min(b):
        return "a cheaper"
    if max(b) < min(a):
        return "b cheaper"
    return "within noise"


def _verdict_cases() -> list[tuple[str, list[float], list[float]]]:
    cases = [
        ("disjoint, a lower", [1.0, 1.1, 1.2], [1.5, 1.6, 2.0]),
        ("disjoint, b lower", [3.0, 3.1], [2.0, 2.2, 2.9]),
        ("medians apart but ranges overlapping", [1.0, 1.1, 2.5], [2.0, 2.2, 2.4]),
        ("touching ranges", [1.0, 2.0], [2.0, 3.0]),
    ]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        report = json.loads(DATA.read_text())
        rows = report["loop"]["results"]
        for size in ("0", "1000"):
            a, b = rows["epoll"][size], rows["poll"][size]
            if not a["refused"] and not b["refused"]:
                cases.append(
                    (
                        f"08-scaling.json, loop, epoll vs poll at {size} idle fds",
                        a["samples_us"],
                        b["samples_us"],
                    )
                )
        fan = report["fanout"]["results"]
        if "chatlab/epoll" in fan and "chatlab/poll" in fan:
            cases.append(
                (
                    "08-scaling.json, fanout, chatlab/epoll vs chatlab/poll",
                    fan["chatlab/epoll"]["samples_cpu_us"],
                    fan["chatlab/poll"]["samples_cpu_us"],
                )
            )
    return cases


def check_verdict(verdict: Callable[[list, list], str]) -> Verdict:
    """08.4: ``verdict(a, b)``: 'a cheaper', 'b cheaper' or 'within noise', from the CPU
    costs of two servers over the same repeats. A difference is a finding only when every
    repeat says so: when the ranges (min to max) do not overlap."""
    check = Check("08.4", "a difference, or noise")
    for what, a, b in _verdict_cases():
        ok, answer = check.call(verdict, list(a), list(b))
        if not ok:
            break
        if not check.expect(
            answer in VERDICTS, f"verdict() said {answer!r}: not one of {VERDICTS}"
        ):
            break
        want = reference_verdict(a, b)
        check.expect(
            answer == want,
            f"{what}: a = {_fmt(a)}, b = {_fmt(b)}: you said {answer!r}, expected {want!r}",
        )
    return check.verdict("only a difference larger than the spread of the repeats is a finding")
