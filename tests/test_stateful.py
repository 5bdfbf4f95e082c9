"""A stateful property test of the server, on every backend (issue 14).

The other tests each play one scene. Here hypothesis plays many: a ``RuleBasedStateMachine``
runs up to MAX_CLIENTS clients against a fresh server and, in random order, connects them,
joins and leaves rooms, renames them, has them speak, send garbage, and go (a /quit, a
close, a half-close, a reset, a close with unread input). When a check fails, hypothesis
shrinks the run to a shortest list of steps that still fails, and prints it as code.

Beside the real server the machine keeps a model, as plain as can be: the live clients and
their names (a nick, or host:port), the rooms with their members in join order, and for each
client the lines the server owes it since the last check, each a typed reply in its room
(``(5, Message("ann", "m7"))``). Every rule does the step on the wire and writes down what
the server owes whom for it: a message to every other member of its room, an entry notice
to the members already there, the sender nothing.

The invariants, checked after every step:

1. Every live client received exactly what it was owed, in order, and nothing else: each
   message from the others in each room while it was a member, once, in the order sent;
   each notice; each reply and error to what it sent itself. A client that misbehaved got
   its error, and nobody else noticed.
2. ``server.rooms()`` is the model's table (members in join order), and /who from a member
   of each room (from anyone, for an empty room) says the same.
3. ``server.connections()`` lists the live clients, each under its name, in its rooms in
   the order joined, with no byte held either way; ``statistics()`` agrees.

And at teardown, once every client has gone: no connection, no room, nothing watched but the
listener; once the server has stopped, no socket of the example is left open.

How a step knows the server has done its part, without sleeping (tests/helpers.py says why a
round trip proves it): each check makes a ``sync()`` round trip from every live client in
turn, the one that acted first. Once the actor's reply is in, the server has handled all it
sent, so whatever its step caused is queued for everyone; each other client's round trip is
sent after that, so its reply comes after what was queued for it. (The actor must go first:
a bystander's round trip sent earlier can overtake the actor's frames, which the server may
not have read yet; a first draft of this test found that out.) A client that goes without a
word (close, reset) cannot answer a round trip: the rule waits, bounded, until the server
has dropped its connection, which it does only after telling the client's rooms.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from helpers import SYNC_ROOM, in_loop, reset, sync, wait_for
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import chatlab
from chatlab import ScriptedClient, encode_frame, protocol
from chatlab.protocol import (
    AlreadyIn,
    AlreadyNamed,
    Bye,
    Entered,
    InvalidNick,
    Left,
    Message,
    NickTaken,
    NotInRoom,
    Renamed,
    Reply,
    RoomZero,
    SkippedBytes,
    UnknownCommand,
    Usage,
    Who,
    YouEntered,
    YouLeft,
    YouRenamed,
)

# A bound for every wait in a step: far above what any takes (a step takes milliseconds), and
# short enough that a shrinking hypothesis does not wait out tests/helpers.TIMEOUT per try.
TIMEOUT = 5.0

# Few clients and few rooms, so that they meet: most steps then touch a room with others in it.
MAX_CLIENTS = 6
ROOMS = (1, 2, 3)

# Nicks to draw from: few, so they collide; "Ann" is "ann" to the server (nicks are unique
# ignoring case). Not "you": a member called "you" makes "* you left room 5." on the wire,
# which reads as the reader's own YouLeft (protocol design note 2), a property of the wire.
NICKS = ("ann", "Ann", "bob", "cy", "9lives", "")
REFUSED_NICKS: dict[str, Reply] = {
    "9lives": InvalidNick("9lives"),
    "": Usage("/nick NAME"),
}

# How a message is written, and what the other members read: the ASCII fast path
# (connections._plain_message), non-ASCII and "//" (core.on_frame), and /me.
SPEECH = ("plain", "non-ascii", "slash", "action")

# Bad input: (bytes sent, the room of the error, the error). Each is followed on the wire
# by the check's round trip, a frame for room 0, which is what ends the unclosed frame.
# SkippedBytes may come in several pieces, however TCP cut the input: see _received().
GARBAGE: dict[str, tuple[bytes, int, Reply]] = {
    "not a frame": (b"garbage!", 0, SkippedBytes(8, "garbage before frame")),
    "binary": (b"\x00\x01\xfe\xff", 0, SkippedBytes(4, "garbage before frame")),
    "stray closing tag": (b"</RID:2>", 0, SkippedBytes(8, "garbage before frame")),
    "room not digits": (
        b"<RID:abc>hi</RID:abc>",
        0,
        SkippedBytes(21, "room id must be decimal digits"),
    ),
    "room missing": (b"<RID:>hi</RID:>", 0, SkippedBytes(15, "room id is missing")),
    "ten digits": (
        b"<RID:1234567890>hi</RID:1234567890>",
        0,
        SkippedBytes(35, "room id has more than 9 digits"),
    ),
    "mismatched closing tag": (
        b"<RID:2>oops</RID:3>",
        0,
        SkippedBytes(19, "mismatched closing tag </RID:3> for <RID:2>"),
    ),
    "unclosed frame": (
        b"<RID:2>oops",
        0,
        SkippedBytes(11, "mismatched closing tag </RID:0> for <RID:2>"),
    ),
    "room 0": (encode_frame(0, "hello, server"), 0, RoomZero()),
    "unknown command": (encode_frame(2, "/frobnicate"), 2, UnknownCommand("frobnicate")),
}

# How a client goes, and the reason its rooms are told.
EXITS = {
    "quit": "quit: gone",
    "close": "closed the connection",
    "half-close": "closed the connection",
    "reset": "connection reset",  # SO_LINGER 0: close() sends RST
    "close unread": "connection reset",  # unread input at close(): the kernel sends RST
}


# ------------------------------------------------------------------------------ the model


@dataclass(eq=False)
class Client:
    """One live client as the model sees it, with its socket."""

    sock: ScriptedClient
    nick: str | None = None
    rooms: list[int] = field(default_factory=list)  # in the order joined
    owed: list[tuple[int, Reply]] = field(default_factory=list)  # since the last check
    seen: int = 0  # transcript lines checked so far
    unsent: bytes = b""  # held for its next send (ChatMachine._send)
    effects: list[Callable[[], None]] = field(default_factory=list)  # the held bytes' effects

    @property
    def name(self) -> str:
        """How the server shows it: its nick, or host:port."""
        return self.nick or "{}:{}".format(*self.sock.local_address)

    def __repr__(self) -> str:
        return f"<client {self.name}>"


def _received(client: Client) -> list[tuple[int, Reply]]:
    """What ``client`` received since the last check, without the round trips' replies.

    Consecutive SkippedBytes with one reason are added up: the decoder reports garbage as
    it comes, so how a run of it is split depends on how TCP cut it; the bytes and the
    reason do not (framing.py's docstring).
    """
    lines: list[tuple[int, Reply]] = []
    for line in client.sock.transcript[client.seen :]:
        room, reply = line.room, line.reply
        if room == protocol.SERVER_ROOM and reply == Who(SYNC_ROOM):
            continue
        if lines and isinstance(reply, SkippedBytes):
            last_room, last = lines[-1]
            if last_room == room and isinstance(last, SkippedBytes) and last.reason == reply.reason:
                lines[-1] = (room, SkippedBytes(last.count + reply.count, reply.reason))
                continue
        lines.append((room, reply))
    return lines


def _show(lines: list[tuple[int, Reply]]) -> list[str]:
    return [f"[{room}] {reply.body()}" for room, reply in lines]


def _socket_fds() -> set[str] | None:
    """This process's open sockets (their inodes), where /proc tells; else None."""
    if not sys.platform.startswith("linux"):
        return None
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed by now
            continue
        if target.startswith("socket:"):
            sockets.add(target)
    return sockets


class ChatMachine(RuleBasedStateMachine):
    """Clients doing anything a client may do, in any order, against one server."""

    clients = Bundle("clients")

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.sockets_before = _socket_fds()
        self.server = chatlab.ChatServer(backend=backend).start()
        self.live: list[Client] = []
        self.rooms: dict[int, list[Client]] = {}  # non-empty rooms: members in join order
        self.tokens = itertools.count()
        self.actor: Client | None = None  # who did the last step: its round trip goes first
        # False from the start of a step until the check after it passes. A step that fails
        # leaves it False, and teardown then only closes everything: its own checks would
        # wait out their bounds for what is already reported, on every try of the shrinking.
        self.settled = True
        # What the loop watches with no client at all (the listener, its own wake-up fd):
        # teardown expects the same once everyone has gone.
        self.watched_idle = in_loop(self.server, self.server.loop.statistics).registered

    # -- what a step owes whom -----------------------------------------------------------

    def _members(self, room: int) -> list[Client]:
        return self.rooms.get(room, [])

    def _tell(self, room: int, reply: Reply, *, exclude: Client | None = None) -> None:
        """A broadcast: every member of room but ``exclude`` is owed reply."""
        for member in self._members(room):
            if member is not exclude:
                member.owed.append((room, reply))

    def _joined(self, c: Client, room: int) -> None:
        """c entered room: the members there hear of it, c hears who they are."""
        others = [m.name for m in self._members(room)]
        self._tell(room, Entered(c.name, room))
        c.owed.append((room, YouEntered.of(room, others)))
        self.rooms.setdefault(room, []).append(c)
        c.rooms.append(room)

    def _left(self, c: Client, room: int, reason: str = "") -> None:
        """c is out of room; the members left there hear of it (and why)."""
        self.rooms[room].remove(c)
        if not self.rooms[room]:
            del self.rooms[room]  # the server forgets an empty room too
        c.rooms.remove(room)
        self._tell(room, Left(c.name, room, reason))

    # -- sending ---------------------------------------------------------------------------

    def _send(
        self,
        c: Client,
        data: bytes,
        effect: Callable[[], None],
        *,
        hold: bool = False,
        chunk: int | None = None,
    ) -> None:
        """c sends data, whose effect() writes down what the server owes whom for it.

        With ``hold``, the bytes wait and go with c's next send, as one send(): a client
        that pipelines (several commands and messages in one read) must be served exactly
        as if it had waited for each reply. The effects wait too, and are played at the
        send, in order: the model then follows the order in which the server reads.
        """
        c.unsent += data
        c.effects.append(effect)
        if hold:
            return
        data, effects = c.unsent, c.effects
        c.unsent, c.effects = b"", []
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            c.sock.send_raw(data[i : i + step])
        for effect in effects:
            effect()
        self.actor = c

    # -- rules -----------------------------------------------------------------------------

    @initialize(target=clients, n=st.integers(1, 4))
    def connect_some(self, n: int):
        # A head start: most bugs need two clients in a room, and a run that begins with
        # several clients gets there in fewer steps (a planted bug that needs two rooms and a
        # pipelining client was found twice as often).
        self.settled = False
        return multiple(*(self._connect() for _ in range(n)))

    @precondition(lambda self: len(self.live) < MAX_CLIENTS)
    @rule(target=clients)
    def connect(self) -> Client:
        self.settled = False
        return self._connect()

    def _connect(self) -> Client:
        c = self.actor = Client(ScriptedClient(self.server.address, timeout=TIMEOUT))
        self.live.append(c)
        return c

    @rule(
        c=clients,
        room=st.sampled_from(ROOMS),
        how=st.sampled_from(["empty frame", "/join"]),
        hold=st.booleans(),
    )
    def join(self, c: Client, room: int, how: str, hold: bool) -> None:
        self.settled = False

        def effect():
            if room not in c.rooms:
                self._joined(c, room)
            elif how == "/join":
                c.owed.append((room, AlreadyIn(room)))
            # The original protocol's join (an empty frame) again does nothing at all.

        if how == "empty frame":
            data = encode_frame(room, b"")
        else:
            data = encode_frame(protocol.SERVER_ROOM, f"/join {room}")
        self._send(c, data, effect, hold=hold)

    @rule(
        c=clients,
        room=st.sampled_from(ROOMS),
        where=st.sampled_from(["room 0", "the room"]),
        hold=st.booleans(),
    )
    def leave(self, c: Client, room: int, where: str, hold: bool) -> None:
        self.settled = False
        # "/leave 2" from room 0, or a plain "/leave" in room 2: the same, but for where an
        # error goes (the room the command came from).
        if where == "room 0":
            sent_in, line = protocol.SERVER_ROOM, f"/leave {room}"
        else:
            sent_in, line = room, "/leave"

        def effect():
            if room in c.rooms:
                self._left(c, room)
                c.owed.append((room, YouLeft(room)))
            else:
                c.owed.append((sent_in, NotInRoom(room)))

        self._send(c, encode_frame(sent_in, line), effect, hold=hold)

    @rule(c=clients, nick=st.sampled_from(NICKS), hold=st.booleans())
    def rename(self, c: Client, nick: str, hold: bool) -> None:
        self.settled = False

        def effect():
            taken = any(m.nick and m.nick.lower() == nick.lower() for m in self.live if m is not c)
            if nick in REFUSED_NICKS:
                c.owed.append((0, REFUSED_NICKS[nick]))
            elif taken:
                c.owed.append((0, NickTaken(nick)))  # refused: nothing changes
            elif c.nick == nick:
                c.owed.append((0, AlreadyNamed(nick)))
            else:
                old, c.nick = c.name, nick
                c.owed.append((0, YouRenamed(nick)))
                for room in c.rooms:  # in the order joined, as the server goes through them
                    self._tell(room, Renamed(old, nick), exclude=c)

        data = encode_frame(protocol.SERVER_ROOM, f"/nick {nick}".rstrip())
        self._send(c, data, effect, hold=hold)

    @rule(
        c=clients,
        lines=st.lists(st.tuples(st.sampled_from(ROOMS), st.sampled_from(SPEECH)), max_size=5),
        hold=st.booleans(),
        chunk=st.sampled_from([None, 1, 7]),
    )
    def speak(self, c: Client, lines: list[tuple[int, str]], hold: bool, chunk: int | None) -> None:
        self.settled = False
        # Several lines in one send: the server delivers a run of plain messages to one room
        # in one go (connections.py), which must keep its place among the other rooms'
        # lines, the joins and the slow path. Sent whole, or cut every `chunk` bytes.
        for room, speech in lines:
            token = f"m{next(self.tokens)}"  # unique: a duplicate cannot hide
            body, text = {
                "plain": (token, token),
                "non-ascii": (f"{token} café", f"{token} café"),
                "slash": (f"//{token}", f"/{token}"),
                "action": (f"/me waves {token}", f"waves {token}"),
            }[speech]

            def effect(room=room, speech=speech, text=text):
                if room not in c.rooms:  # speaking to a room joins it first
                    self._joined(c, room)
                if speech == "action":
                    reply = protocol.Action(c.name, text)
                else:
                    reply = Message(c.name, text)
                self._tell(room, reply, exclude=c)  # the sender does not get its own

            self._send(c, encode_frame(room, body), effect, hold=True)
        if not hold:
            self._send(c, b"", lambda: None, chunk=chunk)

    @rule(c=clients, bad=st.sampled_from(sorted(GARBAGE)))
    def send_garbage(self, c: Client, bad: str) -> None:
        self.settled = False
        # Never held: what ends an unclosed frame must be the check's round trip (GARBAGE).
        data, room, error = GARBAGE[bad]
        # To the sender only; the check proves that nobody else hears of it.
        self._send(c, data, lambda: c.owed.append((room, error)))

    @rule(c=consumes(clients), how=st.sampled_from(sorted(EXITS)))
    def vanish(self, c: Client, how: str) -> None:
        self.settled = False
        sock = c.sock
        if how == "quit":
            # Pipelined after whatever c holds, and followed by a message the server must
            # not deliver: after /quit, the rest of what a client sent is not for anyone.
            data = encode_frame(protocol.SERVER_ROOM, "/quit gone") + encode_frame(1, "late")
            self._send(c, data, lambda: None)
            sock.wait_closed()
            c.owed.append((0, Bye("quit: gone")))  # the goodbye, after everything else
        else:
            # Anything held goes first, and c reads what it is owed for it: a close with
            # input unread is a reset, and only "close unread" is to be one.
            if c.unsent:
                self._send(c, b"", lambda: None)
                self._settle(c)
            if how == "half-close":
                sock.sock.shutdown(socket.SHUT_WR)  # EOF; the server closes its side in turn
                sock.wait_closed()
        if how in ("quit", "half-close"):
            # It read to the end: what it was owed is all there, and nothing after it.
            received = _received(c)
            assert received == c.owed, (
                f"{c} received {_show(received)} on its way out; owed {_show(c.owed)}"
            )
        if how == "reset":
            reset(sock.sock)
        elif how == "close unread":
            sock.send(protocol.SERVER_ROOM, "/help")
            # Wait until the reply is in our kernel (readable), then close without reading.
            readable, _, _ = select.select([sock.sock], [], [], TIMEOUT)
            assert readable, f"{c}: no reply to /help within {TIMEOUT:g} s"
        sock.close()
        self.live.remove(c)
        for room in list(c.rooms):  # in the order joined, as the server leaves them
            self._left(c, room, EXITS[how])
        # Gone without a round trip: wait for the server to drop the connection, which it
        # does after telling c's rooms (the check then finds the notices there).
        address = sock.local_address
        wait_for(
            lambda: all(info.address != address for info in self._connections()),
            f"the server to drop {c} after its {how}",
            TIMEOUT,
        )

    # -- invariants ------------------------------------------------------------------------

    def _connections(self) -> list[chatlab.ConnectionInfo]:
        return in_loop(self.server, self.server.connections)

    @invariant()
    def everyone_has_what_they_are_owed_and_the_tables_agree(self) -> None:
        # One invariant, three checks in this order: the round trips of the first make the
        # server idle and up to date for the other two.
        self._check_transcripts()
        self._check_who()
        self._check_tables()
        self.settled = True

    def _check_transcripts(self) -> None:
        # The actor first, then the others one after the other: see the module docstring.
        first = [self.actor] if self.actor in self.live else []
        for c in first + [c for c in self.live if c is not self.actor]:
            self._settle(c)

    def _settle(self, c: Client) -> None:
        """A round trip from c; then c must have received exactly what it is owed."""
        sync(c.sock)  # bytes c holds stay held: the server has not seen them, nor the model
        received = _received(c)
        assert received == c.owed, (
            f"{c} (in rooms {c.rooms}) received {_show(received)}; owed {_show(c.owed)}"
        )
        c.owed.clear()
        c.seen = len(c.sock.transcript)

    def _check_who(self) -> None:
        if not self.live:
            return
        for room in ROOMS:
            members = self._members(room)
            # A member asks in the room; for an empty room, anyone asks from room 0.
            asker, sent_in = (members[0], room) if members else (self.live[0], 0)
            asker.sock.send(sent_in, f"/who {room}")
            asker.owed.append((sent_in, Who(room, tuple(m.name for m in members))))
        self._check_transcripts()

    def _check_tables(self) -> None:
        rooms, conns, stats = in_loop(
            self.server,
            lambda: (self.server.rooms(), self.server.connections(), self.server.statistics()),
        )
        model = {room: [m.name for m in members] for room, members in self.rooms.items()}
        assert rooms == model, f"server.rooms() is {rooms}; the model says {model}"
        seen = {
            info.address: (info.name, info.rooms, info.state, info.input_buffered)
            + (info.output_queued, info.writing)
            for info in conns
        }
        want = {
            tuple(c.sock.local_address): (c.name, tuple(c.rooms), "open", 0, 0, False)
            for c in self.live
        }
        assert seen == want, "server.connections() disagrees with the model (or holds bytes)"
        assert (stats.connections, stats.rooms) == (len(self.live), len(self.rooms))

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        for c in self.live:
            c.sock.close()
        self.live.clear()
        self.rooms.clear()
        try:
            if self.settled:
                wait_for(lambda: in_loop(self.server, self._all_gone), "everyone gone", TIMEOUT)
        finally:
            stopped = self.server.stop(timeout=self.server.limits.linger_seconds + TIMEOUT)
        if not self.settled:
            return  # a step failed, and said why
        assert stopped, "the server did not stop within its linger bound"
        loop = self.server.loop.statistics()
        assert loop.errors == 0, f"{loop.errors} server callback(s) raised; see the log"
        assert loop.dropped_fds == 0, "the server closed a socket that was still registered"
        assert loop.stale_fds == 0, "the server closed a socket that was still registered"
        if self.sockets_before is not None:
            left = _socket_fds() - self.sockets_before
            assert not left, f"{len(left)} socket(s) of this example left open: {sorted(left)}"

    def _all_gone(self) -> bool:
        """No connection, no room, nothing watched but what an idle server watches."""
        conns = self.server.connections()
        stats = self.server.statistics()
        watched = self.server.loop.statistics().registered
        return not conns and (stats.connections, stats.rooms, watched) == (0, 0, self.watched_idle)


# An example starts a server and makes a few hundred round trips: about 50 ms. 50 examples
# of up to 30 steps take 2-3 s per backend on a 2-core machine, far inside a minute for the
# file even when the machine is busy. Fewer examples miss too much: the rarer bugs need a
# client to pipeline, or to take a nick another just gave up. deadline=None: a step's time
# is the machine's load, not the code's, and every wait in a step is bounded (TIMEOUT).
# No explain phase: it replays the failing run many more times only to list the lines that
# failing runs ran, which for a server on another thread says little; the shrunk steps say
# what happened.
SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    phases=[phase for phase in Phase if phase is not Phase.explain],
)


# Hypothesis gives up shrinking after five minutes, and then reports the shortest failing
# run it has; the default timeout (120 s) would cut it short and report nothing useful. A
# failure that waits out a bound (a connection never dropped) costs TIMEOUT per try.
@pytest.mark.timeout(360)
def test_random_clients_get_exactly_what_they_are_owed(backend):
    run_state_machine_as_test(lambda: ChatMachine(backend), settings=SETTINGS)
