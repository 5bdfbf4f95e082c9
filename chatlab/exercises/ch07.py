"""Checks for chapter 07, writing without blocking (notebooks/07-*.ipynb).

The learner's code runs against real sockets: a socketpair whose reader the check controls
(so "the kernel is full" is a fact, not a mock), a listening socket with real pending
connections, a chat server on port 0. A function that might block (``sendall``, a blocking
``accept``) runs on a helper thread with a bound: the check reports it and unblocks it by
shutting the socket down, so a wrong answer can never hang the notebook.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..backends import available_backends
from ..framing import encode_frame
from ..loop import EventLoop
from ..scripted import ExpectTimeout, ScriptedClient
from . import Check, Verdict

__all__ = ["check_accept_all", "check_burst_sends", "check_write_some", "check_writer"]

BOUND = 5.0  # seconds a learner's call may take before the check calls it blocked


def _bounded(
    check: Check, fn: Callable[..., Any], args: tuple[Any, ...], unblock: Callable[[], None]
) -> tuple[bool, Any]:
    """``check.call(fn, *args)`` on a thread, at most BOUND seconds; then ``unblock()``."""
    result: list[tuple[bool, Any]] = []
    thread = threading.Thread(target=lambda: result.append(check.call(fn, *args)), daemon=True)
    thread.start()
    thread.join(BOUND)
    if thread.is_alive():
        unblock()
        thread.join(BOUND)
        name = getattr(fn, "__name__", repr(fn))
        check.problems.append(
            f"{name}() was still running after {BOUND:.0f} s: it blocked (a blocking socket, "
            "sendall(), or a loop that waits for room). Never wait: return what did not fit"
        )
        return False, None
    return result[0] if result else (False, None)


def _drain(sock: socket.socket) -> bytes:
    """Everything readable now from a non-blocking socket."""
    parts = []
    while True:
        try:
            part = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not part:
            break
        parts.append(part)
    return b"".join(parts)


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    return a, b


def _pattern(n: int) -> bytes:
    """n bytes that are not all alike, so that a lost or repeated piece shows."""
    return bytes(i % 251 for i in range(n))


def check_write_some(answer: Callable[[socket.socket, bytearray], Any]) -> Verdict:
    """07.1: ``answer(sock, pending)`` sends what the kernel takes now, never waits, removes
    what was sent from ``pending`` and returns the count."""
    check = Check("07.1", "keep what send() did not take")
    a, b = _pair()
    try:
        pending = bytearray(b"hello")
        ok, n = _bounded(check, answer, (a, pending), lambda: a.shutdown(socket.SHUT_RDWR))
        if not ok:
            return check.verdict()
        check.expect(n == 5, f"5 bytes fit easily, and it returned {n!r}")
        check.expect(not pending, f"pending still holds {bytes(pending)!r} after they were sent")
        check.expect(_drain(b) == b"hello", "the peer did not receive b'hello'")

        data = _pattern(1_000_000)
        pending = bytearray(data)
        ok, n = _bounded(check, answer, (a, pending), lambda: b.close())
        if not ok:
            return check.verdict()
        if not check.expect(
            isinstance(n, int) and 0 < n < len(data),
            f"offered 1,000,000 bytes, more than the kernel holds, it returned {n!r}: "
            "return what sock.send() took",
        ):
            return check.verdict()
        check.expect(
            bytes(pending) == data[n:],
            "pending should hold exactly what send() did not take (del pending[:n]); "
            f"it holds {len(pending)} bytes, and {len(data) - n} were not sent",
        )
        again = bytearray(pending)
        ok, m = _bounded(check, answer, (a, pending), lambda: b.close())
        if ok:
            check.expect(
                m == 0 and pending == again,
                f"with the kernel full it should return 0 and keep pending as it is; it "
                f"returned {m!r} and pending went from {len(again)} to {len(pending)} bytes",
            )
            received = _drain(b)
            check.expect(
                received == data[: n + (m or 0)],
                "the peer did not receive the first bytes of the data, in order",
            )
    finally:
        a.close()
        b.close()
    return check.verdict("what send() did not take is yours to keep, and nothing waits")


def check_writer(answer: Callable[[EventLoop, socket.socket], Any]) -> Verdict:
    """07.2: ``answer(loop, sock)`` builds a writer whose ``write(data)`` sends at once what
    fits, keeps the rest, and asks for write readiness only while something is left."""
    check = Check("07.2", "ask for write readiness only while something is left")
    a, b = _pair()
    loop = EventLoop()
    try:
        ok, writer = check.call(answer, loop, a)
        if not ok:
            return check.verdict()
        write = getattr(writer, "write", None)
        if not callable(write):
            check.problems.append("the object has no write(data) method")
            return check.verdict()
        ok, n = check.call(write, b"hi")
        if not ok:
            return check.verdict()
        check.expect(n == 2, f"write(b'hi') should return 2 (sent at once); it returned {n!r}")
        check.expect(
            loop.statistics().registered == 1,
            "after a write that was sent whole, the loop watches the socket: "
            "add_writer() only when something is left over",
        )
        data = _pattern(1_000_000)
        ok, n = check.call(write, data)
        if not ok:
            return check.verdict()
        check.expect(
            isinstance(n, int) and 0 < n < len(data),
            f"write() of 1,000,000 bytes should return the part sent at once; got {n!r}",
        )
        if not check.expect(
            loop.statistics().registered == 2,
            "bytes are left over, but no writer is registered: loop.add_writer(sock, ...)",
        ):
            return check.verdict()
        check.call(write, b"tail")
        expected = b"hi" + data + b"tail"
        received = bytearray()
        deadline = time.monotonic() + 10
        while len(received) < len(expected) and time.monotonic() < deadline:
            loop.run_once(timeout=0.05)  # the writer sends more as room appears
            received += _drain(b)
        check.expect(
            received == expected,
            f"the peer got {len(received)} bytes of {len(expected)}, or not in order: the "
            "writer callback should send pending bytes (and keep what it cannot send yet)",
        )
        for _ in range(3):  # the writer's last call: nothing left, remove itself
            loop.run_once(timeout=0)
        before = loop.statistics()
        for _ in range(100):
            loop.run_once(timeout=0)
        spins = loop.statistics().wakeups - before.wakeups
        check.expect(
            spins == 0 and before.registered == 1,
            f"with nothing left to write, the loop woke up {spins} times in 100 passes: "
            "remove the writer (loop.remove_writer(sock)) once pending is empty",
        )
    finally:
        loop.close()
        a.close()
        b.close()
    return check.verdict("write readiness is asked for only while there is something to write")


def check_burst_sends(answer: dict[str, Any]) -> Verdict:
    """07.3: predictions for ten frames from alice to a room of five, measured for real.

    ``answer`` maps "sends", "buffers per send", "deliveries" (one room), and
    "buffers per send, two rooms" (the frames alternate between rooms 1 and 2)."""
    from .. import stream
    from ..server.core import ChatServer

    check = Check("07.3", "count the syscalls")
    keys = ["sends", "buffers per send", "deliveries", "buffers per send, two rooms"]
    if not check.expect(isinstance(answer, dict), "the answer is a dict: key -> number"):
        return check.verdict()
    for key in keys:
        check.answered(answer.get(key), repr(key))
    if check.problems:
        return check.verdict()
    measured: dict[str, Any] = {}
    real = stream._send_gathered
    server = ChatServer().start()
    try:
        nicks = ["alice", "bob", "carol", "dave", "erin"]
        clients = [ScriptedClient(server.address, nick) for nick in nicks]
        try:
            for client in clients:
                client.join(1)
                client.join(2)
            alice, others = clients[0], clients[1:]
            ends = {c.sock.getsockname() for c in others}
            sends: list[int] = []

            def watched(sock: socket.socket, chunks: list[bytes]) -> int:
                if sock.getpeername() in ends:
                    sends.append(len(chunks))
                return real(sock, chunks)

            for name, rooms in (("", [1] * 10), (", two rooms", [1, 2] * 5)):
                sends.clear()
                before = server.statistics().deliveries
                stream._send_gathered = watched
                try:
                    alice.send_raw(
                        b"".join(encode_frame(r, f"m{i}{name}") for i, r in enumerate(rooms))
                    )
                    for other in others:
                        other.expect(f"m9{name}", timeout=3)
                except ExpectTimeout as exc:
                    check.problems.append(f"the measurement failed (not your answer): {exc}")
                    return check.verdict()
                finally:
                    stream._send_gathered = real
                if not name:
                    measured["sends"] = len(sends)
                    measured["deliveries"] = server.statistics().deliveries - before
                measured["buffers per send" + name] = max(sends)
        finally:
            for client in clients:
                client.close()
    finally:
        stream._send_gathered = real
        server.stop(timeout=10)
    why = {
        "sends": "one flush per member per loop pass, and alice is not sent her own",
        "buffers per send": "one recv() brought all ten, to one room: one run, one buffer",
        "deliveries": "every frame counted for every member who gets it",
        "buffers per send, two rooms": "a change of room ends a run: one reference per frame, "
        "gathered by one sendmsg()",
    }
    for key in keys:
        check.expect(
            answer[key] == measured[key],
            f"{key}: you said {answer[key]!r}, measured {measured[key]} ({why[key]})",
        )
    return check.verdict("one sendmsg() per member per pass, whatever the frames")


def check_accept_all(answer: Callable[[socket.socket], Any]) -> Verdict:
    """07.4: ``answer(listener)`` accepts every pending connection, until BlockingIOError,
    and returns the accepted sockets; with none pending it returns [] without waiting."""
    check = Check("07.4", "accept until the kernel says no more")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    clients: list[socket.socket] = []
    accepted: list[socket.socket] = []

    def unblock() -> None:
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() (close does not)
        except OSError:
            pass

    try:
        clients = [socket.create_connection(listener.getsockname()) for _ in range(10)]
        ok, got = _bounded(check, answer, (listener,), unblock)
        if not ok:
            return check.verdict()
        if not check.expect(isinstance(got, list), f"return a list of sockets, not {got!r}"):
            return check.verdict()
        accepted += [s for s in got if isinstance(s, socket.socket)]
        try:
            conn, _ = listener.accept()
            accepted.append(conn)
            left = 1 + len(_accept_rest(listener, accepted))
        except BlockingIOError:
            left = 0
        check.expect(
            len(got) == 10 and left == 0,
            f"it accepted {len(got)} of 10 pending connections and left {left} in the queue: "
            "accept in a loop until accept() raises BlockingIOError",
        )
        ok, none = _bounded(check, answer, (listener,), unblock)
        if ok:
            check.expect(none == [], f"with nothing pending it should return []; got {none!r}")
        if check.problems or "epoll" not in available_backends():
            return check.verdict("every pending connection, in one readiness event")
        # Edge-triggered epoll: one event for the ten, then one more for the eleventh.
        with EventLoop("epoll", edge_triggered=True) as loop:
            counts = []
            loop.add_reader(listener, lambda: accepted.extend(answer(listener)))
            clients += [socket.create_connection(listener.getsockname()) for _ in range(10)]
            start = len(accepted)
            for more in (0, 1):
                clients += [socket.create_connection(listener.getsockname()) for _ in range(more)]
                loop.run_once(timeout=1)
                counts.append(len(accepted) - start)
        check.expect(
            counts == [10, 11],
            f"on edge-triggered epoll it accepted {counts[0]} after one event, {counts[1]} "
            "after the eleventh connection (expected 10, then 11)",
        )
    finally:
        for s in clients + accepted:
            s.close()
        listener.close()
    return check.verdict("draining the accept queue on every event works level- and edge-triggered")


def _accept_rest(listener: socket.socket, into: list[socket.socket]) -> list[socket.socket]:
    more = []
    for _ in range(100):
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            break
        more.append(conn)
    into += more
    return more
