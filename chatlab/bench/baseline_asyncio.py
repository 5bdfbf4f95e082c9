"""Baseline: the same chat protocol on stdlib asyncio (or uvloop), written the usual way.

This is what most people would write first: one coroutine per client reading with
``StreamReader.read()``, a regex over a buffer, and ``writer.write()`` per member per
message. It speaks the subset of chatlab's protocol the benchmarks use: join by a frame,
"* you entered room N; here: ..." to the joiner, "* NAME entered room N." and
"<NAME> text" to the others. No commands, no limits: it is a yardstick, not a server.

    python -m chatlab.bench.baseline_asyncio --port 0 [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from ..framing import FRAME_RE, encode_frame


class AsyncioChat:
    def __init__(self) -> None:
        self.rooms: dict[int, dict[asyncio.StreamWriter, str]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = writer.get_extra_info("peername")[:2]
        name = f"{host}:{port}"
        joined: set[int] = set()
        buf = b""
        try:
            while data := await reader.read(65536):
                buf += data
                end = 0
                for match in FRAME_RE.finditer(buf):
                    end = match.end()
                    room, text = int(match.group(1)), match.group(2).decode("utf-8", "replace")
                    members = self.rooms.setdefault(room, {})
                    if room not in joined:
                        joined.add(room)
                        here = ", ".join(members.values()) or "nobody else yet"
                        self.broadcast(room, f"* {name} entered room {room}.", None)
                        members[writer] = name
                        writer.write(encode_frame(room, f"* you entered room {room}; here: {here}"))
                    if text:
                        self.broadcast(room, f"<{name}> {text}", writer)
                buf = buf[end:]
        except ConnectionError:
            pass
        finally:
            for room in joined:
                self.rooms[room].pop(writer, None)
            writer.close()

    def broadcast(self, room: int, body: str, exclude) -> None:
        data = encode_frame(room, body)
        for member in self.rooms.get(room, ()):
            # A member whose connection is closing but whose handler has not cleaned up yet:
            # asyncio ignores (and warns about) the write, uvloop raises. Skip it.
            if member is not exclude and not member.is_closing():
                member.write(data)


async def main_async(host: str, port: int) -> None:
    server = await asyncio.start_server(AsyncioChat().handle, host, port, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"asyncio baseline on {host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlab.bench.baseline_asyncio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (if installed)")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.install()
    try:
        asyncio.run(main_async(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
