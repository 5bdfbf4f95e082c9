"""What the text inside a frame means: commands one way, typed replies the other.

The package: this file (client to server, and ``parse_reply``), kinds.py (what every reply
is made of), notices.py and errors.py (one type per reply, each with its one sentence).

framing.py cuts the byte stream into frames; this module says what their bodies say. Like
framing.py it does no I/O, so the server, the clients and the tests share one definition.

Client to server (the body of a frame for room N):

- empty (``<RID:111></RID:111>``): join room N, as in the original chat room;
- ``/command args``: a command (the server's table: chatlab/server/commands.py); it does
  not join the room;
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
every reply is a value: one frozen dataclass per kind of reply (notices.py, errors.py).
Each has

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

import re
from dataclasses import dataclass

from .errors import (
    BuffersFull,
    CannotAccept,
    Disconnected,
    Error,
    ExcessFlood,
    FrameTimedOut,
    InvalidNick,
    NickTaken,
    NickTooLong,
    NotARoom,
    NotInRoom,
    NotReading,
    OnlyNick,
    OutOfFds,
    RoomZero,
    ServerFull,
    SkippedBytes,
    TooLarge,
    TooManyRooms,
    UnknownCommand,
    Usage,
)
from .kinds import (
    DEGRADED,
    MAX_NAMES_SHOWN,
    MAX_NICK_LENGTH,
    NICK_RE,
    SERVER_ROOM,
    ErrorReply,
    Message,
    NoticeReply,
    Raw,
    Reply,
)
from .notices import (
    Action,
    AlreadyIn,
    AlreadyNamed,
    Bye,
    Echo,
    Entered,
    Help,
    Left,
    NetworkDegraded,
    NetworkRestored,
    Notice,
    Renamed,
    RoomCount,
    Rooms,
    ServerCount,
    Servers,
    ServersNoBus,
    Who,
    YouEntered,
    YouLeft,
    YouRenamed,
)

__all__ = [
    "DEGRADED",
    "ERRORS",
    "MAX_NAMES_SHOWN",
    "MAX_NICK_LENGTH",
    "NOTICES",
    "SERVER_ROOM",
    # client to server
    "Command",
    "check_nick",
    "parse_body",
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
    "NotReading",
    "FrameTimedOut",
    "BuffersFull",
    "ExcessFlood",
    "Disconnected",
    "ServerFull",
    "CannotAccept",
    "OutOfFds",
    "OnlyNick",
    "Error",
]


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
    NotReading,
    FrameTimedOut,
    ExcessFlood,
    BuffersFull,
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
