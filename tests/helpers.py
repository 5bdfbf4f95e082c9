"""What the tests share: waits, syncs, readers, and servers to talk to (plain code, no fixtures).

Fixtures live in conftest.py; everything here is a function or a class a test imports by name
(``from helpers import wait_for, sync``; pyproject.toml puts tests/ on sys.path). There is one
of each: before this module, three files had their own ``wait_for``, two their own ``sync``,
four their own way to read a socket until something arrived.

What every helper here holds to:

- Bounded. Nothing waits without a deadline, and reaching it fails the test saying what it
  waited for and what it saw. The default bound (TIMEOUT) is far above what any wait takes,
  so reaching it means something is lost or stuck, never that the machine is slow.
- No sleeping instead of knowing. To prove that something did NOT arrive, ``sync()`` makes a
  round trip: one connection's bytes arrive in order and the server handles frames in the
  order it reads them, so whatever it queued for that client before the round trip's reply
  arrives before it.
- Public state only. Server state is read through its public snapshots (``rooms()``,
  ``statistics()``, ``connections()``), and read on the loop's own thread (``in_loop``) where
  the test needs it consistent: taken between two handlers, never in the middle of one.

Sections: waits; syncs; readers (raw sockets, and ``Peer``, a client that reads on its own
thread); servers in this process (``running``, ``connect_many``...); servers as processes
(``ServerProcess``, ``run_cli``).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import chatlab
from chatlab import ScriptedClient, encode_frame, protocol
from chatlab.backends import FD_SETSIZE
from chatlab.framing import Frame, FrameDecoder
from chatlab.scripted import Received

REPO = Path(__file__).resolve().parents[1]

# A bound for any single wait: far above what any of them takes (see the module docstring).
TIMEOUT = 20.0


# ------------------------------------------------------------------------------- waits


def wait_for(predicate, what: str, timeout: float = TIMEOUT):
    """Poll predicate() until it is truthy and return that value; fail naming ``what``.

    The first checks come fast (most conditions hold within a millisecond or two); the pause
    between checks then grows to 10 ms, so a long wait does not spin a core.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.01)


def run_until(loop: chatlab.EventLoop, predicate, *, max_iterations=100, timeout=0.5) -> None:
    """Drive a loop that no thread runs, one iteration at a time, until predicate() holds.

    Bounded twice: at most ``max_iterations`` iterations of at most ``timeout`` s each, so a
    loop that wakes up again and again without making progress fails as surely as one that
    never wakes up.
    """
    for _ in range(max_iterations):
        if predicate():
            return
        loop.run_once(timeout)
    assert predicate(), f"condition not reached after {max_iterations} iterations"


def in_loop(server: chatlab.ChatServer, fn, timeout: float = TIMEOUT):
    """Run fn() on the server's loop thread and return its result (or raise its error).

    ``in_loop(server, server.connections)`` is a snapshot taken between two handlers.
    """
    try:
        return server.loop.call_and_wait(fn, timeout=timeout)
    except TimeoutError:
        raise AssertionError(
            f"the server's loop did not run a callback within {timeout:g} s"
        ) from None


# ------------------------------------------------------------------------------- syncs

# A room no test joins: "/who" on it is the round trip sync() waits for.
SYNC_ROOM = 999_999_999


def sync(client: ScriptedClient) -> list[Received]:
    """A round trip; return the lines that arrived since the last sync (the reply excluded).

    Once the reply is in, the server has handled everything this client sent before, and
    everything it queued for this client before that has arrived.
    """
    start = len(client.transcript)
    client.send(protocol.SERVER_ROOM, f"/who {SYNC_ROOM}")
    reply = client.expect(f"room {SYNC_ROOM}: ", room=protocol.SERVER_ROOM, kind="notice")
    end = next(i for i in range(start, len(client.transcript)) if client.transcript[i] is reply)
    return client.transcript[start:end]


# ----------------------------------------------------------------------------- readers


def read_until(sock: socket.socket, needle: bytes, timeout: float = TIMEOUT) -> bytes:
    """Read a raw socket until ``needle`` arrives; return all it read. Fail saying what came."""
    deadline = time.monotonic() + timeout
    data = b""
    while needle not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not received within {timeout:g} s; got {data!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"connection closed before {needle!r} arrived; got {data!r}")
        data += chunk
    return data


def read_to_eof(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything a raw socket receives until the peer closes it (FIN or reset).

    Fails if the peer does not close within ``timeout``, showing the last bytes that came.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"the server did not close the connection within {timeout:g} s; got {data[-200:]!r}"
            )
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:  # a reset: as good as EOF for a reader
            return data
        if not chunk:
            return data
        data += chunk


def errors_in_room0(client: ScriptedClient) -> list[str]:
    """The error lines a client received in the server's room, in order."""
    return [line.body for line in client.transcript if line.room == 0 and line.kind == "error"]


class Peer:
    """A raw client whose own thread reads and decodes everything the server sends.

    ``frames`` is [(room, body)] in arrival order. The socket's timeout is set once and
    never changed, so the test thread may send while the reader thread receives (a
    ScriptedClient reads only when asked, and changes its timeout to do so).
    """

    def __init__(self, address, nick: str | None = None, *, rcvbuf=None, read=True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                # Before connect(), so the window the peer is offered is small from the start.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(tuple(address))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            self.sock.close()
            raise
        self.nick = nick
        self.frames: list[tuple[int | None, str]] = []
        self.eof = False
        self._thread: threading.Thread | None = None
        if read:
            self.start_reading()
        if nick:
            try:
                self.send(0, f"/nick {nick}")
                if read:
                    self.wait_for(protocol.YouRenamed(nick).body(), room=0)
            except BaseException:
                self.close()
                raise

    def start_reading(self) -> None:
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"peer-{self}")
        self._thread.start()

    def _read(self) -> None:
        decoder = FrameDecoder(max_frame_size=16 * 1024 * 1024)
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue  # nothing for a while: keep waiting until EOF or close()
            except OSError:
                data = b""  # reset: as good as EOF for a reader
            decoder.receive_data(data)
            for event in decoder.events():
                if isinstance(event, Frame):
                    self.frames.append((event.room, event.text))
                else:  # the server never sends a broken frame; keep it where a test sees it
                    self.frames.append((None, repr(event)))
            if not data:
                self.eof = True
                return

    def send(self, room: int, body: str | bytes) -> None:
        self.sock.sendall(encode_frame(room, body))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def join(self, room: int) -> None:
        self.send(room, "")
        self.wait_for(protocol.YouEntered, room=room)

    def wait_for(
        self,
        text: str | type[protocol.Reply],
        *,
        room: int | None = None,
        timeout: float = TIMEOUT,
    ) -> int:
        """Index of the first frame (of ``room``) whose body contains ``text``, or that is a
        reply of that type (``protocol.YouEntered``); waits for it."""
        checked = 0

        def matches(body: str) -> bool:
            if isinstance(text, str):
                return text in body
            return isinstance(protocol.parse_reply(body), text)

        def found() -> bool:
            nonlocal checked
            frames = self.frames
            while checked < len(frames):
                r, body = frames[checked]
                if (room is None or r == room) and matches(body):
                    return True
                checked += 1
            return False

        wait_for(found, f"{self} to receive {text!r}", timeout)
        return checked

    def messages(self, room: int, sender: str) -> list[str]:
        """The texts of chat messages from ``sender`` in ``room``, in arrival order."""
        prefix = f"<{sender}> "
        return [b[len(prefix) :] for r, b in self.frames if r == room and b.startswith(prefix)]

    def close(self) -> None:
        # shutdown() wakes our reader thread (its recv() returns b""); only then close the
        # fd, so the thread can never read from a new socket that reused the number.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(TIMEOUT)
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Peer {self.nick or '?'}>"


# ------------------------------------------------------------ servers in this process


@contextlib.contextmanager
def running(backend: str, **kwargs):
    """A server on ``backend`` and an ExitStack for its clients, closed before it stops.

    After a body that passed, the server must have stopped within its linger bound, and its
    loop's counters must show no callback that raised and no fd closed while registered.
    """
    server = chatlab.ChatServer(backend=backend, **kwargs).start()
    try:
        with contextlib.ExitStack() as stack:
            yield server, stack
    finally:
        # What chatlab.serve() does, keeping stop()'s answer: did serve_forever() finish?
        stopped = server.stop(timeout=server.limits.linger_seconds + 5)
    # Reached only when the body passed. The server has stopped, so its counters are final.
    assert stopped, "the server did not stop within its linger bound"
    stats = server.loop.statistics()
    assert stats.errors == 0, f"{stats.errors} server callback(s) raised; see the log"
    assert stats.dropped_fds == 0, "the server closed a socket that was still registered"
    assert stats.stale_fds == 0, "the server closed a socket that was still registered"


def members(server: chatlab.ChatServer, room: int) -> list[str]:
    """The names in ``room``, in join order, read on the loop's thread."""
    return in_loop(server, server.rooms).get(room, [])


def connection_count(server: chatlab.ChatServer) -> int:
    """How many connections the server holds, read on the loop's thread."""
    return in_loop(server, lambda: server.statistics().connections)


def held_ports(server: chatlab.ChatServer) -> set[int]:
    """The client-side ports of every connection the server holds (a loop-thread snapshot)."""
    return {c.address[1] for c in in_loop(server, server.connections)}


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER on and a zero timeout: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def loop_held(server: chatlab.ChatServer):
    """Keep the server's loop busy in one callback for the with block.

    What arrives meanwhile is all waiting when the loop wakes up, so its next pass reads
    a full recv() from each ready client: how a busy server meets a burst, made certain.
    """
    release, holding = threading.Event(), threading.Event()

    def hold():
        holding.set()
        release.wait(TIMEOUT)

    server.loop.call_soon_threadsafe(hold)
    try:
        assert holding.wait(TIMEOUT), "the server's loop never ran our callback"
        yield
    finally:
        release.set()


# Load tests: the sender never gets more than WINDOW messages ahead of the slowest reader.
WINDOW = 300
BATCH = 100


def paced_stream(
    sender: Peer,
    room: int,
    texts: list[str],
    readers: list[Peer],
    on_batch=None,
    window: int = WINDOW,
    batch: int = BATCH,
) -> None:
    """Send texts to room in batches, never more than ``window`` ahead of the slowest reader.

    So a test about a slow reader, or about resets, is never accidentally about a flooding
    sender. Progress is counted in frames received (a few notices make it look a little
    ahead, which only relaxes the pace a little); the final checks count the messages.
    """
    base = [len(r.frames) for r in readers]
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        sender.send_raw(b"".join(encode_frame(room, text) for text in chunk))
        sent = start + len(chunk)
        wait_for(
            lambda sent=sent: all(
                len(r.frames) - b >= sent - window for r, b in zip(readers, base, strict=True)
            ),
            f"the readers to keep up ({sent} sent)",
        )
        if on_batch is not None:
            on_batch(sent)


def connect_many(
    server: chatlab.ChatServer, n: int, stack: contextlib.ExitStack, *, rcvbuf: int | None = None
):
    """Open n raw connections; return (kept, refused) as the server decided.

    On select, a connection whose server-side fd would be >= FD_SETSIZE is refused with a
    reason; the others are kept. We ask the server which client ports it holds.
    """
    before = in_loop(server, lambda: server.statistics().accepted)
    socks = []
    for _ in range(n):
        sock = stack.enter_context(socket.socket())
        if rcvbuf is not None:  # before connect(), so the window offered is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect(tuple(server.address))
        socks.append(sock)
    wait_for(
        lambda: server.statistics().accepted >= before + n, f"the server to accept {n} clients"
    )
    held = held_ports(server)
    kept = [s for s in socks if s.getsockname()[1] in held]
    refused = [s for s in socks if s.getsockname()[1] not in held]
    return kept, refused


FD_REFUSAL = re.compile(
    rb"<RID:0>! server cannot take more connections: "
    rb"select\(\) cannot watch fd (\d+) \(FD_SETSIZE is %d\); "
    rb"use --backend poll or epoll</RID:0>" % FD_SETSIZE
)


def check_refused_for_fd_setsize(backend: str, refused: list[socket.socket]) -> None:
    """select refuses fds past FD_SETSIZE with a reason; poll and epoll refuse nobody."""
    if backend != "select":
        assert refused == [], f"{backend} has no fd ceiling, yet refused {len(refused)}"
        return
    for sock in refused:
        data = read_to_eof(sock)
        match = FD_REFUSAL.fullmatch(data)
        assert match, f"a refused client got {data!r}, not the FD_SETSIZE reason"
        assert int(match.group(1)) >= FD_SETSIZE


# The scene of the bad-input tests: the pair's room (mallory is in it too), and carol's.
R, S = 700, 800


@contextlib.contextmanager
def room_with_offender(backend, **kwargs):
    """alice and bob chat in room R, carol in room S, mallory (the offender) is in R.

    After the block, the pair must still chat, both ways, whatever mallory did.
    """
    with running(backend, **kwargs) as (server, stack):
        alice, bob, carol, mallory = (
            stack.enter_context(ScriptedClient(server.address, nick=nick))
            for nick in ("alice", "bob", "carol", "mallory")
        )
        alice.join(R)
        bob.join(R)
        carol.join(S)
        mallory.join(R)
        yield server, alice, bob, carol, mallory
        alice.say(R, "still here?")
        bob.expect("<alice> still here?", room=R)
        bob.say(R, "still here.")
        alice.expect("<bob> still here.", room=R)


def free_port() -> int:
    """A loopback port nothing listens on now (it may be taken again later: use it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------ servers as processes

# "chatlab server on HOST:PORT (backend NAME); Ctrl-C stops it"; with --bus, more in the
# parentheses: "(backend epoll, bus redis://... as NAME)".
BANNER = re.compile(r"chatlab server on (\S+):(\d+) \(backend (\w+)(?:, [^)]*)?\); Ctrl-C stops it")
STARTUP_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0


def child_env() -> dict[str, str]:
    """The environment for a child: chatlab importable from this checkout, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``python -m chatlab.server`` to completion (for the cases where it must exit)."""
    return subprocess.run(
        [sys.executable, "-m", "chatlab.server", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=child_env(),
    )


class ServerProcess:
    """A running ``python -m chatlab.server``, with its stderr read by a thread.

    The thread keeps the pipe from filling and makes every wait for a line bounded. Kill it
    when done (``kill()``, or ``contextlib.closing(ServerProcess(...))``).

    Not chatlab.bench's ServerProcess: that one measures a server's CPU and memory and knows
    the benchmark's server kinds; tests need any command line, each stderr line in turn,
    and the exit code.
    """

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatlab.server", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=child_env(),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._cursor = 0
        self._reader = threading.Thread(target=self._read, name="stderr-reader", daemon=True)
        self._reader.start()
        self.address: tuple[str, int] | None = None
        self.backend: str | None = None

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str | re.Pattern, timeout: float = EXIT_TIMEOUT):
        """The next stderr line (after the previous match) matching pattern; fail clearly."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self._cursor, len(self.lines)):
                    match = regex.search(self.lines[i])
                    if match:
                        self._cursor = i + 1
                        return match
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    why = "stderr closed" if self._eof else f"not within {timeout:g} s"
                    raise AssertionError(
                        f"no stderr line matching {regex.pattern!r} ({why}); "
                        f"exit code {self.proc.poll()}; stderr so far:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(remaining)

    def wait_started(self) -> tuple[str, int]:
        match = self.wait_for_line(BANNER, timeout=STARTUP_TIMEOUT)
        self.address = (match.group(1), int(match.group(2)))
        self.backend = match.group(3)
        return self.address

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """The exit code, once the process has exited and its stderr is read to the end."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the server did not exit within {timeout:g} s; stderr:\n{self.stderr}"
            ) from None
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        self.proc.stderr.close()

    close = kill  # contextlib.closing(ServerProcess(...))
