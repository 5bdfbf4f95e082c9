"""Baseline: the same chat protocol on stdlib asyncio (or uvloop), on its fast path.

asyncio offers two ways to write a server. Streams (``StreamReader``/``StreamWriter``, one
coroutine per client) are the friendly one; Protocols and Transports are the fast one: the
loop calls ``data_received(bytes)`` straight from its readiness handler, with no coroutine,
no future and no task switch per read. A yardstick should be asyncio at its best, so this one
is written on Protocols. It speaks the subset of chatlab's protocol the benchmarks use: join
by a frame (protocol.YouEntered to the joiner, protocol.Entered to the others) and messages
("<NAME> text" to the others). No commands, no limits: it is a yardstick, not a server.

Two ways to write, chosen by ``--coalesce``:

* **plain** (the default): a broadcast calls ``transport.write(frame)`` for every member.
  asyncio's transport tries ``send()`` at once when its buffer is empty, so a member that
  receives ten messages in one loop pass costs ten ``send()`` syscalls. This is how asyncio
  code is usually written.
* **coalescing**: a broadcast appends the frame to the member's queue and marks it dirty;
  the first member to become dirty in a pass schedules one ``loop.call_soon(flush)``, which
  runs after every handler of this pass and writes each dirty member's frames with ONE
  ``transport.write(b"".join(queue))``. That is what chatlab's server, baseline_epoll and
  chatd do (one send per member per pass), so comparing chatlab with this mode compares the
  loops, not a design choice that only one side made.

    python -m chatlab.bench.baseline_asyncio --port 0 [--coalesce] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from typing import cast

from .. import protocol
from ..framing import FRAME_RE


class Chat:
    """The rooms, shared by every connection, and (when coalescing) the members to flush."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce: bool) -> None:
        self.loop = loop
        self.coalesce = coalesce
        self.rooms: dict[int, dict[Member, None]] = {}  # room -> members, in join order
        self.dirty: list[Member] = []
        self.flush_scheduled = False

    def deliver(self, member: Member, frame: bytes) -> None:
        # A member whose connection is closing but whose connection_lost() has not run yet:
        # asyncio ignores (and warns about) the write, uvloop raises. Skip it.
        if member.transport.is_closing():
            return
        if not self.coalesce:
            member.transport.write(frame)  # one send() now, for every frame
            return
        if not member.queue:
            self.dirty.append(member)
            if not self.flush_scheduled:
                # Discussion: a callback scheduled from inside a handler runs after every
                # handler of this pass (asyncio: they are already in its ready queue; uvloop:
                # libuv calls them all in its poll phase) and before the handlers of the next
                # pass's I/O: the same point as chatlab's flush.
                self.flush_scheduled = True
                self.loop.call_soon(self.flush)
        member.queue.append(frame)

    def flush(self) -> None:
        """One write per dirty member: everything queued for it since the last flush."""
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for member in dirty:
            chunks, member.queue = member.queue, []
            if not member.transport.is_closing():
                member.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))


class Member(asyncio.Protocol):
    """One client connection; asyncio calls these methods from its loop."""

    transport: asyncio.Transport  # from connection_made(), which comes before any data

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.name = b""
        self.buf = b""
        self.joined: set[int] = set()
        self.queue: list[bytes] = []  # frames not yet written (coalescing mode only)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP server's: a Transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = transport.get_extra_info("peername")[:2]
        self.name = f"{host}:{port}".encode()

    def data_received(self, data: bytes) -> None:
        chat = self.chat
        buf = self.buf + data
        end = 0
        for match in FRAME_RE.finditer(buf):
            end = match.end()
            room, text = int(match.group(1)), match.group(2)
            members = chat.rooms.setdefault(room, {})
            if room not in self.joined:
                # A join is rare: its replies are protocol.py's types, formatted and encoded
                self.joined.add(room)
                here = tuple(m.name.decode() for m in members)
                entered = protocol.Entered(self.name.decode(), room).body().encode()
                frame = b"<RID:%d>%s</RID:%d>" % (room, entered, room)
                for member in members:
                    chat.deliver(member, frame)
                members[self] = None
                notice = protocol.YouEntered(room, here).body().encode()
                chat.deliver(self, b"<RID:%d>%s</RID:%d>" % (room, notice, room))
            if text:
                # One encoded frame per broadcast, the same bytes object for every member.
                frame = b"<RID:%d><%s> %s</RID:%d>" % (room, self.name, text, room)
                for member in members:
                    if member is not self:
                        chat.deliver(member, frame)
        self.buf = buf[end:]

    def connection_lost(self, exc: Exception | None) -> None:
        # EOF, reset and shutdown all end here: leave every room (the transport is closed).
        for room in self.joined:
            self.chat.rooms[room].pop(self, None)
        self.joined.clear()


async def main_async(host: str, port: int, coalesce: bool, flavour: str) -> None:
    loop = asyncio.get_running_loop()
    chat = Chat(loop, coalesce)
    server = await loop.create_server(lambda: Member(chat), host, port, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    mode = ", coalescing" if coalesce else ""
    print(f"asyncio baseline ({flavour}{mode}) on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop cleanly: exit status 0
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlab.bench.baseline_asyncio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    parser.add_argument(
        "--coalesce", action="store_true", help="one write per member per loop pass"
    )
    args = parser.parse_args(argv)
    run, flavour = asyncio.run, "asyncio"
    if args.uvloop:
        import uvloop

        run, flavour = uvloop.run, "uvloop"
    run(main_async(args.host, args.port, args.coalesce, flavour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
