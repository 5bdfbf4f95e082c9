"""Checks for notebook 01's exercises (why multiplexing): each one runs the designs for real.

- ``check_served_next(answer)``: 01.1, who a busy BlockingServer serves next (a choice,
  checked against a live run);
- ``check_threads_added(threads_added)``: 01.2, a function that predicts how many threads
  each design adds for n clients, checked against counts measured here;
- ``check_wake_accept(wake_accept)``: 01.3, a function that gets a thread out of a blocked
  ``accept()`` on every platform, checked on a real listener and on two that behave as
  macOS and the BSDs may;
- ``check_stuck_thread(answer)``: 01.4, which thread a member who never reads holds up (a
  choice, checked against the stacks of a live ThreadedServer).

Every check starts its own servers on 127.0.0.1 port 0 and stops them, and closes every
socket it opened, whatever the answer does.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

from .. import ExpectTimeout, ScriptedClient
from ..demos import BlockingServer, ThreadedServer
from ..server import serve
from . import Check, Verdict

__all__ = [
    "SERVED_NEXT_CHOICES",
    "STUCK_CHOICES",
    "check_served_next",
    "check_stuck_thread",
    "check_threads_added",
    "check_wake_accept",
]

WAIT = 5.0  # seconds: the bound on every wait for something that should happen


def _choice(check: Check, answer: object, choices: tuple[str, ...]) -> str | None:
    if not check.answered(answer, "your answer"):
        return None
    if answer not in choices:
        check.expect(False, f"{answer!r} is not one of {', '.join(map(repr, choices))}")
        return None
    return str(answer)


# -- 01.1 ------------------------------------------------------------------------------

SERVED_NEXT_CHOICES = ("bob", "carol", "bob and carol at once", "nobody")


def _served_order() -> list[str]:
    """Alice is served; bob, then carol, connect and each send a message; alice leaves.
    Return who was echoed, in order (each leaves once answered, so the next can be)."""
    order: list[str] = []
    with BlockingServer() as server, contextlib.ExitStack() as stack:
        alice = stack.enter_context(ScriptedClient(server.address, nick="alice"))
        alice.join(1)
        bob = stack.enter_context(ScriptedClient(server.address, name="bob"))
        bob.say(1, "bob here")
        carol = stack.enter_context(ScriptedClient(server.address, name="carol"))
        carol.say(1, "carol here")
        alice.close()  # the server goes back to accept()
        waiting = [bob, carol]
        while waiting:
            echoed = [c for c in waiting if _echoed(c, timeout=WAIT / len(waiting))]
            if not echoed:
                break
            order.append(echoed[0].name)
            echoed[0].close()  # leaves, so that the server accept()s the next one
            waiting.remove(echoed[0])
    return order


def _echoed(client: ScriptedClient, timeout: float) -> bool:
    try:
        client.expect("echo:", timeout=timeout)
    except ExpectTimeout:
        return False
    return True


def check_served_next(answer: object) -> Verdict:
    """01.1: a BlockingServer serves alice; bob connects and sends, then carol; alice
    leaves. Who is served next? ``answer`` is one of SERVED_NEXT_CHOICES."""
    check = Check("01.1", "who is served next")
    said = _choice(check, answer, SERVED_NEXT_CHOICES)
    if said is not None:
        order = _served_order()
        check.expect(
            order == ["bob", "carol"],
            f"this run served {order} in that order: not what BlockingServer should do",
        )
        check.expect(
            said == (order[0] if order else "nobody"),
            f"you said {said!r}; here the server served {' then '.join(order)}: who reached "
            "the listen backlog first? (chatlab/demos.py, _Server._accept_loop)",
        )
    return check.verdict(
        "the backlog is a queue: accept() hands out clients in the order their handshakes "
        "completed, and carol waits until bob leaves too"
    )


# -- 01.2 ------------------------------------------------------------------------------


def _threads_named(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def _measure_threads(design: str, clients: int) -> int:
    """Threads the design's server runs while ``clients`` clients are connected and served.

    Counted by name (the servers name their threads after their port), so that threads
    the notebook's kernel starts meanwhile do not count."""
    threaded = design == "ThreadedServer"
    cm: contextlib.AbstractContextManager = ThreadedServer() if threaded else serve()
    with cm as server:
        kind = server.kind if threaded else "chatlab-server"
        with contextlib.ExitStack() as stack:
            for room in range(1, clients + 1):
                client = stack.enter_context(ScriptedClient(server.address))
                client.join(room)  # the reply proves this client is served
            return _threads_named(f"{kind}-{server.address[1]}")


def check_threads_added(threads_added: Callable[[str, int], int]) -> Verdict:
    """01.2: ``threads_added(design, clients)`` predicts the threads a server runs while
    ``clients`` clients are served; design is "ThreadedServer" or "ChatServer"."""
    check = Check("01.2", "threads, predicted")
    for design in ("ThreadedServer", "ChatServer"):
        for clients in (1, 5):
            ok, said = check.call(threads_added, design, clients)
            if not ok:
                return check.verdict()
            measured = _measure_threads(design, clients)
            check.expect(
                said == measured,
                f"{design} with {clients} client(s): you said {said!r}, measured {measured}",
            )
    return check.verdict(
        "a thread per client plus one in accept(), against one loop thread whatever the number"
    )


# -- 01.3 ------------------------------------------------------------------------------


class _ListenerThatFailsShutdown(socket.socket):
    """shutdown() of a listening socket fails, as it may on macOS and the BSDs."""

    def shutdown(self, how: int) -> None:
        raise OSError(errno.ENOTCONN, "Socket is not connected (as on macOS)")


class _ListenerThatIgnoresShutdown(socket.socket):
    """shutdown() of a listening socket succeeds and wakes nobody (POSIX allows it)."""

    def shutdown(self, how: int) -> None:
        pass


LISTENERS: dict[str, type[socket.socket]] = {
    "this machine's listener": socket.socket,
    "a listener whose shutdown() fails (as it may on macOS)": _ListenerThatFailsShutdown,
    "a listener whose shutdown() wakes nobody (as POSIX allows)": _ListenerThatIgnoresShutdown,
}


WAKE_WAIT = 3.0  # seconds a woken accept() gets to return: it takes microseconds


@contextlib.contextmanager
def _blocked_in_accept(
    kind: type[socket.socket],
) -> Iterator[tuple[socket.socket, threading.Thread, list[str]]]:
    """A listener of ``kind`` and a thread blocked in its accept(); the thread appends what
    accept() did to the list. On the way out, the thread is woken if it still waits."""
    plain = socket.create_server(("127.0.0.1", 0))
    address = plain.getsockname()[:2]
    listener = kind(plain.family, plain.type, fileno=plain.detach())
    outcome: list[str] = []

    def accept_once() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            outcome.append(f"accept() failed: {type(exc).__name__}")
        else:
            conn.close()
            outcome.append("accept() returned a connection")

    thread = threading.Thread(target=accept_once, name="ch01-accept", daemon=True)
    thread.start()
    # The thread may not be inside accept() yet when the answer runs: no matter, a wake
    # that comes first is not lost (a connection waits in the backlog; a shut-down
    # listener fails the later accept()), and one that wakes nobody fails either way.
    try:
        yield listener, thread, outcome
    finally:
        if thread.is_alive():  # the answer did not wake it: a connection does
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=1).close()
            thread.join(WAIT)
        listener.close()


def check_wake_accept(wake_accept: Callable[[socket.socket, tuple[str, int]], object]) -> Verdict:
    """01.3: ``wake_accept(listener, address)`` is called while another thread is blocked in
    ``listener.accept()``; that accept() must return (or fail) at once, on this machine's
    listener and on two that behave as macOS and the BSDs may. Stops at the first failure."""
    check = Check("01.3", "wake a blocked accept() everywhere")
    name = getattr(wake_accept, "__name__", repr(wake_accept))
    if not check.expect(callable(wake_accept), f"{name} should be a function"):
        return check.verdict()
    for what, kind in LISTENERS.items():
        with _blocked_in_accept(kind) as (listener, thread, outcome):
            try:
                wake_accept(listener, listener.getsockname()[:2])
            except Exception as exc:  # the learner's bug is the finding
                check.expect(False, f"with {what}: {name}() raised {type(exc).__name__}: {exc}")
                break
            if not check.expect(
                listener.fileno() != -1,
                f"{name}() closed the listener: leave that to its owner, once the accept() "
                "thread is gone (and close() from another thread does not wake accept())",
            ):
                break
            thread.join(WAKE_WAIT)
            if not check.expect(
                outcome,
                f"with {what}: accept() was still blocked {WAKE_WAIT:.0f} s after {name}() "
                "returned",
            ):
                break
    return check.verdict(
        "a connection wakes accept() on every platform; shutdown() of a listener is Linux's"
    )


# -- 01.4 ------------------------------------------------------------------------------

STUCK_CHOICES = (
    "the accept() thread",
    "deaf's thread, in recv()",
    "talker's thread, in sendall() to deaf",
    "every thread of the server",
)


def _stuck_in_sendall(server: ThreadedServer) -> list[str]:
    """Names of the server's threads whose Python stack is in _Client.send's sendall()."""
    prefix = f"{server.kind}-{server.address[1]}"
    names = {t.ident: t.name for t in threading.enumerate() if t.name.startswith(prefix)}
    stuck = []
    for ident, frame in sys._current_frames().items():
        if (
            ident in names
            and frame.f_code.co_name == "send"
            and "demos" in frame.f_code.co_filename
        ):
            stuck.append(names[ident])
    return stuck


def _who_is_stuck() -> list[str]:
    """deaf joins room 9 and never reads; talker sends big messages until its own sends
    block. Return who the server threads stuck in sendall() serve."""
    with ThreadedServer() as server, contextlib.ExitStack() as stack:
        deaf = stack.enter_context(ScriptedClient(server.address, name="deaf"))
        deaf.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills sooner
        deaf.join(9)  # the server's client-1 thread
        talker = stack.enter_context(ScriptedClient(server.address, name="talker"))
        talker.join(9)  # client-2
        prefix = f"{server.kind}-{server.address[1]}-client-"
        names = {f"{prefix}1": "deaf", f"{prefix}2": "talker"}
        talker.sock.settimeout(0.5)
        frame = b"<RID:9>" + b"y" * 60_000 + b"</RID:9>"
        stuck: list[str] = []
        deadline = time.monotonic() + 30
        while not stuck and time.monotonic() < deadline:  # bounded in time
            try:
                talker.sock.sendall(frame)
            except TimeoutError:  # the server stopped reading talker: look at its stacks
                stuck = _stuck_in_sendall(server)
        return sorted(names.get(name, name) for name in stuck)


def check_stuck_thread(answer: object) -> Verdict:
    """01.4: on a ThreadedServer, deaf never reads and talker keeps talking to room 9.
    Which thread gets stuck? ``answer`` is one of STUCK_CHOICES."""
    check = Check("01.4", "a member who never reads")
    said = _choice(check, answer, STUCK_CHOICES)
    if said is not None:
        stuck = _who_is_stuck()
        check.expect(stuck == ["talker"], f"this run found these threads in sendall(): {stuck}")
        check.expect(
            said == STUCK_CHOICES[2],
            f"you said {said!r}; the stacks of this run show the thread serving "
            f"{' and '.join(stuck) or 'nobody'} in _Client.send(), in sendall()",
        )
    return check.verdict(
        "a blocking send holds the SENDER's thread: one member who stops reading silences "
        "whoever talks to it (ChatServer buffers instead: notebook 07)"
    )
