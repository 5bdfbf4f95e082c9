"""The classic select() chat room, ported to Python 3 with its bugs kept on purpose.

This is the design chatlab starts from, for the notebooks to run and take apart, and for
the tests to check that chatlab's client still talks to it. Do not build on it: every
``BUG`` comment marks something the rest of chatlab does right, and where.

Its protocol: a client sends ``<RID:111></RID:111>`` to join room 111, then
``<RID:111>text</RID:111>`` per message; the server sends the other members plain text,
``[host:port] entered room.`` and ``<('host', port)>text``, without frames or newlines.

What changed from the original, so that a notebook or a test can run it, watch it and stop
it: it is a class (the original keeps its sockets in module globals and binds at import), it
binds port 0 when asked, and select() wakes up every 0.1 s to check ``stop()``. It counts
its loop iterations (notebook 05 shows the spin on EOF with them) and its reads:
``wait_reads(n)`` returns once the server has handled n reads, so a demo can send the second
half of a frame only after the server has read the first, without guessing with a sleep.
Everything else, bugs included, is the original's logic in Python 3.
"""

from __future__ import annotations

import re
import select
import socket
import threading

__all__ = ["CLASSIC_RE", "ClassicServer"]

# The original's regex, verbatim; only the b"" is ours (Python 3 sockets give bytes). [\s\S]
# is "any character, newline included", which a plain `.` is not without re.DOTALL; `*?`
# stops at the first closing tag; `\1` makes the closing tag repeat the opening's number.
# chatlab.framing.FRAME_RE is the same pattern, spelled with re.DOTALL and without the `^`
# (which re.match() does not need: match() only tries position 0; search() tries them all).
CLASSIC_RE = re.compile(rb"^<RID:(\d+)>([\s\S]*?)</RID:\1>")


class ClassicServer:
    """``ClassicServer(port=0).start()`` runs it on a thread; ``stop()`` ends it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = socket.create_server((host, port))
        self.address = self.listener.getsockname()[:2]
        self.inputs = [self.listener]  # everything select() watches
        self.rooms: dict[bytes, list[socket.socket]] = {}  # room id -> member sockets
        self.iterations = 0  # select() calls so far
        self.reads = 0  # handle() calls done (one recv() each, and what followed), so far
        self._progress = threading.Condition()
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
                        try:
                            self.handle(sock)
                        finally:  # not in the original: what wait_reads() waits for
                            with self._progress:
                                self.reads += 1
                                self._progress.notify_all()
        except BaseException as exc:  # the original simply died here, with a traceback
            self.crash = exc
        finally:
            for sock in self.inputs:
                sock.close()

    def handle(self, sock: socket.socket) -> None:
        # BUG: one recv() is taken as one frame. Half a frame does not match and is lost;
        # two frames in one read deliver only the first. (framing.FrameDecoder)
        try:
            data = sock.recv(1024)
        except OSError:  # the original: `except socket.error`, around its recv()
            # BUG: this cleanup names `member`, broadcast()'s loop variable, which does not
            # exist here: the first reset raises NameError and the server dies of the very
            # error this handler was written for. (server: one disconnect path, tested)
            self.inputs.remove(member)  # type: ignore[name-defined]  # noqa: F821
        match = CLASSIC_RE.match(data)
        if not match:
            # BUG: EOF (b"") lands here too. The socket stays in self.inputs, select()
            # reports it readable at once, forever: the loop spins at full CPU.
            # (server.ChatServer._on_readable: b"" goes to the one disconnect path)
            return
        self.deliver(sock, *match.groups())

    def deliver(self, sock: socket.socket, room_id: bytes, text: bytes) -> None:
        # The original does this inline, after its match. A method of its own (not in the
        # original) so that a lesson can fix the framing above and keep what follows.
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

    def wait_reads(self, count: int, timeout: float = 5.0) -> None:
        """Return once the server has handled ``count`` reads in all: made the recv() and done
        what followed (not in the original: it lets a demo order its sends without sleeping,
        and read the rooms when they are settled); TimeoutError if it does not."""
        with self._progress:
            if not self._progress.wait_for(lambda: self.reads >= count, timeout):
                raise TimeoutError(f"the classic server made {self.reads} reads, not {count}")

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


def main(argv: list[str] | None = None) -> None:
    """``python -m chatlab.classic --port 9898``: the original server, in the foreground
    (to grade it: python -m chatlab.grade --cmd "python -m chatlab.classic --port {port}")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m chatlab.classic", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9898)
    args = parser.parse_args(argv)
    server = ClassicServer(args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    if server.crash is not None:  # as the original did: die with the traceback
        raise server.crash


if __name__ == "__main__":
    main()
