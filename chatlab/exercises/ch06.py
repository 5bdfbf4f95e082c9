"""Checks for chapter 06, the event loop and its backends (notebooks/06-*.ipynb).

Each check builds what the exercise talks about for real (a fresh ``EventLoop``, a
socketpair, a chat server on port 0), runs the learner's function on it, and then looks at
what happened from the outside: what the backend was asked to do, the loop's statistics,
the bytes left in a socket. So an answer passes because it did the thing, not because it
returned the expected number. Everything a check opens is closed before it returns.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from ..backends import available_backends
from ..loop import EventLoop
from ..scripted import ExpectTimeout, ScriptedClient
from . import Check, Verdict

__all__ = [
    "check_burst",
    "check_close_cleanly",
    "check_no_starvation",
    "check_queued_timeout",
    "check_selectors_echo",
]


def _spy_on_poll(loop: EventLoop) -> list[float | None]:
    """Record every timeout the loop passes to its backend's syscall (the check's own eyes)."""
    timeouts: list[float | None] = []
    backend = loop._backend
    real = backend.poll

    def poll(timeout: float | None) -> list[tuple[int, int]]:
        timeouts.append(timeout)
        return real(timeout)

    backend.poll = poll  # type: ignore[method-assign]
    return timeouts


def check_queued_timeout(answer: Callable[[EventLoop], Any]) -> Verdict:
    """06.1: with a callback queued, ``run_once(timeout=1)`` must not sleep: timeout 0.

    ``answer(loop)`` queues a callback, records the trace, runs one iteration with
    ``timeout=1`` and returns the timeout the trace record shows."""
    check = Check("06.1", "the ready queue never sleeps")
    with EventLoop() as loop:
        timeouts = _spy_on_poll(loop)
        started = time.monotonic()
        ok, value = check.call(answer, loop)
        took = time.monotonic() - started
        stats = loop.statistics()
    if not ok:
        return check.verdict()
    if not check.expect(timeouts, "no iteration ran: call loop.run_once(timeout=1) once"):
        return check.verdict()
    check.expect(
        len(timeouts) == 1, f"{len(timeouts)} iterations ran; the exercise asks for exactly one"
    )
    check.expect(
        timeouts[0] == 0,
        f"the loop allowed its syscall {timeouts[0]} s and the iteration took {took:.2f} s: "
        "queue a callback with loop.call_soon(...) before run_once(), and it will not sleep",
    )
    check.expect(stats.callbacks >= 1, "no callback ran: loop.call_soon(some_function) first")
    check.expect(
        value == timeouts[0],
        f"you returned {value!r}, but the loop passed {timeouts[0]!r} to its syscall: "
        "return the .timeout of the IterationTrace your trace hook received",
    )
    return check.verdict("work is waiting, so the loop polls with timeout 0 and returns at once")


def check_no_starvation(answer: Callable[[EventLoop, socket.socket], Any]) -> Verdict:
    """06.2: a callback that re-queues itself does not starve a ready socket.

    ``answer(loop, sock)``: sock has 100 bytes waiting. Queue ``again`` (which re-queues
    itself), add a reader that reads ONE byte, run three iterations, and return how many
    times the reader ran."""
    check = Check("06.2", "a callback that re-queues itself")
    a, b = socket.socketpair()
    try:
        b.sendall(b"x" * 100)
        with EventLoop() as loop:
            started = time.monotonic()
            ok, value = check.call(answer, loop, a)
            took = time.monotonic() - started
            stats = loop.statistics()
            queued = len(loop._ready)
        a.setblocking(False)
        try:
            left = len(a.recv(200))
        except BlockingIOError:
            left = 0
    finally:
        a.close()
        b.close()
    if not ok:
        return check.verdict()
    check.expect(stats.iterations == 3, f"{stats.iterations} iterations ran, not three")
    check.expect(
        queued >= 1,
        "nothing is queued after the last pass: again() should call loop.call_soon(again), "
        "so that there is always work waiting",
    )
    ran = 100 - left
    check.expect(
        ran == 3,
        f"the reader took {ran} bytes in all: it should read exactly one byte per call "
        "(sock.recv(1)), so that the socket stays ready and we can count its calls",
    )
    check.expect(
        value == ran,
        f"you returned {value!r}, but the reader ran {ran} times (one byte each): count its calls",
    )
    check.expect(took < 1.0, f"three passes took {took:.2f} s: the loop should never have slept")
    return check.verdict(
        "the queue is run as it was, so fds are polled between two turns of again()"
    )


def check_close_cleanly(answer: Callable[[EventLoop, socket.socket], Any]) -> Verdict:
    """06.3: stop watching a socket, then close it; the loop never sees a closed fd.

    ``answer(loop, sock)``: sock has a reader on loop (a poll loop where poll exists, since
    that is the backend that reports POLLNVAL). Return what ``remove_reader`` returned."""
    check = Check("06.3", "close without leaving the loop a dead fd")
    backend = "poll" if "poll" in available_backends() else "select"
    a, b = socket.socketpair()
    try:
        with EventLoop(backend) as loop:
            loop.add_reader(a, a.recv, 100)
            fd = a.fileno()
            ok, value = check.call(answer, loop, a)
            registered = loop.statistics().registered
            if ok:
                loop.run_once(timeout=0)  # poll reports a closed, registered fd: POLLNVAL
            stats = loop.statistics()
    finally:
        a.close()
        b.close()
    if not ok:
        return check.verdict()
    check.expect(
        a.fileno() == -1, "the socket is still open: close it (after remove_reader) with close()"
    )
    check.expect(
        registered == 1,
        f"the loop still watches fd {fd} after your function: call loop.remove_reader(sock) "
        "BEFORE sock.close()",
    )
    check.expect(
        stats.dropped_fds == 0 and stats.stale_fds == 0,
        f"the {backend} backend reported the fd closed while registered and the loop had to "
        f"drop it (dropped_fds={stats.dropped_fds}): a naive loop would spin on it",
    )
    check.expect(value is True, f"remove_reader() returns True when it removed one; got {value!r}")
    return check.verdict("remove, then close: the kernel never reports a dead fd to the loop")


def check_burst(make_burst: Callable[[int, list[str]], Any], sends_to_bob: Any) -> Verdict:
    """06.4: ten frames in one segment reach bob in how many send() calls of the server?

    ``make_burst(room, texts)`` returns the bytes of one frame per text, in one piece;
    ``sends_to_bob`` is the learner's prediction, an int."""
    from .. import stream
    from ..server.core import ChatServer

    check = Check("06.4", "a burst")
    texts = [f"burst {i}" for i in range(10)]
    ok, burst = check.call(make_burst, 1, texts)
    if ok and not check.expect(
        isinstance(burst, bytes), f"make_burst returned {type(burst).__name__}, not bytes"
    ):
        ok = False
    check.answered(sends_to_bob, "sends_to_bob")
    if not ok:
        return check.verdict()
    server = ChatServer().start()
    sends: list[int] = []
    real = stream._send_gathered
    try:
        with (
            ScriptedClient(server.address, "alice") as alice,
            ScriptedClient(server.address, "bob") as bob,
        ):
            alice.join(1)
            bob.join(1)
            bob_end = bob.sock.getsockname()

            def watched(sock: socket.socket, chunks: list[bytes]) -> int:
                if sock.getpeername() == bob_end:
                    sends.append(len(chunks))
                return real(sock, chunks)

            stream._send_gathered = watched
            alice.send_raw(burst)
            try:
                bob.expect(f"<alice> {texts[-1]}", timeout=3)
            except ExpectTimeout:
                pass
            got = [line.text for line in bob.transcript if line.sender == "alice"]
    finally:
        stream._send_gathered = real
        server.stop(timeout=10)
    if not check.expect(
        got == texts,
        f"bob received {got!r}: make_burst should return encode_frame(room, text) for each "
        "text, joined into one bytes object",
    ):
        return check.verdict()
    check.expect(
        sends_to_bob == len(sends),
        f"you predicted {sends_to_bob!r} sends to bob; the server made {len(sends)}. One recv() "
        "brought all ten frames, they went to one room in a row (a run), and the writes go "
        "out in one flush per loop pass (WriteBatch.flush)",
    )
    return check.verdict(f"ten frames, {len(sends)} send(): one flush per member per pass")


def check_selectors_echo(answer: Callable[[Any, socket.socket], Any]) -> Verdict:
    """06.5: one pass of an echo server on the standard library's ``selectors``.

    ``answer(sel, listener)`` makes one ``sel.select(timeout=...)`` and handles what it
    reports: the listener (accept, make non-blocking, register for reading), a client
    (echo what arrived), or a client's EOF (unregister, close). It returns the number of
    events it handled. The check registers the listener and runs passes until it sees what
    it expects, at most 50."""
    import selectors

    check = Check("06.5", "an echo server on selectors")
    sel = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    clients: list[socket.socket] = []

    def run_until(done: Callable[[], bool]) -> bool:
        for _ in range(50):
            ok, _value = check.call(answer, sel, listener)
            if not ok:
                return False
            if done():
                return True
        return done()

    def echoed(client: socket.socket, text: bytes) -> Callable[[], bool]:
        got = bytearray()

        def done() -> bool:
            try:
                got.extend(client.recv(4096))
            except BlockingIOError:
                pass
            return bytes(got) == text

        return done

    try:
        for i in range(2):
            client = socket.create_connection(listener.getsockname(), timeout=5)
            client.setblocking(False)
            clients.append(client)
            text = f"hello from client {i}".encode()
            client.sendall(text)
            if not run_until(echoed(client, text)):
                check.expect(
                    check.problems,  # the answer failed: that is the problem to show
                    f"client {i} sent {text!r} and did not get it back within 50 passes: accept "
                    "the listener's connection, register it, and send back what recv() returns",
                )
                return check.verdict()
        clients[0].close()  # EOF for the server
        gone = run_until(lambda: len(sel.get_map()) == 2)
        check.expect(
            gone,
            f"a client closed, and 50 passes later the selector still holds {len(sel.get_map())} "
            "sockets, not 2 (the listener and the other client): when recv() returns b'', "
            "unregister that socket and close it (else select() reports it on every pass)",
        )
        if gone:
            again = b"still there?"
            clients[1].sendall(again)
            check.expect(
                run_until(echoed(clients[1], again)),
                "the other client got no echo after the first one left",
            )
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()
        listener.close()
        for client in clients:
            client.close()
    return check.verdict("register, select, dispatch: the same loop, in the standard library")
