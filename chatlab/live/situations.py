"""The course's situations, injected into a running server on demand.

Each method makes one thing happen that an earlier chapter explained, with real sockets,
and returns one sentence saying what it did and what the server did about it. That
sentence reads the same run after run (no timings, no byte counts that depend on the
kernel), so a notebook can store it.

- ``slow_reader()``: a member with a small SO_RCVBUF that stops reading (chapter 07); a
  talker's traffic then piles up in the server's output queue for it, its SendQ.
- ``talk(n)``: more traffic to the room; enough of it pushes a slow reader over its limit.
- ``flood(n)``: a member sends n messages at once; flood control reads it at its rate and
  the others' messages still go through at once (chapter 08).
- ``reset_mid_broadcast()``: a member with output queued resets its connection (RST): the
  server's one way out (chapter 05) takes it, and the room hears why.
- ``half_frame()``: half a frame, then silence (chapter 03): the server holds the bytes in
  the member's input buffer until the frame's deadline.
- ``kill_redis()`` / ``restart_redis()``, for a server on a bus with a ``RedisServer``
  (chapter 09): everyone hears the network is degraded, the room still works on this
  server; Redis back, everyone hears it is restored.

Waits are bounded and never sleeps: a round trip (``sync``), or the server's public
snapshots read until they show the change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..server import ChatServer
from ..server.connections import ConnectionInfo
from .clients import WAIT_SECONDS, ClientHub, LiveClient

__all__ = ["Situations"]

# A slow reader's receive buffer: small, so that its kernel is full after a few KiB and
# the rest waits in the server (the kernel doubles it and rounds it up: see socket(7)).
SLOW_RCVBUF = 4096
# One talker's message: 1,000 bytes of text.
LINE = "x" * 1000


class Situations:
    """Injects the course's situations into ``server``'s room ``room``, with clients on
    ``hub``; ``stop()`` closes every client it started."""

    def __init__(
        self, server: ChatServer, hub: ClientHub, room: int = 1, *, redis: Any = None
    ) -> None:
        self.server = server
        self.redis = redis  # a chatlab.redis_server.RedisServer: the server's bus
        self.hub = hub
        self.room = room
        self.clients: list[LiveClient] = []
        self._talker: LiveClient | None = None
        self._n = 0

    def _client(self, nick: str, **kwargs) -> LiveClient:
        self._n += 1
        client = self.hub.connect(self.server.address, f"{nick}{self._n}", room=self.room, **kwargs)
        self.clients.append(client)
        return client

    def _wait(self, what: str, test: Callable[[], Any]) -> Any:
        """Read the server's snapshots until test() gives something; bounded."""
        deadline = time.monotonic() + WAIT_SECONDS
        pause = 0.001
        while True:
            value = test()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not show {what} within {WAIT_SECONDS} s")
            time.sleep(pause)  # polling a snapshot, bounded: no event to wait on across threads
            pause = min(0.02, pause * 2)

    def _info(self, name: str) -> ConnectionInfo | None:
        return next((c for c in self.server.connections() if c.name == name), None)

    @property
    def talker(self) -> LiveClient:
        if self._talker is None or self._talker.closed_by_server:
            self._talker = self._client("talker")
        return self._talker

    # -- the situations ---------------------------------------------------------------------

    def talk(self, kib: int = 64) -> str:
        """The talker sends ``kib`` messages of 1,000 bytes; returns once the server has
        handled them all (a round trip after them)."""
        talker = self.talker
        for _ in range(kib):
            talker.say(LINE)
        talker.sync()
        return f"{talker.name} sent {kib} messages of 1,000 bytes to room {self.room}"

    def slow_reader(self, kib: int = 32) -> str:
        """A member that stops reading, then ``kib`` messages of traffic to its room."""
        reader = self._client("slow-reader", rcvbuf=SLOW_RCVBUF)
        reader.pause_reading()
        said = self.talk(kib)
        info = self._info(reader.name)
        if info is None or reader.closed_by_server:
            where = "was cut off (its queue passed the limit)"
        elif info.output_queued:
            where = "has part of it queued in the server, waiting for its kernel to take it"
        else:
            where = "has everything in its kernel buffers so far"
        return (
            f"{reader.name} joined room {self.room} and stopped reading; {said}; "
            f"{reader.name} {where}"
        )

    def flood(self, n: int = 300) -> str:
        """A member sends n messages at once; another member's message still goes through,
        before the flood's last message (when n is over the burst flood control allows)."""
        talker = self.talker  # in the room before the flood: it hears everything after
        flooder = self._client("flooder")
        last = f"<{flooder.name}> flood {n} of {n}"
        for i in range(n):
            flooder.say(f"flood {i + 1} of {n}")
        probe = self._client("probe")
        probe.say("still there?")
        talker.expect(f"<{probe.name}> still there?", room=self.room)
        during = last not in talker.messages(self.room)
        rate = self.server.limits.max_message_rate
        held = "" if not rate else f" (flood control reads it at {rate:g} messages a second)"
        when = "while the flood was still being read" if during else "after the flood"
        return (
            f"{flooder.name} sent {n} messages at once{held}; "
            f"{probe.name}'s message reached {talker.name} {when}"
        )

    def reset_mid_broadcast(self, kib: int = 32) -> str:
        """A member with output queued resets its connection (RST)."""
        victim = self._client("resetter", rcvbuf=SLOW_RCVBUF)
        victim.pause_reading()
        self.talk(kib)
        before = sum(self.server.statistics().disconnects.values())
        victim.reset()
        self._wait(
            "the reset",
            lambda: (
                sum(self.server.statistics().disconnects.values()) > before
                and self._info(victim.name) is None
            ),
        )
        why = self.talker.expect(f"{victim.name} left room", room=self.room)
        return (
            f"{victim.name} had output queued and reset its connection; "
            f"room {self.room} heard: {why.body}"
        )

    def half_frame(self) -> str:
        """Half a frame, then silence: the server keeps the bytes until the frame's deadline."""
        client = self._client("half")
        half = f"<RID:{self.room}>half a fra".encode()
        client.send_raw(half)
        info = self._wait(
            "the half frame", lambda: (i := self._info(client.name)) and i.input_buffered and i
        )
        deadline = self.server.limits.frame_timeout
        after = f"; it is cut off {deadline:g} s after its first byte" if deadline else ""
        return (
            f"{client.name} sent {len(half)} bytes of a frame and stopped; the server holds "
            f"{info.input_buffered} bytes of its input{after}"
        )

    def kill_redis(self) -> str:
        """SIGKILL the bus's Redis: everyone here hears the network is degraded, and the
        room still works on this server."""
        if self.server.bus is None or self.redis is None:
            return "this server has no Redis bus (start it with bus=redis.url, and pass redis)"
        talker = self.talker
        bus = self.server.bus
        self._wait("the bus up", lambda: bus.statistics().up)  # else no one hears it go
        self.redis.kill()
        heard = talker.expect(protocol.NetworkDegraded, room=protocol.SERVER_ROOM)
        probe = self._client("probe")
        probe.say("still there?")
        talker.expect(f"<{probe.name}> still there?", room=self.room)
        return (
            f"Redis was killed (SIGKILL); everyone here heard: {heard.body}; "
            f"{probe.name}'s message still reached {talker.name}, on this server"
        )

    def restart_redis(self) -> str:
        """Start Redis again (same port): the bus reconnects and everyone hears it."""
        if self.server.bus is None or self.redis is None:
            return "this server has no Redis bus"
        talker = self.talker
        self.redis.start()
        heard = talker.expect(protocol.NetworkRestored, room=protocol.SERVER_ROOM)
        return f"Redis is back; everyone here heard: {heard.body}"

    def toggle_redis(self) -> str:
        """The button: kill Redis if it runs, start it again if not."""
        if self.redis is not None and not self.redis.running:
            return self.restart_redis()
        return self.kill_redis()

    def wait_gone(self, name: str) -> str:
        """Wait until the server has let ``name`` go (out of every room, not open)."""

        def gone() -> bool:
            info = self._info(name)
            in_a_room = any(name in members for members in self.server.rooms().values())
            return not in_a_room and (info is None or info.state != "open")

        self._wait(f"{name} gone", gone)
        stats = self.server.statistics()
        reasons = ", ".join(f"{k} ({v})" for k, v in stats.disconnects.items())
        return f"{name} is no longer in room {self.room}; disconnects so far: {reasons}"

    def stop(self) -> None:
        """Close every client this started."""
        for client in self.clients:
            client.close()
        self.clients.clear()
        self._talker = None
