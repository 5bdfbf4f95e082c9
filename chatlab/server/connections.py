"""Client I/O: accept, read frames, deliver broadcasts, and the one way out.

What redis keeps in networking.c: everything between a client's socket and the server's
logic. The server (core.py) decides what a frame means; this module gets bytes in and out,
fast, and takes every connection out the same way.

Design notes:

1. Reading: one recv() per readiness event, fed to the connection's FrameDecoder, which
   returns whole frames whatever the chunking. A level-triggered loop calls us again if more
   is waiting, so one busy client cannot starve the others.
2. Writing is chatlab/stream.py's: a member's queue holds *references* to the one frame
   encoded per broadcast, and each member's queue goes out with one sendmsg() per loop pass.
   A member who stops reading costs its own queue; past ``max_output_buffer`` bytes its
   kernel will not take, it is disconnected (an IRC server's SendQ).
3. One way out: every disconnect (EOF, reset, send error, limit, /quit, shutdown) goes
   through ``disconnect()``, which is safe to call twice and in the middle of a broadcast:
   it stops reading, leaves every room (with a notice to the others, from core.py), tells
   the peer why, and closes once the last bytes are flushed (stream.py's close), or at once
   if the socket is broken.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from .. import protocol
from ..errors import RegistrationError
from ..framing import Frame, FrameDecoder, FrameTooLarge, Skipped, Truncated, encode_frame
from ..loop import Handle, TimerHandle
from ..stream import OPEN, PEER_DONE, Stream, WriteBatch, describe
from .guards import Guards
from .limits import FRAMES_PER_CALLBACK, RECV_SIZE, Limits
from .listener import Listener, refuse

if TYPE_CHECKING:
    from .core import ChatServer

__all__ = ["Connection", "ConnectionInfo", "Connections"]

logger = logging.getLogger("chatlab.server")


@dataclass(frozen=True)
class ConnectionInfo:
    """One connection as ``server.connections()`` shows it (what redis's CLIENT LIST is)."""

    fd: int
    name: str  # the nick, or host:port
    address: tuple  # the peer's (host, port)
    rooms: tuple[int, ...]  # in the order joined
    state: str  # "open", or how far along its way out (chatlab.stream.State)
    input_buffered: int  # bytes read but not yet a whole frame
    output_queued: int  # bytes queued for it that its kernel has not taken
    writing: bool  # its kernel is full: the loop watches it for write readiness


class Connection(Stream):
    """One client: a Stream (its output and its way out), plus its decoder, name and rooms."""

    __slots__ = (
        "address",
        "_nick",
        "name",
        "name_utf8",
        "rooms",
        "decoder",
        "awaiting",
        # the guards' (guards.py): input held, the frame's clock, the token bucket, a pause
        "held_in",
        "frame_since",
        "frame_timer",
        "tokens",
        "tokens_at",
        "flooding_since",
        "resume",
    )

    def __init__(self, conns: Connections, sock: socket.socket, address, limits: Limits) -> None:
        super().__init__(
            conns.loop,
            sock,
            conns.batch,
            max_queued=limits.max_output_buffer,
            on_lost=conns.lost,
            on_overflow=conns.not_reading,
            on_closed=conns.closed,
        )
        self.address = address
        self.nick: str | None = None  # sets name and name_utf8 too
        self.rooms: dict[int, None] = {}  # an ordered set: rooms in the order joined
        self.decoder = FrameDecoder(limits.max_frame_size)
        self.awaiting = 0  # replies still to come from the bus (/who across servers...)
        self.held_in = 0  # bytes of input counted in guards.held_input
        self.frame_since: float | None = None  # when the frame part way in began
        self.frame_timer: TimerHandle | None = None  # its deadline (one at most)
        self.tokens = 0.0  # the token bucket (guards.admit fills it)
        self.tokens_at = 0.0
        self.flooding_since: float | None = None  # since when its bucket was last full
        self.resume: Handle | None = None  # set while not read: over its rate, or its turn

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

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            self.fd,
            self.name,
            tuple(self.address[:2]),
            tuple(list(self.rooms)),
            self.state.value,
            self.decoder.buffered,
            self.queued_bytes(),
            self.writing,
        )

    def __repr__(self) -> str:
        return f"<Connection {self.name} fd={self.fd} {self.state.value}>"


class Connections:
    """Every connection of one server: the listener, the reads, the writes, the way out."""

    def __init__(
        self, server: ChatServer, host: str, port: int, backlog: int, reuse_port: bool
    ) -> None:
        self.server = server
        self.loop = server.loop
        self.limits = server.limits
        self.stats = server.stats
        self.members = server.membership.members  # room -> members: the hot path reads it
        self.by_fd: dict[int, Connection] = {}
        self.batch = WriteBatch(self.loop)
        self._departures: list[tuple] = []  # disconnects being finished; see disconnect()
        self.guards = Guards(self)
        self.listener = Listener(self, host, port, backlog, reuse_port)

    def __len__(self) -> int:
        return len(self.by_fd)

    # -- connecting -------------------------------------------------------------------

    def add(self, sock: socket.socket, address) -> Connection | None:
        """Serve a connected socket (accepted, or handed to us); None if it was refused."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            # Chat lines are small and latency matters: do not let Nagle hold them back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.limits.kernel_send_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.kernel_send_buffer)
        if len(self.by_fd) >= self.limits.max_connections:
            refuse(sock, protocol.ServerFull(self.limits.max_connections), self)
            return None
        conn = Connection(self, sock, address, self.limits)
        try:
            self.loop.add_reader(sock, self._on_readable, conn)
        except RegistrationError as exc:
            # select() cannot watch this fd: tell the client why and go on serving the rest.
            refuse(sock, protocol.CannotAccept(str(exc)), self)
            return None
        self.guards.admit(conn)
        self.by_fd[conn.fd] = conn
        logger.info("connection from %s (fd %d)", conn.name, conn.fd)
        return conn

    # -- reading (design note 1) --------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        room_left = self.limits.max_input_buffer - conn.decoder.buffered
        try:
            data = conn.sock.recv(min(RECV_SIZE, room_left))
        except (BlockingIOError, InterruptedError):
            return  # a spurious wake-up: nothing to read after all
        except OSError as exc:
            self.disconnect(conn, describe(exc), broken=True)
            return
        self.stats.bytes_in += len(data)
        conn.decoder.receive_data(data)
        if not data:
            conn.peer_done()  # handled below, once every frame before it is
        self._take_frames(conn)

    def resume(self, conn: Connection) -> None:
        """conn's turn again (guards.pause): its waiting frames, then reading again."""
        conn.resume = None
        if conn.state is OPEN or conn.state is PEER_DONE:
            if self._take_frames(conn) and conn.state is OPEN:
                self.loop.add_reader(conn.sock, self._on_readable, conn)

    def _take_frames(self, conn: Connection) -> bool:
        """Handle the frames conn's decoder holds, as many as the guards allow; False if
        conn was paused (the rest wait: guards.py notes 2 and 3) or is leaving."""
        guards = self.guards
        budget = guards.budget(conn) if guards.rate else FRAMES_PER_CALLBACK
        if not budget:
            return False
        handled = 0
        # Discussion: a member with several messages in flight often has several in one
        # read, all to one room. They go out as one buffer (a "run"): one reference per
        # member and one pass over the room for all of them, instead of one per message.
        # The run is delivered before anything else this member's frames cause (a command,
        # a join, an error, a disconnect), so every member still sees everything in order.
        run_room = 0
        run: list[bytes] = []
        for event in islice(conn.decoder.events(), budget):
            handled += 1
            if type(event) is Frame:
                self.stats.frames += 1
                message = self._plain_message(conn, event)
                if message is not None:
                    if event.room != run_room and run:
                        self.deliver_run(conn, run_room, run)
                        run = []
                    run_room = event.room
                    run.append(message)
                    continue
            if run:
                self.deliver_run(conn, run_room, run)
                run = []
            if type(event) is Frame:
                self.server.on_frame(conn, event)
            elif type(event) is Skipped:
                skipped = protocol.SkippedBytes(len(event.data), event.reason)
                self.send(conn, protocol.SERVER_ROOM, skipped)
            elif type(event) is FrameTooLarge:
                self.disconnect(conn, protocol.TooLarge(event.limit).sentence())
                return False
            elif type(event) is Truncated:
                logger.info("%s closed in the middle of a frame", conn.name)
            if conn.closing:
                return False  # /quit, or a limit: the rest of what it sent is not for us
        if run:
            self.deliver_run(conn, run_room, run)
        if (handled == budget or guards.rate) and guards.spent(conn, handled, budget):
            return False
        buffered = conn.decoder.buffered
        if buffered or conn.held_in:  # part of a frame: its clock, and the memory it holds
            guards.after_input(conn, buffered, handled)
        if conn.state is PEER_DONE:  # its EOF, after everything it sent before
            if conn.awaiting:
                # `printf '/who\n' | client` sends its command and EOF at once; with a bus the
                # reply is still on its way from Redis. Read no more (EOF stays readable: it
                # would spin) and disconnect once the last reply is queued.
                self.loop.remove_reader(conn.sock)
                return False
            self.disconnect(conn, "closed the connection", goodbye=None)
            return False
        return True

    def _plain_message(self, conn: Connection, frame: Frame) -> bytes | None:
        """The frame to deliver for a plain message to a room conn is in; None otherwise.

        Discussion: the commonest frame of all skips core.py's on_frame(), which decodes the
        body to text, parses it, formats the message and encodes it again: four copies of
        every body, paid once per 9 deliveries in a room of 10 (with the decoder's one-step
        path, skipping them took fanout 10 x 10 from 1.26 to 0.96 us of server CPU per
        delivery, native generator). For ASCII (UTF-8 decoding and encoding change nothing)
        that is not a command, the bytes below are exactly encode_frame(room,
        protocol.Message(conn.name, text).body()); the body cannot contain "</RID:" (the
        decoder ended it at the first one).
        """
        room, body = frame
        if room in conn.rooms and body.isascii() and body[:1] != b"/":
            text = body.rstrip(b"\r\n")
            if text:
                return b"<RID:%d><%b> %b</RID:%d>" % (room, conn.name_utf8, text, room)
        return None

    # -- delivering (design note 2) -----------------------------------------------------

    def deliver_run(self, conn: Connection, room: int, run: list[bytes]) -> None:
        """Messages conn sent to room, encoded: to the other members, here and elsewhere."""
        bus = self.server.bus
        if bus is not None:  # the other servers get each message as text (core.py note 3)
            head, tail = len(b"<RID:%d>" % room), len(b"</RID:%d>" % room)
            for frame in run:
                bus.publish(room, frame[head:-tail].decode())
        data = run[0] if len(run) == 1 else b"".join(run)
        self.deliver(room, data, conn, frames=len(run))

    def deliver(self, room: int, data: bytes, exclude: Connection | None, frames: int = 1) -> None:
        """Queue ``data`` (``frames`` encoded frames) for every member of room here, except
        ``exclude``."""
        members = self.members.get(room)
        if not members:
            return
        self.stats.messages += frames
        # Discussion: this loop body runs once per delivery, the hottest line of the server.
        # A member whose kernel took everything at the last flush gets a reference to the
        # one frame encoded for everybody: no copy per member. The first edition copied the
        # frame into each member's own bytearray, 49 copies of each message in a room of
        # 50, out of cache by the time send() read them again; the README's fanout figures
        # show what the reference and one sendmsg() per member bought. Nothing in this loop
        # changes the room, so it needs no copy of it. Members whose kernel is full, or
        # that are leaving, take queue()'s careful path after it, which may disconnect
        # them (that changes the room: hence the list).
        careful, open_ = [], OPEN  # a local: read once per delivery
        for member in members:
            if member is exclude:
                continue
            if member.writing or member.state is not open_:
                careful.append(member)
                continue
            member.out.append(data)
        self.batch.pending.update(members)  # one C call; the flush skips who has nothing new
        self.stats.deliveries += frames * (len(members) - (exclude in members) - len(careful))
        for member in careful:
            self.queue(member, data, frames)

    def send(self, conn: Connection, room: int, reply: protocol.Reply) -> None:
        """A reply to one connection."""
        self.queue(conn, encode_frame(room, reply.body()))

    def queue(self, conn: Connection, data: bytes, frames: int = 1) -> None:
        """Queue ``data`` for one member: replies, and broadcasts to a member not keeping up."""
        if conn.closing:
            return
        self.stats.deliveries += frames
        conn.write(data)  # over the SendQ, the stream calls not_reading()

    def not_reading(self, conn: Connection) -> None:
        """Over the SendQ: drop what it never read (room for the reason) and cut it off."""
        conn.drop_queue()
        self.disconnect(conn, protocol.NotReading(self.limits.max_output_buffer).sentence())

    # -- the one way out (design note 3) ------------------------------------------------

    def lost(self, conn: Connection, reason: str) -> None:
        """A send failed: the socket is broken."""
        self.disconnect(conn, reason, broken=True)

    def disconnect(
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
                conn.abort()
            return
        conn.stop_reading()
        self.guards.release(conn)
        conn.decoder = FrameDecoder(conn.decoder.max_frame_size)  # its input is not for us
        kind = reason.partition(":")[0]  # "quit: bye" counts as "quit": the keys stay few
        self.stats.disconnects[kind] = self.stats.disconnects.get(kind, 0) + 1
        logger.info("disconnect %s: %s", conn.name, reason)
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
        """The second half of disconnect(): leave every room, then close or linger."""
        self.server.depart(conn, reason, announce)
        if broken:
            conn.abort()
            return
        last = None
        if goodbye == "error":
            last = encode_frame(protocol.SERVER_ROOM, protocol.Disconnected(reason).body())
        elif goodbye == "notice":
            last = encode_frame(protocol.SERVER_ROOM, protocol.Bye(reason).body())
        conn.finish(self.limits.linger_seconds, last)

    def closed(self, conn: Connection) -> None:
        """The stream closed its socket (on_closed): forget the connection."""
        if conn.rooms:  # a socket that closed without going through disconnect()
            self.server.depart(conn, "", announce=False)
        self.by_fd.pop(conn.fd, None)
        self.server.connection_closed()

    def close_all(self) -> None:
        """Release every socket at once, without a goodbye (the server is going away)."""
        for conn in list(self.by_fd.values()):
            conn.release()
        self.by_fd.clear()
        self.batch.close()
        self.listener.close()

    def info(self) -> list[ConnectionInfo]:
        conns = list(self.by_fd.values())  # one C call: safe from another thread
        return [c.info() for c in conns]


def peer_done_waiting(conn: Connection) -> bool:
    """conn sent EOF and the last reply it was owed is queued: time to disconnect it."""
    return not conn.awaiting and conn.state is PEER_DONE
