"""A message bus between chat servers: Redis pub/sub, spoken on chatlab's own event loop.

One process serves one core. To use more cores, or more machines, run several servers and
join them with a bus, as Socket.IO's Redis adapter and Phoenix's PubSub do: every room
broadcast a server makes is also published to Redis, and every server delivers what the
others published to its own members of that room. Design notes:

1. No blocking call, still. The Redis connections are two more non-blocking sockets on the
   server's EventLoop, connected with connect_ex(), written through an output buffer and read
   when readable, exactly like chat clients. A handler never waits for Redis.
2. Two connections. A RESP2 connection that has subscribed may only (un)subscribe and ping,
   so one connection listens (PSUBSCRIBE chatlab:room:*) and one sends commands (PUBLISH,
   HSET, EXPIRE...).
3. RESP is parsed by hiredis.Reader, a sans-I/O parser like our FrameDecoder: feed it bytes,
   ask for replies, get False until one is whole. Commands are encoded by hiredis too.
4. Replies come back in the order the commands went out (one connection, one Redis thread),
   so a FIFO of callbacks matches replies to requests: no request ids. Pipelining is free:
   everything queued in one loop pass goes out in one send().
5. What crosses: every room broadcast (messages, join and leave notices, /nick, /me), as
   ``PUBLISH chatlab:room:N "ORIGIN SEQ\\nBODY"``. A server drops its own echo (its members
   were served directly, without waiting for Redis), and SEQ, counted per origin, lets a
   receiver drop a duplicate and count a gap, so a loss is measured, never silent.
6. Who is where. Each server keeps a hash ``chatlab:server:ID`` (member name -> rooms) and a
   key ``chatlab:alive:ID`` whose expiry a heartbeat pushes forward; /who, /rooms and
   /servers read them for the other servers. A server that dies stops beating: its keys
   expire within ``ttl`` seconds and its members vanish from /who everywhere.
7. Faults. If Redis goes away (a reset, or silence: see _beat), the server keeps serving
   its own members, tells them the network is degraded, and reconnects with exponential
   backoff (with jitter, so a fleet does not reconnect in lockstep). On reconnect it
   subscribes again and writes its whole membership again: a restarted Redis may have
   lost it. Messages broadcast while the bus is down reach this server's members only;
   they are counted, not queued (see README).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .errors import BusError, ChatlabError
from .loop import TimerHandle
from .stream import Stream, WriteBatch

__all__ = ["BusConfig", "BusError", "BusStats", "RedisBus", "parse_redis_url"]

logger = logging.getLogger("chatlab.bus")

# How long a server's keys live without a heartbeat: a server killed without a goodbye is
# gone from /who elsewhere within this many seconds. The heartbeat runs three times per ttl,
# so two lost beats in a row are survived.
DEFAULT_TTL = 5.0
# Reconnect backoff: the first retry is quick (a restart of Redis takes a fraction of a
# second), then doubling up to the cap so that a Redis that stays down costs us nothing.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# Output queued for Redis and not yet taken by the kernel. Redis on a LAN reads far faster
# than we write; past this, it is stuck, and we treat the connection as lost.
MAX_BUS_BUFFER = 64 * 1024 * 1024
RECV_SIZE = 256 * 1024


@dataclass(frozen=True)
class BusConfig:
    """Where the bus is and how this server appears on it.

    ``url``: ``redis://[:password@]host[:port][/db]``. ``name``: how /servers shows this
    server (default host:port). ``namespace`` prefixes every key and channel: Redis pub/sub
    ignores the db number, so two chat networks on one Redis need two namespaces.
    """

    url: str
    name: str | None = None
    namespace: str = "chatlab"
    ttl: float = DEFAULT_TTL


@dataclass
class BusStats:
    """Counters a bus keeps; ``server.bus.statistics()`` returns a copy."""

    up: bool = False
    connects: int = 0  # times the bus came up
    published: int = 0  # broadcasts sent to Redis
    dropped: int = 0  # broadcasts not sent: the bus was down (their local members had them)
    received: int = 0  # broadcasts from other servers, delivered here
    duplicates: int = 0  # dropped because their sequence number was already seen
    gaps: int = 0  # messages of other servers known to be missed (sequence numbers skipped)
    malformed: int = 0  # messages on our channels that were not ours to read
    last_error: str | None = None
    servers_seen: set[str] = field(default_factory=set)


def parse_redis_url(url: str) -> tuple[str, int, int, str | None]:
    """``redis://[:password@]host[:port][/db]`` -> (host, port, db, password)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise BusError(f"bus URL must start with redis:// (got {url!r})")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise BusError(f"bad port in bus URL {url!r}") from exc
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise BusError(f"the path of a bus URL is a db number, like redis://host:6379/0 ({url!r})")
    password = unquote(parts.password) if parts.password else None
    return parts.hostname or "127.0.0.1", port, int(path or 0), password


# ----------------------------------------------------------------------- one connection


class _RedisConnection:
    """One non-blocking RESP connection on an EventLoop (design notes 1-4).

    Its writes are a chatlab.stream.Stream's, as a chat client's are. ``on_push`` receives
    what a subscribed connection is sent; otherwise each reply goes to the callback queued
    with its command. ``on_lost(reason)`` is called once, on any failure.
    """

    def __init__(self, loop, where, hiredis, batch: WriteBatch, on_lost, on_push=None) -> None:
        self.loop = loop
        self._hiredis = hiredis
        self._reader = hiredis.Reader()
        self._on_lost = on_lost
        self._on_push = on_push
        self._pending: deque = deque()  # one callback (or None) per command sent
        self._early: list[bytes] = []  # commands queued before the connection is up
        self.connected = False
        self.closed = False
        family, address = where  # resolved already: see RedisBus.__init__
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = Stream(
            loop,
            self.sock,
            batch,
            max_queued=MAX_BUS_BUFFER,
            on_lost=lambda _, reason: self.lose(reason),
            on_overflow=lambda _: self.lose(
                f"Redis is not reading: over {MAX_BUS_BUFFER} bytes queued"
            ),
        )
        err = self.sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.sock.close()
            raise OSError(err, os.strerror(err))
        # A non-blocking connect finishes when the socket becomes writable; SO_ERROR says how.
        try:
            self.loop.add_writer(self.sock, self._on_connect)
        except BaseException:  # select() past FD_SETSIZE, say: do not leak the socket
            self.sock.close()
            raise

    def command(self, *args, callback: Callable | None = None) -> None:
        """Queue one command; ``callback(reply)`` gets its reply (or a ConnectionError).

        Everything queued in one loop pass goes out in one send (design note 4)."""
        packed = self._hiredis.pack_command(args)
        self._pending.append(callback)
        if self.connected:
            self.stream.write(packed)
        else:
            self._early.append(packed)

    def _on_connect(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.lose(os.strerror(err).lower())
            return
        self.loop.remove_writer(self.sock)
        self.connected = True
        self.loop.add_reader(self.sock, self._on_readable)
        for packed in self._early:
            self.stream.write(packed)
        self._early = []

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lose(exc.strerror.lower() if exc.strerror else str(exc))
            return
        if not data:
            self.lose("Redis closed the connection")
            return
        self._reader.feed(data)
        while not self.closed:
            try:
                reply = self._reader.gets()
            except self._hiredis.ProtocolError as exc:
                self.lose(f"not a Redis reply: {exc}")
                return
            if reply is False:  # hiredis's NEED_DATA
                return
            if self._on_push is not None:
                callback = self._on_push
            elif self._pending:
                callback = self._pending.popleft()
            else:
                callback = None
            if callback is not None:
                try:
                    callback(reply)
                except Exception:  # one bad handler must not strand the replies after it
                    logger.exception("error in a Redis reply handler")

    def lose(self, reason: str, *, report: bool = True) -> None:
        """Close, fail every waiting callback, and (once) report the loss."""
        if self.closed:
            return
        self.close()
        pending, self._pending = self._pending, deque()
        for callback in pending:
            if callback is not None:
                callback(ConnectionError(reason))
        if report:
            self._on_lost(reason)

    def close(self, *, flush: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if flush and self.connected and self.stream.out:
            # A last best-effort write (a goodbye to Redis): a few hundred bytes to a
            # local socket go straight into the kernel's buffer, without blocking.
            self.stream.on_lost = None
            self.stream.flush()
        self.stream.abort()  # unregisters and closes the socket; what is queued is dropped


# -------------------------------------------------------------------------------- the bus


class RedisBus:
    """The server's link to the others: publish, receive, membership, health.

    The server calls ``publish(room, body)`` for every broadcast and
    ``member_changed(name, rooms)`` for every join, leave and /nick; the bus calls back
    ``on_message(room, body)`` for the others' broadcasts and ``on_status(up, reason)``.
    """

    def __init__(
        self,
        config: BusConfig,
        loop,
        *,
        name: str,
        on_message: Callable[[int, str], None],
        on_status: Callable[[bool, str], None],
        members: Callable[[], dict[str, list[int]]],
    ) -> None:
        try:
            import hiredis
        except ImportError as exc:
            raise BusError("the Redis bus needs hiredis: pip install 'chatlab[redis]'") from exc
        self._hiredis = hiredis
        self.config = config
        host, port, self._db, self._password = parse_redis_url(config.url)
        # Discussion: connect() needs an address, and turning a name into one
        # (getaddrinfo) is a blocking call, DNS and all, which no handler may make. So the
        # name is resolved once, here, before the loop runs; every reconnect reuses it.
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, *_, address = infos[0]
            self.address: tuple = address
        except socket.gaierror as exc:
            raise BusError(f"cannot resolve the Redis host {host!r}: {exc.strerror}") from exc
        self._family = family
        self.loop = loop
        self.name = config.name or name
        # The id on the bus: the name, plus a random part that differs for every run, so
        # a restarted server's sequence numbers are never taken for an old run's duplicates.
        self.id = f"{self.name}#{secrets.token_hex(3)}"
        ns = config.namespace
        self._channel_prefix = f"{ns}:room:".encode()
        self._servers_key = f"{ns}:servers"
        self._key_prefix = ns
        self._on_message = on_message
        self._on_status = on_status
        self._members = members
        self._seq = 0
        self._last_seq: dict[str, int] = {}
        self._stats = BusStats()
        self._cmd: _RedisConnection | None = None
        self._sub: _RedisConnection | None = None
        self._ready = 0  # how many of the two connections have finished their set-up
        self.up = False
        self._closed = False
        self._leaving = False
        self._answered = [0.0, 0.0]  # loop.time() of the last reply on each connection
        self._backoff = BACKOFF_FIRST
        self._timer: TimerHandle | None = None  # the next heartbeat or reconnect
        self._batch = WriteBatch(loop)  # both connections' writes, once per loop pass
        self._connect()

    @property
    def _commands(self) -> _RedisConnection:
        """The connection for commands: there is one from the first _connect() on."""
        assert self._cmd is not None, "the bus is used before it connected"
        return self._cmd

    @property
    def _subscriber(self) -> _RedisConnection:
        """The subscribed connection, likewise."""
        assert self._sub is not None, "the bus is used before it connected"
        return self._sub

    # -- public -------------------------------------------------------------------------

    def statistics(self) -> BusStats:
        stats = BusStats(**{**vars(self._stats), "servers_seen": set(self._stats.servers_seen)})
        stats.up = self.up
        return stats

    def publish(self, room: int, body: str) -> None:
        self._seq += 1  # counted even when dropped: the others then see the gap
        if not self.up:
            self._stats.dropped += 1
            return
        payload = f"{self.id} {self._seq}\n{body}".encode()
        self._commands.command(b"PUBLISH", self._channel_prefix + str(room).encode(), payload)
        self._stats.published += 1

    def member_changed(self, name: str, rooms: list[int] | None) -> None:
        """A member joined or left a room (rooms: all of theirs now; empty or None: gone)."""
        if not self.up or self._leaving:
            return  # written in full on reconnect; or we are leaving and deleted it all
        if rooms:
            self._commands.command(b"HSET", self._key("server"), name, " ".join(map(str, rooms)))
        else:
            self._commands.command(b"HDEL", self._key("server"), name)

    def network(self, callback: Callable[[list | None], None]) -> None:
        """Read the other live servers: ``callback([(name, {member: [rooms]}), ...])``.

        Two round trips, chained by callbacks: SMEMBERS for the ids, then one pipeline of
        GET alive + HGETALL per id. ``callback(None)`` if the bus is down or fails meanwhile.
        """
        if not self.up:
            callback(None)
            return

        def on_ids(ids):
            if isinstance(ids, Exception):
                callback(None)
                return
            others = [i.decode() for i in ids if i.decode() != self.id]
            if not others:
                callback([])
                return
            replies: dict[str, list] = {i: [] for i in others}  # id -> [alive, members]

            def on_reply(server_id, reply):
                if not replies:
                    return  # already answered (with None)
                if isinstance(reply, ConnectionError):
                    replies.clear()  # the bus failed meanwhile: answer once, with None
                    callback(None)
                    return
                replies[server_id].append(reply)
                if all(len(r) == 2 for r in replies.values()):
                    callback(self._read_network(replies))

            for server_id in others:
                self._commands.command(
                    b"GET",
                    self._key("alive", server_id),
                    callback=lambda r, s=server_id: on_reply(s, r),
                )
                self._commands.command(
                    b"HGETALL",
                    self._key("server", server_id),
                    callback=lambda r, s=server_id: on_reply(s, r),
                )

        self._commands.command(b"SMEMBERS", self._servers_key, callback=on_ids)

    def leave(self) -> None:
        """Say goodbye: delete our keys now, so /who elsewhere stops listing our members.

        The server calls this when it shuts down, before publishing its members' leave
        notices: whoever sees a notice and asks /who then finds the member gone."""
        if self.up and not self._leaving:
            self._commands.command(b"DEL", self._key("server"), self._key("alive"))
            self._commands.command(b"SREM", self._servers_key, self.id)
        self._leaving = True

    def close(self) -> None:
        """Leave the network (if not done yet) and close both connections."""
        if self._closed:
            return
        self.leave()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.up = False
        for conn in (self._cmd, self._sub):
            if conn is not None:
                conn.close(flush=True)
        self._batch.close()

    # -- connecting -----------------------------------------------------------------------

    def _key(self, kind: str, server_id: str | None = None) -> str:
        return f"{self._key_prefix}:{kind}:{server_id or self.id}"

    def _connect(self) -> None:
        self._timer = None
        db, password = self._db, self._password
        self._ready = 0
        where = (self._family, self.address)
        try:
            self._cmd = _RedisConnection(self.loop, where, self._hiredis, self._batch, self._lost)
            self._sub = _RedisConnection(
                self.loop, where, self._hiredis, self._batch, self._lost, on_push=self._on_push
            )
        except (OSError, ChatlabError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._lost(reason.lower())
            return
        for conn in (self._cmd, self._sub):
            if password:
                conn.command(b"AUTH", password, callback=self._check_reply)
        self._commands.command(b"SELECT", db, callback=self._on_cmd_ready)
        # The subscribed connection's replies all go to _on_push, the ack included.
        self._subscriber.command(b"PSUBSCRIBE", self._channel_prefix + b"*")
        # A Redis that is stopped, or cut off without a reset, still lets the kernel accept
        # our connection, and then never answers: give the set-up a deadline.
        self._timer = self.loop.call_later(self.config.ttl, self._no_answer)

    def _no_answer(self) -> None:
        self._timer = None
        self._lost(f"Redis did not answer within {self.config.ttl:g} s")

    def _check_reply(self, reply) -> None:
        if isinstance(reply, Exception) and self._cmd is not None:
            self._cmd.lose(f"Redis refused us: {reply}")

    def _on_cmd_ready(self, reply) -> None:
        if isinstance(reply, Exception):
            if isinstance(reply, self._hiredis.ReplyError):
                self._commands.lose(f"Redis refused SELECT: {reply}")
            return
        self._one_ready()

    def _one_ready(self) -> None:
        self._ready += 1
        if self._ready < 2:
            return
        # Both connections are set up: register (again) and announce ourselves.
        self.up = True
        self._backoff = BACKOFF_FIRST
        self._stats.connects += 1
        self._stats.last_error = None
        if self._timer is not None:
            self._timer.cancel()  # the set-up deadline
        self._answered = [self.loop.time()] * 2  # last reply on the command, sub connections
        self._commands.command(b"DEL", self._key("server"))
        members = self._members()
        for name, rooms in members.items():
            self._commands.command(b"HSET", self._key("server"), name, " ".join(map(str, rooms)))
        self._beat()
        logger.info("bus up: %s as %s", self.config.url, self.id)
        self._on_status(True, f"connected to {self.config.url}")

    def _beat(self) -> None:
        """Heartbeat: say we are alive for another ttl, and keep our members from expiring."""
        if not self.up or self._leaving:
            return
        # Discussion: a dead Redis resets our connections and we notice at once; a hung one
        # (stopped, or behind a partition that drops packets) just goes quiet, and TCP can
        # wait many minutes before it gives up. So every beat also PINGs both connections,
        # and a connection with no reply for a whole ttl is treated as lost. Replies come in
        # order, so a PONG also means every reply before it has arrived.
        silent = self.loop.time() - min(self._answered)
        if silent > self.config.ttl:
            self._lost(f"Redis did not answer for {silent:.1f} s")
            return
        self._commands.command(b"PING", callback=self._on_pong)
        self._subscriber.command(b"PING")  # a subscribed connection's PONG comes to _on_push
        ttl_ms = int(self.config.ttl * 1000)
        self._commands.command(b"SADD", self._servers_key, self.id)
        self._commands.command(b"SET", self._key("alive"), self.name, b"PX", ttl_ms)
        self._commands.command(b"PEXPIRE", self._key("server"), ttl_ms)
        # Forget servers whose keys expired (killed, or cut off): /who stops asking them.
        self._commands.command(b"SMEMBERS", self._servers_key, callback=self._prune)
        self._timer = self.loop.call_later(self.config.ttl / 3, self._beat)

    def _on_pong(self, reply) -> None:
        if not isinstance(reply, Exception):
            self._answered[0] = self.loop.time()

    def _prune(self, ids) -> None:
        if isinstance(ids, Exception) or not self.up:
            return
        for raw in ids:
            server_id = raw.decode()
            if server_id != self.id:
                self._commands.command(
                    b"EXISTS",
                    self._key("alive", server_id),
                    callback=lambda r, s=server_id: self._forget(s, r),
                )

    def _forget(self, server_id: str, exists) -> None:
        if exists == 0 and self.up:
            self._commands.command(b"SREM", self._servers_key, server_id)
            self._last_seq.pop(server_id, None)

    def _lost(self, reason: str) -> None:
        was_up = self.up
        self.up = False
        self._stats.last_error = reason
        for conn in (self._cmd, self._sub):
            if conn is not None:
                conn.lose(reason, report=False)  # the other one too; no-op for the failed one
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        first = self._backoff == BACKOFF_FIRST  # warn once per outage; retries are info
        delay = self._backoff * random.uniform(0.5, 1.0)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        (logger.warning if first else logger.info)(
            "bus down (%s); reconnecting in %.1f s", reason, delay
        )
        if was_up:
            self._on_status(False, reason)
        self._timer = self.loop.call_later(delay, self._connect)

    # -- receiving ------------------------------------------------------------------------

    def _on_push(self, reply) -> None:
        if isinstance(reply, Exception):
            self._subscriber.lose(f"Redis refused us: {reply}")
            return
        if not isinstance(reply, list):
            return  # +OK to AUTH
        kind = reply[0]
        if kind == b"pmessage":
            self._on_published(reply[2], reply[3])
        elif kind == b"pong":
            self._answered[1] = self.loop.time()
        elif kind == b"psubscribe":
            self._one_ready()

    def _on_published(self, channel: bytes, payload: bytes) -> None:
        try:
            room = int(channel[len(self._channel_prefix) :])
            header, body = payload.split(b"\n", 1)
            origin_b, seq_b = header.split(b" ")
            origin, seq = origin_b.decode(), int(seq_b)
        except (ValueError, UnicodeDecodeError):
            self._stats.malformed += 1
            logger.warning("ignored a message on %r that no chatlab server sent", channel)
            return
        if origin == self.id:
            return  # our own broadcast, already delivered to our members
        last = self._last_seq.get(origin)
        if last is not None and seq <= last:
            self._stats.duplicates += 1
            return
        if last is not None and seq > last + 1:
            self._stats.gaps += seq - last - 1
            logger.warning("missed %d message(s) from %s", seq - last - 1, origin)
        self._last_seq[origin] = seq
        self._stats.servers_seen.add(origin)
        self._stats.received += 1
        self._on_message(room, body.decode("utf-8", "replace"))

    def _read_network(self, replies: dict[str, list]) -> list:
        network = []
        for alive, fields in replies.values():
            if not alive or isinstance(alive, Exception) or isinstance(fields, Exception):
                continue  # expired: gone
            members = {}
            for i in range(0, len(fields), 2):
                rooms = fields[i + 1].decode().split()
                members[fields[i].decode()] = [int(r) for r in rooms if r.isdigit()]
            network.append((alive.decode(), members))
        return sorted(network, key=lambda server: server[0])
