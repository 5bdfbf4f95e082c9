"""Baseline: the chat server as one flat epoll loop, without chatlab's abstractions.

No EventLoop, no backend classes, no Connection objects, no callbacks looked up per event:
one function, one epoll object, dicts keyed by fd. It does what chatlab's server does on the
hot path (non-blocking sockets, output buffers flushed once per pass, write interest only
while output remains, one encoded frame per broadcast) and nothing else (no commands, no
limits, no nicknames). The difference between it and chatlab on epoll is what the
abstractions cost. Linux only.

    python -m chatlab.bench.baseline_epoll --port 0
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys

from ..framing import FRAME_RE, encode_frame


def serve(host: str, port: int, drop_every: int = 0, duplicate_every: int = 0) -> None:
    listener = socket.create_server((host, port), backlog=1024)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    print(f"epoll baseline on {host}:{port}", file=sys.stderr, flush=True)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    names: dict[int, str] = {}
    inbuf: dict[int, bytes] = {}
    out: dict[int, bytearray] = {}
    writing: set[int] = set()
    rooms: dict[int, dict[int, None]] = {}
    joined: dict[int, set[int]] = {}
    running = True
    copies = 0  # deliveries so far, for the deliberate faults

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def drop(fd: int) -> None:
        ep.unregister(fd)
        for room in joined.pop(fd, ()):
            rooms[room].pop(fd, None)
        socks.pop(fd).close()
        out.pop(fd, None)
        writing.discard(fd)

    while running:
        try:
            events = ep.poll(1.0)
        except InterruptedError:
            continue
        dirty: set[int] = set()
        for fd, ev in events:
            if fd == listener.fileno():
                while True:
                    try:
                        conn, addr = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    cfd = conn.fileno()
                    socks[cfd], names[cfd], inbuf[cfd], out[cfd] = (
                        conn,
                        f"{addr[0]}:{addr[1]}",
                        b"",
                        bytearray(),
                    )
                    joined[cfd] = set()
                    ep.register(cfd, select.EPOLLIN)
                continue
            if fd not in socks:
                continue
            if ev & select.EPOLLOUT:
                dirty.add(fd)
            if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = socks[fd].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                drop(fd)
                continue
            buf = inbuf[fd] + data
            end = 0
            for match in FRAME_RE.finditer(buf):
                end = match.end()
                room, text = int(match.group(1)), match.group(2)
                members = rooms.setdefault(room, {})
                if room not in joined[fd]:
                    joined[fd].add(room)
                    here = ", ".join(names[m] for m in members) or "nobody else yet"
                    frame = encode_frame(room, f"* {names[fd]} entered room {room}.")
                    for m in members:
                        out[m] += frame
                        dirty.add(m)
                    members[fd] = None
                    out[fd] += encode_frame(room, f"* you entered room {room}; here: {here}")
                    dirty.add(fd)
                if text:
                    frame = b"<RID:%d><%s> %s</RID:%d>" % (room, names[fd].encode(), text, room)
                    for m in members:
                        if m != fd:
                            copies += 1
                            if drop_every and copies % drop_every == 0:
                                continue  # --drop-every: a deliberately faulty server
                            if duplicate_every and copies % duplicate_every == 0:
                                out[m] += frame  # --duplicate-every: likewise
                            out[m] += frame
                            dirty.add(m)
            inbuf[fd] = buf[end:]
        for fd in dirty:  # one send per member per pass
            sock = socks.get(fd)
            if sock is None:
                continue
            buf = out[fd]
            try:
                sent = sock.send(buf) if buf else 0
            except BlockingIOError:
                sent = 0
            except OSError:
                drop(fd)
                continue
            del buf[:sent]
            if buf and fd not in writing:
                writing.add(fd)
                ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
            elif not buf and fd in writing:
                writing.discard(fd)
                ep.modify(fd, select.EPOLLIN)
    for sock in socks.values():
        sock.close()
    listener.close()
    ep.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlab.bench.baseline_epoll")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    # For the benchmark's own tests: a server that loses or repeats messages on purpose,
    # which the load generator's exactly-once check must catch.
    parser.add_argument("--drop-every", type=int, default=0, metavar="N")
    parser.add_argument("--duplicate-every", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.drop_every, args.duplicate_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
