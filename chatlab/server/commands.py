"""The commands a client may send (``/nick alice``), in ONE table: name -> handler, usage, help.

redis keeps every command as one row of commands.def; chatlab keeps them in ``COMMANDS``
at the bottom of this file. Dispatch, /help and the tests all read that table, so a command
exists exactly when it has a row. A handler gets the server, the connection, the room the
command was sent in, and the argument text; it answers with ``server.send()`` and acts
through the server's glue (join, leave, rename), never on sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import protocol

if TYPE_CHECKING:
    from .connections import Connection
    from .core import ChatServer

__all__ = ["COMMANDS", "HELP", "Command", "run"]

Handler = Callable[["ChatServer", "Connection", int, str], None]


@dataclass(frozen=True)
class Command:
    """One row of the table."""

    handler: Handler
    usage: str  # how to type it: "/who [N]"
    help: str  # what it does, for /help


def run(server: ChatServer, conn: Connection, room: int, cmd: protocol.Command) -> None:
    """Dispatch one parsed command through the table."""
    row = COMMANDS.get(cmd.name)
    if row is None:
        server.send(conn, room, protocol.UnknownCommand(cmd.name))
        return
    row.handler(server, conn, room, cmd.arg)


def _room_arg(server: ChatServer, conn: Connection, room: int, arg: str) -> int | None:
    """The room a command names (``/who 5``), or the room it was sent in; None if bad."""
    if not arg:
        return room
    if arg.isdigit() and len(arg) <= 9:
        return int(arg)
    server.send(conn, room, protocol.NotARoom(arg))
    return None


# ---------------------------------------------------------------------------- handlers


def nick(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    problem = protocol.check_nick(arg)
    owner = server.membership.owner(arg)
    if problem is None and owner is not None and owner is not conn:
        problem = protocol.NickTaken(arg)
    if problem:
        server.send(conn, room, problem)
        return
    if conn.nick == arg:
        server.send(conn, room, protocol.AlreadyNamed(arg))
        return
    server.rename(conn, arg, room)


def join(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    target = _room_arg(server, conn, room, arg)
    if target is None:
        return
    if target in conn.rooms:
        server.send(conn, target, protocol.AlreadyIn(target))
    else:
        server.join(conn, target)


def leave(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    target = _room_arg(server, conn, room, arg)
    if target is None:
        return
    if target not in conn.rooms:
        server.send(conn, room, protocol.NotInRoom(target))
        return
    server.leave(conn, target)
    server.send(conn, target, protocol.YouLeft(target))


def who(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    target = _room_arg(server, conn, room, arg)
    if target is None:
        return
    local = server.membership.names(target)

    def reply(network):
        names = local + server.remote_members(network, target)
        servers = bool(local) + sum(
            any(target in rooms for rooms in members.values()) for _, members in network or ()
        )
        who = protocol.Who(target, tuple(names), max(servers, 1), server.degraded(network))
        server.send(conn, room, who)

    server.with_network(conn, reply)


def rooms(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    local = server.membership.counts()
    mine = set(conn.rooms)

    def reply(network):
        counts = dict(local)
        for _, members in network or ():
            for joined in members.values():
                for r in joined:
                    counts[r] = counts.get(r, 0) + 1
        listing = tuple(protocol.RoomCount(r, n, r in mine) for r, n in sorted(counts.items()))
        server.send(conn, room, protocol.Rooms(listing, server.degraded(network)))

    server.with_network(conn, reply)


def servers(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    here = len(server.bus_membership())

    def reply(network):
        reply: protocol.Reply
        if server.bus is None:
            reply = protocol.ServersNoBus(server.name, here)
        else:
            others = tuple(protocol.ServerCount(n, len(m)) for n, m in network or ())
            reply = protocol.Servers(server.name, here, others, server.degraded(network))
        server.send(conn, room, reply)

    server.with_network(conn, reply)


def me(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    if not arg:
        server.send(conn, room, protocol.Usage("/me ACTION"))
        return
    if room not in conn.rooms and not server.join(conn, room):
        return
    server.broadcast(room, protocol.Action(conn.name, arg), exclude=conn)


def quit(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    server.conns.disconnect(conn, f"quit: {arg}" if arg else "quit", goodbye="notice")


def help(server: ChatServer, conn: Connection, room: int, arg: str) -> None:
    server.send(conn, room, HELP)


# ------------------------------------------------------------------------- the table

COMMANDS: dict[str, Command] = {
    "nick": Command(
        nick, "/nick NAME", "choose your name (letters, digits, _ - .; unique on the server)"
    ),
    "join": Command(join, "/join N", "join room N (sending a message to a room joins it too)"),
    "leave": Command(leave, "/leave [N]", "leave this room, or room N"),
    "who": Command(who, "/who [N]", "who is in this room, or in room N"),
    "rooms": Command(
        rooms, "/rooms", "every room on the server (or network), with its number of members"
    ),
    "servers": Command(servers, "/servers", "the servers of this chat network, with their members"),
    "me": Command(me, "/me ACTION", "tell the room what you are doing (* alice waves)"),
    "quit": Command(quit, "/quit [REASON]", "leave every room and disconnect"),
    "help": Command(help, "/help", "this list"),
}

# /help's reply: every row of the table, in its order.
HELP = protocol.Help(tuple((row.usage, row.help) for row in COMMANDS.values()))
