"""Membership: who is in which room, and who goes by which nick. No I/O.

redis keeps its pub/sub membership in its own file (pubsub.c), apart from the client I/O and
the commands; so does chatlab. ``Rooms`` only records: the server decides what to tell whom
from what these methods return, so every rule here is tested without a socket.

Both sides of membership are kept, and always together: the room's members (in join order,
for /who and for broadcast) and the member's rooms (``member.rooms``, in the order joined,
for leaving them all on the way out). A member is anything with ``rooms`` (a dict used as an
ordered set), ``nick`` and ``name`` (the nick, or host:port): the server's Connection, or a
plain object in the tests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Rooms"]


class Rooms:
    """Rooms and their members, nicks and their owners."""

    def __init__(self) -> None:
        # room -> members in join order (dict keys: an ordered set). The delivery hot path
        # reads it directly: members = rooms.members.get(room).
        self.members: dict[int, dict[Any, None]] = {}
        self._nicks: dict[str, Any] = {}  # nick.lower() -> member: nicks are unique, any case

    def __len__(self) -> int:
        """Rooms with at least one member (an empty room is forgotten)."""
        return len(self.members)

    # -- membership ----------------------------------------------------------------------

    def join(self, member: Any, room: int) -> list[str] | None:
        """Add member to room; the names already there, or None if it was a member."""
        if room in member.rooms:
            return None
        members = self.members.setdefault(room, {})
        others = [m.name for m in members]
        members[member] = None
        member.rooms[room] = None
        return others

    def leave(self, member: Any, room: int) -> bool:
        """Take member out of room; False if it was not in it. An emptied room goes."""
        members = self.members.get(room)
        if members is None or member not in members:
            member.rooms.pop(room, None)  # keep both sides in step even if they were not
            return False
        del members[member]
        del member.rooms[room]
        if not members:
            del self.members[room]
        return True

    def names(self, room: int) -> list[str]:
        """The names of room's members, in join order."""
        return [m.name for m in self.members.get(room, ())]

    def counts(self) -> dict[int, int]:
        """room -> number of members, for /rooms."""
        return {room: len(members) for room, members in self.members.items()}

    def snapshot(self) -> dict[int, list[str]]:
        """room -> member names, safe to call from another thread while the loop runs.

        Iterating a live dict in Python code while the loop's thread changes it raises
        "dictionary changed size during iteration"; list() copies a dict in one C call, which
        the GIL does not interrupt."""
        rooms = list(self.members.items())
        return {room: [m.name for m in list(members)] for room, members in rooms}

    # -- nicks ---------------------------------------------------------------------------

    def owner(self, nick: str) -> Any | None:
        """Who goes by nick (in any case), or None."""
        return self._nicks.get(nick.lower())

    def rename(self, member: Any, nick: str) -> str:
        """Give member the nick (the caller checked it is free); returns the old name."""
        old = member.name
        if member.nick:
            self._nicks.pop(member.nick.lower(), None)
        member.nick = nick
        self._nicks[nick.lower()] = member
        return old

    def forget(self, member: Any) -> list[int]:
        """Member is gone: out of every room, its nick free. Returns the rooms it was in."""
        rooms = list(member.rooms)
        for room in rooms:
            self.leave(member, room)
        nick = member.nick
        if nick and self._nicks.get(nick.lower()) is member:
            del self._nicks[nick.lower()]
        return rooms

    def clear(self) -> None:
        self.members.clear()
        self._nicks.clear()
