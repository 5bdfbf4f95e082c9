"""The two designs chatlab does NOT use, kept so that notebook 01 can run them beside it.

"Why multiplexing?" is best answered by watching the alternatives:

- ``BlockingServer``, the textbook server: ``accept()`` one client, ``recv()`` and reply
  until it leaves, then ``accept()`` the next. While one client is served, the others wait:
  their ``connect()`` succeeded (the kernel completes the handshake and queues them in the
  listen backlog) and their bytes sit in the kernel's buffers, but nobody reads them.
- ``ThreadedServer``: one thread per client, so every client is served at once. The price:
  a thread and its stack per client, a lock around the room table that all threads share,
  a second lock per socket so that two threads never interleave their bytes on it, and a
  member who stops reading blocks, in ``sendall()``, every thread that sends to it.

``chatlab.ChatServer`` does ThreadedServer's job on one thread with an event loop
(chatlab/server.py). Do not build on these two: they exist to be compared with it.

Both speak enough of chatlab's protocol (chatlab/protocol.py) for ``ScriptedClient``:
an empty frame joins a room (the reply is a ``protocol.YouEntered``), ``/nick NAME`` names
you, and any other text is a message. ThreadedServer sends it to the other members of the
room, as ChatServer does; BlockingServer can have no other members, so it echoes it back
(``protocol.Echo``) to show that it was served. Frames are cut by chatlab's FrameDecoder;
every reply is one of protocol.py's types, so they say what ChatServer says, in its words.

Stopping a thread that is blocked in a system call. A flag is not enough (the thread is
asleep in the kernel, not looking at it) and ``close()`` from another thread does not wake
a blocked ``accept()``. So ``stop()`` shuts the sockets down instead: on Linux, a blocked
``accept()`` then fails, a blocked ``recv()`` returns b"" as at EOF, and a blocked
``sendall()`` fails with EPIPE. Waking ``accept()`` that way is Linux behaviour; on macOS
and the BSDs shutting down a listening socket may fail or wake nobody, so ``stop()`` also
connects to the listener, which makes ``accept()`` return everywhere. Every thread sees
the flag and returns, and ``stop()``
joins them with a bound. Only the thread that owns a socket closes it, so a fd number is
never closed twice.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from . import protocol
from .framing import Frame, FrameDecoder, FrameTooLarge, Skipped, encode_frame

__all__ = ["BlockingServer", "ThreadedServer"]

# How much one recv() takes. Frames are bounded by FrameDecoder's max_frame_size (64 KiB).
RECV_SIZE = 64 * 1024
# Clients the kernel queues, handshake done, before the program accept()s them.
BACKLOG = 64
# Each ThreadedServer client costs a thread; past this many, a new client is refused.
MAX_THREADS = 500


class _Client:
    """One connected client: its socket, decoder, name and rooms, and a lock for sending."""

    def __init__(self, sock: socket.socket, address) -> None:
        self.sock = sock
        self.address = address
        self.decoder = FrameDecoder()
        self.nick: str | None = None
        self.rooms: set[int] = set()
        # Threads other than this client's own send to it (broadcasts). sendall() may write
        # in several pieces; without this lock two frames could interleave on the wire.
        self.send_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.nick or "{}:{}".format(*self.address[:2])

    def send(self, room: int, reply: protocol.Reply | str) -> None:
        """Send one frame, a reply (or a body protocol.py formatted already), blocking until
        the kernel took all of it. Errors are ignored: a broken client is noticed, and
        cleaned up, by the thread that reads from it."""
        body = reply if isinstance(reply, str) else reply.body()
        with self.send_lock, contextlib.suppress(OSError):
            self.sock.sendall(encode_frame(room, body))


def _shutdown(sock: socket.socket) -> None:
    """Wake any thread blocked on sock (see the module docstring). Never fails."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Server:
    """What both servers share: the listener, start/stop, reading frames, /nick."""

    kind = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._listener = socket.create_server((host, port), backlog=BACKLOG)
        self.address = self._listener.getsockname()[:2]
        self._lock = threading.Lock()  # guards everything below, and ThreadedServer's rooms
        self._stopping = False
        self._clients: set[_Client] = set()  # connected now
        self._threads: set[threading.Thread] = set()  # client threads still running
        self._thread: threading.Thread | None = None  # the accept() thread

    # -- life cycle -------------------------------------------------------------------

    def start(self):
        """Run the accept() loop on a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"{self.kind}-{self.address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Wake and end every thread, close the listener. False if a thread outlived timeout.

        Safe to call twice, from any thread but the server's own, and before start()."""
        if self._listener.fileno() == -1:
            return True  # a previous stop() finished (it closes the listener last)
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True  # from now on, accept() hands out no client and no thread
        # Wake the accept() thread. POSIX does not say what shutdown() does to a listening
        # socket. On Linux it succeeds and a blocked accept() fails at once (EINVAL; notebook
        # 01 shows it live). On macOS and the BSDs it may fail (ENOTCONN) or succeed and wake
        # nobody, so do not rely on it alone: also connect to the listener while the thread
        # runs. A connection makes a blocked accept() return on every platform; the loop then
        # sees the flag and closes it. (On Linux, after shutdown(), that connect is refused at
        # once: harmless.) close() would not do: it does not wake a thread blocked in accept().
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(self.address, timeout=1).close()
        threads = [self._thread] if self._thread is not None else []
        for _ in range(2):  # again once the accept() thread is gone: it may have added one
            with self._lock:
                clients, threads = list(self._clients), threads + list(self._threads)
            for client in clients:
                _shutdown(client.sock)  # a blocked recv() returns b"", a sendall() fails
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in threads)
        if finished:
            self._listener.close()
        return finished

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- accepting --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()  # blocks until a client comes
            except ConnectionAbortedError:
                continue  # that client gave up before we got to it
            except OSError:
                return  # stop() shut the listener down
            client = _Client(sock, address)
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                self._clients.add(client)
            self._on_accept(client)

    def _on_accept(self, client: _Client) -> None:
        raise NotImplementedError

    def _release(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)
        client.sock.close()

    # -- one client ---------------------------------------------------------------------

    def _serve(self, client: _Client) -> None:
        """Read and handle frames from one client until it leaves (or stop() wakes us)."""
        while True:
            try:
                data = client.sock.recv(RECV_SIZE)  # blocks; this thread does nothing else
            except OSError:
                data = b""  # a reset ends the client like an EOF
            client.decoder.receive_data(data)
            for event in client.decoder.events():
                if isinstance(event, Frame):
                    self._on_frame(client, event)
                elif isinstance(event, Skipped):
                    client.send(0, protocol.SkippedBytes(len(event.data), event.reason))
                elif isinstance(event, FrameTooLarge):
                    client.send(0, protocol.TooLarge(event.limit))
                    return
            if not data:
                return

    def _on_frame(self, client: _Client, frame: Frame) -> None:
        room, body = frame.room, protocol.parse_body(frame.text.rstrip("\r\n"))
        if isinstance(body, protocol.Command):
            if body.name != "nick":
                client.send(room, protocol.OnlyNick())
            elif problem := protocol.check_nick(body.arg):
                client.send(room, problem)
            else:  # no uniqueness check: names are not this module's lesson
                client.nick = body.arg
                client.send(room, protocol.YouRenamed(body.arg))
        elif room == protocol.SERVER_ROOM:
            client.send(room, protocol.RoomZero())
        else:
            if room not in client.rooms:
                self._join(client, room)
            if body:
                self._message(client, room, body)

    def _join(self, client: _Client, room: int) -> None:
        raise NotImplementedError

    def _message(self, client: _Client, room: int, text: str) -> None:
        raise NotImplementedError


class BlockingServer(_Server):
    """One client at a time: ``with BlockingServer() as server:`` (port 0, a daemon thread).

    ``clients_served`` counts the clients that came and left."""

    kind = "blocking-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.clients_served = 0

    def _on_accept(self, client: _Client) -> None:
        # The whole point: serve this client to the end, on the accept() thread. Until it
        # leaves, nobody calls accept() and nobody reads from anyone else.
        try:
            self._serve(client)
        finally:
            self._release(client)
            self.clients_served += 1

    def _join(self, client: _Client, room: int) -> None:
        client.rooms.add(room)
        alone = "this server serves one client at a time"
        client.send(room, protocol.YouEntered(room, why_alone=alone))

    def _message(self, client: _Client, room: int, text: str) -> None:
        client.send(room, protocol.Echo(text))


class ThreadedServer(_Server):
    """A thread per client: ``with ThreadedServer() as server:`` (port 0, daemon threads)."""

    kind = "threaded-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._rooms: dict[int, dict[_Client, None]] = {}  # room -> members; under _lock
        self._count = 0  # clients ever accepted, to name their threads

    def rooms(self) -> dict[int, list[str]]:
        """room -> member names, in join order (a copy, as ChatServer.rooms() gives)."""
        with self._lock:
            return {room: [c.name for c in members] for room, members in self._rooms.items()}

    def _on_accept(self, client: _Client) -> None:
        with self._lock:
            full = len(self._threads) >= MAX_THREADS
            self._count += 1
            thread = threading.Thread(
                target=self._client_thread,
                args=(client,),
                name=f"{self.kind}-{self.address[1]}-client-{self._count}",
                daemon=True,
            )
            if not full:
                self._threads.add(thread)
        if full:
            client.send(0, protocol.ServerFull(MAX_THREADS, "threads"))
            self._release(client)
        else:
            thread.start()

    def _client_thread(self, client: _Client) -> None:
        try:
            self._serve(client)
        finally:
            self._leave_all(client)
            self._release(client)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _join(self, client: _Client, room: int) -> None:
        # The room table is shared by every client thread: read and change it under the
        # lock, but send outside it, or one slow member would stall every room.
        with self._lock:
            members = self._rooms.setdefault(room, {})
            others = list(members)
            members[client] = None
            client.rooms.add(room)
        for other in others:
            other.send(room, protocol.Entered(client.name, room))
        # Every name (ChatServer shows the first MAX_NAMES_SHOWN, with YouEntered.of)
        client.send(room, protocol.YouEntered(room, tuple(other.name for other in others)))

    def _message(self, client: _Client, room: int, text: str) -> None:
        with self._lock:
            others = [m for m in self._rooms.get(room, ()) if m is not client]
        # Each send() blocks until that member's kernel buffer takes the frame: a member
        # who stops reading holds this thread here (ChatServer buffers instead).
        for other in others:
            other.send(room, protocol.Message(client.name, text).body())

    def _leave_all(self, client: _Client) -> None:
        with self._lock:
            left = {}
            for room in client.rooms:
                members = self._rooms.get(room, {})
                members.pop(client, None)
                left[room] = list(members)
                if not members:
                    self._rooms.pop(room, None)
            client.rooms.clear()
        for room, others in left.items():
            for other in others:
                other.send(room, protocol.Left(client.name, room))
