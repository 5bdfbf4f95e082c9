"""Live clients: chat clients that read in the background, all on one loop of their own.

A notebook cell must return at once, or the kernel cannot run the next one (nor hear a
widget's button). So the clients of the live chapter do not read inside the cell that uses
them, as ScriptedClient does: a ``ClientHub`` runs one chatlab EventLoop on a thread of its
own, and every LiveClient's socket is registered there. The hub's loop is a second event
loop beside the server's: the clients multiplex their sockets exactly as the server does.

Design notes:

1. Threads meet in two places only. The kernel's thread (a cell, a button) hands work to the
   hub's loop with ``call_soon_threadsafe`` (``hub.call()`` also waits for the answer); the
   hub's loop hands lines it received to listeners (a widget's refresh, a bot's reply), and
   to ``expect()``, which waits on a condition variable, bounded, never a sleep.
2. Writes go through chatlab's Stream, as the server's do: queued, sent once per loop pass,
   the rest when the socket is writable again. Nothing here blocks the hub's loop.
3. A client can stop reading (``pause_reading()``) and so become what the course calls a
   slow reader: the server's output queue for it grows, because nothing here takes the
   bytes its kernel buffer holds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..framing import Frame, FrameDecoder, Skipped, Truncated, encode_frame
from ..loop import EventLoop
from ..scripted import Expected, ExpectTimeout, Received, _describe, _matches
from ..stream import Stream, WriteBatch, describe

__all__ = ["ClientHub", "EchoBot", "LiveClient"]

# A bound for every wait on the hub (a call, an expect): far above what any of them takes.
WAIT_SECONDS = 10.0
# Incoming frames may be as large as the server allows; 16 MiB bounds a broken server.
MAX_INCOMING_FRAME = 16 * 1024 * 1024


class ClientHub:
    """One EventLoop on a daemon thread for many live clients: ``ClientHub(backend="auto")``.

    ``close()`` closes every client it serves, stops the loop, joins the thread and releases
    the loop. Safe to call twice; a context manager too.
    """

    def __init__(self, backend: str = "auto") -> None:
        self.loop = EventLoop(backend)
        self.batch = WriteBatch(self.loop)
        self.clients: list[LiveClient] = []
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chatlab-live-hub", daemon=True
        )
        self._thread.start()

    @property
    def backend(self) -> str:
        return self.loop.backend_name

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = WAIT_SECONDS) -> Any:
        """Run ``fn(*args)`` on the hub's loop thread and return its result (or raise)."""
        return self.loop.call_and_wait(fn, *args, timeout=timeout)

    def connect(self, address: tuple[str, int], nick: str | None = None, **kwargs) -> LiveClient:
        """A new LiveClient of this hub (see LiveClient for the arguments)."""
        return LiveClient(self, address, nick, **kwargs)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        if not self.loop.is_closed() and self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._close_all)
            self.loop.stop()
            self._thread.join(WAIT_SECONDS)
        if not self.loop.is_closed():
            for client in self.clients:
                client.stream.release()
            self.batch.close()
            self.loop.close()

    def _close_all(self) -> None:
        for client in list(self.clients):
            client._abort()

    def __enter__(self) -> ClientHub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClientHub {len(self.clients)} clients, {self.backend}>"


class LiveClient:
    """A chat client on a ClientHub: it reads in the background and keeps every line.

    ``LiveClient(hub, address, "alice", room=1)`` connects, takes the nick and joins the
    room before it returns. ``rcvbuf`` sets SO_RCVBUF before connecting (a small one makes
    a slow reader's kernel full quickly). ``on_line(client, line)`` runs on the hub's loop
    for each line received: it must not block.
    """

    def __init__(
        self,
        hub: ClientHub,
        address: tuple[str, int],
        nick: str | None = None,
        *,
        room: int | None = None,
        rcvbuf: int | None = None,
        on_line: Callable[[LiveClient, Received], None] | None = None,
    ) -> None:
        self.hub = hub
        self.address = (address[0], address[1])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(WAIT_SECONDS)
            sock.connect(self.address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.name = nick or "{}:{}".format(*sock.getsockname()[:2])
        self.room = room
        self.lines: list[Received] = []
        self.listeners: list[Callable[[LiveClient, Received], None]] = []
        if on_line is not None:
            self.listeners.append(on_line)
        self.closed_by_server = False
        self.reason = ""  # why the connection ended, once it has
        self._cursor = 0
        self._changed = threading.Condition()
        self._decoder = FrameDecoder(MAX_INCOMING_FRAME)
        self.stream = Stream(hub.loop, sock, hub.batch, on_lost=self._lost)
        hub.clients.append(self)
        try:
            hub.call(hub.loop.add_reader, sock, self._on_readable)
            if nick:
                self.send(protocol.SERVER_ROOM, f"/nick {nick}")
                self.expect(protocol.YouRenamed(nick), room=protocol.SERVER_ROOM)
            if room is not None:
                self.join(room)
        except BaseException:
            self.close()
            raise

    # -- sending (from any thread) --------------------------------------------------------

    def send(self, room: int, body: str | bytes) -> None:
        """Queue one frame; the hub's loop sends it."""
        self.send_raw(encode_frame(room, body))

    def send_raw(self, data: bytes) -> None:
        """Queue bytes as they are (half a frame...); the hub's loop sends them."""
        self.hub.loop.call_soon_threadsafe(self.stream.write, data)

    def say(self, text: str, room: int | None = None) -> None:
        """A chat message to ``room`` (default: the room joined at the start)."""
        room = self.room if room is None else room
        if room is None:
            raise ValueError(f"{self.name}: say() needs a room (none was joined)")
        self.send(room, text)  # as typed: "/who" is a command, as in the terminal client

    def join(self, room: int) -> None:
        """Join a room (an empty frame) and wait for the server's notice."""
        self.send(room, b"")
        self.expect(protocol.YouEntered, room=room)

    def sync(self) -> None:
        """A round trip (/who): whatever the server did with what we sent before, it has done
        (one connection's frames are handled in order)."""
        room = 1 if self.room is None else self.room
        self.send(room, f"/who {room}")
        self.expect((protocol.Who, protocol.ErrorReply), room=room)

    # -- reading (on the hub's loop) ------------------------------------------------------

    def pause_reading(self) -> None:
        """Read nothing more: the server's queue for us grows (a slow reader)."""
        self.hub.call(self.hub.loop.remove_reader, self.sock)

    def resume_reading(self) -> None:
        self.hub.call(self.hub.loop.add_reader, self.sock, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._ended(describe(exc))
            return
        self._decoder.receive_data(data)
        new: list[Received] = []
        for event in self._decoder.events():
            if isinstance(event, Frame):
                new.append(Received(event.room, event.text, protocol.parse_reply(event.text)))
            elif isinstance(event, (Skipped, Truncated)):
                raw = event.data.decode("utf-8", "replace")
                new.append(Received(None, raw, protocol.Raw(raw)))
        self._add(new)
        if not data:
            self._ended("closed by the server")

    def _add(self, new: list[Received]) -> None:
        with self._changed:
            self.lines.extend(new)
            self._changed.notify_all()
        for line in new:
            for listener in list(self.listeners):
                listener(self, line)

    def _lost(self, stream: Stream, reason: str) -> None:
        self._ended(reason)

    def _ended(self, reason: str) -> None:
        """The connection is over (EOF, reset): one line says why, once."""
        if self.closed_by_server:
            return
        with self._changed:
            self.closed_by_server = True
            self.reason = reason
        self.stream.abort()
        text = f"* connection ended: {reason}"
        self._add([Received(None, text, protocol.Raw(text))])

    # -- waiting (from the kernel's thread) -----------------------------------------------

    def expect(
        self,
        pattern: Expected,
        *,
        room: int | None = None,
        timeout: float = WAIT_SECONDS,
    ) -> Received:
        """Wait for a line matching ``pattern`` (as ScriptedClient.expect), after the last
        match; ExpectTimeout lists what did arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i in range(self._cursor, len(self.lines)):
                    line = self.lines[i]
                    if (room is None or line.room == room) and _matches(pattern, line):
                        self._cursor = i + 1
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed_by_server:
                    since = [str(x) for x in self.lines[self._cursor :]]
                    raise ExpectTimeout(
                        f"{self.name} expected {_describe(pattern)}"
                        + (f" in room {room}" if room is not None else "")
                        + f"; received since the last match: {since or 'nothing'}"
                    )
                self._changed.wait(remaining)

    def wait_closed(self, timeout: float = WAIT_SECONDS) -> str:
        """Wait until the connection has ended; return why."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.closed_by_server, timeout):
                raise ExpectTimeout(f"{self.name}: the connection did not end within {timeout} s")
            return self.reason

    def messages(self, room: int | None = None) -> list[str]:
        """The bodies of the chat messages received so far (optionally of one room)."""
        with self._changed:
            return [
                x.body
                for x in self.lines
                if isinstance(x.reply, protocol.Message) and (room is None or x.room == room)
            ]

    # -- the end --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection now (from any thread). Safe to call twice."""
        if not self.hub.loop.is_closed() and self.hub.running:
            self.hub.call(self._abort)
        else:
            self.stream.release()

    def reset(self) -> None:
        """Close with a reset (RST), as a crashed peer's kernel does: SO_LINGER 0."""

        def rst() -> None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self._abort()

        self.hub.call(rst)

    def _abort(self) -> None:
        self.stream.abort()
        if self in self.hub.clients:
            self.hub.clients.remove(self)

    def __repr__(self) -> str:
        return f"<LiveClient {self.name} room={self.room}>"


class EchoBot(LiveClient):
    """A scripted bot in a room: to a message starting with its name and a colon
    ("echo: hi"), it answers "<sender> said: hi". It answers on the hub's loop."""

    def __init__(self, hub: ClientHub, address: tuple[str, int], nick: str = "echo", *, room: int):
        super().__init__(hub, address, nick, room=room, on_line=self._answer)

    def _answer(self, client: LiveClient, line: Received) -> None:
        reply = line.reply
        if not isinstance(reply, protocol.Message) or line.room is None:
            return
        head, colon, rest = reply.text.partition(":")
        if colon and head.strip() == self.name and reply.sender != self.name:
            self.send(line.room, f"{reply.sender} said: {rest.strip()}")
