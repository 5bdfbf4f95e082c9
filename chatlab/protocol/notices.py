"""Notices: ``* `` and a sentence. One type per sentence the server sends, each with its one
format (``sentence()``) and its one parse (``PATTERN`` or ``_read``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from .kinds import (
    _NAME,
    MAX_NAMES_SHOWN,
    NoticeReply,
    _degrade,
    _plural,
    _regex,
    _undegraded,
)

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
