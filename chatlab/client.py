"""The terminal client: full duplex, on the same event loop as the server.

    python -m chatlab.client --room 111 --nick alice

Full duplex is the point: you receive while you type. The client watches two fds with one
chatlab EventLoop, the keyboard (stdin) and the server's socket, so neither waits for the
other. That is the whole lesson of multiplexing, in a program you can hold in one hand.

Three ways to read stdin, chosen at start:

- a terminal: cbreak mode and chatlab.lineedit, so a message that arrives while you type is
  printed above your half-typed line, which is redrawn intact;
- a pipe or file (``printf 'hi\\n' | python -m chatlab.client --room 1``): lines are sent
  as they come, and the client exits at end of input once its output is flushed;
- a thread: Windows cannot select() on stdin, so there a thread reads lines and hands each
  to the loop with call_soon_threadsafe(). ``--stdin-thread`` forces this path elsewhere,
  so that it is tested on Linux too.

The client speaks chatlab's protocol (chatlab/protocol.py), and also the original chat
room's: a server that answers with plain text instead of frames is shown as it comes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time

from . import protocol
from .backends import BACKENDS, available_backends
from .errors import ChatlabError
from .framing import Frame, FrameDecoder, FrameTooLarge, Skipped, Truncated, encode_frame
from .lineedit import EOF, LineEditor
from .loop import EventLoop
from .stream import Stream, WriteBatch

__all__ = ["ChatClient", "main"]

DEFAULT_PORT = 9898
# How long /quit and Ctrl-D wait for the server to close the connection before leaving anyway.
QUIT_WAIT_SECONDS = 2.0
# Incoming frames may be as large as the server allows; 16 MiB bounds a broken server.
MAX_INCOMING_FRAME = 16 * 1024 * 1024


class ChatClient:
    """One connection, one current room, one stdin; run with ``run()`` -> exit status."""

    def __init__(
        self,
        sock: socket.socket,
        room: int,
        *,
        nick: str | None = None,
        backend: str = "auto",
        stdin_fd: int | None = None,
        stdout=None,
        interactive: bool | None = None,
        stdin_thread: bool = False,
        color: bool | None = None,
    ) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.peer = "{}:{}".format(*sock.getpeername()[:2])
        self.room = room
        self.nick = nick
        self.loop = EventLoop(backend)
        self.stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
        self.stdout = stdout or sys.stdout
        self.interactive = os.isatty(self.stdin_fd) if interactive is None else interactive
        self.stdin_thread = stdin_thread or sys.platform == "win32"
        self.color = self.interactive if color is None else color
        self.editor = LineEditor(self._prompt()) if self.interactive else None
        self.decoder = FrameDecoder(MAX_INCOMING_FRAME)
        # What we send goes through a Stream, as the server's does (chatlab/stream.py):
        # queued, sent once per loop pass, the rest when the socket is writable again.
        self.stream = Stream(self.loop, sock, WriteBatch(self.loop), on_lost=self._lost)
        self.status: int | None = None  # exit status, once decided
        self.quitting = False
        self._pending = b""  # a partial line from a pipe

    # -- start and stop -------------------------------------------------------------------

    def run(self) -> int:
        if self.nick:
            self.send_frame(protocol.SERVER_ROOM, f"/nick {self.nick}")
        self.send_frame(self.room, "")  # join, the original way: an empty frame
        self.loop.add_reader(self.sock, self.on_socket)
        if not self.stdin_thread:
            try:
                self.loop.add_reader(self.stdin_fd, self.on_stdin)
            except OSError:
                # epoll refuses regular files and /dev/null (EPERM): they are always
                # "ready", so there is nothing to wait for. Read them in the thread instead.
                self.stdin_thread = True
        if self.stdin_thread:
            threading.Thread(target=self._stdin_thread, name="chatlab-stdin", daemon=True).start()
        if self.editor:
            self.write(self.editor.render())
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
            self.sock.close()
        return self.status or 0

    def finish(self, status: int, line: str | None = None) -> None:
        if self.status is not None:
            return
        self.status = status
        if line:
            self.show(line)
        if self.editor:
            self.write("\r\x1b[K")
        self.loop.stop()

    # -- the socket -----------------------------------------------------------------------

    def on_socket(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.finish(1, f"connection to {self.peer} lost: {exc.strerror or exc}")
            return
        self.decoder.receive_data(data)
        for event in self.decoder.events():
            if isinstance(event, Frame):
                self.show_incoming(event.room, event.text)
            elif isinstance(event, (Skipped, Truncated)):
                # Plain text: the original chat room's server does not frame what it sends.
                for line in protocol.split_classic(event.data.decode("utf-8", "replace")):
                    self.show(self.stamp() + line)
            elif isinstance(event, FrameTooLarge):
                self.finish(1, f"the server at {self.peer} sent a frame over {event.limit} bytes")
                return
        if not data:
            if self.quitting:
                self.finish(0)
            else:
                self.finish(1, f"the server at {self.peer} closed the connection")

    def send_frame(self, room: int, body: str) -> None:
        self.stream.write(encode_frame(room, body))

    def _lost(self, stream: Stream, reason: str) -> None:
        self.finish(1, f"connection to {self.peer} lost: {reason}")

    # -- stdin ----------------------------------------------------------------------------

    def on_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        if self.editor:
            for item in self.editor.feed(data) if data else [EOF]:
                if not isinstance(item, str):  # EOF: Ctrl-D on an empty line
                    self.leave()
                    return
                self.on_line(item)
            self.write(self.editor.render())
            return
        if not data:
            if self._pending:
                self.on_line(self._pending.decode("utf-8", "replace"))
            self.on_input_end()
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", "replace"))

    def _stdin_thread(self) -> None:
        # The Windows path: a blocking readline() in a thread, each line handed to the loop.
        try:
            for line in iter(sys.stdin.readline, ""):
                self.loop.call_soon_threadsafe(self.on_line, line.rstrip("\r\n"))
            self.loop.call_soon_threadsafe(self.on_input_end)
        except ChatlabError:
            pass  # the loop closed while we were reading: the client is exiting

    def on_input_end(self) -> None:
        """End of piped input: flush, half-close, and show the replies until the server
        closes too (at most QUIT_WAIT_SECONDS: the original server never does)."""
        if self.status is not None:
            return
        if not self.stdin_thread:
            self.loop.remove_reader(self.stdin_fd)
        self.stream.write_eof()  # "no more from me", once the queue is sent; we still read
        self.quitting = True
        self.loop.call_later(QUIT_WAIT_SECONDS, self.finish, 0)

    def on_line(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line.strip() or self.status is not None:
            return
        if line.startswith("/join"):
            arg = line[5:].strip()
            if arg.isdigit():
                self.room = int(arg)
                self.send_frame(self.room, "")
                if self.editor:
                    self.editor.prompt = self._prompt()
            else:
                self.show(self.stamp() + protocol.Usage("/join N").body())
            return
        if line.split(" ", 1)[0] == "/quit":
            self.send_frame(self.room, line)
            self.quitting = True
            self.loop.call_later(QUIT_WAIT_SECONDS, self.finish, 0)
            return
        self.send_frame(self.room, line)
        if not line.startswith("/") or line.startswith("//"):
            text = line[1:] if line.startswith("//") else line
            mine = self._paint(f"<{self.me}>", 32)  # told apart from others' by colour too
            self.show(f"{self.stamp()}#{self.room} {mine} {text}")

    def leave(self) -> None:
        """Ctrl-D on an empty line: /quit, and exit when the server closes (or after a bound)."""
        self.on_line("/quit")

    # -- the screen -----------------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.nick or "you"

    def _prompt(self) -> str:
        return f"#{self.room}> "

    def _paint(self, text: str, code: int) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def stamp(self) -> str:
        return time.strftime("%H:%M ")

    def show_incoming(self, room: int, body: str) -> None:
        reply = protocol.parse_reply(body)
        where = "" if room == protocol.SERVER_ROOM else f"#{room} "
        if isinstance(reply, protocol.YouRenamed):
            self.nick = reply.nick  # our own messages are shown under it from now on
        if isinstance(reply, protocol.Message):
            line = where + self._paint(f"<{reply.sender}>", 1) + " " + reply.text
        elif isinstance(reply, protocol.ErrorReply):
            line = where + self._paint(body, 31)
        elif isinstance(reply, protocol.NoticeReply):
            line = where + self._paint(body, 36)
        else:
            line = where + body
        self.show(self.stamp() + line)

    def show(self, line: str) -> None:
        if self.editor:
            self.write(self.editor.print_above(line))
        else:
            self.write(line + "\n")

    def write(self, text: str) -> None:
        # A terminal or a pipe to a person: writes are small and the reader is local. (A
        # chat *server* must never block on a client; a client blocking on its own screen
        # for a moment only delays itself.)
        self.stdout.write(text)
        self.stdout.flush()


# -------------------------------------------------------------------------------- the CLI


@contextlib.contextmanager
def _cbreak(fd: int, enabled: bool):
    """Keys one by one, no echo, Ctrl-C still a signal; the terminal restored on the way out."""
    if not enabled:
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.client",
        description="A full-duplex terminal chat client: type while messages arrive.",
    )
    parser.add_argument("--room", type=int, help="room to join (asked for if omitted)")
    parser.add_argument("--nick", help="your name in the rooms (default: your address)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        default="auto",
        help=f"readiness syscall (available here: {', '.join(available_backends())})",
    )
    parser.add_argument(
        "--stdin-thread",
        action="store_true",
        help="read stdin in a thread, as on Windows (for testing that path)",
    )
    args = parser.parse_args(argv)

    room = args.room
    interactive = sys.stdin.isatty() and not args.stdin_thread and sys.platform != "win32"
    try:
        while room is None:
            # As the original client did: ask, on the terminal, before connecting.
            answer = input("<Room ID> ").strip()
            if answer.isdigit() and int(answer) > 0:
                room = int(answer)
            else:
                print("a room id is a positive whole number, such as 111", file=sys.stderr)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return 1
    if room <= 0:
        parser.error("--room must be a positive whole number (0 is the server's room)")

    try:
        sock = socket.create_connection((args.host, args.port), timeout=5)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        print(
            f"chatlab.client: cannot connect to {args.host}:{args.port}: {reason.lower()}",
            file=sys.stderr,
        )
        return 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    try:
        client = ChatClient(
            sock,
            room,
            nick=args.nick,
            backend=args.backend,
            interactive=interactive,
            stdin_thread=args.stdin_thread,
        )
    except ChatlabError as exc:
        sock.close()
        print(f"chatlab.client: {exc}", file=sys.stderr)
        return 2
    with _cbreak(sys.stdin.fileno(), interactive):
        try:
            return client.run()
        except KeyboardInterrupt:
            # Ctrl-C: leave without a traceback. The server sees EOF and says we left.
            if interactive:
                sys.stdout.write("\r\x1b[K")
            return 0


if __name__ == "__main__":
    sys.exit(main())
