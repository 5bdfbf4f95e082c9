"""What the text inside a frame means: commands one way, typed replies the other.

framing.py cuts the byte stream into frames; this module says what their bodies say. Like
framing.py it does no I/O, so the server, the clients and the tests share one definition.

Client to server (the body of a frame for room N):

- empty (``<RID:111></RID:111>``): join room N, as in the original chat room;
- ``/command args``: a command (COMMANDS below); it does not join the room;
- ``//text``: a message that starts with "/" (the first slash is removed);
- anything else: a message to the other members of room N, joining N first if needed.

Server to client: every body starts with a mark, so a client can tell kinds apart and a
person reading raw bytes can too:

- ``<alice> hello``: a message from a member (shown by nick, or ``host:port`` without one);
- ``* text``: a notice (joins, leaves, /me, replies to commands, shutdown);
- ``! text``: an error, sent only to the client that caused it.

Frames that belong to no room (a framing error, the shutdown notice) use room 0, which is
the server's own channel: clients cannot join it.

Typed replies: the sentences live here, and only here
------------------------------------------------------

The text after a mark is an English sentence ("* alice entered room 5."). A program that
reads sentences by matching words breaks the day one word changes, and a program that writes
them in several places lets them drift apart. So, as h11 does for HTTP (h11/_events.py),
every reply is a value: one frozen dataclass per kind of reply, below. Each has

- one format, ``reply.body()``: the exact body on the wire (``Entered("alice", 5).body()
  == "* alice entered room 5."``; the bytes are those the server has always sent, so an
  original client still chats);
- one parse, ``Entered.parse(body)``: the instance, or None if body is not that reply.

``parse_reply(body)`` is what a client calls: it returns the most specific reply type that
reads the body, falling back to the generic ``Notice`` and ``Error`` for a marked sentence
no type knows (a newer server's, say), and to ``Raw`` for text without a mark (the original
chat server's plain text). Servers, clients, scripted clients and benchmarks build and
inspect these values; none of them writes or matches a sentence.

Design notes:

1. A parse never guesses. Each type reads a sentence with a regular expression, builds the
   instance, formats it again, and keeps it only if that gives back the very same body.
   So ``parse_reply(body).body() == body`` for every body: reading loses nothing, and a
   sentence that only looks like a reply ("room 05: ..." with a leading zero, a /who whose
   count disagrees with its names) is left to the next type in order (in the end, the
   generic Notice or Error) instead of being read as a wrong value.
2. The wire is ambiguous in two places, and parse order decides them (``NOTICES`` is that
   order). A /me action is "NAME ACTION", so ``/me left room 5.`` from alice reads exactly
   as alice leaving room 5: every specific sentence is tried before ``Action``, which only
   takes what nothing else does. And a member whose nick is "you" writes sentences that
   look like the reader's own ("* you left room 5." when "you" leaves): the "you ..."
   replies are tried first. Both are properties of the wire, not of this module; a server
   could remove them by refusing the nick "you" and by marking actions differently.
3. Fields are the facts, not the words. A /who reply holds its names and counts, a join
   reply the names shown and how many more; what the wire says about them (plurals, "nobody
   else yet", " and 3 more") is the format's business. Names never contain spaces or ", "
   (nicks are checked by check_nick(); the others are host:port), which is what makes a
   list of them readable back.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple, TypeVar

__all__ = [
    "COMMANDS",
    "DEGRADED",
    "ERRORS",
    "HELP_TEXT",
    "MAX_NAMES_SHOWN",
    "MAX_NICK_LENGTH",
    "NOTICES",
    "SERVER_ROOM",
    # client to server
    "Command",
    "check_nick",
    "parse_body",
    "validate_nick",
    # server to client: the kinds
    "Reply",
    "Message",
    "NoticeReply",
    "ErrorReply",
    "Raw",
    "parse_reply",
    "split_classic",
    # notices
    "YouEntered",
    "YouLeft",
    "AlreadyIn",
    "YouRenamed",
    "AlreadyNamed",
    "Entered",
    "Left",
    "Renamed",
    "Who",
    "Rooms",
    "RoomCount",
    "Servers",
    "ServersNoBus",
    "ServerCount",
    "Bye",
    "Help",
    "NetworkDegraded",
    "NetworkRestored",
    "Echo",
    "Action",
    "Notice",
    # errors
    "RoomZero",
    "TooManyRooms",
    "NotARoom",
    "NotInRoom",
    "NickTaken",
    "NickTooLong",
    "InvalidNick",
    "Usage",
    "UnknownCommand",
    "SkippedBytes",
    "TooLarge",
    "Disconnected",
    "ServerFull",
    "CannotAccept",
    "OutOfFds",
    "OnlyNick",
    "Error",
    # the server's shorthands of before (see the end of the module)
    "error",
    "message",
    "notice",
]

SERVER_ROOM = 0

# Long enough for a real name, short enough that every line of /who stays readable.
MAX_NICK_LENGTH = 20
# A letter first, then letters, digits, "_", "-", ".": nothing that could be mistaken for an
# address (host:port), a mark (<, *, !) or a frame tag.
NICK_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
# A join reply names this many of the members already there, then says how many more: a
# newcomer to a room of 10,000 needs a greeting, not a 100 KB list (/who gives the list).
MAX_NAMES_SHOWN = 20
# Added to a reply about the network when the bus is down and only this server could answer.
DEGRADED = " (network degraded: other servers not shown)"

COMMANDS = {
    "nick": "/nick NAME: choose your name (letters, digits, _ - .; unique on the server)",
    "join": "/join N: join room N (sending a message to a room joins it too)",
    "leave": "/leave [N]: leave this room, or room N",
    "who": "/who [N]: who is in this room, or in room N",
    "rooms": "/rooms: every room on the server (or network), with its number of members",
    "servers": "/servers: the servers of this chat network, with their members",
    "me": "/me ACTION: tell the room what you are doing (* alice waves)",
    "quit": "/quit [REASON]: leave every room and disconnect",
    "help": "/help: this list",
}
HELP_TEXT = "commands: " + "; ".join(COMMANDS.values()) + "; //text sends a line starting with /"


# -- client to server ------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A parsed command: ``/nick alice`` -> Command("nick", "alice")."""

    name: str
    arg: str


def parse_body(text: str) -> Command | str:
    """A frame body from a client -> a Command, or the message text ("" means join only)."""
    if text.startswith("//"):
        return text[1:]
    if text.startswith("/"):
        name, _, arg = text[1:].partition(" ")
        return Command(name.lower(), arg.strip())
    return text


def check_nick(nick: str) -> ErrorReply | None:
    """None if nick is acceptable, else the error to send back (Usage, NickTooLong...)."""
    if not nick:
        return Usage("/nick NAME")
    if len(nick) > MAX_NICK_LENGTH:
        return NickTooLong(len(nick))
    if not NICK_RE.fullmatch(nick):
        return InvalidNick(nick)
    return None


def validate_nick(nick: str) -> str | None:
    """check_nick()'s error as a sentence (what the server used before the reply types)."""
    problem = check_nick(nick)
    return None if problem is None else problem.sentence()


# -- server to client: the kinds --------------------------------------------------------

R = TypeVar("R", bound="Reply")


class Reply:
    """Anything the server sends in a frame's body; a frozen dataclass per kind below.

    ``body()`` is the text on the wire, ``parse(body)`` the instance or None, ``sentence()``
    the text after the mark (what a person reads), ``kind`` one of "message", "notice",
    "error", "raw".
    """

    kind: ClassVar[str]

    def body(self) -> str:
        raise NotImplementedError

    def sentence(self) -> str:
        raise NotImplementedError

    @classmethod
    def parse(cls: type[R], body: str) -> R | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Message(Reply):
    """A member's chat line, ``<alice> hello``; sender is a nick, or host:port without one."""

    sender: str
    text: str

    kind = "message"

    def body(self) -> str:
        return f"<{self.sender}> {self.text}"

    def sentence(self) -> str:
        return self.text

    @classmethod
    def parse(cls, body):
        match = _MESSAGE_RE.fullmatch(body)
        return None if match is None else cls(match[1], match[2])


_MESSAGE_RE = re.compile(r"<([^>\s]+)> (.*)", re.DOTALL)


@dataclass(frozen=True)
class Raw(Reply):
    """Text without a mark: the original chat server's ("[127.0.0.1:5000] entered room.").

    Any text reads as Raw; parse_reply() gives Raw only to what no other kind reads."""

    text: str

    kind = "raw"

    def body(self) -> str:
        return self.text

    def sentence(self) -> str:
        return self.text

    @classmethod
    def parse(cls, body):
        return cls(body)


class _Marked(Reply):
    """A mark, then a sentence. A subclass writes ``sentence()`` and a regex, PATTERN, with
    one named group per field (int fields are converted); or its own ``_read()``."""

    MARK: ClassVar[str]
    PATTERN: ClassVar[re.Pattern[str]]

    def body(self) -> str:
        return self.MARK + self.sentence()

    @classmethod
    def parse(cls, body):
        if not body.startswith(cls.MARK):
            return None
        reply = cls._read(body[len(cls.MARK) :])
        # Design note 1: a reading that does not format back to the same body is no reading.
        return reply if reply is not None and reply.body() == body else None

    @classmethod
    def _read(cls, sentence: str):
        match = cls.PATTERN.fullmatch(sentence)
        if match is None:
            return None
        ints = {f.name for f in fields(cls) if f.type in (int, "int")}  # type: ignore[arg-type]
        values = {
            name: int(value) if name in ints else value
            for name, value in match.groupdict().items()
            if value is not None  # an optional part that is absent: the field's default
        }
        return cls(**values)


class NoticeReply(_Marked):
    """Every notice: ``* `` and a sentence (joins, leaves, /me, replies to commands)."""

    kind = "notice"
    MARK = "* "


class ErrorReply(_Marked):
    """Every error: ``! `` and a sentence, sent only to the client that caused it."""

    kind = "error"
    MARK = "! "


def _regex(pattern: str) -> re.Pattern[str]:
    # DOTALL: free text (a reason, an action) may hold a newline; names never do.
    return re.compile(pattern, re.DOTALL)


# A name as the server shows it: a nick, or host:port for a member without one (IPv6 too).
_NAME = r"(?:[A-Za-z][A-Za-z0-9_.\-]*|\S+:\d+)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _degrade(sentence: str, degraded: bool) -> str:
    """The sentence, with the DEGRADED suffix if the bus is down."""
    return sentence + DEGRADED if degraded else sentence


def _undegraded(sentence: str) -> tuple[str, bool]:
    """(the sentence without the DEGRADED suffix, whether it had one)."""
    if sentence.endswith(DEGRADED):
        return sentence[: -len(DEGRADED)], True
    return sentence, False


def _unrepr(text: str) -> str | None:
    """repr(s) -> s, for sentences that quote what a client sent (``not a room number: 'x'``).

    ast.literal_eval is repr's inverse for strings; the checks around it keep it to exactly
    what repr() writes (one quoted literal, only the escapes repr uses)."""
    if len(text) < 2 or text[0] not in "'\"" or text[-1] != text[0]:
        return None
    if any(c not in "\\'\"nrtxuU" for c in re.findall(r"\\(.)", text, re.DOTALL)):
        return None  # an escape repr() never writes (and literal_eval would warn about)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, str) and repr(value) == text else None


# -- notices: replies to you -------------------------------------------------------------


@dataclass(frozen=True)
class YouEntered(NoticeReply):
    """You joined ``room`` (sent in it): ``* you entered room 5; here: alice, bob``.

    ``here``: the members already there, at most MAX_NAMES_SHOWN of them (use ``of()``);
    ``more``: how many others beyond those; with nobody there, the wire says "nobody else
    yet", or "nobody else (why_alone)" when the server has a reason (demos.BlockingServer).
    ``degraded``: the bus is down, so only this server's members are listed.
    """

    room: int
    here: tuple[str, ...] = ()
    more: int = 0
    why_alone: str = ""
    degraded: bool = False

    @classmethod
    def of(cls, room: int, names, *, degraded: bool = False) -> YouEntered:
        """The reply to a join into a room where ``names`` are: the first MAX_NAMES_SHOWN."""
        names = tuple(names)
        more = max(0, len(names) - MAX_NAMES_SHOWN)
        return cls(room, names[:MAX_NAMES_SHOWN], more, degraded=degraded)

    def sentence(self) -> str:
        if self.here:
            listing = ", ".join(self.here) + (f" and {self.more} more" if self.more else "")
        elif self.why_alone:
            listing = f"nobody else ({self.why_alone})"
        else:
            listing = "nobody else yet"
        return _degrade(f"you entered room {self.room}; here: {listing}", self.degraded)

    @classmethod
    def _read(cls, sentence):
        sentence, degraded = _undegraded(sentence)
        match = _regex(r"you entered room (\d+); here: (.*)").fullmatch(sentence)
        if match is None:
            return None
        room, listing = int(match[1]), match[2]
        if listing == "nobody else yet":
            return cls(room, degraded=degraded)
        if alone := _regex(r"nobody else \((.*)\)").fullmatch(listing):
            return cls(room, why_alone=alone[1], degraded=degraded)
        more = 0
        if counted := _regex(r"(.*) and (\d+) more").fullmatch(listing):
            listing, more = counted[1], int(counted[2])
        names = tuple(listing.split(", "))
        return None if "" in names else cls(room, names, more, degraded=degraded)


@dataclass(frozen=True)
class YouLeft(NoticeReply):
    """Your /leave worked (sent in the room you left): ``* you left room 5.``"""

    room: int

    PATTERN = _regex(r"you left room (?P<room>\d+)\.")

    def sentence(self) -> str:
        return f"you left room {self.room}."


@dataclass(frozen=True)
class AlreadyIn(NoticeReply):
    """/join for a room you are in: ``* you are already in room 5.``"""

    room: int

    PATTERN = _regex(r"you are already in room (?P<room>\d+)\.")

    def sentence(self) -> str:
        return f"you are already in room {self.room}."


@dataclass(frozen=True)
class YouRenamed(NoticeReply):
    """Your /nick worked: ``* you are now known as alice.``"""

    nick: str

    PATTERN = _regex(rf"you are now known as (?P<nick>{_NAME})\.")

    def sentence(self) -> str:
        return f"you are now known as {self.nick}."


@dataclass(frozen=True)
class AlreadyNamed(NoticeReply):
    """/nick for the nick you have: ``* you are already known as alice.``"""

    nick: str

    PATTERN = _regex(rf"you are already known as (?P<nick>{_NAME})\.")

    def sentence(self) -> str:
        return f"you are already known as {self.nick}."


# -- notices: the other members ----------------------------------------------------------


@dataclass(frozen=True)
class Entered(NoticeReply):
    """Someone joined a room you are in: ``* alice entered room 5.``"""

    name: str
    room: int

    PATTERN = _regex(rf"(?P<name>{_NAME}) entered room (?P<room>\d+)\.")

    def sentence(self) -> str:
        return f"{self.name} entered room {self.room}."


@dataclass(frozen=True)
class Left(NoticeReply):
    """Someone left a room you are in: ``* alice left room 5.``, or with why it happened
    when it was not a /leave: ``* alice left room 5 (closed the connection).``"""

    name: str
    room: int
    reason: str = ""

    PATTERN = _regex(rf"(?P<name>{_NAME}) left room (?P<room>\d+)(?: \((?P<reason>.+)\))?\.")

    def sentence(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.name} left room {self.room}{why}."


@dataclass(frozen=True)
class Renamed(NoticeReply):
    """A member of a room you are in took a nick: ``* 127.0.0.1:5000 is now known as bob.``"""

    old: str
    new: str

    PATTERN = _regex(rf"(?P<old>{_NAME}) is now known as (?P<new>{_NAME})\.")

    def sentence(self) -> str:
        return f"{self.old} is now known as {self.new}."


@dataclass(frozen=True)
class Action(NoticeReply):
    """A /me: ``* alice waves`` (name, then the action as typed).

    Design note 2: tried after every other notice, so an action that reads like one of them
    (alice's ``/me left room 5.``) is read as that one."""

    name: str
    action: str

    PATTERN = _regex(rf"(?P<name>{_NAME}) (?P<action>.+)")

    def sentence(self) -> str:
        return f"{self.name} {self.action}"


# -- notices: answers to commands --------------------------------------------------------


@dataclass(frozen=True)
class Who(NoticeReply):
    """/who: ``* room 5: alice, bob (2 members on 2 servers)``.

    ``servers``: how many servers those members are on; the wire says it only when it is
    more than one (so 0 or 1 both read back as 1: pass ``max(servers, 1)``)."""

    room: int
    names: tuple[str, ...] = ()
    servers: int = 1
    degraded: bool = False

    def sentence(self) -> str:
        count = _plural(len(self.names), "member")
        if self.servers > 1:
            count += f" on {_plural(self.servers, 'server')}"
        listing = ", ".join(self.names) or "nobody"
        return _degrade(f"room {self.room}: {listing} ({count})", self.degraded)

    @classmethod
    def _read(cls, sentence):
        sentence, degraded = _undegraded(sentence)
        pattern = _regex(r"room (\d+): (.*) \((\d+) members?(?: on (\d+) servers)?\)")
        match = pattern.fullmatch(sentence)
        if match is None:
            return None
        names = tuple(match[2].split(", ")) if int(match[3]) else ()
        if "" in names:
            return None  # no name is empty
        return cls(int(match[1]), names, int(match[4] or 1), degraded)


class RoomCount(NamedTuple):
    """One room of a /rooms reply: its number, its members, whether you are one of them."""

    room: int
    members: int
    yours: bool = False


@dataclass(frozen=True)
class Rooms(NoticeReply):
    """/rooms: ``* rooms (members): 5 (2, you), 7 (1)``, or ``* no rooms yet``."""

    rooms: tuple[RoomCount, ...] = ()
    degraded: bool = False

    def sentence(self) -> str:
        if not self.rooms:
            text = "no rooms yet"
        else:
            text = "rooms (members): " + ", ".join(
                f"{r.room} ({r.members}{', you' if r.yours else ''})" for r in self.rooms
            )
        return _degrade(text, self.degraded)

    @classmethod
    def _read(cls, sentence):
        sentence, degraded = _undegraded(sentence)
        if sentence == "no rooms yet":
            return cls((), degraded)
        if not sentence.startswith("rooms (members): "):
            return None
        entries = re.findall(r"(\d+) \((\d+)(, you)?\)", sentence)
        rooms = tuple(RoomCount(int(r), int(n), bool(you)) for r, n, you in entries)
        return cls(rooms, degraded)


class ServerCount(NamedTuple):
    """One server of a /servers reply: its name and how many of its members are in rooms."""

    name: str
    members: int


@dataclass(frozen=True)
class Servers(NoticeReply):
    """/servers with a bus: ``* 2 servers: A (this one, 1 member), B (3 members)``.

    ``name`` and ``members`` are the server that answers; ``others`` the rest it knows of."""

    name: str
    members: int
    others: tuple[ServerCount, ...] = ()
    degraded: bool = False

    def sentence(self) -> str:
        count = _plural(1 + len(self.others), "server")
        entries = [f"{self.name} (this one, {_plural(self.members, 'member')})"]
        entries += [f"{s.name} ({_plural(s.members, 'member')})" for s in self.others]
        return _degrade(f"{count}: {', '.join(entries)}", self.degraded)

    @classmethod
    def _read(cls, sentence):
        sentence, degraded = _undegraded(sentence)
        pattern = _regex(r"\d+ servers?: (.*?) \(this one, (\d+) members?\)((?:, .*)?)")
        match = pattern.fullmatch(sentence)
        if match is None:
            return None
        others = re.findall(r", (.*?) \((\d+) members?\)", match[3], re.DOTALL)
        servers = tuple(ServerCount(name, int(n)) for name, n in others)
        return cls(match[1], int(match[2]), servers, degraded)


@dataclass(frozen=True)
class ServersNoBus(NoticeReply):
    """/servers without a bus: ``* 1 server: A (this one, 2 members); no bus: rooms end at
    this server``."""

    name: str
    members: int

    PATTERN = _regex(
        r"1 server: (?P<name>.*) \(this one, (?P<members>\d+) members?\); "
        r"no bus: rooms end at this server"
    )

    def sentence(self) -> str:
        here = _plural(self.members, "member")
        return f"1 server: {self.name} (this one, {here}); no bus: rooms end at this server"


@dataclass(frozen=True)
class Help(NoticeReply):
    """/help: ``* commands: /nick NAME: choose your name...; /help: this list; //text ...``.

    ``commands``: (usage, what it does) for each command, in the server's order."""

    commands: tuple[tuple[str, str], ...]

    def sentence(self) -> str:
        rows = "; ".join(f"{usage}: {what}" for usage, what in self.commands)
        return f"commands: {rows}; //text sends a line starting with /"

    @classmethod
    def _read(cls, sentence):
        pattern = _regex(r"commands: (.*); //text sends a line starting with /")
        match = pattern.fullmatch(sentence)
        if match is None:
            return None
        if not match[1]:
            return cls(())
        # Every usage starts with "/", and a description may hold "; " too ("_ - .; unique").
        rows = re.split(r"; (?=/)", match[1])
        return cls(tuple((usage, what) for usage, _, what in (r.partition(": ") for r in rows)))


@dataclass(frozen=True)
class Bye(NoticeReply):
    """The server is closing your connection, and why: ``* bye (quit: back soon).``"""

    reason: str

    PATTERN = _regex(r"bye \((?P<reason>.*)\)\.")

    def sentence(self) -> str:
        return f"bye ({self.reason})."


@dataclass(frozen=True)
class NetworkDegraded(NoticeReply):
    """The bus is down (in room 0): rooms reach this server's members only, until it is back."""

    reason: str

    PATTERN = _regex(
        r"network degraded \((?P<reason>.*)\): "
        r"until it is back, rooms reach the members on this server only"
    )

    def sentence(self) -> str:
        return (
            f"network degraded ({self.reason}): until it is back, rooms reach the members "
            "on this server only"
        )


@dataclass(frozen=True)
class NetworkRestored(NoticeReply):
    """The bus is back (in room 0)."""

    PATTERN = _regex(r"network restored: rooms reach every server again")

    def sentence(self) -> str:
        return "network restored: rooms reach every server again"


@dataclass(frozen=True)
class Echo(NoticeReply):
    """demos.BlockingServer's answer to a message, having nobody to send it to."""

    text: str

    PATTERN = _regex(r"echo: (?P<text>.*)")

    def sentence(self) -> str:
        return f"echo: {self.text}"


@dataclass(frozen=True)
class Notice(NoticeReply):
    """A notice no type above reads (a newer server's, say): shown as it is. A server never
    sends one: every sentence it writes has its own type."""

    text: str

    PATTERN = _regex(r"(?P<text>.*)")

    def sentence(self) -> str:
        return self.text


# -- errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomZero(ErrorReply):
    """A message or join for room 0, the server's own."""

    PATTERN = _regex(rf"room {SERVER_ROOM} is the server's; pick another room")

    def sentence(self) -> str:
        return f"room {SERVER_ROOM} is the server's; pick another room"


@dataclass(frozen=True)
class TooManyRooms(ErrorReply):
    """A join past the limit of rooms per connection (``rooms``: how many you are in)."""

    rooms: int

    PATTERN = _regex(r"you are in (?P<rooms>\d+) rooms, the most allowed; /leave one first")

    def sentence(self) -> str:
        return f"you are in {self.rooms} rooms, the most allowed; /leave one first"


@dataclass(frozen=True)
class NotARoom(ErrorReply):
    """A command's argument that is not a room number: ``! not a room number: 'x'``."""

    arg: str

    def sentence(self) -> str:
        return f"not a room number: {self.arg!r}"

    @classmethod
    def _read(cls, sentence):
        match = _regex(r"not a room number: (.*)").fullmatch(sentence)
        arg = None if match is None else _unrepr(match[1])
        return None if arg is None else cls(arg)


@dataclass(frozen=True)
class NotInRoom(ErrorReply):
    """/leave N for a room you are not in."""

    room: int

    PATTERN = _regex(r"you are not in room (?P<room>\d+)")

    def sentence(self) -> str:
        return f"you are not in room {self.room}"


@dataclass(frozen=True)
class NickTaken(ErrorReply):
    """/nick for a nick someone on the server has (nicks are unique ignoring case)."""

    nick: str

    def sentence(self) -> str:
        return f"nick {self.nick!r} is taken"

    @classmethod
    def _read(cls, sentence):
        match = _regex(r"nick (.*) is taken").fullmatch(sentence)
        nick = None if match is None else _unrepr(match[1])
        return None if nick is None else cls(nick)


@dataclass(frozen=True)
class NickTooLong(ErrorReply):
    """/nick with a nick of ``length`` characters, over ``limit``."""

    length: int
    limit: int = MAX_NICK_LENGTH

    PATTERN = _regex(r"nick too long \((?P<length>\d+) characters; at most (?P<limit>\d+)\)")

    def sentence(self) -> str:
        return f"nick too long ({self.length} characters; at most {self.limit})"


@dataclass(frozen=True)
class InvalidNick(ErrorReply):
    """/nick with characters a nick may not have (NICK_RE)."""

    nick: str

    _RULE: ClassVar[str] = "start with a letter, then letters, digits, _ - . (no spaces)"

    def sentence(self) -> str:
        return f"invalid nick {self.nick!r}: {self._RULE}"

    @classmethod
    def _read(cls, sentence):
        match = _regex(rf"invalid nick (.*): {re.escape(cls._RULE)}").fullmatch(sentence)
        nick = None if match is None else _unrepr(match[1])
        return None if nick is None else cls(nick)


@dataclass(frozen=True)
class Usage(ErrorReply):
    """A command typed wrong, and how to type it: ``! usage: /me ACTION``."""

    usage: str

    PATTERN = _regex(r"usage: (?P<usage>.*)")

    def sentence(self) -> str:
        return f"usage: {self.usage}"


@dataclass(frozen=True)
class UnknownCommand(ErrorReply):
    """``/frob``: ``! unknown command /frob; try /help``."""

    name: str

    PATTERN = _regex(r"unknown command /(?P<name>.*); try /help")

    def sentence(self) -> str:
        return f"unknown command /{self.name}; try /help"


@dataclass(frozen=True)
class SkippedBytes(ErrorReply):
    """Bytes that were not a frame, skipped (in room 0): ``! skipped 4 bytes: garbage...``.

    ``reason`` is the decoder's (framing.Skipped.reason). It may quote a closing tag, which
    no body can hold, so the format writes "</RID:" as "<\\/RID:" and the parse undoes it."""

    count: int
    reason: str

    def sentence(self) -> str:
        reason = self.reason.replace("</RID:", "<\\/RID:")
        return f"skipped {self.count} bytes: {reason}"

    @classmethod
    def _read(cls, sentence):
        match = _regex(r"skipped (\d+) bytes: (.*)").fullmatch(sentence)
        if match is None:
            return None
        return cls(int(match[1]), match[2].replace("<\\/RID:", "</RID:"))


@dataclass(frozen=True)
class TooLarge(ErrorReply):
    """A frame over ``limit`` bytes (demos' servers; chatlab's says Disconnected)."""

    limit: int

    PATTERN = _regex(r"frame larger than (?P<limit>\d+) bytes")

    def sentence(self) -> str:
        return f"frame larger than {self.limit} bytes"


@dataclass(frozen=True)
class Disconnected(ErrorReply):
    """The server is closing your connection because of what you did (in room 0)."""

    reason: str

    PATTERN = _regex(r"disconnected: (?P<reason>.*)")

    def sentence(self) -> str:
        return f"disconnected: {self.reason}"


@dataclass(frozen=True)
class ServerFull(ErrorReply):
    """A connection refused at the limit: ``! server full (500 connections)``."""

    limit: int
    unit: str = "connections"  # demos.ThreadedServer counts "threads"

    PATTERN = _regex(r"server full \((?P<limit>\d+) (?P<unit>.+)\)")

    def sentence(self) -> str:
        return f"server full ({self.limit} {self.unit})"


@dataclass(frozen=True)
class CannotAccept(ErrorReply):
    """A connection the event loop cannot watch (select() past FD_SETSIZE), and why."""

    reason: str

    PATTERN = _regex(r"server cannot take more connections: (?P<reason>.*)")

    def sentence(self) -> str:
        return f"server cannot take more connections: {self.reason}"


@dataclass(frozen=True)
class OutOfFds(ErrorReply):
    """A connection refused because the process has no file descriptor left."""

    PATTERN = _regex(r"server out of file descriptors; try again later")

    def sentence(self) -> str:
        return "server out of file descriptors; try again later"


@dataclass(frozen=True)
class OnlyNick(ErrorReply):
    """A command other than /nick, sent to one of demos' servers."""

    PATTERN = _regex(r"this demo server knows only /nick")

    def sentence(self) -> str:
        return "this demo server knows only /nick"


@dataclass(frozen=True)
class Error(ErrorReply):
    """An error no type above reads (a newer server's, say): shown as it is. A server never
    sends one: every sentence it writes has its own type."""

    text: str

    PATTERN = _regex(r"(?P<text>.*)")

    def sentence(self) -> str:
        return self.text


# -- reading a body ----------------------------------------------------------------------

# The order in which parse_reply() tries the types of each mark (design note 2): the replies
# to "you" first, then the other sentences (none of which reads another's text), then
# Action, which reads any "NAME words", and last the generic one, which reads anything.
NOTICES: tuple[type[NoticeReply], ...] = (
    YouEntered,
    YouLeft,
    AlreadyIn,
    YouRenamed,
    AlreadyNamed,
    Entered,
    Left,
    Renamed,
    Who,
    Rooms,
    Servers,
    ServersNoBus,
    Help,
    Bye,
    NetworkDegraded,
    NetworkRestored,
    Echo,
    Action,
    Notice,
)
ERRORS: tuple[type[ErrorReply], ...] = (
    RoomZero,
    TooManyRooms,
    NotARoom,
    NotInRoom,
    NickTaken,
    NickTooLong,
    InvalidNick,
    Usage,
    UnknownCommand,
    SkippedBytes,
    TooLarge,
    Disconnected,
    ServerFull,
    CannotAccept,
    OutOfFds,
    OnlyNick,
    Error,
)


def parse_reply(body: str) -> Reply:
    """A body from the server -> the most specific Reply that reads it (never fails).

    The mark picks the list to try (NOTICES, ERRORS), in its order; a body with no mark is
    a Message if it reads as one, else Raw. ``parse_reply(body).body() == body`` always."""
    candidates: tuple[type[Reply], ...]
    if body.startswith(NoticeReply.MARK):
        candidates = NOTICES
    elif body.startswith(ErrorReply.MARK):
        candidates = ERRORS
    else:
        candidates = (Message, Raw)
    for kind in candidates:
        reply = kind.parse(body)
        if reply is not None:
            return reply
    raise AssertionError("unreachable: Notice, Error and Raw read anything")


# The original server sends "[host:port] entered room." and "<('host', port)>text" with no
# separator, so two of them can arrive in one read. Each starts in a recognisable way.
_CLASSIC_START_RE = re.compile(r"(?=\[[^\]\s]+:\d+\] entered room\.)|(?=<\('[^']*', \d+\)>)")


def split_classic(text: str) -> list[str]:
    """Plain text from an original-protocol server -> its lines (best effort; each a Raw)."""
    return [part.strip() for part in _CLASSIC_START_RE.split(text) if part.strip()]


# -- the shorthands of before ------------------------------------------------------------
# message() is Message(sender, text).body(), kept because notebook 01 shows it in
# demos.ThreadedServer's source. notice() and error() wrap any text in a mark: the server
# wrote its sentences with them; once it builds reply types instead, they can go.


def message(sender: str, text: str) -> str:
    return Message(sender, text).body()


def notice(text: str) -> str:
    return Notice(text).body()


def error(text: str) -> str:
    return Error(text).body()
