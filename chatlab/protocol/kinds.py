"""The kinds of reply (message, notice, error, raw) and what every reply type shares.

A notice or an error is a mark and a sentence; each type (notices.py, errors.py) writes its
sentence once, in ``sentence()``, and reads it back with one regex (design notes 1 and 3 in
chatlab/protocol/__init__.py).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, fields
from typing import ClassVar, TypeVar

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
