"""One non-blocking byte stream on the loop: how every chatlab writer sends, and says goodbye.

The server's connections, the bus's Redis connections and the terminal client all write to a
non-blocking socket. Writing well is the same job for each, so it is written once, here, in
the way of asyncio's ``_SelectorSocketTransport`` and libuv's ``uv_stream_t``.

Design notes:

1. ``write(data)`` queues a *reference* to ``data`` (no copy: a broadcast queues the one
   frame on every member) and marks the stream pending in its ``WriteBatch``.
2. Once per loop pass, before the loop polls (the loop's before-poll hook, like redis's
   beforeSleep), the batch sends each pending stream everything queued for it with ONE
   ``sendmsg()``: the kernel gathers the pieces. A stream written to ten times in a pass
   costs one system call, not ten.
3. What the kernel does not take stays queued, and only then is a writer registered with
   the loop; it is removed as soon as the queue is empty. Past ``max_queued`` bytes that
   the kernel would not take, the owner is told (``on_overflow``): a reader that does not
   read costs its own queue, never the others' time (an IRC server's SendQ).
4. The lifecycle is one ``state``, and every change of it is a row of ``TRANSITIONS`` (as
   h11 keeps its states in a table): a transition that is not in the table is a bug, and
   raises.
5. ``close()`` says goodbye without losing the last words: flush what is queued, then
   ``shutdown(SHUT_WR)`` (our FIN), then read and drop until the peer's EOF, and only then
   ``close()``; ``linger`` seconds bound the whole. ``abort()`` closes at once (a broken
   socket). Either way ``on_closed`` runs once. ``write_eof()`` is the half of it a client
   wants at the end of its input: FIN after the queue, while its owner goes on reading.

The stream does not read for its owner: reading is the owner's hot path (the server's
decoder), and a stream only reads once it is draining. The owner tells it ``peer_done()``
when its recv() returned EOF.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable
from typing import Any

from .loop import EventLoop, TimerHandle

__all__ = ["IOV_MAX", "TRANSITIONS", "State", "Stream", "StreamStateError", "WriteBatch"]

# At most this many buffers go to one sendmsg() (the kernel refuses more: EMSGSIZE); the
# rest wait for the next flush, as a partial send's rest does.
IOV_MAX = 1024
# How much a draining stream reads at a time: it only throws it away.
DRAIN_SIZE = 64 * 1024


class State(enum.Enum):
    """Where a stream is on its way from open to closed (design note 4)."""

    OPEN = "open"  # reading and writing
    PEER_DONE = "peer done"  # the peer sent EOF; we may still write (replies it is owed)
    HALF_CLOSED = "half-closed"  # we write no more: FIN once the queue is sent; still read
    CLOSING = "closing"  # leaving: flushing our last bytes; the peer's input is ignored
    CLOSING_PEER_DONE = "closing, peer done"  # the same, after the peer's EOF
    DRAINING = "draining"  # flushed and FIN sent; reading and dropping until the peer's EOF
    CLOSED = "closed"

    # Discussion: the batch asks "state in SENDING" of every stream it flushes, each pass.
    # Enum's own __hash__ is Python code (hash of the name): 87 ns a test, against 30 ns
    # with the identity hash, which is right for members (each exists once).
    __hash__ = object.__hash__


OPEN, PEER_DONE, HALF_CLOSED, CLOSING, CLOSING_PEER_DONE, DRAINING, CLOSED = State

# (event, from) -> to. Events: "eof" (recv() returned b""), "write_eof" (we have nothing more
# to say, but listen on: a client whose input ended), "close" (say goodbye), "flushed" (the
# last byte queued is in the kernel's hands), "abort" (close now). Nothing else moves.
TRANSITIONS: dict[tuple[str, State], State] = {
    ("eof", OPEN): PEER_DONE,
    ("eof", HALF_CLOSED): CLOSED,  # both sides have said all
    ("eof", DRAINING): CLOSED,
    ("write_eof", OPEN): HALF_CLOSED,
    ("close", OPEN): CLOSING,
    ("close", PEER_DONE): CLOSING_PEER_DONE,
    ("close", HALF_CLOSED): CLOSING,
    ("flushed", CLOSING): DRAINING,  # our FIN goes out; wait for theirs
    ("flushed", CLOSING_PEER_DONE): CLOSED,  # both sides done: nothing to wait for
    **{("abort", s): CLOSED for s in State if s is not CLOSED},
}

# The states in which write() still queues: once closing, the goodbye is already queued.
WRITABLE = frozenset({OPEN, PEER_DONE})
# The states in which the batch still sends what is queued (close() sends its own).
SENDING = frozenset({OPEN, PEER_DONE, HALF_CLOSED})


class StreamStateError(RuntimeError):
    """A stream was asked for a transition that TRANSITIONS does not have: a bug."""


# Windows' sockets have no sendmsg() in Python: there the pieces are joined first.
_SCATTER_GATHER = hasattr(socket.socket, "sendmsg")


class WriteBatch:
    """The streams with output queued this pass; flushed once per pass (design note 2)."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        # An ordered set: dict keys. The server adds a whole room's members in one C call.
        self.pending: dict[Stream, None] = {}
        self.bytes_sent = 0  # by every stream of this batch, for its owner's statistics
        self.queued = 0  # bytes its streams hold that their kernels would not take, in all
        loop.add_before_poll(self.flush)

    def flush(self) -> None:
        while self.pending:  # a flush may queue more (a stream's overflow notice...)
            pending, self.pending = self.pending, {}
            for stream in pending:
                if stream.out and not stream.writing and stream.state in SENDING:
                    stream.flush()

    def close(self) -> None:
        """Stop flushing before each poll (the owner is done with this loop)."""
        self.pending.clear()
        if not self.loop.is_closed():
            self.loop.remove_before_poll(self.flush)


class Stream:
    """A non-blocking socket's output queue and its way out (design notes 1-5).

    ``on_lost(stream, reason)``: a send failed (reset, broken pipe); the owner decides what
    follows (the server disconnects the peer: ``abort()``). ``on_overflow(stream)``: more
    than ``max_queued`` bytes wait that the kernel would not take. ``on_closed(stream)``:
    the socket is closed, once, however it ended.
    """

    __slots__ = (
        "loop",
        "sock",
        "fd",
        "batch",
        "out",
        "queued",
        "writing",
        "state",
        "max_queued",
        "on_lost",
        "on_overflow",
        "on_closed",
        "_linger",
    )

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        batch: WriteBatch,
        *,
        max_queued: int | None = None,
        on_lost: Callable[[Any, str], None] | None = None,
        on_overflow: Callable[[Any], None] | None = None,
        on_closed: Callable[[Any], None] | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.batch = batch
        self.out: list[bytes] = []  # references, often shared with other streams (note 1)
        self.queued = 0  # bytes in out, kept exact while writing (see flush)
        self.writing = False  # a writer is registered with the loop
        self.state = OPEN
        self.max_queued = max_queued
        self.on_lost = on_lost
        self.on_overflow = on_overflow
        self.on_closed = on_closed
        self._linger: TimerHandle | None = None

    # -- the lifecycle (design note 4) ----------------------------------------------------

    def _advance(self, event: str) -> State:
        new = TRANSITIONS.get((event, self.state))
        if new is None:
            raise StreamStateError(f"{event!r} is not a transition from {self.state.value!r}")
        self.state = new
        return new

    @property
    def closing(self) -> bool:
        """On its way out (or out): closing, draining or closed."""
        return self.state not in SENDING

    # -- writing (design notes 1-3) -------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` (a reference, not a copy); it goes out before the loop next polls."""
        if self.state not in WRITABLE:
            return  # closing: the goodbye was the last thing queued
        self.out.append(data)
        if self.writing:
            # The kernel took only part of the last flush: what we queue now is what it will
            # not take, which is what max_queued bounds (note 3).
            self.queued += len(data)
            self.batch.queued += len(data)
            if self.max_queued is not None and self.queued > self.max_queued:
                self._overflow()
            return
        self.batch.pending[self] = None

    def queued_bytes(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return sum(map(len, self.out))

    def flush(self) -> None:
        """Send what the kernel takes now; ask for write readiness only for the rest."""
        out = self.out
        batch = out if len(out) <= IOV_MAX else out[:IOV_MAX]
        try:
            sent = _send_gathered(self.sock, batch) if batch else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(describe(exc))
            return
        self.batch.bytes_sent += sent
        if batch is out and sent == sum(map(len, out)):
            out.clear()  # the common case: the kernel took it all
        else:
            _consume(out, sent)
        if out:
            self._set_queued(sum(map(len, out)))
            if self.max_queued is not None and self.queued > self.max_queued:
                if not self.closing:
                    # Many writers can queue more than the limit in one pass; this is after
                    # the kernel took what it could, so the reader is truly behind.
                    self._overflow()
                    return
            if not self.writing:
                self.writing = True
                self.loop.add_writer(self.sock, self.flush)
        else:
            if self.queued:
                self._set_queued(0)
            if self.writing:
                self.writing = False
                self.loop.remove_writer(self.sock)
            if self.state is CLOSING or self.state is CLOSING_PEER_DONE:
                self._flushed()
            elif self.state is HALF_CLOSED:
                self._shut_write()

    def _set_queued(self, n: int) -> None:
        self.batch.queued += n - self.queued  # the owner's total (the server's memory limit)
        self.queued = n

    def drop_queue(self) -> None:
        """Forget what is queued (a reader over its limit will never read it)."""
        self.out.clear()
        self._set_queued(0)

    def _overflow(self) -> None:
        if self.on_overflow is not None:
            self.on_overflow(self)

    def _lost(self, reason: str) -> None:
        if self.on_lost is not None:
            self.on_lost(self, reason)
        else:
            self.abort()

    # -- the way out (design note 5) ------------------------------------------------------

    def peer_done(self) -> None:
        """The owner read EOF: the peer will send nothing more (after write_eof(): the end)."""
        if self.state is OPEN:
            self._advance("eof")
        elif self.state is HALF_CLOSED:
            self._advance("eof")
            self._close()

    def write_eof(self) -> None:
        """We have nothing more to send: FIN once the queue is sent. The owner reads on.

        asyncio's transport.write_eof(): what ``printf 'hi\\n' | client`` does at the end of
        its input, so the server sees EOF and answers everything before it closes too."""
        if self.state is not OPEN:
            return
        self._advance("write_eof")
        if not self.out and not self.writing:
            self._shut_write()

    def _shut_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()

    def close(self, linger: float, last: bytes | None = None) -> None:
        """Say goodbye: ``last`` (if any) goes out after what is queued, then FIN, then wait
        for the peer's; at most ``linger`` seconds in all. Safe to call twice: the first
        call decides. The same as stop_reading() then finish()."""
        if self.closing:
            return
        self.stop_reading()
        self.finish(linger, last)

    def stop_reading(self) -> None:
        """The first half of close(): nothing more is read or queued (but ``last``).

        A server that must first tell the others someone left (which may disconnect more
        members: see the server's connections.py) calls this at once and finish() after."""
        if self.closing:
            return
        self._advance("close")
        self.loop.remove_reader(self.sock)
        self.batch.pending.pop(self, None)

    def finish(self, linger: float, last: bytes | None = None) -> None:
        """The second half of close(): send ``last`` and the rest, FIN, drain, close."""
        if self.state is not CLOSING and self.state is not CLOSING_PEER_DONE:
            return  # aborted meanwhile, or finishing already
        if last:
            self.out.append(last)
        if self.out or self.writing:
            self.flush()  # ends in _flushed() once the kernel has taken it all
        else:
            self._flushed()
        # Discussion: the commonest close is after the peer's EOF with nothing left to send,
        # which ends right above; so the linger timer is armed only for a stream still open
        # now. Armed for every one, a cancelled timer stays in the loop's heap, holding its
        # stream, until it is due: at 14,000 connections/s that was 28,000 dead timers, and
        # the server's churn cost went from 67.9 to 58.5 us per connection without them.
        if self.state is not CLOSED and self._linger is None:
            self._linger = self.loop.call_later(linger, self.abort)

    def _flushed(self) -> None:
        """The goodbye is in the kernel's hands: send FIN, then wait for the peer's.

        Discussion: close() on a socket with unread input makes the kernel send a reset
        (RST) instead of an orderly FIN, and a reset lets the peer's kernel discard what we
        sent last, the reason for the disconnect, before the peer reads it. So we shut our
        side down, read and drop whatever the peer still sends until its EOF, and only then
        close. The linger timer bounds the wait for a peer that never closes.
        """
        if self._advance("flushed") is CLOSED:
            self._close()
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
            return
        self.loop.add_reader(self.sock, self._drain_until_eof)

    def _drain_until_eof(self) -> None:
        try:
            data = self.sock.recv(DRAIN_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._advance("eof")
            self._close()

    def abort(self) -> None:
        """Close now, dropping whatever is queued. Safe to call twice."""
        if self.state is CLOSED:
            return
        self._advance("abort")
        self._close()

    def release(self) -> None:
        """The loop is going away (closed, or about to be): close the socket, tell no one."""
        if self.state is not CLOSED:
            self._advance("abort")
        self.out = []
        self._set_queued(0)
        self.sock.close()

    def _close(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.loop.remove_reader(self.sock)
        self.loop.remove_writer(self.sock)
        self.writing = False
        self.batch.pending.pop(self, None)
        self.out = []
        self._set_queued(0)
        self.sock.close()
        if self.on_closed is not None:
            self.on_closed(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd} {self.state.value}>"


def _send_gathered(sock: socket.socket, chunks: list[bytes]) -> int:
    """One send of several buffers; the kernel gathers them (no join, no copy here)."""
    if len(chunks) == 1:
        return sock.send(chunks[0])
    if _SCATTER_GATHER:
        return sock.sendmsg(chunks)
    return sock.send(b"".join(chunks))


def _consume(out: list[bytes], sent: int) -> None:
    """Drop the ``sent`` bytes from the front of ``out``: whole frames, then part of one."""
    done = 0
    while done < len(out) and sent >= len(out[done]):
        sent -= len(out[done])
        done += 1
    del out[:done]
    if sent:
        out[0] = out[0][sent:]  # a partial send: copy the rest of this one frame only


def describe(exc: OSError) -> str:
    """A short reason for the logs and the stats: 'connection reset', 'broken pipe'..."""
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    return exc.strerror.lower() if exc.strerror else str(exc)
