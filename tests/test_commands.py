"""The commands and the room rules, tested directly: no client, no thread, not per backend.

A real ChatServer is built and never run: each connection is one end of a socketpair that
no byte crosses. A frame is handed to ``server.on_frame()``, exactly what the server's read
path does with a frame that is not a plain message, and the replies are read back from the
connection's output queue, which only the (never running) loop would send. So each test is
synchronous and deterministic. test_server.py keeps the end-to-end versions of what
depends on the network: framing on the wire, order across connections, every backend.
"""

from __future__ import annotations

import socket

import pytest

from chatlab import protocol
from chatlab.framing import Frame, FrameDecoder
from chatlab.server import ChatServer, Limits
from chatlab.server.commands import COMMANDS, HELP


class Harness:
    """A server that is never run, and members on socketpairs that carry nothing."""

    def __init__(self, **limits) -> None:
        self.server = ChatServer(limits=Limits(**limits))
        self._peers: list[socket.socket] = []
        self._ports = iter(range(40000, 50000))

    def connect(self, nick: str | None = None):
        ours, theirs = socket.socketpair()
        self._peers.append(theirs)
        conn = self.server.conns.add(ours, ("127.0.0.1", next(self._ports)))
        assert conn is not None
        if nick:
            self.send(conn, 0, f"/nick {nick}")
            assert self.replies(conn) == [(0, f"* you are now known as {nick}.")]
        return conn

    def send(self, conn, room: int, body: str) -> None:
        self.server.on_frame(conn, Frame(room, body.encode()))

    def replies(self, conn) -> list[tuple[int, str]]:
        """What was queued for conn since the last call, as (room, body); then forget it."""
        decoder = FrameDecoder()
        decoder.receive_data(b"".join(conn.out))
        conn.out.clear()
        return [(f.room, f.text) for f in decoder.events()]

    def join(self, conn, room: int) -> None:
        self.send(conn, room, "")
        assert self.replies(conn)[-1][1].startswith(f"* you entered room {room}; here: ")

    def close(self) -> None:
        self.server.close()
        for sock in self._peers:
            sock.close()


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def test_join_tells_the_newcomer_who_is_here_and_the_others_who_came(h):
    alice, bob = h.connect("alice"), h.connect("bob")
    h.send(alice, 5, "")
    assert h.replies(alice) == [(5, "* you entered room 5; here: nobody else yet")]
    h.send(bob, 5, "")
    assert h.replies(bob) == [(5, "* you entered room 5; here: alice")]
    assert h.replies(alice) == [(5, "* bob entered room 5.")]
    assert h.server.rooms() == {5: ["alice", "bob"]}


def test_a_message_reaches_every_other_member_and_joins_a_newcomer(h):
    alice, bob, carol = h.connect("alice"), h.connect("bob"), h.connect("carol")
    h.join(alice, 1)
    h.join(bob, 1)
    h.join(carol, 2)
    h.replies(alice)
    h.send(alice, 1, "hello")
    assert h.replies(bob) == [(1, "<alice> hello")]
    assert h.replies(alice) == [] and h.replies(carol) == []  # not the sender, not room 2
    h.send(carol, 1, "first words")  # a message to a room one is not in joins it first
    assert h.replies(carol) == [(1, "* you entered room 1; here: alice, bob")]
    assert h.replies(bob) == [(1, "* carol entered room 1."), (1, "<carol> first words")]


def test_the_join_reply_lists_twenty_names_and_counts_the_rest(h):
    members = [h.connect(f"m{i}") for i in range(25)]
    for m in members:
        h.join(m, 3)
    late = h.connect("late")
    h.send(late, 3, "")
    names = ", ".join(f"m{i}" for i in range(20))
    assert h.replies(late) == [(3, f"* you entered room 3; here: {names} and 5 more")]


def test_rooms_per_connection_are_limited():
    h = Harness(max_rooms_per_connection=2)
    try:
        alice = h.connect("alice")
        h.join(alice, 1)
        h.join(alice, 2)
        h.send(alice, 3, "")
        assert h.replies(alice) == [(3, "! you are in 2 rooms, the most allowed; /leave one first")]
        assert h.server.rooms() == {1: ["alice"], 2: ["alice"]}
    finally:
        h.close()


def test_nick_is_announced_in_every_room_and_told_once_to_the_renamer(h):
    alice, anon = h.connect("alice"), h.connect()
    old = anon.name
    for room in (1, 2):
        h.join(alice, room)
        h.join(anon, room)
    h.replies(alice)
    h.send(anon, 1, "/nick bob")
    assert h.replies(anon) == [(1, "* you are now known as bob.")]
    assert h.replies(alice) == [
        (1, f"* {old} is now known as bob."),
        (2, f"* {old} is now known as bob."),
    ]


@pytest.mark.parametrize(
    "nick, problem",
    [
        ("", "usage: /nick NAME"),
        ("9lives", "invalid nick '9lives'"),
        ("has:colon", "invalid nick 'has:colon'"),
        ("<evil>", "invalid nick '<evil>'"),
        ("two words", "invalid nick 'two words'"),
        ("é", "invalid nick 'é'"),
        ("a" * (protocol.MAX_NICK_LENGTH + 1), "nick too long (21 characters; at most 20)"),
    ],
)
def test_bad_nicks_are_refused(h, nick, problem):
    alice, bob = h.connect("alice"), h.connect("bob")
    h.join(alice, 3)
    h.join(bob, 3)
    h.replies(alice)
    h.send(alice, 3, f"/nick {nick}")
    [(room, body)] = h.replies(alice)
    assert room == 3 and (body == f"! {problem}" or body.startswith(f"! {problem}:"))
    assert alice.name == "alice" and h.replies(bob) == []


def test_the_longest_nick_is_accepted(h):
    longest = "a" * protocol.MAX_NICK_LENGTH
    assert h.connect(longest).name == longest


def test_nicks_are_unique_in_any_case_and_freed_by_rename_and_departure(h):
    alice, other = h.connect("alice"), h.connect()
    for taken in ("alice", "ALICE", "Alice"):
        h.send(other, 1, f"/nick {taken}")
        assert h.replies(other) == [(1, f"! nick {taken!r} is taken")]
    h.send(alice, 1, "/nick Alice")  # her own nick, in another case: allowed
    assert h.replies(alice) == [(1, "* you are now known as Alice.")]
    h.send(alice, 1, "/nick Alice")
    assert h.replies(alice) == [(1, "* you are already known as Alice.")]
    h.send(alice, 1, "/nick al")
    h.connect("alice")  # freed by the rename
    h.server.conns.disconnect(alice, "closed the connection", goodbye=None)
    h.connect("al")  # freed by the departure


def test_join_and_leave_commands(h):
    alice, bob = h.connect("alice"), h.connect("bob")
    h.join(bob, 7)
    h.send(alice, 1, "/join 7")  # the reply is framed with the room joined
    assert h.replies(alice) == [(7, "* you entered room 7; here: bob")]
    assert h.replies(bob) == [(7, "* alice entered room 7.")]
    h.send(alice, 7, "/join 7")
    assert h.replies(alice) == [(7, "* you are already in room 7.")]
    for arg in ("x", "-3"):
        h.send(alice, 1, f"/join {arg}")
        assert h.replies(alice) == [(1, f"! not a room number: {arg!r}")]
    h.send(alice, 1, "/join 0")
    assert h.replies(alice) == [(0, "! room 0 is the server's; pick another room")]
    h.send(alice, 5, "/leave 7")
    assert h.replies(alice) == [(7, "* you left room 7.")]  # framed with the room left
    assert h.replies(bob) == [(7, "* alice left room 7.")]
    h.send(alice, 5, "/leave")
    assert h.replies(alice) == [(5, "! you are not in room 5")]
    assert h.server.rooms() == {7: ["bob"]}


def test_who_rooms_and_servers(h):
    alice, bob = h.connect("alice"), h.connect("bob")
    h.send(alice, 0, "/rooms")
    assert h.replies(alice) == [(0, "* no rooms yet")]
    h.join(alice, 1)
    h.send(alice, 1, "/who")
    assert h.replies(alice) == [(1, "* room 1: alice (1 member)")]
    h.join(bob, 1)
    h.join(bob, 2)
    h.send(bob, 2, "/who 1")  # the reply comes in the room asked from
    assert h.replies(bob) == [(2, "* room 1: alice, bob (2 members)")]
    h.send(bob, 3, "/who")
    assert h.replies(bob) == [(3, "* room 3: nobody (0 members)")]
    assert h.replies(alice) == [(1, "* bob entered room 1.")]
    h.send(alice, 0, "/rooms")
    assert h.replies(alice) == [(0, "* rooms (members): 1 (2, you), 2 (1)")]
    host, port = h.server.address
    h.send(alice, 0, "/servers")
    assert h.replies(alice) == [
        (0, f"* 1 server: {host}:{port} (this one, 2 members); no bus: rooms end at this server")
    ]


def test_me_is_a_notice_to_the_others_and_joins_a_room(h):
    alice, bob = h.connect("alice"), h.connect("bob")
    h.join(alice, 1)
    h.join(bob, 1)
    h.replies(alice)
    h.send(alice, 1, "/me waves")
    assert h.replies(bob) == [(1, "* alice waves")] and h.replies(alice) == []
    h.send(alice, 1, "/me")
    assert h.replies(alice) == [(1, "! usage: /me ACTION")]
    h.send(alice, 2, "/me arrives")
    assert h.replies(alice) == [(2, "* you entered room 2; here: nobody else yet")]
    h.send(alice, 0, "/me dances")
    assert h.replies(alice) == [(0, "! room 0 is the server's; pick another room")]


def test_help_is_the_table(h):
    alice = h.connect("alice")
    h.send(alice, 1, "/help")
    [(room, body)] = h.replies(alice)
    assert room == 1 and protocol.parse_reply(body) == HELP
    assert HELP.commands == tuple((row.usage, row.help) for row in COMMANDS.values())
    for name, row in COMMANDS.items():
        assert row.usage.startswith(f"/{name}") and f"{row.usage}: {row.help}" in body
    assert "//text" in body


@pytest.mark.parametrize("line", ["/frob", "/FROB now", "/"])
def test_unknown_command(h, line):
    alice = h.connect("alice")
    h.send(alice, 1, line)
    name = line[1:].split(" ")[0].lower()
    assert h.replies(alice) == [(1, f"! unknown command /{name}; try /help")]


def test_double_slash_is_a_message_starting_with_slash(h):
    alice, bob = h.connect("alice"), h.connect("bob")
    h.join(alice, 1)
    h.join(bob, 1)
    h.send(alice, 1, "//etc/motd is a path")
    assert h.replies(bob) == [(1, "<alice> /etc/motd is a path")]


def test_room_zero_is_the_servers(h):
    alice = h.connect("alice")
    for body in ("hello", ""):
        h.send(alice, 0, body)
        assert h.replies(alice) == [(0, "! room 0 is the server's; pick another room")]
    assert h.server.rooms() == {}


def test_quit_says_bye_and_the_rooms_hear_why(h):
    alice, bob = h.connect("alice"), h.connect("bob")
    for room in (1, 2):
        h.join(alice, room)
        h.join(bob, room)
    h.replies(alice)
    h.send(bob, 1, "/quit gone fishing")
    assert h.replies(alice) == [
        (1, "* bob left room 1 (quit: gone fishing)."),
        (2, "* bob left room 2 (quit: gone fishing)."),
    ]
    assert bob.closing and h.server.rooms() == {1: ["alice"], 2: ["alice"]}
    assert h.server.statistics().disconnects == {"quit": 1}
