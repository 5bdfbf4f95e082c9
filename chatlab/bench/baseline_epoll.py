"""Baseline: the chat server as one flat epoll loop, without chatlab's abstractions.

No EventLoop, no backend classes, no Connection objects, no callbacks looked up per event:
one function, one epoll object, dicts keyed by fd. It does what chatlab's server does on the
hot path, the fastest way we know in Python: non-blocking sockets; frames found with
find(); one frame encoded per broadcast (or per run of messages from one member to one room
read together) and queued on each member as a reference, never copied; each member's queue
sent once per pass with one sendmsg() (the kernel gathers the pieces); write interest only
while output remains. And nothing else (no commands, no limits, no nicknames). The difference
between it and chatlab on epoll is what chatlab's abstractions cost; chatd.c, the same
design in C, shows what Python costs. Linux only.

    python -m chatlab.bench.baseline_epoll --port 0
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys

from .. import protocol
from ..framing import encode_frame


def serve(
    host: str, port: int, drop_every: int = 0, duplicate_every: int = 0, runs: bool = True
) -> None:
    listener = socket.create_server((host, port), backlog=1024)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    print(f"epoll baseline on {host}:{port}", file=sys.stderr, flush=True)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    names: dict[int, bytes] = {}
    inbuf: dict[int, bytes] = {}
    out: dict[int, list[bytes]] = {}  # fd -> frames queued, shared between members
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

    def deliver(sender: int, room: int, frames: list[bytes]) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        members = rooms[room]
        for m in members:
            if m != sender:
                out[m].append(data)
        dirty.update(members)  # one C call; the sender's queue may be empty

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
                        f"{addr[0]}:{addr[1]}".encode(),
                        b"",
                        [],
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
            buf = inbuf[fd] + data if inbuf[fd] else data
            # Messages to one room read together go out as one buffer, as chatlab does
            # (a "run"): one reference per member for all of them.
            run_room = 0
            run: list[bytes] = []
            # Frames are found with find(), a C search, not with FRAME_RE: the regex's lazy
            # (.*?) walks a 1 KiB body one byte at a time, about 5 us per message.
            pos = 0
            while True:
                start = buf.find(b"<RID:", pos)
                if start < 0:
                    pos = max(pos, len(buf) - 4)  # keep what may be the start of "<RID:"
                    break
                gt = buf.find(b">", start)
                if gt < 0:
                    break
                digits = buf[start + 5 : gt]
                close = b"</RID:" + digits + b">"
                end = buf.find(b"<", gt)  # memchr, then the whole tag only where it may be
                if end >= 0 and not buf.startswith(close, end):
                    end = buf.find(close, end + 1)
                if end < 0:
                    break
                pos = end + len(close)
                if not digits.isdigit():
                    continue  # not a frame: a yardstick skips it without a word
                room, text = int(digits), buf[gt + 1 : end]
                members = rooms.setdefault(room, {})
                if room not in joined[fd]:
                    if run:
                        deliver(fd, run_room, run)
                        run = []
                    joined[fd].add(room)
                    # A join is rare: its replies are protocol.py's types, formatted and encoded
                    here = tuple(names[m].decode() for m in members)
                    frame = encode_frame(room, protocol.Entered(names[fd].decode(), room).body())
                    for m in members:
                        out[m].append(frame)
                        dirty.add(m)
                    members[fd] = None
                    out[fd].append(encode_frame(room, protocol.YouEntered(room, here).body()))
                    dirty.add(fd)
                if text:
                    frame = b"<RID:%b><%b> %b%b" % (digits, names[fd], text, close)
                    if drop_every or duplicate_every:
                        for m in members:
                            if m != fd:
                                copies += 1
                                if drop_every and copies % drop_every == 0:
                                    continue  # --drop-every: a deliberately faulty server
                                if duplicate_every and copies % duplicate_every == 0:
                                    out[m].append(frame)  # --duplicate-every: likewise
                                out[m].append(frame)
                                dirty.add(m)
                        continue
                    if not runs:  # --no-runs: every message on its own
                        deliver(fd, room, [frame])
                        continue
                    if room != run_room and run:
                        deliver(fd, run_room, run)
                        run = []
                    run_room = room
                    run.append(frame)
            if run:
                deliver(fd, run_room, run)
            inbuf[fd] = buf[pos:]
        for fd in dirty:  # one send per member per pass
            sock = socks.get(fd)
            if sock is None:
                continue
            queue = out[fd]
            if not queue:
                continue
            batch = queue if len(queue) <= 1024 else queue[:1024]  # IOV_MAX
            try:
                sent = sock.sendmsg(batch) if len(batch) > 1 else sock.send(batch[0])
            except BlockingIOError:
                sent = 0
            except OSError:
                drop(fd)
                continue
            if batch is queue and sent == sum(map(len, queue)):
                queue.clear()
            else:  # a partial send: drop the whole frames sent, cut the first one left
                done = 0
                while done < len(queue) and sent >= len(queue[done]):
                    sent -= len(queue[done])
                    done += 1
                del queue[:done]
                if sent:
                    queue[0] = queue[0][sent:]
            if queue and fd not in writing:
                writing.add(fd)
                ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
            elif not queue and fd in writing:
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
    # One frame per broadcast, as the first flat loop did: what runs buy, measured.
    parser.add_argument("--no-runs", action="store_true", help="deliver each message alone")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.drop_every, args.duplicate_every, runs=not args.no_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
