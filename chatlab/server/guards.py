"""Guards for the open internet: a deadline per frame, flood control, bounded memory.

An honest client sends whole frames, a few a second, and reads what it is sent. Each guard
here bounds what a client that does not can cost everyone else; the limits are in limits.py,
with their reasons.

Design notes:

1. A deadline per frame (``frame_timeout``). A read that leaves part of a frame buffered
   starts the clock for that frame; a frame completed since restarts it. One timer per
   connection at most, armed when the clock starts and re-armed lazily when it fires early
   (asyncio's timeouts do the same): the loop never scans every connection.
2. Flood control (``max_message_rate``, ``message_burst``): a token bucket per connection.
   A frame costs a token; tokens come back at the rate, up to the burst. A connection
   without a token is not read until one is back: its bytes wait in its kernel buffer,
   then TCP's window stops the sender. Nothing is dropped, and we buffer nothing for it.
   But its kernel buffers can hold minutes of messages, which we would go on reading, at
   the rate, long after it left: a connection whose bucket has not been full again for
   ``flood_timeout`` seconds is disconnected for flooding (IRC's "Excess Flood").
3. Fairness, limit or not: one readiness callback handles at most FRAMES_PER_CALLBACK frames;
   the rest wait for the next loop pass, so one client's 64 KiB of tiny frames cannot hold
   the loop while everyone else waits.
4. Bounded memory (``max_buffer_memory``): what connections hold, input not yet a whole
   frame and output their kernels would not take, is counted as it changes; once per loop
   pass (a before-poll hook), if the total is over the limit, the connection holding the
   most is disconnected, and the next, until the total is under (redis's
   maxmemory-clients).

Discussion: what the guards cost a server that needs none of them. With the rate limit off
(as the throughput benchmarks run), each read still pays for a budget, a count of the frames
taken out (islice), and, when it ends part way through a frame, the frame's clock and the
memory count: no syscall, a few hundred nanoseconds per read. On fanout 10 x 10 (native
generator, server pinned) that measured about 3% of server CPU per delivery against the
commit before the guards, in two sessions of four alternating runs each (in proportion to
epoll-flat-noruns in the same run: 1.26 -> 1.30 and 1.21 -> 1.25).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import protocol
from ..loop import Handle
from .limits import FRAMES_PER_CALLBACK

if TYPE_CHECKING:
    from .connections import Connection, Connections

__all__ = ["Guards"]

# conn.resume while it waits for the next pass (pause): a handle that is never run.
_NEXT_PASS = Handle(lambda: None, ())


class Guards:
    """The three guards of one server's connections (design notes 1-4)."""

    def __init__(self, conns: Connections) -> None:
        self.conns = conns
        self.loop = conns.loop
        limits = conns.limits
        self.frame_timeout = limits.frame_timeout
        self.rate = limits.max_message_rate
        self.burst = limits.message_burst
        self.flood_timeout = limits.flood_timeout
        self.max_memory = limits.max_buffer_memory
        self.held_input = 0  # input bytes held by every connection (note 4)
        self._next_pass: dict[Connection, None] = {}  # paused for their turn (note 3)
        self.loop.add_before_poll(self._queue_next_pass)
        if self.max_memory:
            self.loop.add_before_poll(self.check_memory)

    def admit(self, conn: Connection) -> None:
        """A new connection starts with a full bucket."""
        conn.tokens = float(self.burst)
        conn.tokens_at = self.loop.time()
        conn.flooding_since = None

    # -- flood control and fairness (notes 2 and 3) ---------------------------------------

    def budget(self, conn: Connection) -> int:
        """How many frames conn may have handled now; 0 when it must wait (then paused)."""
        if not self.rate:
            return FRAMES_PER_CALLBACK
        now = self.loop.time()
        tokens = min(self.burst, conn.tokens + (now - conn.tokens_at) * self.rate)
        conn.tokens, conn.tokens_at = tokens, now
        if tokens >= self.burst:
            conn.flooding_since = None  # its bucket filled up again: it keeps to its rate
        elif conn.flooding_since is None:
            conn.flooding_since = now
        elif self.flood_timeout and now - conn.flooding_since > self.flood_timeout:
            # Over its rate all that time (note 2): what its kernel still holds is flood.
            why = protocol.ExcessFlood(self.rate, self.flood_timeout).sentence()
            self.conns.disconnect(conn, why)
            return 0
        if tokens < 1:
            self.pause(conn)
            return 0
        return min(FRAMES_PER_CALLBACK, int(tokens))

    def spent(self, conn: Connection, handled: int, budget: int) -> bool:
        """``handled`` frames of ``budget`` were handled; True if conn is now paused."""
        if self.rate:
            conn.tokens -= handled
        if handled < budget:
            return False  # the decoder has no whole frame left
        self.pause(conn)  # frames may be waiting: the next pass, or when tokens are back
        return True

    def pause(self, conn: Connection) -> None:
        """Read no more from conn until it may send again (note 2), or the next pass (3)."""
        if conn.resume is not None:
            return
        self.loop.remove_reader(conn.sock)
        if self.rate and conn.tokens < 1:
            delay = (1 - conn.tokens) / self.rate
            conn.resume = self.loop.call_later(delay, self.conns.resume, conn)
        else:
            # Its turn comes after the other clients' next turn, not in this pass: a timer
            # due now, or a call_soon, would still run in this pass (loop.py note 2). So it
            # waits here, and the hook below queues it just before the loop polls again;
            # it then runs after that poll's ready fds.
            conn.resume = _NEXT_PASS
            self._next_pass[conn] = None

    def _queue_next_pass(self) -> None:
        """Before the loop polls: the connections paused for their turn go after its fds."""
        if self._next_pass:
            waiting, self._next_pass = self._next_pass, {}
            for conn in waiting:
                conn.resume = self.loop.call_soon(self.conns.resume, conn)

    # -- the deadline per frame (note 1) --------------------------------------------------

    def after_input(self, conn: Connection, buffered: int, handled: int) -> None:
        """conn's decoder was fed, ``handled`` events were taken out, ``buffered`` bytes are
        left: count what it holds, and start (or stop) the clock on the frame part way in."""
        if buffered != conn.held_in:
            self.held_input += buffered - conn.held_in
            conn.held_in = buffered
        if not self.frame_timeout:
            return
        if not buffered:
            conn.frame_since = None
        elif handled or conn.frame_since is None:
            conn.frame_since = self.loop.time()  # a new frame begins in this read
            if conn.frame_timer is None:
                conn.frame_timer = self.loop.call_later(self.frame_timeout, self._due, conn)

    def _due(self, conn: Connection) -> None:
        conn.frame_timer = None
        since = conn.frame_since
        if since is None or conn.closing:
            return  # the frame was completed, or the connection is going anyway
        left = since + self.frame_timeout - self.loop.time()
        if conn.resume is not None:
            left = self.frame_timeout  # whole frames wait on us, not on the peer
        if left > 0:
            conn.frame_timer = self.loop.call_later(left, self._due, conn)
            return
        why = protocol.FrameTimedOut(self.frame_timeout).sentence()
        self.conns.disconnect(conn, why)

    # -- bounded memory (note 4) ----------------------------------------------------------

    def held(self, conn: Connection) -> int:
        return conn.held_in + conn.queued

    def check_memory(self) -> None:
        """Once per pass: over the limit, disconnect the biggest holders until under it."""
        if self.held_input + self.conns.batch.queued <= self.max_memory:
            return
        why = protocol.BuffersFull(self.max_memory).sentence()
        while self.held_input + self.conns.batch.queued > self.max_memory:
            candidates = [c for c in self.conns.by_fd.values() if not c.closing]
            victim = max(candidates, key=self.held, default=None)
            if victim is None or not self.held(victim):
                return  # what is left is held by connections already on their way out
            victim.drop_queue()  # room for the reason; it will never read the rest
            self.conns.disconnect(victim, why)

    def release(self, conn: Connection) -> None:
        """conn reads no more (it is leaving): forget its input and stop its timers."""
        self.held_input -= conn.held_in
        conn.held_in = 0
        conn.frame_since = None
        self._next_pass.pop(conn, None)
        for timer in (conn.frame_timer, conn.resume):
            if timer is not None:
                timer.cancel()
        conn.frame_timer = conn.resume = None
