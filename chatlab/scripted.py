"""Scripted clients: a blocking chat client that a notebook cell or a test can read aloud.

    alice = ScriptedClient(server.address, nick="alice")
    bob = ScriptedClient(server.address, nick="bob")
    alice.join(111); bob.join(111)
    alice.say(111, "hi")
    bob.expect("<alice> hi")

There is no thread and no sleep: a client reads its socket only inside ``expect()``,
``drain()`` and the calls that wait for a reply, each bounded by a timeout. Everything
received is kept in ``transcript``; a failed ``expect()`` says what did arrive. Because
nothing reads in the background, a client that is never asked to read behaves like a real
client that stops reading, which is exactly what some lessons need.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from . import protocol
from .framing import Frame, FrameDecoder, Skipped, Truncated, encode_frame

__all__ = ["ExpectTimeout", "Received", "ScriptedClient"]

DEFAULT_TIMEOUT = 5.0

# What expect() waits for: text the body contains, a regex it matches, a reply type
# (protocol.YouEntered), a reply (protocol.YouLeft(5)), a test of the reply, or any of several.
Expected: TypeAlias = (
    str
    | re.Pattern[str]
    | type[protocol.Reply]
    | protocol.Reply
    | Callable[[protocol.Reply], bool]
    | tuple["Expected", ...]
)


class ExpectTimeout(AssertionError):
    """expect() waited its whole timeout for a line that never came (the message says what did)."""


@dataclass(frozen=True)
class Received:
    """One line a client received: the frame's room, its body, and the body as a reply."""

    room: int | None  # None for bytes that were not a frame (an original-protocol server)
    body: str  # the whole body as sent by the server
    reply: protocol.Reply  # protocol.parse_reply(body): Message, YouEntered, Raw...

    @property
    def kind(self) -> str:
        """message, notice, error or raw."""
        return self.reply.kind

    @property
    def sender(self) -> str | None:
        """The member who sent a message; None for the other kinds."""
        return self.reply.sender if isinstance(self.reply, protocol.Message) else None

    @property
    def text(self) -> str:
        """The body without its mark: a message's text, a notice's or error's sentence."""
        return self.reply.sentence()

    def __str__(self) -> str:
        where = "" if self.room is None else f"[{self.room}] "
        return where + self.body


class ScriptedClient:
    """A blocking client for scripts: connect, join, say, expect."""

    def __init__(
        self,
        address: tuple[str, int],
        nick: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
    ) -> None:
        self.address = (address[0], address[1])
        self.timeout = timeout
        self.sock = socket.create_connection(self.address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_address = self.sock.getsockname()[:2]
        self.name = name or nick or "{}:{}".format(*self.local_address)
        self.transcript: list[Received] = []
        self.rooms: set[int] = set()
        self.closed_by_server = False
        self._cursor = 0  # expect() searches the transcript from here
        self._decoder = FrameDecoder(max_frame_size=16 * 1024 * 1024)
        if nick:
            self.nick(nick)

    # -- sending --------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are: half a frame, two frames at once, garbage."""
        self.sock.sendall(data)

    def send(self, room: int, body: str | bytes) -> None:
        """Send one frame."""
        self.sock.sendall(encode_frame(room, body))

    def say(self, room: int, text: str) -> None:
        """Send a chat message to a room (joining it, on the server, if needed)."""
        if text.startswith("/"):
            text = "/" + text  # "//" keeps a leading slash from being read as a command
        self.send(room, text)
        self.rooms.add(room)

    def join(self, room: int, *, wait: bool = True) -> None:
        """Join a room the original way, with an empty frame; wait for the server's notice."""
        already = room in self.rooms
        self.send(room, b"")
        self.rooms.add(room)
        if wait and not already:
            self.expect(protocol.YouEntered, room=room)

    def command(self, room: int, line: str, *, reply: Expected | None = None) -> Received | None:
        """Send a command (``"/who"``) in a room; with ``reply``, wait for a line matching it
        (anything expect() takes: ``reply=protocol.YouLeft(5)``, ``reply="* room 5: "``)."""
        self.send(room, line)
        if reply is not None:
            return self.expect(reply, room=room)
        return None

    def nick(self, nick: str) -> None:
        """Take a nick; raises ExpectTimeout with the server's error if it is refused."""
        self.send(protocol.SERVER_ROOM, f"/nick {nick}")
        done = (protocol.YouRenamed(nick), protocol.AlreadyNamed(nick), protocol.ErrorReply)
        line = self.expect(done, room=protocol.SERVER_ROOM)
        if isinstance(line.reply, protocol.ErrorReply):
            raise ExpectTimeout(f"{self.name}: /nick {nick} refused: {line.text}")
        self.name = nick

    def leave(self, room: int) -> None:
        self.command(room, f"/leave {room}", reply=protocol.YouLeft(room))
        self.rooms.discard(room)

    def who(self, room: int) -> list[str]:
        line = self.command(room, f"/who {room}", reply=protocol.Who)  # answered in room
        assert line is not None and isinstance(line.reply, protocol.Who)
        return list(line.reply.names)

    def quit(self, reason: str = "") -> None:
        """/quit, then wait for the server to close the connection."""
        self.send(protocol.SERVER_ROOM, f"/quit {reason}".rstrip())
        self.wait_closed()

    # -- receiving ------------------------------------------------------------------------

    def expect(
        self,
        pattern: Expected,
        *,
        room: int | None = None,
        kind: str | None = None,
        timeout: float | None = None,
    ) -> Received:
        """Wait for a received line that matches ``pattern``: a str the body contains, a
        regex found in it, a reply type (``protocol.YouEntered``) or reply
        (``protocol.YouLeft(5)``) that it parses as, a test of its reply, or a tuple of these
        (any one will do).

        Lines are searched from just after the previous match, so two expect() calls for the
        same text need two such lines. Raises ExpectTimeout, listing what did arrive.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i in range(self._cursor, len(self.transcript)):
                line = self.transcript[i]
                if room is not None and line.room != room:
                    continue
                if kind is not None and line.kind != kind:
                    continue
                if _matches(pattern, line):
                    self._cursor = i + 1
                    return line
            if not self._pump(deadline):
                since = [str(line) for line in self.transcript[self._cursor :]]
                what = _describe(pattern)
                state = " (the server closed the connection)" if self.closed_by_server else ""
                raise ExpectTimeout(
                    f"{self.name} expected {what}"
                    + (f" in room {room}" if room is not None else "")
                    + f"; received since the last match{state}: {since or 'nothing'}"
                )

    def drain(self, timeout: float = 0.1) -> list[Received]:
        """Read whatever arrives within ``timeout``; return the new lines."""
        start = len(self.transcript)
        deadline = time.monotonic() + timeout
        while self._pump(deadline):
            pass
        return self.transcript[start:]

    def messages(self, room: int | None = None) -> list[str]:
        """The texts of chat messages received so far (optionally of one room)."""
        return [
            line.body
            for line in self.transcript
            if isinstance(line.reply, protocol.Message) and (room is None or line.room == room)
        ]

    def wait_closed(self, timeout: float | None = None) -> None:
        """Read until the server closes the connection; ExpectTimeout if it does not."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.closed_by_server:
            if not self._pump(deadline) and not self.closed_by_server:
                raise ExpectTimeout(f"{self.name}: the server did not close the connection")

    def _pump(self, deadline: float) -> bool:
        """One recv() before the deadline; False if nothing came (timeout, or closed)."""
        if self.closed_by_server:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except ConnectionError:
            data = b""
        finally:
            self.sock.settimeout(self.timeout)
        self._decoder.receive_data(data)
        for event in self._decoder.events():
            if isinstance(event, Frame):
                reply = protocol.parse_reply(event.text)
                self.transcript.append(Received(event.room, event.text, reply))
            elif isinstance(event, (Skipped, Truncated)):
                raw = event.data.decode("utf-8", "replace")
                self.transcript.append(Received(None, raw, protocol.Raw(raw)))
        if not data:
            self.closed_by_server = True
        return True

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ScriptedClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ScriptedClient {self.name} rooms={sorted(self.rooms)}>"


def _matches(pattern: Expected, line: Received) -> bool:
    """Whether ``line`` is what expect(pattern) waits for (see expect())."""
    if isinstance(pattern, tuple):
        return any(_matches(p, line) for p in pattern)
    if isinstance(pattern, str):
        return pattern in line.body
    if isinstance(pattern, re.Pattern):
        return pattern.search(line.body) is not None
    if isinstance(pattern, type):  # before callable(): a class is callable too
        return isinstance(line.reply, pattern)
    if isinstance(pattern, protocol.Reply):
        return line.reply == pattern
    return bool(pattern(line.reply))


def _describe(pattern: Expected) -> str:
    """``pattern`` as an ExpectTimeout message shows it."""
    if isinstance(pattern, tuple):
        return " or ".join(_describe(p) for p in pattern)
    if isinstance(pattern, re.Pattern):
        return repr(pattern.pattern)
    if isinstance(pattern, type):
        return f"a {pattern.__name__}"
    if isinstance(pattern, (str, protocol.Reply)):
        return repr(pattern)
    return f"a reply passing {getattr(pattern, '__name__', 'a test')}()"
