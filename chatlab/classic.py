"""The classic select() chat room, ported to Python 3 with its bugs kept on purpose.

This is the design chatlab starts from, for the notebooks to run and take apart, and for
the tests to check that chatlab's client still talks to it. Do not build on it: every
``BUG`` comment marks something the rest of chatlab does right, and where.

Its protocol: a client sends ``<RID:111></RID:111>`` to join room 111, then
``<RID:111>text</RID:111>`` per message; the server sends the other members plain text,
``[host:port] entered room.`` and ``<('host', port)>text``, without frames or newlines.

Two changes from the original, so that a notebook or a test can run it and stop it: it
binds port 0 when asked, and select() wakes up every 0.1 s to check ``stop()``. It also
counts its loop iterations, which is how notebook 05 shows the spin on EOF.
"""

from __future__ import annotations

import select
import socket
import threading

from .framing import FRAME_RE

__all__ = ["ClassicServer"]


class ClassicServer:
    """``ClassicServer(port=0).start()`` runs it on a thread; ``stop()`` ends it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = socket.create_server((host, port))
        self.address = self.listener.getsockname()[:2]
        self.inputs = [self.listener]  # everything select() watches
        self.rooms: dict[bytes, list[socket.socket]] = {}  # room id -> member sockets
        self.iterations = 0  # select() calls so far
        self.crash: BaseException | None = None  # what killed serve_forever(), if anything
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select(self.inputs, [], [], 0.1)
                self.iterations += 1
                for sock in readable:
                    if sock is self.listener:
                        conn, _ = self.listener.accept()
                        self.inputs.append(conn)
                    else:
                        self.handle(sock)
        except BaseException as exc:  # the original simply died here, with a traceback
            self.crash = exc
        finally:
            for sock in self.inputs:
                sock.close()

    def handle(self, sock: socket.socket) -> None:
        # BUG: one recv() is taken as one frame. Half a frame does not match and is lost;
        # two frames in one read deliver only the first. (framing.FrameDecoder)
        # BUG: nothing catches a reset here: a client that vanishes with RST makes recv()
        # raise ConnectionResetError, and the whole server dies. (server: _on_readable)
        data = sock.recv(1024)
        match = FRAME_RE.match(data)
        if not match:
            # BUG: EOF (b"") lands here too. The socket stays in self.inputs, select()
            # reports it readable at once, forever: the loop spins at full CPU.
            # (server.ChatServer._on_readable: b"" goes to the one disconnect path)
            return
        room_id, text = match.groups()
        room = self.rooms.setdefault(room_id, [])
        host, port = sock.getpeername()[:2]
        if sock not in room:
            room.append(sock)
            self.broadcast(room, sock, f"[{host}:{port}] entered room.".encode())
        if text:
            self.broadcast(room, sock, b"<" + str((host, port)).encode() + b">" + text)

    def broadcast(self, room: list[socket.socket], sender: socket.socket, data: bytes) -> None:
        for member in room:
            if member is sender:
                continue
            try:
                # BUG: a blocking send. A member that stops reading fills its buffer, and
                # then this call waits for it: the whole room stops. (server: output buffers)
                member.send(data)
            except OSError:
                member.close()
                # BUG: removing from the list being iterated: the member after it is
                # skipped and never gets this message. (server: iterate over a copy)
                room.remove(member)
                # BUG: the closed socket stays in self.inputs; the next select() fails on
                # it and the server dies. (server: one disconnect path that unregisters)

    def start(self) -> ClassicServer:
        self._thread = threading.Thread(target=self.serve_forever, name="classic-server")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ClassicServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
