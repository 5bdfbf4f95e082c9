"""The chat server: rooms, broadcast, nicknames and commands on chatlab's event loop.

Design notes:

1. One thread, one loop, no blocking call. Every socket is non-blocking; the loop tells us
   when to read (always) and when to write (only while a connection has output waiting).
2. Reading: one recv() per readiness event, fed to the connection's FrameDecoder, which
   returns whole frames whatever the chunking. A level-triggered loop calls us again if more
   is waiting, so one busy client cannot starve the others.
3. Writing: a message for a member is queued on that member as a *reference* to the one
   frame encoded for the whole broadcast (no copy per member), and the member is marked
   dirty. Once per loop pass (a call_soon after the handlers), every dirty member gets ONE
   sendmsg() of everything queued for it: the kernel gathers the pieces (scatter-gather).
   What the kernel does not take stays queued, and only then do we ask the loop for write
   readiness. A member who stops reading costs its own queue, never the others' time; past
   ``max_output_buffer`` bytes that its kernel will not take, it is disconnected, like an
   IRC server's SendQ.
4. One way out: every disconnect (EOF, reset, send error, limit, /quit, shutdown) goes
   through ``_disconnect()``, which is safe to call twice and in the middle of a broadcast:
   it unregisters the socket, leaves every room (iterating over a copy) with a notice to
   the others, tells the peer why, and closes once the last bytes are flushed (or at once,
   if the socket is broken).
5. No module state: a server is an object, port 0 picks a free port, and several servers
   run in one process (the notebooks and tests rely on it). ``serve()`` runs one on a
   background thread.
6. Beyond one process (``bus="redis://..."``, chatlab/bus.py): every broadcast is also
   published to Redis, and the others' broadcasts are delivered to our members by the same
   code as ours (``_deliver``). Members are served first and directly, so a server without
   its bus still serves its own members. /who, /rooms and /servers add the other servers'
   members, read from Redis by a callback: the handler never waits.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import protocol
from .backends import BACKENDS, available_backends
from .errors import ChatlabError, RegistrationError
from .framing import (
    MAX_FRAME_SIZE,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    Skipped,
    Truncated,
    encode_frame,
)
from .loop import EventLoop

if TYPE_CHECKING:
    from .bus import BusConfig

__all__ = ["ChatServer", "ConnectionInfo", "Limits", "ServerStats", "main", "serve"]

logger = logging.getLogger("chatlab.server")

DEFAULT_PORT = 9898

# -------------------------------------------------------------------------------- limits
# Each limit is a named default with the reason beside it. Exceeding one gives the peer a
# readable "! ..." line and a log line, never a traceback; the server goes on serving.

# Output queued for one member and not yet taken by its kernel buffer. 1 MiB holds hundreds
# of ordinary messages, or a dozen pasted logs at the maximum frame size; a member further
# behind than that is not reading, and keeping more for it would let one idle client make
# the server grow without bound.
MAX_OUTPUT_BUFFER = 1024 * 1024
# Bytes read from one member but not yet parsed. The decoder keeps at most one incomplete
# frame, so this must exceed the maximum frame size; we never recv() more than fits.
MAX_INPUT_BUFFER = 2 * MAX_FRAME_SIZE
# Each connection costs a fd and two small buffers. 10,000 fits a default fd limit raised
# to its usual hard limit; beyond it a new client is told the server is full.
MAX_CONNECTIONS = 10_000
# Rooms one connection may be in: each room costs the server an entry per member.
MAX_ROOMS_PER_CONNECTION = 100
# How much one recv() takes: large enough for many frames per call, small enough to be fair.
RECV_SIZE = 64 * 1024
# At most this many buffers go to one sendmsg() (the kernel refuses more: EMSGSIZE); the
# rest wait for the next flush, as a partial send's rest does.
IOV_MAX = 1024
# The kernel's send buffer per connection (SO_SNDBUF). None leaves Linux's autotuning, which
# grows it to several MiB for a reader that falls behind; a small value makes a slow reader
# reach max_output_buffer quickly, which is what a lesson or a test of the SendQ wants.
KERNEL_SEND_BUFFER = None
# --workers: how long the workers may take to listen and reach the bus before we give up.
WORKER_START_TIMEOUT = 30.0
# How long a closing connection may take to flush its last output (a notice, the reason),
# and how long shutdown waits for everyone's, before closing anyway.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """The server's limits; ``Limits(max_output_buffer=4096)`` changes one."""

    max_frame_size: int = MAX_FRAME_SIZE
    max_input_buffer: int = MAX_INPUT_BUFFER
    max_output_buffer: int = MAX_OUTPUT_BUFFER
    max_connections: int = MAX_CONNECTIONS
    max_rooms_per_connection: int = MAX_ROOMS_PER_CONNECTION
    linger_seconds: float = LINGER_SECONDS
    kernel_send_buffer: int | None = KERNEL_SEND_BUFFER

    def __post_init__(self) -> None:
        if self.max_input_buffer <= self.max_frame_size:
            raise ValueError(
                f"max_input_buffer ({self.max_input_buffer}) must exceed max_frame_size "
                f"({self.max_frame_size}), or a frame of the maximum size could never arrive"
            )


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


@dataclass(frozen=True)
class ConnectionInfo:
    """One connection as ``server.connections()`` shows it (what redis's CLIENT LIST is)."""

    fd: int
    name: str  # the nick, or host:port
    address: tuple  # the peer's (host, port)
    rooms: tuple[int, ...]  # in the order joined
    state: str  # "open", or how far along its way out it is
    input_buffered: int  # bytes read but not yet a whole frame
    output_queued: int  # bytes queued for it that its kernel has not taken
    writing: bool  # its kernel is full: the loop watches it for write readiness


# -------------------------------------------------------------------- connections, rooms


class Connection:
    """One client: its socket, decoder, output buffer, name and rooms."""

    __slots__ = (
        "sock",
        "fd",
        "address",
        "_nick",
        "name",
        "name_utf8",
        "rooms",
        "decoder",
        "out",
        "queued",
        "writing",
        "closing",
        "closed",
        "linger",
        "peer_eof",
        "awaiting",
    )

    def __init__(self, sock: socket.socket, address, max_frame_size: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.nick: str | None = None  # sets name and name_utf8 too
        self.rooms: dict[int, None] = {}  # an ordered set: rooms in the order joined
        self.decoder = FrameDecoder(max_frame_size)
        self.out: list[bytes] = []  # queued frames, shared with the other members; note 3
        self.queued = 0  # bytes in out, kept exact while writing (see ChatServer._flush)
        self.writing = False  # a writer is registered with the loop
        self.closing = False  # disconnected: flushing the last bytes, reading no more
        self.closed = False
        self.linger = None  # the timer that closes a lingering connection
        self.peer_eof = False  # the peer sent EOF: nothing left to drain before close()
        self.awaiting = 0  # replies still to come from the bus (/who across servers...)

    @property
    def nick(self) -> str | None:
        return self._nick

    @nick.setter
    def nick(self, nick: str | None) -> None:
        # The name is read on every message a member sends: computed here, once per change.
        self._nick = nick
        if nick:
            self.name = nick  # the nick, or host:port as the original chat room showed members
        else:
            host, port = self.address[:2]
            self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.name_utf8 = self.name.encode()

    def queued_bytes(self) -> int:
        """Bytes queued for this member and not yet taken by its kernel."""
        return sum(map(len, self.out))

    def __repr__(self) -> str:
        return f"<Connection {self.name} fd={self.fd}>"


# --------------------------------------------------------------------------- the server


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
        self._conns: dict[int, Connection] = {}
        self._rooms: dict[int, dict[Connection, None]] = {}  # room -> members, join order
        self._nicks: dict[str, Connection] = {}  # nick.lower() -> connection
        self._dirty: dict[Connection, None] = {}  # members with output to flush this pass
        self._flush_scheduled = False
        self._departures: list[tuple] = []  # disconnects being finished; see _disconnect
        self._stats = ServerStats()
        self._shutting_down = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._listener = socket.create_server(
                (host, port), family=family, backlog=backlog, reuse_port=reuse_port
            )
        except BaseException:
            if self._own_loop:
                self.loop.close()
            raise
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()[:2]
        # A spare fd, released when accept() fails for lack of fds (EMFILE), so that we can
        # accept the pending client, tell it why, and close it, instead of leaving it in the
        # backlog where it keeps the listener readable and the loop spinning.
        self._spare_fd = _open_spare_fd()
        self.loop.add_reader(self._listener, self._on_accept)
        self.name = f"{self.address[0]}:{self.address[1]}"
        self.bus = None
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
        stats = ServerStats(**{**vars(self._stats), "disconnects": dict(self._stats.disconnects)})
        stats.connections = len(self._conns)
        stats.rooms = len(self._rooms)
        return stats

    def rooms(self) -> dict[int, list[str]]:
        """room -> member names, in join order (a copy, for notebooks and tests)."""
        # Called from other threads while the loop's thread changes the rooms: iterating the
        # live dicts in Python code would raise "dictionary changed size during iteration".
        # list() copies a dict in one C call, which the GIL does not interrupt.
        rooms = list(self._rooms.items())
        return {room: [c.name for c in list(members)] for room, members in rooms}

    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every connection, in the order accepted; safe from any thread."""
        conns = list(self._conns.values())  # one C call: see rooms()
        return [
            ConnectionInfo(
                fd=c.fd,
                name=c.name,
                address=tuple(c.address[:2]),
                rooms=tuple(list(c.rooms)),
                state="closed" if c.closed else "closing" if c.closing else "open",
                input_buffered=c.decoder.buffered,
                output_queued=c.queued_bytes(),
                writing=c.writing,
            )
            for c in conns
        ]

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
        self.loop.remove_reader(self._listener)
        if self.bus is not None:
            # Our members are all leaving; the other servers' members of their rooms are not.
            self.bus.leave()
            for conn in list(self._conns.values()):
                for r in conn.rooms:
                    self.bus.publish(r, protocol.notice(f"{conn.name} left room {r} ({reason})."))
        for conn in list(self._conns.values()):
            self._disconnect(conn, reason, announce=False, goodbye="notice")
        self._check_drained()
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

    # -- accepting ----------------------------------------------------------------------

    def _on_accept(self) -> None:
        # Accept until the backlog is empty (bounded, so a flood cannot starve the rest).
        for _ in range(64):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse_for_lack_of_fds()
                    return
                # ECONNABORTED and friends: that client gave up before we got to it.
                logger.info("accept failed: %s", exc)
                continue
            self._stats.accepted += 1
            self._add_connection(sock, address)

    def _add_connection(self, sock: socket.socket, address) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            # Chat lines are small and latency matters: do not let Nagle hold them back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.limits.kernel_send_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.kernel_send_buffer)
        if len(self._conns) >= self.limits.max_connections:
            self._refuse(sock, f"server full ({self.limits.max_connections} connections)")
            return
        conn = Connection(sock, address, self.limits.max_frame_size)
        try:
            self.loop.add_reader(sock, self._on_readable, conn)
        except RegistrationError as exc:
            # select() cannot watch this fd: tell the client why and go on serving the rest.
            self._refuse(sock, f"server cannot take more connections: {exc}")
            return
        self._conns[conn.fd] = conn
        logger.info("connection from %s (fd %d)", conn.name, conn.fd)

    def _refuse(self, sock: socket.socket, reason: str) -> None:
        self._stats.refused += 1
        logger.warning("refused a connection: %s", reason)
        with contextlib.suppress(OSError):
            sock.send(encode_frame(protocol.SERVER_ROOM, protocol.error(reason)))
        sock.close()

    def _refuse_for_lack_of_fds(self) -> None:
        if self._spare_fd is None:
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            sock, _ = self._listener.accept()
        except OSError:
            pass
        else:
            self._refuse(sock, "server out of file descriptors; try again later")
        finally:
            self._spare_fd = _open_spare_fd()

    # -- reading ------------------------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        room_left = self.limits.max_input_buffer - conn.decoder.buffered
        try:
            data = conn.sock.recv(min(RECV_SIZE, room_left))
        except (BlockingIOError, InterruptedError):
            return  # a spurious wake-up: nothing to read after all
        except OSError as exc:
            self._disconnect(conn, _describe(exc), broken=True)
            return
        self._stats.bytes_in += len(data)
        conn.decoder.receive_data(data)
        # Discussion: a member with several messages in flight often has several in one
        # read, all to one room. They go out as one buffer (a "run"): one reference per
        # member and one pass over the room for all of them, instead of one per message.
        # The run is delivered before anything else this member's frames cause (a command,
        # a join, an error, a disconnect), so every member still sees everything in order.
        run_room, run = 0, []
        for event in conn.decoder.events():
            if type(event) is Frame:
                self._stats.frames += 1
                message = self._plain_message(conn, event)
                if message is not None:
                    if event.room != run_room and run:
                        self._deliver_run(conn, run_room, run)
                        run = []
                    run_room = event.room
                    run.append(message)
                    continue
            if run:
                self._deliver_run(conn, run_room, run)
                run = []
            if type(event) is Frame:
                self._on_frame(conn, event)
            elif type(event) is Skipped:
                # The reason may quote the peer's closing tag ("mismatched closing tag
                # </RID:800> for <RID:700>"), which no frame body can carry: escape it.
                reason = event.reason.replace("</RID:", "<\\/RID:")
                self._send(
                    conn,
                    protocol.SERVER_ROOM,
                    protocol.error(f"skipped {len(event.data)} bytes: {reason}"),
                )
            elif type(event) is FrameTooLarge:
                self._disconnect(conn, f"frame larger than {event.limit} bytes")
                return
            elif type(event) is Truncated:
                logger.info("%s closed in the middle of a frame", conn.name)
            if conn.closing:
                return  # /quit, or a limit: the rest of what it sent is not for us
        if run:
            self._deliver_run(conn, run_room, run)
        if not data:
            conn.peer_eof = True
            if conn.awaiting:
                # `printf '/who\n' | client` sends its command and EOF at once; with a bus the
                # reply is still on its way from Redis. Read no more (EOF stays readable: it
                # would spin) and disconnect once the last reply is queued.
                self.loop.remove_reader(conn.sock)
                return
            self._disconnect(conn, "closed the connection", goodbye=None)

    def _plain_message(self, conn: Connection, frame: Frame) -> bytes | None:
        """The frame to deliver for a plain message to a room conn is in; None otherwise.

        Discussion: the commonest frame of all skips _on_frame(), which decodes the body to
        text, parses it, formats the message and encodes it again: four copies of every
        body, paid once per 9 deliveries in a room of 10 (with the decoder's one-step path,
        skipping them took fanout 10 x 10 from 1.26 to 0.96 us of server CPU per delivery,
        native generator). For ASCII (UTF-8 decoding and encoding change nothing) that is
        not a command, the bytes below are exactly encode_frame(room,
        protocol.message(conn.name, text)); the body cannot contain "</RID:" (the decoder
        ended it at the first one).
        """
        room, body = frame
        if room in conn.rooms and body.isascii() and body[:1] != b"/":
            text = body.rstrip(b"\r\n")
            if text:
                return b"<RID:%d><%b> %b</RID:%d>" % (room, conn.name_utf8, text, room)
        return None

    def _deliver_run(self, conn: Connection, room: int, run: list[bytes]) -> None:
        if self.bus is not None:  # the other servers get each message as text (note 6)
            head, tail = len(b"<RID:%d>" % room), len(b"</RID:%d>" % room)
            for frame in run:
                self.bus.publish(room, frame[head:-tail].decode())
        data = run[0] if len(run) == 1 else b"".join(run)
        self._deliver_frame(room, data, conn, frames=len(run))

    def _on_frame(self, conn: Connection, frame: Frame) -> None:
        room = frame.room
        parsed = protocol.parse_body(frame.text.rstrip("\r\n"))
        if isinstance(parsed, protocol.Command):
            self._on_command(conn, room, parsed)
            return
        if room == protocol.SERVER_ROOM:
            self._send(conn, room, protocol.error("room 0 is the server's; pick another room"))
            return
        if room not in conn.rooms and not self._join(conn, room):
            return
        if parsed:
            self._broadcast(room, protocol.message(conn.name, parsed), exclude=conn)

    # -- rooms ------------------------------------------------------------------------

    def _join(self, conn: Connection, room: int) -> bool:
        if room == protocol.SERVER_ROOM:
            self._send(conn, room, protocol.error("room 0 is the server's; pick another room"))
            return False
        if room in conn.rooms:
            return True
        if len(conn.rooms) >= self.limits.max_rooms_per_connection:
            self._send(
                conn,
                room,
                protocol.error(
                    f"you are in {len(conn.rooms)} rooms, the most allowed; /leave one first"
                ),
            )
            return False
        members = self._rooms.setdefault(room, {})
        others = [m.name for m in members]
        members[conn] = None
        conn.rooms[room] = None
        # With a bus, the membership is written to Redis before the notice is published
        # (one connection: Redis applies them in this order), so whoever sees the notice
        # and asks /who finds the newcomer there.
        self._member_changed(conn)
        self._broadcast(room, protocol.notice(f"{conn.name} entered room {room}."), exclude=conn)

        def reply(network):
            names = others + _remote_members(network, room)
            here = ", ".join(names[:20]) + (
                f" and {len(names) - 20} more" if len(names) > 20 else ""
            )
            self._send(
                conn,
                room,
                protocol.notice(
                    f"you entered room {room}; here: {here or 'nobody else yet'}"
                    + self._degraded_suffix(network)
                ),
            )

        self._with_network(conn, reply)
        logger.info("%s joined room %d", conn.name, room)
        return True

    def _leave(self, conn: Connection, room: int, why: str = "") -> None:
        members = self._rooms.get(room)
        if members is None or conn not in members:
            return
        del members[conn]
        del conn.rooms[room]
        self._member_changed(conn)
        if not members:
            del self._rooms[room]
        suffix = f" ({why})" if why else ""
        self._broadcast(room, protocol.notice(f"{conn.name} left room {room}{suffix}."))
        logger.info("%s left room %d%s", conn.name, room, f" ({why})" if why else "")

    # -- commands ---------------------------------------------------------------------

    def _on_command(self, conn: Connection, room: int, cmd: protocol.Command) -> None:
        handler = getattr(self, f"_cmd_{cmd.name}", None)
        if handler is None or cmd.name not in protocol.COMMANDS:
            self._send(conn, room, protocol.error(f"unknown command /{cmd.name}; try /help"))
            return
        handler(conn, room, cmd.arg)

    def _room_arg(self, conn: Connection, room: int, arg: str) -> int | None:
        if not arg:
            return room
        if arg.isdigit() and len(arg) <= 9:
            return int(arg)
        self._send(conn, room, protocol.error(f"not a room number: {arg!r}"))
        return None

    def _cmd_nick(self, conn: Connection, room: int, arg: str) -> None:
        problem = protocol.validate_nick(arg)
        owner = self._nicks.get(arg.lower())
        if problem is None and owner is not None and owner is not conn:
            problem = f"nick {arg!r} is taken"
        if problem:
            self._send(conn, room, protocol.error(problem))
            return
        if conn.nick == arg:
            self._send(conn, room, protocol.notice(f"you are already known as {arg}."))
            return
        old = conn.name
        if conn.nick:
            del self._nicks[conn.nick.lower()]
        conn.nick = arg
        self._nicks[arg.lower()] = conn
        if self.bus is not None and conn.rooms:
            self.bus.member_changed(old, None)  # gone under the old name...
            self._member_changed(conn)  # ...and here under the new one
        self._send(conn, room, protocol.notice(f"you are now known as {arg}."))
        for r in list(conn.rooms):
            self._broadcast(r, protocol.notice(f"{old} is now known as {arg}."), exclude=conn)

    def _cmd_join(self, conn: Connection, room: int, arg: str) -> None:
        target = self._room_arg(conn, room, arg)
        if target is not None:
            if target in conn.rooms:
                self._send(conn, target, protocol.notice(f"you are already in room {target}."))
            else:
                self._join(conn, target)

    def _cmd_leave(self, conn: Connection, room: int, arg: str) -> None:
        target = self._room_arg(conn, room, arg)
        if target is None:
            return
        if target not in conn.rooms:
            self._send(conn, room, protocol.error(f"you are not in room {target}"))
            return
        self._leave(conn, target)
        self._send(conn, target, protocol.notice(f"you left room {target}."))

    def _cmd_who(self, conn: Connection, room: int, arg: str) -> None:
        target = self._room_arg(conn, room, arg)
        if target is None:
            return
        local = [m.name for m in self._rooms.get(target, ())]

        def reply(network):
            names = local + _remote_members(network, target)
            count = _plural(len(names), "member")
            servers = bool(local) + sum(
                any(target in rooms for rooms in members.values()) for _, members in network or ()
            )
            if servers > 1:
                count += f" on {_plural(servers, 'server')}"
            listing = ", ".join(names) or "nobody"
            text = f"room {target}: {listing} ({count}){self._degraded_suffix(network)}"
            self._send(conn, room, protocol.notice(text))

        self._with_network(conn, reply)

    def _cmd_rooms(self, conn: Connection, room: int, arg: str) -> None:
        local = {r: len(m) for r, m in self._rooms.items()}
        mine = set(conn.rooms)

        def reply(network):
            counts = dict(local)
            for _, members in network or ():
                for rooms in members.values():
                    for r in rooms:
                        counts[r] = counts.get(r, 0) + 1
            if not counts:
                text = "no rooms yet"
            else:
                text = "rooms (members): " + ", ".join(
                    f"{r} ({n}{', you' if r in mine else ''})" for r, n in sorted(counts.items())
                )
            self._send(conn, room, protocol.notice(text + self._degraded_suffix(network)))

        self._with_network(conn, reply)

    def _cmd_servers(self, conn: Connection, room: int, arg: str) -> None:
        here = len(self._membership())

        def reply(network):
            entries = [f"{self.name} (this one, {_plural(here, 'member')})"]
            entries += [f"{n} ({_plural(len(members), 'member')})" for n, members in network or ()]
            count = _plural(len(entries), "server")
            if self.bus is None:
                text = f"{count}: {entries[0]}; no bus: rooms end at this server"
            else:
                text = f"{count}: {', '.join(entries)}{self._degraded_suffix(network)}"
            self._send(conn, room, protocol.notice(text))

        self._with_network(conn, reply)

    def _cmd_me(self, conn: Connection, room: int, arg: str) -> None:
        if not arg:
            self._send(conn, room, protocol.error("usage: /me ACTION"))
            return
        if room not in conn.rooms and not self._join(conn, room):
            return
        self._broadcast(room, protocol.notice(f"{conn.name} {arg}"), exclude=conn)

    def _cmd_quit(self, conn: Connection, room: int, arg: str) -> None:
        self._disconnect(conn, f"quit: {arg}" if arg else "quit", goodbye="notice")

    def _cmd_help(self, conn: Connection, room: int, arg: str) -> None:
        self._send(conn, room, protocol.notice(protocol.HELP_TEXT))

    # -- the bus (design note 6) --------------------------------------------------------

    def _start_bus(self, bus: str | BusConfig) -> None:
        from .bus import BusConfig, RedisBus  # only now: hiredis is an optional extra

        config = BusConfig(bus) if isinstance(bus, str) else bus
        self.name = config.name or self.name
        self.bus = RedisBus(
            config,
            self.loop,
            name=self.name,
            on_message=self._deliver,
            on_status=self._on_bus_status,
            members=self._membership,
        )

    def _membership(self) -> dict[str, list[int]]:
        """member name -> rooms, for everyone here in a room (what the bus registers)."""
        return {c.name: list(c.rooms) for c in self._conns.values() if c.rooms and not c.closed}

    def _member_changed(self, conn: Connection) -> None:
        """Tell the bus conn's rooms now (after a join or a leave): /who elsewhere reads them."""
        if self.bus is not None:
            self.bus.member_changed(conn.name, list(conn.rooms))

    def _with_network(self, conn: Connection, then) -> None:
        """then(others): the other servers' members, [] without a bus, None if it is down.

        With a bus this is a round trip to Redis: then() runs later, from a reply (always:
        a lost bus answers None), so a client that sent EOF meanwhile waits for it."""
        if self.bus is None:
            then([])
            return

        def answer(network) -> None:
            conn.awaiting -= 1
            then(network)
            if not conn.awaiting and conn.peer_eof and not conn.closing:
                self._disconnect(conn, "closed the connection", goodbye=None)

        conn.awaiting += 1
        self.bus.network(answer)

    def _degraded_suffix(self, network) -> str:
        if self.bus is not None and network is None:
            return " (network degraded: other servers not shown)"
        return ""

    def _on_bus_status(self, up: bool, reason: str) -> None:
        if up and not self._bus_degraded:
            return  # the first connection: nobody was told anything else
        self._bus_degraded = not up
        if up:
            text = "network restored: rooms reach every server again"
        else:
            text = (
                f"network degraded ({reason}): until it is back, rooms reach the members "
                "on this server only"
            )
        frame = encode_frame(protocol.SERVER_ROOM, protocol.notice(text))
        for conn in list(self._conns.values()):
            self._queue(conn, frame)

    # -- writing ----------------------------------------------------------------------

    def _broadcast(self, room: int, body: str, exclude: Connection | None = None) -> None:
        """Send body to every member of room except ``exclude``, on every server."""
        if self.bus is not None:
            self.bus.publish(room, body)  # design note 6; a no-op, counted, while it is down
        self._deliver(room, body, exclude)

    def _deliver(self, room: int, body: str, exclude: Connection | None = None) -> None:
        """Queue ``body`` for every member of room here, except ``exclude``."""
        if room in self._rooms:
            self._deliver_frame(room, encode_frame(room, body), exclude)

    def _deliver_frame(
        self, room: int, data: bytes, exclude: Connection | None, frames: int = 1
    ) -> None:
        """Queue ``data`` (``frames`` encoded frames) for every member of room here, except
        ``exclude``."""
        members = self._rooms.get(room)
        if not members:
            return
        self._stats.messages += frames
        # Discussion: this loop body runs once per delivery, the hottest line of the server.
        # A member whose kernel took everything at the last flush gets a reference to the
        # one frame encoded for everybody: no copy per member. The first edition copied the
        # frame into each member's own bytearray, 49 copies of each message in a room of
        # 50, out of cache by the time send() read them again; the README's fanout figures
        # show what the reference and one sendmsg() per member bought. Nothing in this loop
        # changes the room, so it needs no copy of it. Members whose kernel is full, or
        # that are leaving, take _queue()'s careful path after it, which may disconnect
        # them (that changes the room: hence the list).
        careful = []
        for member in members:
            if member is exclude:
                continue
            if member.writing or member.closing:
                careful.append(member)
                continue
            member.out.append(data)
        self._dirty.update(members)  # one C call; _flush_dirty skips who has nothing new
        self._stats.deliveries += frames * (len(members) - (exclude in members) - len(careful))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_dirty)
        for member in careful:
            self._queue(member, data, frames)

    def _send(self, conn: Connection, room: int, body: str) -> None:
        self._queue(conn, encode_frame(room, body))

    def _queue(self, conn: Connection, data: bytes, frames: int = 1) -> None:
        """Queue ``data`` for one member: replies, and broadcasts to a member not keeping up."""
        if conn.closing:
            return
        conn.out.append(data)
        self._stats.deliveries += frames
        if conn.writing:
            # Its kernel took only part of the last flush: what we queue now is what it
            # will not take, which is what the limit is on (design note 3).
            conn.queued += len(data)
            if conn.queued > self.limits.max_output_buffer:
                self._not_reading(conn)
            return
        self._dirty[conn] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_dirty)

    def _not_reading(self, conn: Connection) -> None:
        """Over the SendQ: drop what it never read (room for the reason) and cut it off."""
        conn.out.clear()
        conn.queued = 0
        limit = self.limits.max_output_buffer
        self._disconnect(conn, f"output buffer over {limit} bytes: you are not reading")

    def _flush_dirty(self) -> None:
        """Once per loop pass: one send per member with queued output (design note 3)."""
        self._flush_scheduled = False
        while self._dirty:
            dirty, self._dirty = self._dirty, {}
            for conn in dirty:
                if conn.out and not conn.writing and not conn.closing:
                    self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        out = conn.out
        batch = out if len(out) <= IOV_MAX else out[:IOV_MAX]
        try:
            sent = _send_gathered(conn.sock, batch)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._disconnect(conn, _describe(exc), broken=True)
            return
        self._stats.bytes_out += sent
        if batch is out and sent == sum(map(len, out)):
            out.clear()  # the common case: the kernel took it all
        else:
            _consume(out, sent)
        if out:
            conn.queued = sum(map(len, out))
            if conn.queued > self.limits.max_output_buffer and not conn.closing:
                # Many senders can queue more than the limit for a member in one pass; this
                # is after its kernel took what it could, so the member is truly behind.
                self._not_reading(conn)
                return
            if not conn.writing:
                conn.writing = True
                self.loop.add_writer(conn.sock, self._flush, conn)
        else:
            conn.queued = 0
            if conn.writing:
                conn.writing = False
                self.loop.remove_writer(conn.sock)
            if conn.closing:
                self._half_close(conn)

    def _half_close(self, conn: Connection) -> None:
        """The goodbye is flushed: send FIN, then wait for the peer's before close().

        Discussion: close() on a socket with unread input makes the kernel send a reset
        (RST) instead of an orderly FIN, and a reset lets the peer's kernel discard what we
        sent last, the reason for the disconnect, before the peer reads it. So we shut our
        side down, read and drop whatever the peer still sends until its EOF, and only then
        close. The linger timer bounds the wait for a peer that never closes.
        """
        if conn.peer_eof:
            self._close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.loop.add_reader(conn.sock, self._drain_until_eof, conn)

    def _drain_until_eof(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)

    # -- the one way out ----------------------------------------------------------------

    def _disconnect(
        self,
        conn: Connection,
        reason: str,
        *,
        broken: bool = False,
        announce: bool = True,
        goodbye: str | None = "error",
    ) -> None:
        """Every disconnect comes here. Safe to call twice, and during a broadcast.

        ``broken``: the socket failed (reset, send error): close at once, write nothing.
        Otherwise the peer is told why (``goodbye``: "error", "notice" or None) and the
        connection lingers until that is flushed, at most ``limits.linger_seconds``.
        ``announce=False`` (shutdown) skips the leave notices: everyone is going.
        """
        if conn.closing:
            if broken:
                # Already on its way out, and the socket failed while flushing the last
                # bytes (a peer that reset right after /quit, or during shutdown): nothing
                # more can be sent, so close now instead of waiting out the linger timer.
                self._close(conn)
            return
        conn.closing = True
        kind = reason.partition(":")[0]  # "quit: bye" counts as "quit": the keys stay few
        self._stats.disconnects[kind] = self._stats.disconnects.get(kind, 0) + 1
        logger.info("disconnect %s: %s", conn.name, reason)
        self.loop.remove_reader(conn.sock)
        # Discussion: leaving a room sends the others a notice, which can push a member
        # that is not reading over its output limit, whose disconnect sends notices of its
        # own, and so on: one nested call per member cut off, and a room of a few hundred
        # stalled members overflowed Python's stack (RecursionError, connections left half
        # closed). So a disconnect that starts while another is being finished only joins
        # the list (it reads and gets nothing more: it is closing), and the outermost call
        # finishes them one after the other. To every caller it is still done on return.
        self._departures.append((conn, reason, broken, announce, goodbye))
        if len(self._departures) > 1:
            return
        try:
            i = 0
            while i < len(self._departures):
                self._depart(*self._departures[i])
                i += 1
        finally:
            self._departures.clear()

    def _depart(
        self, conn: Connection, reason: str, broken: bool, announce: bool, goodbye: str | None
    ) -> None:
        """The second half of _disconnect: leave every room, then close or linger."""
        for room in list(conn.rooms):
            if announce:
                self._leave(conn, room, reason)
            else:
                self._leave_quietly(conn, room)
        if conn.nick:
            self._nicks.pop(conn.nick.lower(), None)
        if broken:
            self._close(conn)
            return
        if goodbye == "error":
            conn.out.append(
                encode_frame(protocol.SERVER_ROOM, protocol.error(f"disconnected: {reason}"))
            )
        elif goodbye == "notice":
            conn.out.append(encode_frame(protocol.SERVER_ROOM, protocol.notice(f"bye ({reason}).")))
        # Discussion: the commonest disconnect is a peer's EOF with nothing left to send, and
        # it closes right here (_half_close sees peer_eof), so the linger timer is armed only
        # for a connection still open after this. It used to be armed first, for every one:
        # _close() cancelled it at once, but a cancelled timer stays in the loop's heap, and
        # holds its connection, until it is due. At 14,000 connections/s that was 28,000 dead
        # timers, each keeping a socket, a decoder and their dicts alive for the garbage
        # collector to walk (9% of the server's samples under perf) and the heap to sift.
        # Churn (bench "churn", 8 at a time) went from 67.9 to 58.5 us of server CPU per
        # connection: about 2 us of it the send of nothing (sendmsg([])) it also skips now,
        # the rest the timers.
        if conn.out or conn.writing:
            self._flush(conn)  # ends in _half_close() once the kernel has taken it all
        else:
            self._half_close(conn)
        if not conn.closed:
            conn.linger = self.loop.call_later(self.limits.linger_seconds, self._close, conn)

    def _leave_quietly(self, conn: Connection, room: int) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop(conn, None)
            if not members:
                del self._rooms[room]
        if room in conn.rooms:
            del conn.rooms[room]
            self._member_changed(conn)

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.closing = True
        if conn.linger is not None:
            conn.linger.cancel()
        for room in list(conn.rooms):  # a broken socket that never went through leave
            self._leave_quietly(conn, room)
        self.loop.remove_reader(conn.sock)
        self.loop.remove_writer(conn.sock)
        self._dirty.pop(conn, None)
        self._conns.pop(conn.fd, None)
        conn.out = []
        conn.queued = 0
        conn.sock.close()
        if self._shutting_down:
            self._check_drained()

    def _check_drained(self) -> None:
        if not self._conns:
            self.loop.stop()

    def _close_everything(self) -> None:
        for conn in list(self._conns.values()):
            conn.closed = True
            conn.sock.close()
        self._conns.clear()
        self._rooms.clear()
        self._nicks.clear()
        if self.bus is not None and not self.loop.is_closed():
            self.bus.close()
        if self._listener.fileno() >= 0 and not self.loop.is_closed():
            self.loop.remove_reader(self._listener)
        self._listener.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        if self._own_loop:
            self.loop.close()


def _open_spare_fd() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None


# Windows' sockets have no sendmsg() in Python: there the pieces are joined first.
_SCATTER_GATHER = hasattr(socket.socket, "sendmsg")


def _send_gathered(sock: socket.socket, chunks: list[bytes]) -> int:
    """One send of several buffers; the kernel gathers them (no join, no copy here)."""
    if len(chunks) == 1:
        return sock.send(chunks[0])
    if _SCATTER_GATHER:
        return sock.sendmsg(chunks)
    return sock.send(b"".join(chunks))


def _consume(out: list[bytes], sent: int) -> None:
    """Drop the ``sent`` bytes from the front of ``out``: whole frames, then part of one."""
    done = 0
    while done < len(out) and sent >= len(out[done]):
        sent -= len(out[done])
        done += 1
    del out[:done]
    if sent:
        out[0] = out[0][sent:]  # a partial send: copy the rest of this one frame only


def _remote_members(network, room: int) -> list[str]:
    """The names in room on the other servers, from RedisBus.network()'s answer."""
    return [
        name for _, members in network or () for name, rooms in members.items() if room in rooms
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _describe(exc: OSError) -> str:
    """A short reason for the logs and the stats: 'connection reset', 'broken pipe'..."""
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    return exc.strerror.lower() if exc.strerror else str(exc)


# ---------------------------------------------------------------------- serve() for tests


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


# -------------------------------------------------------------------------------- the CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.server",
        description="A multi-room chat server speaking <RID:n>text</RID:n> frames.",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        default="auto",
        help=f"readiness syscall (available here: {', '.join(available_backends())})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    net = parser.add_argument_group("several servers (needs chatlab[redis])")
    net.add_argument(
        "--bus",
        metavar="URL",
        help="share rooms with other servers through Redis: redis://127.0.0.1:6379/0",
    )
    net.add_argument("--bus-name", metavar="NAME", help="this server in /servers (host:port)")
    net.add_argument(
        "--bus-namespace", default="chatlab", metavar="NS", help="prefix of keys and channels"
    )
    net.add_argument(
        "--bus-ttl",
        type=float,
        default=None,
        metavar="S",
        help="a server that stops its heartbeat is gone from /who after S seconds (5)",
    )
    net.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on one port (SO_REUSEPORT), joined by --bus",
    )
    net.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    net.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    limits = parser.add_argument_group("limits")
    for name, default in vars(Limits()).items():
        limits.add_argument(
            "--" + name.replace("_", "-"),
            type=int if default is None else type(default),
            default=default,
            metavar="N",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        if not args.bus:
            parser.error("--workers N needs --bus URL: the workers share rooms through it")
        return _run_workers(args, sys.argv[1:] if argv is None else argv)
    bus = None
    if args.bus:
        from .bus import DEFAULT_TTL, BusConfig

        bus = BusConfig(args.bus, args.bus_name, args.bus_namespace, args.bus_ttl or DEFAULT_TTL)
    try:
        server = ChatServer(
            args.host,
            args.port,
            args.backend,
            limits=Limits(**{name: getattr(args, name) for name in vars(Limits())}),
            reuse_port=args.reuse_port,
            bus=bus,
        )
    except (ChatlabError, ValueError) as exc:
        print(f"chatlab.server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"chatlab.server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    def on_signal(signum, frame):
        # A signal handler runs between two bytecodes of the main thread: hand the work to
        # the loop, whose wake-up socket interrupts the syscall it may be sleeping in.
        with contextlib.suppress(ChatlabError):  # the loop already closed: we are exiting
            server.loop.call_soon_threadsafe(
                server.shutdown, f"server stopped ({signal.strsignal(signum)})"
            )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = server.address
    via = ""
    if bus:
        # Give the bus a moment to come up, so that "listening" also means "on the network"
        # (scripts and the benchmarks wait for this line). If Redis is down, serve anyway.
        deadline = time.monotonic() + 3.0
        while not server.bus.up and time.monotonic() < deadline:
            server.loop.run_once(0.05)
        state = "" if server.bus.up else f", down ({server.bus.statistics().last_error}), retrying"
        via = f", bus {args.bus} as {server.name}{state}"
    print(
        f"chatlab server on {host}:{port} (backend {server.backend}{via}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    if args.ready_fd is not None:  # a worker tells its parent it is listening
        os.write(args.ready_fd, b"1")
        os.close(args.ready_fd)
    server.serve_forever()
    return 0


def _run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """--workers N: N server processes on one port, sharing rooms through the bus.

    Discussion: with SO_REUSEPORT, several sockets listen on one port and the kernel spreads
    new connections over them (by a hash of the client's address and port). Each worker is
    an ordinary single-threaded server, so N workers use N cores; the bus makes them one
    chat network. Here we reserve the port (bound, never listening, so it gets no clients),
    start the workers with --reuse-port, and wait for them; Ctrl-C reaches the whole
    process group, and SIGTERM is passed on.
    """
    import subprocess

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    reserve = socket.socket(family)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserve.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"chatlab.server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    port = reserve.getsockname()[1]
    base = _without_options(argv, {"--workers", "--port", "--bus-name"})
    name = args.bus_name or f"{args.host}:{port}"

    def start_worker(i: int, ready_fd: int | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "chatlab.server", *base, "--port", str(port)]
        cmd += ["--reuse-port", "--bus-name", f"{name}/{i + 1}"]
        if ready_fd is None:
            return subprocess.Popen(cmd)
        return subprocess.Popen([*cmd, "--ready-fd", str(ready_fd)], pass_fds=(ready_fd,))

    read_fd, write_fd = os.pipe()
    workers = [start_worker(i, write_fd) for i in range(args.workers)]
    os.close(write_fd)
    ready = 0
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    with os.fdopen(read_fd, "rb") as pipe:
        # One byte per worker that is listening (and on the bus); EOF once every worker
        # has written or died. Bounded: a worker that hangs must not hang us.
        while ready < args.workers and time.monotonic() < deadline:
            if select.select([pipe], [], [], deadline - time.monotonic())[0]:
                if not pipe.read(1):
                    break
                ready += 1
    if ready < args.workers:
        print(f"chatlab.server: {args.workers - ready} worker(s) failed to start", file=sys.stderr)
        for proc in workers:
            proc.terminate()
            proc.wait()
        return 1

    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"chatlab: {args.workers} workers on {args.host}:{port} (bus {args.bus}); "
        "Ctrl-C stops them",
        file=sys.stderr,
        flush=True,
    )
    # Supervise: a worker that dies (a crash, the OOM killer, a stray kill -9) is started
    # again, so the port keeps N listeners; the others serve meanwhile. One that keeps
    # dying (5 times in a minute) is given up on, with a line saying so.
    restarts: list[list[float] | None] = [[] for _ in workers]
    while any(proc.poll() is None for proc in workers) or not stopping:
        for i, proc in enumerate(workers):
            code = proc.poll()
            if code is None or stopping or restarts[i] is None:
                continue
            now = time.monotonic()
            restarts[i] = [t for t in restarts[i] if now - t < 60] + [now]
            if len(restarts[i]) > 5:
                print(f"chatlab: worker {i + 1} keeps exiting; not restarting it", file=sys.stderr)
                restarts[i] = None
                continue
            print(f"chatlab: worker {i + 1} exited ({code}); restarting it", file=sys.stderr)
            workers[i] = start_worker(i)
        if not stopping and all(r is None for r in restarts):
            break  # every worker given up on
        time.sleep(0.2)
    reserve.close()
    codes = [proc.wait() for proc in workers]
    return max(codes, key=abs)


def _without_options(argv: list[str], names: set[str]) -> list[str]:
    """argv without the named options and their values (``--port 0`` and ``--port=0``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.split("=", 1)[0] not in names:
            out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())
