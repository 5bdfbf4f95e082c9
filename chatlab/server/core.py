"""ChatServer: the glue between the parts, and the public API.

Design notes:

1. One thread, one loop, no blocking call. The parts: connections.py moves bytes (accept,
   read, deliver, the one way out), rooms.py records who is where (no I/O), commands.py
   is the table of commands. This class decides what a frame means and what follows from
   it: who is told what when someone joins, leaves, renames or goes.
2. No module state: a server is an object, port 0 picks a free port, and several servers
   run in one process (the notebooks and tests rely on it). ``serve()`` runs one on a
   background thread.
3. Beyond one process (``bus="redis://..."``, chatlab/bus.py): every broadcast is also
   published to Redis, and the others' broadcasts are delivered to our members by the same
   code as ours (``deliver``). Members are served first and directly, so a server without
   its bus still serves its own members. /who, /rooms and /servers add the other servers'
   members, read from Redis by a callback: the handler never waits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import ChatlabError
from ..framing import Frame, encode_frame
from ..loop import EventLoop
from ..stream import CLOSED
from . import commands
from .connections import Connection, ConnectionInfo, Connections, peer_done_waiting
from .limits import Limits
from .rooms import Rooms

if TYPE_CHECKING:
    from ..bus import BusConfig, RedisBus

__all__ = ["ChatServer", "ServerStats", "serve"]

logger = logging.getLogger("chatlab.server")


@dataclass
class ServerStats:
    """Counters a server keeps; ``server.statistics()`` returns a copy."""

    accepted: int = 0  # connections accepted
    refused: int = 0  # connections closed at once (server full, fd over a limit)
    connections: int = 0  # open now
    rooms: int = 0  # non-empty now
    frames: int = 0  # frames received
    messages: int = 0  # frames broadcast to a room: chat messages and notices
    deliveries: int = 0  # frames queued to members: broadcast copies, replies, errors
    bytes_in: int = 0
    bytes_out: int = 0
    disconnects: dict[str, int] = field(default_factory=dict)  # reason -> count


class ChatServer:
    """A multi-room chat server: ``ChatServer(host="127.0.0.1", port=0, backend="auto")``.

    The socket is bound on construction, so ``server.address`` is known at once. Run it
    with ``serve_forever()`` (or ``chatlab.serve()`` on a background thread); stop it with
    ``shutdown()`` from the loop or ``stop()`` from any thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        backend: str = "auto",
        *,
        limits: Limits | None = None,
        loop: EventLoop | None = None,
        backlog: int = 1024,
        reuse_port: bool = False,
        bus: str | BusConfig | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._own_loop = loop is None
        self.loop = loop if loop is not None else EventLoop(backend)
        self.stats = ServerStats()
        self.membership = Rooms()
        self._shutting_down = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.conns = Connections(self, host, port, backlog, reuse_port)
        except BaseException:
            if self._own_loop:
                self.loop.close()
            raise
        self.address = self.conns.listener.sock.getsockname()[:2]
        self.name = f"{self.address[0]}:{self.address[1]}"
        self.bus: RedisBus | None = None
        self._bus_degraded = False  # clients were told the network is degraded
        if bus is not None:
            try:
                self._start_bus(bus)
            except BaseException:
                self._close_everything()
                raise
        logger.info(
            "listening on %s:%s (backend %s)", self.address[0], self.address[1], self.backend
        )

    # -- public -----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self.loop.backend_name

    def statistics(self) -> ServerStats:
        stats = ServerStats(**{**vars(self.stats), "disconnects": dict(self.stats.disconnects)})
        stats.bytes_out = self.conns.batch.bytes_sent
        stats.connections = len(self.conns)
        stats.rooms = len(self.membership)
        return stats

    def rooms(self) -> dict[int, list[str]]:
        """room -> member names, in join order (a copy, safe from any thread)."""
        return self.membership.snapshot()

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every connection, in the order accepted; safe from any thread."""
        return self.conns.info()

    def serve_forever(self) -> None:
        """Run the loop until shutdown() finishes; then release everything."""
        try:
            self.loop.run_forever()
        finally:
            self._close_everything()
            self._stopped.set()

    def shutdown(self, reason: str = "server shutting down") -> None:
        """Tell every client, flush within the linger bound, then stop the loop.

        Call it from the loop's thread (a callback, a signal handler's call_soon_threadsafe);
        from another thread, use stop().
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        logger.info("shutting down: %s", reason)
        self.conns.listener.stop()
        everyone = list(self.conns.by_fd.values())
        if self.bus is not None:
            # Our members are all leaving; the other servers' members of their rooms are not.
            self.bus.leave()
            for conn in everyone:
                for r in conn.rooms:
                    self.bus.publish(r, protocol.Left(conn.name, r, reason).body())
        for conn in everyone:
            self.conns.disconnect(conn, reason, announce=False, goodbye="notice")
        self.connection_closed()
        self.loop.call_later(self.limits.linger_seconds, self.loop.stop)

    def start(self) -> ChatServer:
        """Run serve_forever() on a daemon thread named chatlab-server-PORT; returns self.

        For a notebook whose server lives across cells: ``server = ChatServer().start()``,
        and ``server.stop()`` in the last cell. Within one cell, prefer ``with serve():``.
        """
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"chatlab-server-{self.address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Thread-safe: ask for a graceful shutdown, wait for serve_forever() to finish.

        Returns False if it did not finish within ``timeout`` seconds. Safe to call twice."""
        if self._thread is None and not self.loop.is_running():
            self.close()  # never started: nothing to say goodbye to
            return True
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.shutdown)
            except ChatlabError:
                pass  # the loop closed in the meantime
        stopped = self._stopped.wait(timeout)
        if stopped and self._thread is not None:
            self._thread.join(timeout)
        return stopped

    def close(self) -> None:
        """Release the sockets without a goodbye (for a server that never ran)."""
        self._close_everything()

    # -- what a frame means -------------------------------------------------------------

    def on_frame(self, conn: Connection, frame: Frame) -> None:
        """A frame that is not a plain message to a room conn is in (connections.py)."""
        room = frame.room
        parsed = protocol.parse_body(frame.text.rstrip("\r\n"))
        if isinstance(parsed, protocol.Command):
            commands.run(self, conn, room, parsed)
            return
        if room == protocol.SERVER_ROOM:
            self.send(conn, room, protocol.RoomZero())
            return
        if room not in conn.rooms and not self.join(conn, room):
            return
        if parsed:
            self.broadcast(room, protocol.Message(conn.name, parsed), exclude=conn)

    def join(self, conn: Connection, room: int) -> bool:
        """conn joins room: the others hear of it, conn hears who is there. False if refused."""
        if room == protocol.SERVER_ROOM:
            self.send(conn, room, protocol.RoomZero())
            return False
        if room in conn.rooms:
            return True
        if len(conn.rooms) >= self.limits.max_rooms_per_connection:
            self.send(conn, room, protocol.TooManyRooms(len(conn.rooms)))
            return False
        others = self.membership.join(conn, room) or []
        # With a bus, the membership is written to Redis before the notice is published
        # (one connection: Redis applies them in this order), so whoever sees the notice
        # and asks /who finds the newcomer there.
        self._member_changed(conn)
        self.broadcast(room, protocol.Entered(conn.name, room), exclude=conn)

        def reply(network):
            names = others + self.remote_members(network, room)
            degraded = self.degraded(network)
            self.send(conn, room, protocol.YouEntered.of(room, names, degraded=degraded))

        self.with_network(conn, reply)
        logger.info("%s joined room %d", conn.name, room)
        return True

    def leave(self, conn: Connection, room: int, why: str = "") -> None:
        """conn leaves room, and the others hear of it (and why)."""
        if not self.membership.leave(conn, room):
            return
        self._member_changed(conn)
        self.broadcast(room, protocol.Left(conn.name, room, why))
        logger.info("%s left room %d%s", conn.name, room, f" ({why})" if why else "")

    def rename(self, conn: Connection, nick: str, room: int) -> None:
        """conn goes by nick from now on (commands.nick checked it); its rooms hear of it.

        The reply goes to ``room``, where the command came from."""
        old = self.membership.rename(conn, nick)
        if self.bus is not None and conn.rooms:
            self.bus.member_changed(old, None)  # gone under the old name...
            self._member_changed(conn)  # ...and here under the new one
        self.send(conn, room, protocol.YouRenamed(nick))
        for r in list(conn.rooms):
            self.broadcast(r, protocol.Renamed(old, nick), exclude=conn)

    def depart(self, conn: Connection, reason: str, announce: bool) -> None:
        """conn is going (connections.py's way out): out of every room, its nick free."""
        for room in list(conn.rooms):
            if announce:
                self.leave(conn, room, reason)
            else:
                self.membership.leave(conn, room)
                self._member_changed(conn)
        self.membership.forget(conn)

    def connection_closed(self) -> None:
        """A connection's socket closed; the last one ends a shutdown."""
        if self._shutting_down and not self.conns.by_fd:
            self.loop.stop()

    # -- writing ------------------------------------------------------------------------

    def broadcast(
        self, room: int, reply: protocol.Reply, exclude: Connection | None = None
    ) -> None:
        """Send reply to every member of room except ``exclude``, on every server."""
        body = reply.body()
        if self.bus is not None:
            self.bus.publish(room, body)  # design note 3; a no-op, counted, while it is down
        self.deliver(room, body, exclude)

    def deliver(self, room: int, body: str, exclude: Connection | None = None) -> None:
        """Queue ``body`` (a reply's, here or from another server) for every member of room
        here, except ``exclude``."""
        if room in self.membership.members:
            self.conns.deliver(room, encode_frame(room, body), exclude)

    def send(self, conn: Connection, room: int, reply: protocol.Reply) -> None:
        """A reply to one connection."""
        self.conns.send(conn, room, reply)

    # -- the bus (design note 3) --------------------------------------------------------

    def _start_bus(self, bus: str | BusConfig) -> None:
        from ..bus import BusConfig, RedisBus  # only now: hiredis is an optional extra

        config = BusConfig(bus) if isinstance(bus, str) else bus
        self.name = config.name or self.name
        self.bus = RedisBus(
            config,
            self.loop,
            name=self.name,
            on_message=self.deliver,
            on_status=self._on_bus_status,
            members=self.bus_membership,
        )

    def bus_membership(self) -> dict[str, list[int]]:
        """member name -> rooms, for everyone here in a room (what the bus registers)."""
        conns = self.conns.by_fd.values()
        return {c.name: list(c.rooms) for c in conns if c.rooms and c.state is not CLOSED}

    def _member_changed(self, conn: Connection) -> None:
        """Tell the bus conn's rooms now (after a join or a leave): /who elsewhere reads them."""
        if self.bus is not None:
            self.bus.member_changed(conn.name, list(conn.rooms))

    def with_network(self, conn: Connection, then: Callable[[Any], None]) -> None:
        """then(others): the other servers' members, [] without a bus, None if it is down.

        With a bus this is a round trip to Redis: then() runs later, from a reply (always:
        a lost bus answers None), so a client that sent EOF meanwhile waits for it."""
        if self.bus is None:
            then([])
            return

        def answer(network) -> None:
            conn.awaiting -= 1
            then(network)
            if peer_done_waiting(conn):
                self.conns.disconnect(conn, "closed the connection", goodbye=None)

        conn.awaiting += 1
        self.bus.network(answer)

    @staticmethod
    def remote_members(network, room: int) -> list[str]:
        """The names in room on the other servers, from RedisBus.network()'s answer."""
        return [
            name for _, members in network or () for name, rooms in members.items() if room in rooms
        ]

    def degraded(self, network) -> bool:
        """Whether a reply built from ``network`` lacks the other servers (the bus is down)."""
        return self.bus is not None and network is None

    def _on_bus_status(self, up: bool, reason: str) -> None:
        if up and not self._bus_degraded:
            return  # the first connection: nobody was told anything else
        self._bus_degraded = not up
        news = protocol.NetworkRestored() if up else protocol.NetworkDegraded(reason)
        frame = encode_frame(protocol.SERVER_ROOM, news.body())
        for conn in list(self.conns.by_fd.values()):
            self.conns.queue(conn, frame)

    # -- the end ------------------------------------------------------------------------

    def _close_everything(self) -> None:
        self.conns.close_all()
        self.membership.clear()
        if self.bus is not None and not self.loop.is_closed():
            self.bus.close()
        if self._own_loop:
            self.loop.close()


@contextlib.contextmanager
def serve(
    host: str = "127.0.0.1", port: int = 0, backend: str = "auto", **kwargs
) -> Iterator[ChatServer]:
    """Run a ChatServer on a background thread for the ``with`` block, then stop it.

    >>> with chatlab.serve(backend="poll") as server:
    ...     print(server.address)
    """
    server = ChatServer(host, port, backend, **kwargs).start()
    try:
        yield server
    finally:
        server.stop(timeout=server.limits.linger_seconds + 5)
