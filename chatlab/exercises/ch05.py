"""Checks for chapter 05's exercises (notebooks/05-disconnect-cleanup.ipynb).

05.1 ``check_no_spin``: a ClassicServer subclass whose handle() takes a peer that closed
     (EOF) out of select()'s list and out of every room, and closes its socket: no spin.
05.2 ``check_survives_reset``: the same for a peer that resets (RST): the original's handler
     dies of NameError; the learner's must send the reset down the same way out.
05.3 ``check_keepalive_options``: the setsockopt() calls that turn TCP keepalive on with a
     given idle time, interval and probe count, on whatever this platform names them.
05.4 ``check_ping``: an application-level ping over a ScriptedClient's connection, which
     tells a live server from one whose kernel accepted the connection but whose program
     never answers (keepalive cannot tell them apart) and from one that closed.

Every check runs the learner's answer for real (127.0.0.1, port 0), never raises for a
wrong one, bounds every wait, and closes what it opened whatever the answer does.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..classic import ClassicServer
from ..scripted import ExpectTimeout, ScriptedClient
from ..server.core import serve
from . import Check, Verdict

__all__ = ["check_keepalive_options", "check_no_spin", "check_ping", "check_survives_reset"]

ROOM = 111
WAIT = 3.0  # seconds: a bound on each wait; a right answer never comes near it
# SO_LINGER on, with a timeout of 0: close() then sends a reset (RST) instead of FIN.
LINGER_RESET = struct.pack("ii", 1, 0)


# -- 05.1 and 05.2: the classic server's way out ---------------------------------------------


class _Watch:
    """What the check sees of the learner's server: each handle() call, with the peer of the
    socket it was given and what it raised, if anything."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, socket.socket, BaseException | None]] = []
        self.changed = threading.Condition()

    def wait(self, sock_or_peer: Any, count: int, timeout: float = WAIT) -> bool:
        """Wait until handle() has returned (or raised) ``count`` times for a socket (the
        server's own) or a peer address (what the server's socket was connected to)."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.of(sock_or_peer)) >= count, timeout)

    def of(self, sock_or_peer: Any) -> list[tuple[Any, socket.socket, BaseException | None]]:
        """The calls for it; a socket is matched by identity (a reset one has no peer)."""
        if isinstance(sock_or_peer, socket.socket):
            return [call for call in self.calls if call[1] is sock_or_peer]
        return [call for call in self.calls if call[0] == sock_or_peer]


def _watched(server_class: type[ClassicServer], watch: _Watch) -> type[ClassicServer]:
    """The learner's class, with every handle() call recorded for the check."""

    class Watched(server_class):  # type: ignore[valid-type,misc]
        def handle(self, sock: socket.socket) -> None:
            try:
                peer = tuple(sock.getpeername()[:2])
            except OSError:
                peer = None
            raised: BaseException | None = None
            try:
                super().handle(sock)
            except BaseException as exc:
                raised = exc
                raise
            finally:
                with watch.changed:
                    watch.calls.append((peer, sock, raised))
                    watch.changed.notify_all()

    Watched.__name__ = server_class.__name__
    return Watched


def _describe_crash(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if exc.__context__ is not None:
        text += f", while handling {type(exc.__context__).__name__}"
    return text


def _leave_and_check(check: Check, server_class: Any, how: str) -> None:
    """The scenario of 05.1 (how="eof") and 05.2 (how="reset"): alice, bob and carol join
    room 111; bob leaves by EOF or by reset; then alice says two things to carol."""
    if not check.expect(
        isinstance(server_class, type) and issubclass(server_class, ClassicServer),
        f"pass a subclass of ClassicServer (the class itself), not {server_class!r}",
    ):
        return
    watch = _Watch()
    server: ClassicServer | None = None
    clients: list[ScriptedClient] = []
    try:
        server = _watched(server_class, watch)().start()
        for name in ("alice", "bob", "carol"):
            client = ScriptedClient(server.address, name=name, timeout=WAIT)
            clients.append(client)
            client.join(ROOM, wait=False)
            if not check.expect(
                watch.wait(client.local_address, 1),
                f"the server never handled {name}'s join: does handle() read and join?",
            ):
                return
        alice, bob, carol = clients
        bob_there = watch.of(bob.local_address)[0][1]  # the server's socket for bob
        if how == "eof":
            # bob reads what he was sent (carol's arrival): with nothing unread, close() is FIN
            bob.expect(f"{carol.local_address[0]}:{carol.local_address[1]}] entered room")
        else:
            bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        bob.close()
        what = "EOF" if how == "eof" else "reset"
        if not check.expect(
            watch.wait(bob_there, 2),
            f"the server never handled bob's {what} (no handle() call for his socket)",
        ):
            return
        raised = watch.of(bob_there)[1][2]
        if raised is not None:
            check.expect(
                False,
                f"handle() raised {_describe_crash(raised)} on bob's {what}, and the server died"
                + (
                    " (bug 2: the original's handler names `member`)"
                    if isinstance(raised, NameError)
                    else " (catch what recv() raises and take the same way out as for b'')"
                    if isinstance(raised, OSError)
                    else ""
                ),
            )
            return
        _settled_state(check, server, bob_there, what)
        if check.problems:
            return
        _others_served(check, server, alice, carol, what)
    except Exception as exc:  # the learner's server may break the scenario anywhere
        where = traceback.extract_tb(exc.__traceback__)[-1]
        check.expect(
            False,
            f"the scenario could not run: {type(exc).__name__}: {exc} (line {where.lineno})",
        )
    finally:
        for client in clients:
            client.close()
        if server is not None:
            server.stop()
        for _, sock, _ in watch.calls:  # an answer that forgot to close one: closed here
            sock.close()


def _settled_state(
    check: Check, server: ClassicServer, bob_there: socket.socket, what: str
) -> None:
    """After bob's EOF or reset was handled: out of select()'s list, of every room, closed."""
    closed = bob_there.fileno() == -1
    if bob_there in server.inputs:
        check.expect(
            False,
            (
                "bob's socket is closed but still in self.inputs: the next select() fails on "
                "its fd of -1 and the server dies (bug 3)"
            )
            if closed
            else (
                f"bob's socket is still in self.inputs after his {what}: select() reports it "
                f"readable on every call and the loop spins (bug 1)"
            ),
        )
    rooms = [room.decode() for room, members in server.rooms.items() if bob_there in members]
    check.expect(
        not rooms,
        f"bob's socket is still a member of room {', '.join(rooms)}: the next broadcast "
        f"sends to a dead peer",
    )
    check.expect(closed, "bob's socket is not closed: every departure would leak a fd")


def _others_served(
    check: Check, server: ClassicServer, alice: ScriptedClient, carol: ScriptedClient, what: str
) -> None:
    """Alice says two things; carol must get both, and the server must still be running.
    Two: the second is read in a later loop pass than the first, so a pass after bob's
    departure has run whole by the time carol has it."""
    for text in ("still here?", "yes"):
        alice.send(ROOM, text)
        try:
            carol.expect(">" + text)
        except ExpectTimeout:
            crash = f" (the server died: {_describe_crash(server.crash)})" if server.crash else ""
            check.expect(False, f"carol never got alice's {text!r} after bob's {what}{crash}")
            return
    check.expect(
        server.crash is None, f"the server died: {_describe_crash(server.crash or Exception())}"
    )


def check_no_spin(server_class: Any) -> Verdict:
    """05.1: ``server_class`` subclasses ClassicServer and overrides handle(). Alice, bob and
    carol join room 111; bob closes (EOF). Once the server has handled his EOF, his socket
    must be out of ``self.inputs`` and out of every room, and closed; then alice says two
    things and carol must get both, from a server still running."""
    check = Check("05.1", "no spin after EOF")
    overridden = not (
        isinstance(server_class, type)
        and issubclass(server_class, ClassicServer)
        and server_class.handle is ClassicServer.handle
    )
    if not overridden:
        check.expect(False, f"{server_class.__name__} does not override handle() yet")
        return check.verdict()
    _leave_and_check(check, server_class, "eof")
    return check.verdict("b'' is the end: out of select()'s list and every room, then close()")


def check_survives_reset(server_class: Any) -> Verdict:
    """05.2: as 05.1, but bob's connection is reset (SO_LINGER 0): his socket's recv() raises
    ConnectionResetError. The server must take it out the same way as an EOF and go on."""
    check = Check("05.2", "a reset takes the same way out")
    _leave_and_check(check, server_class, "reset")
    return check.verdict("a recv() that raises is a departure too: one way out for both")


# -- 05.3: keepalive options -------------------------------------------------------------------

KEEPALIVE_CASE = {"idle": 10, "interval": 3, "count": 5}


def _tcp_option(*names: str) -> tuple[str, int] | None:
    """The first of ``names`` this platform's socket module has, with its number."""
    for name in names:
        if hasattr(socket, name):
            return name, getattr(socket, name)
    return None


def _keepalive_wanted() -> list[tuple[str, int, int, int, str]]:
    """(name, level, option, expected value, meaning) of each option this platform has."""
    wanted = [("SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1, "keepalive is off")]
    for names, key, meaning in (
        (("TCP_KEEPIDLE", "TCP_KEEPALIVE"), "idle", "seconds of silence before the first probe"),
        (("TCP_KEEPINTVL",), "interval", "seconds between probes"),
        (("TCP_KEEPCNT",), "count", "unanswered probes before the peer is declared dead"),
    ):
        found = _tcp_option(*names)
        if found is not None:
            name, number = found
            wanted.append((name, socket.IPPROTO_TCP, number, KEEPALIVE_CASE[key], meaning))
    return wanted


def check_keepalive_options(answer: Callable[[int, int, int], Any]) -> Verdict:
    """05.3: ``answer(idle, interval, count)`` returns the setsockopt() calls, as a list of
    (level, option, value), that turn keepalive on: first probe after ``idle`` seconds of
    silence, then every ``interval`` seconds, the peer declared dead after ``count`` unanswered
    probes. The check applies them to a connected TCP socket and reads each option back
    (TCP_KEEPIDLE is TCP_KEEPALIVE on macOS; an option this platform lacks is not asked for)."""
    check = Check("05.3", "keepalive, set and read back")
    ok, calls = check.call(answer, **KEEPALIVE_CASE)
    if not ok:
        return check.verdict()
    try:
        calls = [tuple(call) for call in calls]
        valid = all(len(call) == 3 for call in calls)
    except TypeError:
        valid = False
    if not check.expect(valid, f"return a list of (level, option, value) triples, not {calls!r}"):
        return check.verdict()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()[:2], timeout=WAIT) as sock:
            with listener.accept()[0]:
                for level, option, value in calls:
                    try:
                        sock.setsockopt(level, option, value)
                    except (OSError, TypeError) as exc:
                        check.expect(
                            False, f"setsockopt({level}, {option}, {value!r}) failed: {exc}"
                        )
                        return check.verdict()
                for name, level, number, expected, meaning in _keepalive_wanted():
                    got = sock.getsockopt(level, number)
                    if name == "SO_KEEPALIVE":
                        check.expect(got != 0, f"SO_KEEPALIVE is 0: {meaning}")
                        continue
                    with socket.socket() as fresh:
                        default = fresh.getsockopt(level, number)
                    check.expect(
                        got == expected,
                        f"{name} ({meaning}) is {got}, expected {expected}"
                        + (" (unchanged: the kernel's default)" if got == default else ""),
                    )
    return check.verdict(
        "SO_KEEPALIVE turns probing on; the TCP_KEEP* options say when and how often"
    )


# -- 05.4: an application ping ---------------------------------------------------------------

PING_TIMEOUT = 0.5


def _timed(check: Check, answer: Callable[..., Any], client: ScriptedClient) -> tuple[bool, Any]:
    """Run ping(client, PING_TIMEOUT); a ping that takes far longer than its timeout is a
    problem too (the bound is generous: only a wait without a timeout reaches it)."""
    started = time.monotonic()
    ok, alive = check.call(answer, client, PING_TIMEOUT)
    if ok and time.monotonic() - started > PING_TIMEOUT + 2 * WAIT:
        check.expect(False, "ping() took far longer than its timeout: does it wait without one?")
        return False, None
    return ok, alive


def check_ping(answer: Callable[[ScriptedClient, float], Any]) -> Verdict:
    """05.4: ``answer(client, timeout)`` sends a request over the client's connection and
    returns True if the server's program answers within ``timeout`` seconds, else False.
    Three servers: chatlab's (alive: True, twice in a row); one whose kernel accepted the
    connection and ACKs every byte, but whose program never reads (False); one that closed
    the connection (False)."""
    check = Check("05.4", "an application ping")
    clients: list[ScriptedClient] = []
    try:
        with serve() as server:
            client = ScriptedClient(server.address, nick="pinger", timeout=WAIT)
            clients.append(client)
            for attempt in ("a first", "a second"):
                ok, alive = _timed(check, answer, client)
                if not ok:
                    return check.verdict()
                if not check.expect(
                    alive is True,
                    f"{attempt} ping of a live chatlab server returned {alive!r}, expected True",
                ):
                    return check.verdict()
        # A program that never answers: listen() and never accept(). The kernel completes
        # the handshake and acknowledges the bytes; keepalive would be satisfied forever.
        with socket.create_server(("127.0.0.1", 0)) as frozen:
            client = ScriptedClient(frozen.getsockname()[:2], timeout=WAIT)
            clients.append(client)
            ok, alive = _timed(check, answer, client)
            if ok:
                check.expect(
                    alive is False,
                    f"a server that never answers: ping() returned {alive!r}, expected False "
                    "(its kernel accepted the connection and ACKs every byte, but no program "
                    "reads them: only a reply proves the program is alive)",
                )
        # A server that closed the connection (FIN).
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = ScriptedClient(listener.getsockname()[:2], timeout=WAIT)
            clients.append(client)
            listener.accept()[0].close()
            ok, alive = _timed(check, answer, client)
            if ok:
                check.expect(
                    alive is False,
                    f"a server that closed the connection: ping() returned {alive!r}, "
                    "expected False",
                )
    finally:
        for client in clients:
            client.close()
    return check.verdict("only an answer from the program proves it is alive, and it is bounded")
