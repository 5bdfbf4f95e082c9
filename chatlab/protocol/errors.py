"""Errors: ``! `` and a sentence, sent only to the client that caused it. One type per
sentence, each with its one format and its one parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .kinds import MAX_NICK_LENGTH, SERVER_ROOM, ErrorReply, _regex, _unrepr

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
class NotReading(ErrorReply):
    """Why a member that stopped reading is cut off, over ``limit`` bytes its kernel would
    not take (the SendQ); chatlab's server says it inside Disconnected's reason."""

    limit: int

    PATTERN = _regex(r"output buffer over (?P<limit>\d+) bytes: you are not reading")

    def sentence(self) -> str:
        return f"output buffer over {self.limit} bytes: you are not reading"


@dataclass(frozen=True)
class FrameTimedOut(ErrorReply):
    """Why a sender that stopped in the middle of a frame is cut off (the frame timeout);
    chatlab's server says it inside Disconnected's reason."""

    seconds: float

    PATTERN = _regex(r"frame not completed within (?P<seconds>\d+(?:\.\d+)?) s")

    def sentence(self) -> str:
        return f"frame not completed within {self.seconds:g} s"

    @classmethod
    def _read(cls, sentence):
        match = cls.PATTERN.fullmatch(sentence)
        return None if match is None else cls(float(match["seconds"]))


@dataclass(frozen=True)
class ExcessFlood(ErrorReply):
    """Why a client that stayed over its message rate too long is cut off (IRC's "Excess
    Flood"); chatlab's server says it inside Disconnected's reason."""

    rate: float
    seconds: float

    PATTERN = _regex(
        r"excess flood: over (?P<rate>\d+(?:\.\d+)?) messages a second "
        r"for (?P<seconds>\d+(?:\.\d+)?) s"
    )

    def sentence(self) -> str:
        return f"excess flood: over {self.rate:g} messages a second for {self.seconds:g} s"

    @classmethod
    def _read(cls, sentence):
        match = cls.PATTERN.fullmatch(sentence)
        return None if match is None else cls(float(match["rate"]), float(match["seconds"]))


@dataclass(frozen=True)
class BuffersFull(ErrorReply):
    """Why the connection holding the most buffered bytes is cut off when all connections
    together hold more than ``limit`` (redis's maxmemory-clients); inside Disconnected."""

    limit: int

    PATTERN = _regex(r"server buffers over (?P<limit>\d+) bytes, and yours held the most")

    def sentence(self) -> str:
        return f"server buffers over {self.limit} bytes, and yours held the most"


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
