"""Typed replies (chatlab/protocol.py): one format and one parse per reply, and the wire as it is.

Three kinds of test, in the spirit of h11's test_events.py:

- pinned: every reply type beside the exact body it has on the wire (the bytes the server has
  always sent, so that an original client still chats), read back by parse_reply();
- round trips: for any value hypothesis builds, ``parse(reply.body()) == reply``, both by the
  type's own parse and by parse_reply() (which must pick that very type);
- the other way: for any text at all, ``parse_reply(text).body() == text`` (reading loses
  nothing), and the two ambiguities of the wire resolve as the module documents.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatlab import protocol as p

DEGRADED = "(network degraded: other servers not shown)"

# --------------------------------------------------------------------------------- pinned

# (reply, its body on the wire): the sentences of chatlab's server, demos and client today.
PINNED = [
    # notices: replies to you
    (p.YouEntered(5, ("alice", "bob")), "* you entered room 5; here: alice, bob"),
    (p.YouEntered(5), "* you entered room 5; here: nobody else yet"),
    (
        p.YouEntered(5, degraded=True),
        f"* you entered room 5; here: nobody else yet {DEGRADED}",
    ),
    (
        p.YouEntered(111, why_alone="this server serves one client at a time"),
        "* you entered room 111; here: nobody else (this server serves one client at a time)",
    ),
    (p.YouLeft(5), "* you left room 5."),
    (p.AlreadyIn(5), "* you are already in room 5."),
    (p.YouRenamed("alice"), "* you are now known as alice."),
    (p.AlreadyNamed("Alice"), "* you are already known as Alice."),
    # notices: the other members
    (p.Entered("alice", 5), "* alice entered room 5."),
    (p.Entered("127.0.0.1:40000", 111), "* 127.0.0.1:40000 entered room 111."),
    (p.Left("bob", 5), "* bob left room 5."),
    (p.Left("bob", 5, "closed the connection"), "* bob left room 5 (closed the connection)."),
    (p.Left("bob", 4, "server shutting down"), "* bob left room 4 (server shutting down)."),
    (p.Renamed("alice", "alice2"), "* alice is now known as alice2."),
    (p.Renamed("127.0.0.1:40000", "bob"), "* 127.0.0.1:40000 is now known as bob."),
    (p.Action("alice", "waves"), "* alice waves"),
    # notices: answers to commands
    (p.Who(1, ("alice",)), "* room 1: alice (1 member)"),
    (p.Who(1, ("alice", "bob")), "* room 1: alice, bob (2 members)"),
    (p.Who(2), "* room 2: nobody (0 members)"),
    (p.Who(5, ("a", "b"), servers=2), "* room 5: a, b (2 members on 2 servers)"),
    (p.Who(5, ("a",), degraded=True), f"* room 5: a (1 member) {DEGRADED}"),
    (p.Rooms(), "* no rooms yet"),
    (p.Rooms((), degraded=True), f"* no rooms yet {DEGRADED}"),
    (
        p.Rooms((p.RoomCount(1, 1), p.RoomCount(2, 2, yours=True))),
        "* rooms (members): 1 (1), 2 (2, you)",
    ),
    (
        p.Servers("A", 1, (p.ServerCount("B", 1),)),
        "* 2 servers: A (this one, 1 member), B (1 member)",
    ),
    (
        p.Servers("A", 2, degraded=True),
        f"* 1 server: A (this one, 2 members) {DEGRADED}",
    ),
    (
        p.ServersNoBus("127.0.0.1:9898", 1),
        "* 1 server: 127.0.0.1:9898 (this one, 1 member); no bus: rooms end at this server",
    ),
    (
        p.Help((("/me ACTION", "tell the room (* alice waves)"), ("/help", "this list"))),
        "* commands: /me ACTION: tell the room (* alice waves); /help: this list; "
        "//text sends a line starting with /",
    ),
    (p.Bye("quit: done"), "* bye (quit: done)."),
    (p.Bye("server shutting down"), "* bye (server shutting down)."),
    (
        p.NetworkDegraded("Redis closed the connection"),
        "* network degraded (Redis closed the connection): until it is back, rooms reach the "
        "members on this server only",
    ),
    (p.NetworkRestored(), "* network restored: rooms reach every server again"),
    (p.Echo("hello"), "* echo: hello"),
    # errors
    (p.RoomZero(), "! room 0 is the server's; pick another room"),
    (p.TooManyRooms(3), "! you are in 3 rooms, the most allowed; /leave one first"),
    (p.NotARoom("x"), "! not a room number: 'x'"),
    (p.NotARoom("-3"), "! not a room number: '-3'"),
    (p.NotInRoom(9), "! you are not in room 9"),
    (p.NickTaken("bob"), "! nick 'bob' is taken"),
    (p.NickTooLong(21), "! nick too long (21 characters; at most 20)"),
    (
        p.InvalidNick("bad nick"),
        "! invalid nick 'bad nick': start with a letter, then letters, digits, _ - . (no spaces)",
    ),
    (p.Usage("/nick NAME"), "! usage: /nick NAME"),
    (p.Usage("/me ACTION"), "! usage: /me ACTION"),
    (p.Usage("/join N"), "! usage: /join N"),
    (p.UnknownCommand("frobnicate"), "! unknown command /frobnicate; try /help"),
    (p.SkippedBytes(4, "garbage before frame"), "! skipped 4 bytes: garbage before frame"),
    (
        p.SkippedBytes(11, "mismatched closing tag </RID:800> for <RID:700>"),
        "! skipped 11 bytes: mismatched closing tag <\\/RID:800> for <RID:700>",
    ),
    (p.TooLarge(65536), "! frame larger than 65536 bytes"),
    (p.NotReading(4096), "! output buffer over 4096 bytes: you are not reading"),
    (p.FrameTimedOut(30), "! frame not completed within 30 s"),
    (p.FrameTimedOut(0.5), "! frame not completed within 0.5 s"),
    (p.ExcessFlood(100, 30), "! excess flood: over 100 messages a second for 30 s"),
    (p.BuffersFull(268435456), "! server buffers over 268435456 bytes, and yours held the most"),
    (
        p.Disconnected("frame larger than 1024 bytes"),
        "! disconnected: frame larger than 1024 bytes",
    ),
    (p.ServerFull(5), "! server full (5 connections)"),
    (p.ServerFull(500, "threads"), "! server full (500 threads)"),
    (
        p.CannotAccept("select() cannot watch fd 1500 (FD_SETSIZE is 1024)"),
        "! server cannot take more connections: select() cannot watch fd 1500 (FD_SETSIZE is 1024)",
    ),
    (p.OutOfFds(), "! server out of file descriptors; try again later"),
    (p.OnlyNick(), "! this demo server knows only /nick"),
    # the generic ones, the message and raw text
    (p.Notice("42 is a sentence from a newer server"), "* 42 is a sentence from a newer server"),
    (p.Error("a complaint from a newer server"), "! a complaint from a newer server"),
    (p.Message("alice", "hello"), "<alice> hello"),
    (p.Message("127.0.0.1:40000", "hello from 1999"), "<127.0.0.1:40000> hello from 1999"),
    (p.Raw("[127.0.0.1:5000] entered room."), "[127.0.0.1:5000] entered room."),
]


def _reply_types() -> list[type[p.Reply]]:
    """Every concrete reply type the module defines."""
    abstract = {p.Reply, p.NoticeReply, p.ErrorReply}
    return [
        obj
        for _, obj in inspect.getmembers(p, inspect.isclass)
        if issubclass(obj, p.Reply) and obj not in abstract and not obj.__name__.startswith("_")
    ]


@pytest.mark.parametrize("reply, body", PINNED, ids=[type(r).__name__ for r, _ in PINNED])
def test_pinned_wire_text(reply, body):
    assert reply.body() == body
    assert type(reply).parse(body) == reply
    assert p.parse_reply(body) == reply
    marks = {"* ": "notice", "! ": "error"}
    assert reply.kind == marks.get(body[:2], "message" if body.startswith("<") else "raw")


def test_every_type_is_pinned_and_parsed():
    pinned = {type(reply) for reply, _ in PINNED}
    types = set(_reply_types())
    assert types - pinned == set(), "pin the wire text of every reply type"
    # parse_reply() tries every notice and error type (and only those) by its mark
    assert set(p.NOTICES) == {t for t in types if issubclass(t, p.NoticeReply)}
    assert set(p.ERRORS) == {t for t in types if issubclass(t, p.ErrorReply)}
    assert p.NOTICES[-2:] == (p.Action, p.Notice) and p.ERRORS[-1] is p.Error


def test_a_crowded_room_shows_twenty_names_and_counts_the_rest():
    names = [f"m{i}" for i in range(23)]
    reply = p.YouEntered.of(7, names)
    assert reply == p.YouEntered(7, tuple(names[:20]), 3)
    assert reply.body() == f"* you entered room 7; here: {', '.join(names[:20])} and 3 more"
    assert p.parse_reply(reply.body()) == reply
    assert p.YouEntered.of(7, names[:20]).body().endswith("m19")  # 20 exactly: no "more"
    assert p.YouEntered.of(7, []) == p.YouEntered(7)


def test_sentence_is_the_body_without_its_mark():
    assert p.YouLeft(5).sentence() == "you left room 5."
    assert p.RoomZero().sentence() == "room 0 is the server's; pick another room"
    assert p.Message("alice", "hi").sentence() == "hi"
    assert p.Raw("plain").sentence() == "plain"


@pytest.mark.parametrize(
    "nick, problem",
    [
        ("", p.Usage("/nick NAME")),
        ("a" * 21, p.NickTooLong(21)),
        ("bad nick", p.InvalidNick("bad nick")),
        ("9lives", p.InvalidNick("9lives")),
        ("alice", None),
        ("a" * 20, None),
    ],
)
def test_check_nick(nick, problem):
    assert p.check_nick(nick) == problem


# --------------------------------------------------------------------- the two ambiguities


@pytest.mark.parametrize(
    "action, read_as",
    [
        (p.Action("bob", "left room 5."), p.Left("bob", 5)),
        (p.Action("bob", "left room 5 (bored)."), p.Left("bob", 5, "bored")),
        (p.Action("bob", "entered room 5."), p.Entered("bob", 5)),
        (p.Action("bob", "is now known as alice."), p.Renamed("bob", "alice")),
        (p.Action("bye", "(for now)."), p.Bye("for now")),
        (p.Action("room", "5: a (1 member)"), p.Who(5, ("a",))),
        (p.Action("you", "left room 5."), p.YouLeft(5)),
        (p.Action("you", "are now known as alice."), p.YouRenamed("alice")),
    ],
)
def test_an_action_that_reads_as_a_sentence_is_that_sentence(action, read_as):
    """Design note 2: on the wire "* NAME ACTION" is ambiguous; every sentence comes first."""
    assert action.body() == read_as.body()
    assert p.parse_reply(action.body()) == read_as
    assert p.Action.parse(action.body()) == action  # read as an Action, it is one


def test_a_member_called_you_leaving_reads_as_your_own_leave():
    assert p.Left("you", 5).body() == p.YouLeft(5).body()
    assert p.parse_reply(p.Left("you", 5).body()) == p.YouLeft(5)
    # with a reason, or joining, "you" is told apart
    assert p.parse_reply(p.Left("you", 5, "quit").body()) == p.Left("you", 5, "quit")
    assert p.parse_reply(p.Entered("you", 5).body()) == p.Entered("you", 5)


@pytest.mark.parametrize(
    "body, kind",
    [
        ("* alice waves", p.Action),
        ("* 127.0.0.1:40000 waves back", p.Action),
        ("* 3 members left", p.Notice),  # "3" is no name: not an action
        ("* room 05: a (1 member)", p.Action),  # a leading zero: not what /who writes
        ("* room 5: a, b (1 member)", p.Action),  # the count disagrees with the names
        ("* rooms (members): ", p.Action),  # a list of no rooms: /rooms says "no rooms yet"
        ("* you entered room 5; here: ", p.Action),  # no name is empty
        ("* room 5: a,  (2 members)", p.Action),
        ("* ünïcode happens", p.Notice),
        ("! not a room number: x", p.Error),  # not quoted as repr() quotes
        ("! nick 'a' 'b' is taken", p.Error),
        ("! not a room number: '\\d'", p.Error),  # an escape repr() never writes
        ("*no space", p.Raw),
        ("<alice>no space", p.Raw),
        ("< alice> hi", p.Raw),
        ("", p.Raw),
    ],
)
def test_what_only_looks_like_a_reply_falls_back(body, kind):
    """Design note 1: a reading that does not format back to the same body is no reading."""
    reply = p.parse_reply(body)
    assert type(reply) is kind
    assert reply.body() == body


# -------------------------------------------------------------------------- round trips

texts = st.text(max_size=30)
rooms = st.integers(0, 20) | st.integers(0, 10**9 - 1)
counts = st.integers(0, 5) | st.integers(0, 10**6)
nicks = st.from_regex(p.NICK_RE, fullmatch=True).filter(lambda n: len(n) <= p.MAX_NICK_LENGTH)
addresses = st.builds(
    "{}:{}".format, st.sampled_from(["127.0.0.1", "10.1.2.3", "::1"]), st.integers(1, 65535)
)
# "you" is left out: its sentences are the reader's own (the test above)
names = (nicks | addresses).filter(lambda n: n != "you")
name_lists = st.lists(names, max_size=25).map(tuple)
# A free text that may end a sentence: not one that ends like the degraded suffix
free = texts.filter(lambda t: not (t + ")").endswith(p.DEGRADED))
# A server's name (anything a person might type, short of the separators around it)
server_names = st.text(st.characters(blacklist_characters="(),\n"), min_size=1, max_size=12)


@st.composite
def you_entered(draw):
    room, degraded = draw(rooms), draw(st.booleans())
    here = draw(st.lists(names, max_size=p.MAX_NAMES_SHOWN).map(tuple))
    if len(here) == p.MAX_NAMES_SHOWN:
        return p.YouEntered(room, here, draw(counts), degraded=degraded)
    if not here:
        return p.YouEntered(room, why_alone=draw(free), degraded=degraded)
    return p.YouEntered(room, here, degraded=degraded)


usages = st.from_regex(r"/[a-z]{1,8}( [A-Z\[\]]{1,6})?", fullmatch=True)
help_rows = st.tuples(usages, texts.filter(lambda t: "; /" not in t))

REPLIES = {
    p.YouEntered: you_entered(),
    p.YouLeft: st.builds(p.YouLeft, rooms),
    p.AlreadyIn: st.builds(p.AlreadyIn, rooms),
    p.YouRenamed: st.builds(p.YouRenamed, names),
    p.AlreadyNamed: st.builds(p.AlreadyNamed, names),
    p.Entered: st.builds(p.Entered, names, rooms),
    p.Left: st.builds(p.Left, names, rooms, texts),
    p.Renamed: st.builds(p.Renamed, names, names),
    p.Action: st.builds(p.Action, names, texts.filter(bool)),
    p.Who: st.builds(p.Who, rooms, name_lists, st.integers(1, 9), st.booleans()),
    p.Rooms: st.builds(
        p.Rooms,
        st.lists(st.builds(p.RoomCount, rooms, counts, st.booleans()), max_size=6).map(tuple),
        st.booleans(),
    ),
    p.Servers: st.builds(
        p.Servers,
        server_names,
        counts,
        st.lists(st.builds(p.ServerCount, server_names, counts), max_size=4).map(tuple),
        st.booleans(),
    ),
    p.ServersNoBus: st.builds(p.ServersNoBus, server_names, counts),
    p.Help: st.builds(p.Help, st.lists(help_rows, max_size=5).map(tuple)),
    p.Bye: st.builds(p.Bye, texts),
    p.NetworkDegraded: st.builds(p.NetworkDegraded, texts),
    p.NetworkRestored: st.just(p.NetworkRestored()),
    p.Echo: st.builds(p.Echo, texts),
    p.Notice: st.builds(p.Notice, texts),
    p.RoomZero: st.just(p.RoomZero()),
    p.TooManyRooms: st.builds(p.TooManyRooms, counts),
    p.NotARoom: st.builds(p.NotARoom, texts),
    p.NotInRoom: st.builds(p.NotInRoom, rooms),
    p.NickTaken: st.builds(p.NickTaken, texts),
    p.NickTooLong: st.builds(p.NickTooLong, counts, counts),
    p.InvalidNick: st.builds(p.InvalidNick, texts),
    p.Usage: st.builds(p.Usage, texts),
    p.UnknownCommand: st.builds(p.UnknownCommand, texts),
    p.SkippedBytes: st.builds(p.SkippedBytes, counts, texts.filter(lambda t: "<\\/RID:" not in t)),
    p.TooLarge: st.builds(p.TooLarge, counts),
    p.NotReading: st.builds(p.NotReading, counts),
    p.FrameTimedOut: st.builds(p.FrameTimedOut, st.sampled_from([0.5, 1.0, 5.0, 30.0, 2.25])),
    p.BuffersFull: st.builds(p.BuffersFull, counts),
    p.ExcessFlood: st.builds(
        p.ExcessFlood, st.sampled_from([1.0, 50.0, 100.0, 2.5]), st.sampled_from([0.5, 30.0])
    ),
    p.Disconnected: st.builds(p.Disconnected, texts),
    p.ServerFull: st.builds(p.ServerFull, counts, texts.filter(bool)),
    p.CannotAccept: st.builds(p.CannotAccept, texts),
    p.OutOfFds: st.just(p.OutOfFds()),
    p.OnlyNick: st.just(p.OnlyNick()),
    p.Error: st.builds(p.Error, texts),
    p.Message: st.builds(p.Message, st.from_regex(r"[^>\s]+", fullmatch=True), texts),
    p.Raw: st.builds(p.Raw, texts),
}
# These read whatever a more specific type does not: parse_reply() gives them only the rest.
FALLBACKS = (p.Action, p.Notice, p.Error, p.Raw)
ORDER = [*p.NOTICES, *p.ERRORS, p.Message, p.Raw]


def test_every_type_has_a_strategy():
    assert set(REPLIES) == set(_reply_types())


@pytest.mark.parametrize("kind", list(REPLIES), ids=lambda t: t.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip(kind, data):
    reply = data.draw(REPLIES[kind])
    body = reply.body()
    assert kind.parse(body) == reply
    read = p.parse_reply(body)
    assert read.body() == body
    if kind in FALLBACKS:
        # Only a type tried before it may take it (with the very same body, as asserted)
        assert read == reply or ORDER.index(type(read)) < ORDER.index(kind)
    else:
        assert read == reply


# Pieces of every sentence, to build texts that come close to replies without being them
PIECES = [
    "* ", "! ", "<", "> ", "you ", "alice", "127.0.0.1:5", " ", "entered room ", "left room ",
    "5", "0", "05", ".", "; here: ", ", ", " and 3 more", "nobody else yet", "nobody else (",
    "(", ")", " (", "room ", ": ", "nobody", " (1 member)", " members", " on 2 servers",
    "rooms (members): ", "no rooms yet", ", you", " servers: ", "1 server: ", "(this one, ",
    "; no bus: rooms end at this server", "bye (", "commands: ", "; //text sends a line "
    "starting with /", "/x: ", "network degraded (", "network restored: rooms reach every "
    "server again", "echo: ", "is now known as ", "are now known as ", "are already ",
    "not a room number: ", "'x'", "\"'\"", "nick ", " is taken", "usage: ", "unknown command /",
    "; try /help", "skipped ", " bytes: ", "<\\/RID:", "\\", "disconnected: ", "server full (",
    "\n", p.DEGRADED, "ü",
]  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(text=st.lists(st.sampled_from(PIECES), max_size=12).map("".join) | st.text())
@example(text="* you entered room 5; here: nobody else (x" + p.DEGRADED)
@example(text="* 2 servers: A (this one, 1 member), B (1 member), C")
def test_reading_any_text_loses_nothing(text):
    reply = p.parse_reply(text)
    assert reply.body() == text
    assert type(reply).parse(text) == reply


def test_names_are_never_read_across_separators():
    """A name holds no space and no ", ": a list of them splits back exactly (design note 3)."""
    for name in ("alice", "127.0.0.1:40000", "::1:40000", "a.b-c_d"):
        assert re.fullmatch(r"\S+", name) and ", " not in name
        assert p.parse_reply(p.Who(1, (name, name)).body()) == p.Who(1, (name, name))


# ------------------------------------------------ the sentences live in protocol.py alone

# A piece of every sentence the server writes; no other module's code may hold one.
FRAGMENTS = [
    "entered room", "left room", "known as", "; here: ", "nobody else", "already in room",
    "is the server's;", "the most allowed", "not a room number", "not in room", "is taken",
    "nick too long", "invalid nick", "usage: ", "unknown command", "skipped ", "bytes: ",
    "frame larger than", "disconnected: ", "server full", "take more connections",
    "out of file descriptors", "knows only", " member)", " members)", " members on",
    "rooms (members)", "no rooms yet", "(this one", "no bus: ", "commands: ", "bye (",
    "network degraded", "network restored", "echo: ", "you are not reading",
    "not completed within", "yours held the most", "excess flood",
]  # fmt: skip
# The modules that build or read replies: all of them, through the types.
SWITCHED = [
    "chatlab/server/core.py",
    "chatlab/server/commands.py",
    "chatlab/server/connections.py",
    "chatlab/client.py",
    "chatlab/scripted.py",
    "chatlab/demos.py",
    "chatlab/bench/baseline_asyncio.py",
    "chatlab/bench/baseline_epoll.py",
]


def _code_strings(path):
    """Every str and bytes literal in path's code (f-string parts too), docstrings aside."""
    tree = ast.parse((Path(__file__).parent.parent / path).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # A log line is for the operator, not a reply: "alice left room 5" may stay in a log.
    logged = {
        id(const)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "logger"
        for const in ast.walk(node)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if id(node) not in docstrings and id(node) not in logged:
                value = node.value
                yield value.decode("latin-1") if isinstance(value, bytes) else value


@pytest.mark.parametrize("path", SWITCHED)
def test_no_sentence_outside_protocol(path):
    found = [(s, f) for s in _code_strings(path) for f in FRAGMENTS if f in s]
    assert found == [], f"{path} writes or matches a reply sentence; use protocol's types"


def test_the_fragments_catch_every_pinned_sentence():
    for reply, body in PINNED:
        if not isinstance(reply, (p.Message, p.Raw, p.Notice, p.Error, p.Action)):
            assert any(f in body for f in FRAGMENTS), body
