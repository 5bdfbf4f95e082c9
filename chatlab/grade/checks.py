"""The checks: one function each, in the order a server is built (notebook 10's steps).

A check gets a ``Context`` (a fresh server, peers, unique tokens) and either returns (pass)
or raises ``Failed`` with what was expected and what arrived. ``catches`` names the classic
bugs it exists to catch (``BUGS``, the original server's five); ``hint`` is what to look at
when it fails. tests/test_grade.py runs a small server broken in one way per bug and shows
that exactly the checks naming that bug fail, and that chatlab's server passes them all.

Time: a message has ``DELIVERY`` seconds to arrive (generous: the grader must not fail a
correct server on a busy machine); "did not arrive" is judged after ``QUIET`` seconds in
which the same message reached everyone it should have.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from .peers import Peer
from .targets import Target

__all__ = ["BUGS", "CHECKS", "STEPS", "Check", "Context", "Failed", "Skipped"]

DELIVERY = 5.0  # seconds a message may take to reach a member
QUIET = 0.3  # seconds of silence that show a message did not go where it must not
JOIN_SETTLE = 0.5  # seconds to wait for a join's notice, for servers that send none
IDLE_WINDOW = 1.0  # seconds of idle in which the server's CPU is measured
FD_LIMIT = 2500  # many-clients: a thousand peers, and the server's thousand if in this process
IDLE_CPU = 0.25  # a server may use this share of a core while idle (a spin uses ~1.0)
# A flood for a member who never reads: more than Linux's largest default socket send buffer
# (net.ipv4.tcp_wmem's 4 MiB), from several talkers, each under chatlab's flood limit (500).
# A window is one message per talker, each read by the server before the talker's next: a
# flood, not a test of coalesced frames (coalesced-frames has that).
FLOOD_TALKERS, FLOOD_MESSAGES, FLOOD_LINE = 4, 1600, 3900
FLOOD_WINDOW = FLOOD_TALKERS

#: the original select() server's bugs (chatlab/classic.py), each caught by a named check
BUGS = {
    "one-recv-one-frame": "one recv() taken as one frame",
    "eof-spin": "EOF (recv() == b'') ignored: the loop spins",
    "crash-on-vanished-member": "a reset or a failed send kills the server",
    "skip-on-removal": "a member removed from the list being iterated: the next one is skipped",
    "blocking-send": "a blocking send to a member who does not read stalls the room",
}

#: notebook 10's steps, in order
STEPS = ["accept", "rooms", "frames", "disconnect", "writes", "limits"]


class Failed(AssertionError):
    """The server did not do what the check expects (the message says what arrived)."""


class Skipped(Exception):
    """The check cannot run here (the message says why)."""


@dataclass(frozen=True)
class Check:
    name: str
    step: str
    summary: str
    hint: str
    catches: tuple[str, ...]
    run: Callable[[Context], None]


CHECKS: dict[str, Check] = {}


def check(name: str, step: str, hint: str, catches: tuple[str, ...] = ()):
    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        assert step in STEPS and all(bug in BUGS for bug in catches)
        summary = (fn.__doc__ or "").strip().splitlines()[0]
        CHECKS[name] = Check(name, step, summary, hint, catches, fn)
        return fn

    return register


class Context:
    """What one check works with: the server, its peers, unique tokens."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.peers: list[Peer] = []
        self._tokens = itertools.count(1)
        # Fixed, so that a grader's report reads the same run after run (a notebook's stored
        # output is compared); unusual, so that no reply wording contains it by chance.
        self._salt = "qz"

    def peer(self, name: str, **kwargs) -> Peer:
        try:
            peer = Peer(self.target.address, name, **kwargs)
        except OSError as exc:
            raise Failed(f"{name} could not connect: {exc}") from None
        self.peers.append(peer)
        return peer

    def token(self, label: str = "m") -> str:
        """A word that appears nowhere else: the message a check looks for."""
        return f"{label}-{next(self._tokens)}-{self._salt}"

    def room(self, room: int, *members: Peer) -> None:
        """Join ``members`` to ``room`` in this order, each join done before the next.

        Done means: the earlier members received the server's notice of it (chatlab and the
        original both send one), or JOIN_SETTLE passed, for servers that are silent."""
        for i, member in enumerate(members):
            earlier = list(members[:i]) or [member]
            sizes = [len(p.received) for p in earlier]
            if not member.join(room):
                raise Failed(f"{member.name} could not send its join frame (server not reading)")
            if any(len(p.received) > n for p, n in zip(earlier, sizes, strict=True)):
                continue
            self.settle(earlier)

    def say(self, sender: Peer, room: int, label: str = "m") -> str:
        token = self.token(label)
        if not sender.say(room, token):
            raise Failed(f"{sender.name} could not send (the server stopped reading it)")
        return token

    def settle(self, watchers: list[Peer]) -> None:
        """Wait until one of ``watchers`` receives something (the server's notice of what
        just happened), or JOIN_SETTLE passed, for servers that send no notice."""
        sizes = [len(p.received) for p in watchers]
        deadline = time.monotonic() + JOIN_SETTLE
        while time.monotonic() < deadline:
            if any(len(p.received) > n for p, n in zip(watchers, sizes, strict=True)):
                return
            for p in watchers:
                p.pump(0.02)

    def expect(self, members: list[Peer], token: str, how: str) -> None:
        """Every member receives ``token`` within DELIVERY seconds."""
        for member in members:
            if not member.wait_for(token, DELIVERY):
                gone = " (the server closed its connection)" if member.closed_by_server else ""
                raise Failed(
                    f"{member.name} should receive {_short(token)} ({how}); in "
                    f"{DELIVERY:.0f} s it received {member.tail()}{gone}"
                )

    def expect_not(self, members: list[Peer], token: str, why: str) -> None:
        for member in members:
            if not member.quiet(token, QUIET):
                raise Failed(f"{member.name} received {_short(token)}, but {why}")

    def expect_alive(self, after: str) -> None:
        if not self.target.alive():
            raise Failed(f"the server died {after}")

    def idle_cpu(self, window: float = IDLE_WINDOW) -> float:
        """The share of a core the server uses over ``window`` seconds of silence."""
        start = self.target.cpu_seconds()
        if start is None:
            raise Skipped("this server's CPU cannot be measured here (needs --cmd, on Linux)")
        t0 = time.monotonic()
        time.sleep(window)
        end = self.target.cpu_seconds()
        if end is None:
            raise Failed("the server died while idle")
        return (end - start) / (time.monotonic() - t0)

    def expect_idle(self, after: str) -> None:
        share = self.idle_cpu()
        if share > IDLE_CPU:
            raise Failed(
                f"the server used {share:.0%} of a core while nothing happened, {after} "
                f"(at most {IDLE_CPU:.0%} expected)"
            )

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


# ------------------------------------------------------------------------------ accept


@check("accept", "accept", "accept() every connection; register each new socket for reading")
def _accept(ctx: Context) -> None:
    """Two hundred clients connect, more than a listen backlog holds: all accepted."""
    # The kernel completes connections into the listen queue by itself, so a server that
    # never calls accept() would pass a handful; 200 is more than the usual backlog (128:
    # what listen() takes by default), and the 129th connect() then waits in vain.
    for i in range(200):
        try:
            ctx.peers.append(Peer(ctx.target.address, f"c{i}"))
        except OSError as exc:
            raise Failed(
                f"client {i + 1} of 200 could not connect ({exc}): the listen queue is full, "
                "so the server is not accepting"
            ) from None
    ctx.peers.pop(0).close()
    ctx.peer("late")
    ctx.expect_alive("after 201 connections and one close")


# ------------------------------------------------------------------------------- rooms


@check("broadcast", "rooms", "send each message to every member of its room except its sender")
def _broadcast(ctx: Context) -> None:
    """A message reaches every other member of its room, and not its sender."""
    alice, bob, carol = ctx.peer("alice"), ctx.peer("bob"), ctx.peer("carol")
    ctx.room(111, alice, bob, carol)
    token = ctx.say(alice, 111)
    ctx.expect([bob, carol], token, "alice said it in room 111, which they joined")
    ctx.expect_not([alice], token, "a member is not sent its own message")


@check("rooms-apart", "rooms", "keep one member list per room; broadcast only to that room's")
def _rooms_apart(ctx: Context) -> None:
    """A message does not reach members of other rooms."""
    alice, bob, dave = ctx.peer("alice"), ctx.peer("bob"), ctx.peer("dave")
    ctx.room(111, alice, bob)
    ctx.room(222, dave)
    token = ctx.say(alice, 111)
    ctx.expect([bob], token, "alice said it in room 111")
    ctx.expect_not([dave], token, "dave is only in room 222")


@check("several-rooms", "rooms", "a connection may be in many rooms: rooms map to sets of sockets")
def _several_rooms(ctx: Context) -> None:
    """One connection in two rooms receives the messages of both."""
    alice, bob, carol = ctx.peer("alice"), ctx.peer("bob"), ctx.peer("carol")
    ctx.room(111, alice, bob)
    ctx.room(222, carol, bob)
    first, second = ctx.say(alice, 111), ctx.say(carol, 222)
    ctx.expect([bob], first, "bob is in room 111")
    ctx.expect([bob], second, "bob is in room 222 too")


# ------------------------------------------------------------------------------ frames


@check(
    "split-frame",
    "frames",
    "one recv() is not one frame: keep a buffer per connection, take frames out of it (chapter 03)",
    ("one-recv-one-frame",),
)
def _split_frame(ctx: Context) -> None:
    """A frame sent one byte at a time arrives whole."""
    alice, bob = ctx.peer("alice"), ctx.peer("bob")
    ctx.room(111, alice, bob)
    token = ctx.token()
    for byte in b"<RID:111>%s</RID:111>" % token.encode():
        if not alice.send(bytes([byte])):
            raise Failed("alice could not send (the server stopped reading her)")
        time.sleep(0.002)  # one segment per byte: the server's reads see the pieces
    ctx.expect([bob], token, "alice sent it one byte at a time")


@check(
    "coalesced-frames",
    "frames",
    "one recv() may hold many frames: take every complete frame out of the buffer (chapter 03)",
    ("one-recv-one-frame",),
)
def _coalesced_frames(ctx: Context) -> None:
    """Twenty frames in one send, to two rooms, all arrive."""
    alice, bob, carol = ctx.peer("alice"), ctx.peer("bob"), ctx.peer("carol")
    ctx.room(111, alice, bob)
    ctx.room(222, alice, carol)
    tokens = [(111 if i % 2 else 222, ctx.token()) for i in range(20)]
    burst = b"".join(b"<RID:%d>%s</RID:%d>" % (r, t.encode(), r) for r, t in tokens)
    if not alice.send(burst):
        raise Failed("alice could not send (the server stopped reading her)")
    for room, token in tokens:
        ctx.expect([bob if room == 111 else carol], token, f"frame in a burst of 20 to {room}")


@check(
    "garbage",
    "frames",
    "skip bytes that cannot start a frame, or answer them with an error; never drop the frames "
    "around them, never die",
)
def _garbage(ctx: Context) -> None:
    """Garbage between frames: the frames around it arrive and the server lives."""
    alice, bob = ctx.peer("alice"), ctx.peer("bob")
    ctx.room(111, alice, bob)
    before = ctx.say(alice, 111, "before")
    ctx.expect([bob], before, "sent before any garbage")
    alice.send(b"garbage, not a frame\r\n")
    after = ctx.say(bob, 111, "after")
    ctx.expect([alice], after, "bob is well-behaved, after alice's garbage")
    ctx.expect_alive("after garbage between frames")


@check(
    "large-frame",
    "frames",
    "a frame may be larger than one recv(): buffer until the closing tag (chapter 03)",
    ("one-recv-one-frame",),
)
def _large_frame(ctx: Context) -> None:
    """A 30,000-byte message arrives intact."""
    alice, bob = ctx.peer("alice"), ctx.peer("bob")
    ctx.room(111, alice, bob)
    token = ctx.token("big")
    body = token + "x" * 30_000 + token[::-1]
    if not alice.say(111, body):
        raise Failed("alice could not send 30 KB (the server stopped reading her)")
    ctx.expect([bob], token + "x" * 30_000 + token[::-1], "a 30 KB message")


# -------------------------------------------------------------------------- disconnect


@check(
    "eof",
    "disconnect",
    "recv() == b'' is the peer's close: unregister, leave every room, close (chapter 05)",
    ("eof-spin",),
)
def _eof(ctx: Context) -> None:
    """A member closes: the server does not spin, and the others are still served."""
    alice, bob, carol = ctx.peer("alice"), ctx.peer("bob"), ctx.peer("carol")
    ctx.room(111, alice, bob, carol)
    carol.pump(0.05)
    carol.close()
    ctx.peers.remove(carol)
    ctx.expect_idle("after a client closed its connection")
    token = ctx.say(alice, 111)
    ctx.expect([bob], token, "carol left; bob is still there")


@check(
    "half-close",
    "disconnect",
    "after recv() == b'' the peer may still read: stop reading it, never spin (chapter 05)",
    ("eof-spin",),
)
def _half_close(ctx: Context) -> None:
    """A member says something and half-closes: delivered, no spin, others served."""
    alice, bob, carol = ctx.peer("alice"), ctx.peer("bob"), ctx.peer("carol")
    ctx.room(111, alice, bob, carol)
    last = ctx.say(carol, 111, "last")
    carol.half_close()
    ctx.expect([alice, bob], last, "carol said it before shutdown(SHUT_WR)")
    ctx.expect_idle("after a client half-closed (shutdown(SHUT_WR))")
    token = ctx.say(alice, 111)
    ctx.expect([bob], token, "after carol's half-close")


@check(
    "reset",
    "disconnect",
    "a reset (ConnectionResetError) or a failed send is one client's end, not the server's: "
    "catch OSError around recv() and send(), then the one disconnect path (chapter 05)",
    ("crash-on-vanished-member",),
)
def _reset(ctx: Context) -> None:
    """A member vanishes with a reset: the server lives and serves the others."""
    alice, bob, carol, dave = (ctx.peer(n) for n in ("alice", "bob", "carol", "dave"))
    ctx.room(111, alice, bob, carol, dave)
    bob.reset()
    ctx.peers.remove(bob)
    ctx.settle([alice, carol, dave])  # a notice that bob left, if the server sends one
    for _ in range(2):  # the first send to a reset peer may succeed; the second fails
        token = ctx.say(alice, 111)
        ctx.expect([carol, dave], token, "bob's connection was reset, theirs were not")
    ctx.expect_alive("after a member's connection was reset")
    eve = ctx.peer("eve")
    ctx.room(111, eve)
    token = ctx.say(carol, 111)
    ctx.expect([eve], token, "eve joined after the reset")


@check(
    "removed-mid-broadcast",
    "disconnect",
    "never remove from the list you are iterating over: iterate over a copy, or remove after "
    "the loop (chapter 04)",
    ("skip-on-removal",),
)
def _removed_mid_broadcast(ctx: Context) -> None:
    """A member dropped during a broadcast: the member after it still gets every message."""
    # Two ways a member leaves in the middle of a loop over the room. (1) bob closed with
    # FIN and a server that missed it sends to him twice: the second send fails. (2) slow
    # never reads: a server with a per-member output limit drops him mid-broadcast.
    alice, bob, carol, dave = (ctx.peer(n) for n in ("alice", "bob", "carol", "dave"))
    ctx.room(111, alice, bob, carol, dave)
    bob.pump(0.05)
    bob.close()
    ctx.peers.remove(bob)
    ctx.settle([alice, carol, dave])
    for _ in range(3):
        token = ctx.say(alice, 111)
        ctx.expect([carol, dave], token, "bob, before them in the room, closed")
    talkers = [ctx.peer(f"talker{i}") for i in range(FLOOD_TALKERS)]
    slow, victim = ctx.peer("slow", rcvbuf=4096), ctx.peer("victim")
    ctx.room(222, *talkers, slow, victim)
    draining = None
    for sent, window in _flood(ctx, talkers, 222):
        if _missing(victim, window, 1.0, draining) and slow.pump(0.2):
            # A server that blocks in send() to slow waits for him: that is slow-reader's
            # finding, not this check's. From now on slow reads, so that such a server goes on.
            draining = slow
        if missing := _missing(victim, window, DELIVERY, draining):
            raise Failed(
                f"victim, after slow in room 222, missed {len(missing)} of messages "
                f"{sent - FLOOD_WINDOW + 1}-{sent} (first: {_short(missing[0])}) while slow "
                f"was not reading{_dropped(talkers)}, and received {victim.tail(60)}"
            )


# ------------------------------------------------------------------------------ writes


@check(
    "slow-reader",
    "writes",
    "never block in send(): non-blocking sockets, a buffer per member, EVENT_WRITE while it "
    "is not empty; cap it and drop a member who never reads (chapter 07)",
    ("blocking-send",),
)
def _slow_reader(ctx: Context) -> None:
    """A member who never reads does not stall the room."""
    talkers = [ctx.peer(f"talker{i}") for i in range(FLOOD_TALKERS)]
    reader, slow = ctx.peer("reader"), ctx.peer("slow", rcvbuf=4096)
    ctx.room(111, *talkers, reader, slow)
    for sent, window in _flood(ctx, talkers, 111):
        if missing := _missing(reader, window):
            raise Failed(
                f"reader did not receive {len(missing)} of messages {sent - FLOOD_WINDOW + 1}-"
                f"{sent} of {FLOOD_LINE} bytes within {DELIVERY:.0f} s (first: "
                f"{_short(missing[0])}){_dropped(talkers)}: is the server stuck sending to "
                "slow, who never reads?"
            )


# ------------------------------------------------------------------------------ limits


@check(
    "many-clients",
    "limits",
    "select() cannot take fds >= 1024 (FD_SETSIZE): use selectors.DefaultSelector, which is "
    "epoll or kqueue (chapters 02, 08)",
)
def _many_clients(ctx: Context) -> None:
    """A thousand clients in a hundred rooms: every message reaches its room."""
    _need_fds(FD_LIMIT)
    clients = [ctx.peer(f"c{i}") for i in range(1000)]
    for i, client in enumerate(clients):
        if not client.join(1000 + i // 10):
            raise Failed(f"client {i} of 1000 could not send its join frame")
    time.sleep(JOIN_SETTLE * 2)  # a thousand joins: no one to wait on for the silent servers
    tokens = []
    for r in range(100):
        tokens.append((r, ctx.say(clients[r * 10], 1000 + r)))
    for r, token in tokens:
        members = clients[r * 10 + 1 : r * 10 + 10]
        ctx.expect(members, token, f"room {1000 + r}, one of a hundred rooms of ten")
    ctx.expect_alive("with a thousand clients")


@check("idle-cpu", "limits", "block in select()/poll() with no timeout, or a long one")
def _idle_cpu(ctx: Context) -> None:
    """With ten quiet clients, the server sleeps."""
    peers = [ctx.peer(f"q{i}") for i in range(10)]
    ctx.room(111, *peers[:5])
    ctx.expect_idle("with ten connected, quiet clients")


@check(
    "cpu-after-burst",
    "limits",
    "after a burst, go back to sleep: nothing left registered "
    "for writing once the buffers are empty (chapter 07)",
)
def _cpu_after_burst(ctx: Context) -> None:
    """After a burst of 300 messages to 5 members, the server sleeps again."""
    talker, *members = (ctx.peer(f"b{i}") for i in range(6))
    ctx.room(111, talker, *members)
    for _ in range(300):  # each as its own frame and send: this is not split-frame's test
        token = ctx.say(talker, 111, "burst")
        ctx.expect(members[-1:], token, "one of a burst of 300")
    ctx.expect(members, token, "the last of a burst of 300")
    ctx.expect_idle("after a burst of 300 messages")


def _flood(ctx: Context, talkers: list[Peer], room: int):
    """Send FLOOD_MESSAGES messages of FLOOD_LINE bytes, the talkers in turn, in windows of
    FLOOD_WINDOW (a window fits in the talkers' socket buffers, so sending never waits on
    the server); yield (number sent so far, the window's tokens) after each window."""
    line = "f" * FLOOD_LINE
    for start in range(0, FLOOD_MESSAGES, FLOOD_WINDOW):
        window = []
        for i in range(start, start + FLOOD_WINDOW):
            talker = talkers[i % len(talkers)]
            token = ctx.token("flood")
            if not talker.say(room, token + line):
                raise Failed(
                    f"after {i} messages the server stopped reading {talker.name} for 5 s: is "
                    "it blocked sending to a member who does not read?"
                )
            window.append(token)
            for other in talkers:  # the talkers are members too: they read, unlike slow
                other.pump(0)
        yield start + FLOOD_WINDOW, window


def _dropped(peers: list[Peer]) -> str:
    gone = [p.name for p in peers if p.closed_by_server]
    return f" (the server closed {', '.join(gone)}, who read everything)" if gone else ""


def _missing(
    member: Peer, tokens: list[str], timeout: float = DELIVERY, drain: Peer | None = None
) -> list[str]:
    """The tokens that do not reach ``member`` within ``timeout`` (all of them together:
    messages from different talkers may arrive in any order). ``drain``: a peer to read
    meanwhile, so that a server blocked in a send to it can go on."""
    deadline = time.monotonic() + timeout
    for token in tokens:
        while not member.saw(token) and time.monotonic() < deadline:
            member.pump(0.01)
            if drain is not None:
                drain.pump(0)
    return [t for t in tokens if not member.saw(t)]


def _short(token: str) -> str:
    return repr(token if len(token) <= 40 else f"{token[:16]}...{token[-16:]}")


def _need_fds(need: int) -> None:
    """Skip where this process may not open ``need`` fds (grade() raised the soft limit as
    far as the hard one lets it)."""
    try:
        import resource
    except ImportError:
        raise Skipped("no RLIMIT_NOFILE here") from None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        raise Skipped(f"the fd limit is {soft}; this check needs {need} (ulimit -n)")
