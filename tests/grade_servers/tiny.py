"""A small correct chat server on selectors, or broken in exactly one of the original's ways.

    python tests/grade_servers/tiny.py PORT                          # correct
    python tests/grade_servers/tiny.py PORT --bug eof-spin           # one bug (see BUGS)

tests/test_grade.py grades it with each bug and checks that exactly the grader's checks that
name the bug fail. Each bug is one small departure from the correct code, marked BUG. In a
process, ``Tiny()`` has what chatlab.grade.grade_class needs: ``address``,
``serve_forever()`` and ``close()`` (which a wake-up socketpair makes serve_forever see).
"""

from __future__ import annotations

import argparse
import re
import selectors
import socket

FRAME = re.compile(rb"<RID:(\d+)>(.*?)</RID:\1>", re.DOTALL)
BUGS = [
    "one-recv-one-frame",
    "eof-spin",
    "crash-on-vanished-member",
    "skip-on-removal",
    "blocking-send",
]
RECV_SIZE = 4096
MAX_FRAME = 64 * 1024
MAX_OUT = 512 * 1024  # a member whose unsent bytes pass this is dropped
SNDBUF = 16 * 1024  # small and fixed, so that a member who never reads fills it soon


class Tiny:
    def __init__(self, port: int = 0, bug: str | None = None) -> None:
        self.bug = bug
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel.register(self._wake_r, selectors.EVENT_READ)
        self.closing = False
        self.rooms: dict[bytes, list[socket.socket]] = {}
        self.inbuf: dict[socket.socket, bytes] = {}
        self.outbuf: dict[socket.socket, bytearray] = {}

    def serve_forever(self) -> None:
        while not self.closing:
            for key, events in self.sel.select():
                sock = key.fileobj
                if sock is self._wake_r:
                    break
                if sock is self.listener:
                    self.accept()
                    continue
                assert isinstance(sock, socket.socket)
                if events & selectors.EVENT_READ and sock in self.inbuf:
                    self.read(sock)
                if events & selectors.EVENT_WRITE and sock in self.outbuf:
                    self.flush(sock)

        for sock in [*self.inbuf, self.listener, self._wake_r, self._wake_w]:
            sock.close()
        self.sel.close()

    def close(self) -> None:
        """From another thread: serve_forever() returns and closes everything."""
        self.closing = True
        self._wake_w.send(b"x")

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        conn.setblocking(self.bug == "blocking-send")  # BUG (blocking-send): blocking sockets
        self.sel.register(conn, selectors.EVENT_READ)
        self.inbuf[conn], self.outbuf[conn] = b"", bytearray()

    def read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except OSError:
            if self.bug == "crash-on-vanished-member":
                raise  # BUG: a reset kills the server
            return self.drop(sock)
        if not data:
            if self.bug == "eof-spin":
                return  # BUG: EOF ignored, the socket stays registered and readable
            return self.drop(sock)
        if self.bug == "one-recv-one-frame":
            match = FRAME.match(data)  # BUG: this read is taken as one whole frame
            frames = [match] if match else []
        else:
            buf, frames, pos = self.inbuf[sock] + data, [], 0
            while match := FRAME.search(buf, pos):
                frames.append(match)
                pos = match.end()
            self.inbuf[sock] = buf[pos:]
            if len(self.inbuf[sock]) > MAX_FRAME:
                return self.drop(sock)
        for match in frames:
            room_id, text = match.groups()
            room = self.rooms.setdefault(room_id, [])
            if sock not in room:
                room.append(sock)
                self.broadcast(room, sock, b"* someone joined room %s\n" % room_id)
            if text:
                self.broadcast(room, sock, text + b"\n")

    def broadcast(self, room: list[socket.socket], sender: socket.socket, data: bytes) -> None:
        # BUG (skip-on-removal): iterating over the room itself, which drop() changes
        members = room if self.bug == "skip-on-removal" else list(room)
        for member in members:
            if member is not sender and member in self.outbuf:
                self.send(member, data)

    def send(self, member: socket.socket, data: bytes) -> None:
        if self.bug == "blocking-send":
            try:
                member.sendall(data)  # BUG: waits for a member who does not read
            except OSError:
                self.drop(member)
            return
        out = self.outbuf[member]
        out += data
        if len(out) > MAX_OUT:
            return self.drop(member)
        self.flush(member)

    def flush(self, member: socket.socket) -> None:
        out = self.outbuf[member]
        try:
            sent = member.send(out)
        except BlockingIOError:
            sent = 0
        except OSError:
            if self.bug == "crash-on-vanished-member":
                raise  # BUG: a failed send kills the server
            return self.drop(member)
        del out[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
        if self.sel.get_key(member).events != events:
            self.sel.modify(member, events)

    def drop(self, sock: socket.socket) -> None:
        if sock not in self.inbuf:
            return  # already gone: one way out, safe twice
        self.sel.unregister(sock)
        del self.inbuf[sock], self.outbuf[sock]
        for room in self.rooms.values():
            if sock in room:
                room.remove(sock)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--bug", choices=BUGS)
    args = parser.parse_args()
    Tiny(args.port, args.bug).serve_forever()


if __name__ == "__main__":
    main()
