"""What the text inside a frame means: messages, notices, errors and commands.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "COMMANDS",
    "HELP_TEXT",
    "MAX_NICK_LENGTH",
    "SERVER_ROOM",
    "Command",
    "error",
    "message",
    "notice",
    "parse_body",
    "parse_incoming",
    "split_classic",
    "validate_nick",
]

SERVER_ROOM = 0

# Long enough for a real name, short enough that every line of /who stays readable.
MAX_NICK_LENGTH = 20
# A letter first, then letters, digits, "_", "-", ".": nothing that could be mistaken for an
# address (host:port), a mark (<, *, !) or a frame tag.
NICK_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")

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


def validate_nick(nick: str) -> str | None:
    """None if nick is acceptable, else the reason it is not (to send back as an error)."""
    if not nick:
        return "usage: /nick NAME"
    if len(nick) > MAX_NICK_LENGTH:
        return f"nick too long ({len(nick)} characters; at most {MAX_NICK_LENGTH})"
    if not NICK_RE.fullmatch(nick):
        return (
            f"invalid nick {nick!r}: start with a letter, then letters, digits, _ - . (no spaces)"
        )
    return None


# -- server to client ----------------------------------------------------------------------


def message(sender: str, text: str) -> str:
    return f"<{sender}> {text}"


def notice(text: str) -> str:
    return f"* {text}"


def error(text: str) -> str:
    return f"! {text}"


_INCOMING_RE = re.compile(r"<([^>\s]+)> (.*)", re.DOTALL)


def parse_incoming(text: str) -> tuple[str, str | None, str]:
    """A body from the server -> (kind, sender, text), kind in message/notice/error/raw.

    "raw" is anything else: the original chat room's plain text, say. Clients show it as is.
    """
    if text.startswith("* "):
        return "notice", None, text[2:]
    if text.startswith("! "):
        return "error", None, text[2:]
    match = _INCOMING_RE.fullmatch(text)
    if match:
        return "message", match.group(1), match.group(2)
    return "raw", None, text


# The original server sends "[host:port] entered room." and "<('host', port)>text" with no
# separator, so two of them can arrive in one read. Each starts in a recognisable way.
_CLASSIC_START_RE = re.compile(r"(?=\[[^\]\s]+:\d+\] entered room\.)|(?=<\('[^']*', \d+\)>)")


def split_classic(text: str) -> list[str]:
    """Plain text from an original-protocol server -> its lines (best effort)."""
    return [part.strip() for part in _CLASSIC_START_RE.split(text) if part.strip()]
