"""Checks for notebook 02's exercises (the syscalls), and the two longer demos it runs.

Checks, each on real sockets on 127.0.0.1:

- ``check_peer_state(peer_state)``: 02.1, a function that tells an open, a closed (FIN)
  and a reset (RST) TCP peer apart without taking the data that is waiting;
- ``check_take_turns(take_turns)``: 02.2, a reader for edge-triggered readiness that drains
  every socket it was told about, but takes turns so that one busy peer cannot starve the
  others;
- ``check_listen_again(listen_again)``: 02.3, a function that listens again on a port
  whose last connection is still in TIME_WAIT.

Demos the chapter calls, too long for a cell:

- ``thundering_herd(waiters, exclusive)``: how many epoll waiters one connection wakes;
- ``select_wall(beyond)``: which client of ``python -m chatlab.server --backend select``
  is the first to be refused, and what the server process holds before its clients come;
- ``tcp_pair()`` and ``Firehose``: a connected TCP pair on 127.0.0.1, and a socket whose
  peer keeps up with its reader (the starvation cell, and 02.2).

Every check and demo closes each socket it opened and stops each thread or process it
started, whatever the answer does; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

from . import Check, Verdict

__all__ = [
    "Firehose",
    "check_listen_again",
    "check_peer_state",
    "check_take_turns",
    "port_in_time_wait",
    "select_wall",
    "tcp_pair",
    "thundering_herd",
]

WAIT = 5.0  # seconds: the bound on every wait for something that should happen


@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on 127.0.0.1 (client, accepted server side); both closed after."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server, _ = listener.accept()
    with client, server:
        yield client, server


def _readable(sock: socket.socket, timeout: float = WAIT) -> bool:
    """Wait up to ``timeout`` for sock to be readable (poll: it may be past fd 1023)."""
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([sock], [], [], timeout)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


# -- 02.1 ------------------------------------------------------------------------------

PEER_STATES = ("open", "closed", "reset")


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def check_peer_state(peer_state: Callable[[socket.socket], str]) -> Verdict:
    """02.1: ``peer_state(sock)`` says "open", "closed" or "reset", leaves the data alone.

    Four real TCP connections: an idle one, one with bytes waiting, one whose peer closed
    (FIN), one whose peer reset (SO_LINGER 0). The socket is non-blocking, as an event
    loop's sockets are: a plain recv() on the idle one raises BlockingIOError."""
    check = Check("02.1", "open, closed or reset")
    cases = [
        ("an idle peer", None, "open"),
        ("a peer that sent b'hi' you have not read", b"hi", "open"),
        ("a peer that closed (FIN)", "close", "closed"),
        ("a peer that reset (RST: SO_LINGER 0, then close)", "reset", "reset"),
    ]
    for what, action, expected in cases:
        with tcp_pair() as (mine, peer):
            if action == "close":
                peer.close()
            elif action == "reset":
                _reset(peer)
            elif isinstance(action, bytes):
                peer.sendall(action)
            if action is not None:
                _readable(mine)  # the FIN, the RST or the bytes have arrived
            mine.setblocking(False)
            ok, said = check.call(peer_state, mine)
            if not ok:
                break
            if said not in PEER_STATES:
                check.expect(False, f"peer_state() returned {said!r}: say one of {PEER_STATES}")
                break
            check.expect(
                said == expected,
                f"{what}: you said {said!r}, it is {expected!r}"
                + (" (readable does not mean closed: data is waiting)" if action == b"hi" else ""),
            )
            if isinstance(action, bytes):
                try:
                    left = mine.recv(100)
                except OSError:
                    left = b""
                check.expect(
                    left == action,
                    f"{what}: peer_state() took the data (left {left!r}): peek at it "
                    "(socket.MSG_PEEK), it belongs to the handler",
                )
    return check.verdict(
        "recv() says it all: data, b'' (FIN: closed) or ConnectionResetError (RST); "
        "MSG_PEEK looks without taking"
    )


# -- 02.2 ------------------------------------------------------------------------------


class Firehose:
    """A non-blocking socket whose peer keeps up with its reader: after each ``recv()``
    the peer sends another ``size`` bytes, ``chunks`` times in all (then it stops).

    It stands for a fast sender on a fast network, in one thread and without timing:
    reading it "until EAGAIN" takes ``chunks`` recv() calls, however large each is."""

    def __init__(self, chunks: int = 64, size: int = 1000) -> None:
        self.sock, self._peer = socket.socketpair()
        self.sock.setblocking(False)
        self.chunks, self.size, self.left = chunks, size, chunks
        self._refill()

    def _refill(self) -> None:
        if self.left:
            self._peer.sendall(b"x" * self.size)
            self.left -= 1

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = self.sock.recv(bufsize, flags)  # BlockingIOError once drained, as a socket
        self._refill()
        return data

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        self._peer.close()


def check_take_turns(take_turns: Callable[[list, int], list]) -> Verdict:
    """02.2: ``take_turns(socks, budget)`` reads every socket to EAGAIN, taking turns.

    ``socks`` were all reported readable once, edge-triggered (so never again until new
    data comes): a busy Firehose first, then two quiet sockets with 300 bytes each. The
    answer reads at most ``budget`` bytes per recv(), returns the index of the socket of
    each recv() that returned data, in order, and must leave every socket drained."""
    check = Check("02.2", "take turns under edge triggering")
    budget = 1000
    hose = Firehose(chunks=64, size=budget)
    quiet = [socket.socketpair() for _ in range(2)]
    try:
        for mine, peer in quiet:
            mine.setblocking(False)
            peer.sendall(b"q" * 300)
        socks: list = [hose] + [mine for mine, _ in quiet]
        ok, order = check.call(take_turns, socks, budget)
        if ok:
            order = list(order)
            for i in range(1, len(socks)):
                if i in order:
                    before = order.index(i)
                    check.expect(
                        before < len(socks),
                        f"quiet socket {i} waited behind {before} reads: draining the busy "
                        "socket 0 before turning to the others starves them",
                    )
            drained = []
            for i, sock in enumerate(socks):
                try:
                    more = sock.recv(1) if i else hose.sock.recv(1)
                except BlockingIOError:
                    more = b""
                if more or (i == 0 and hose.left):
                    drained.append(i)
            check.expect(
                not drained,
                f"socket(s) {drained} still have data: edge-triggered, epoll will not report "
                "them again, so a turn must go on until recv() raises BlockingIOError",
            )
    finally:
        hose.close()
        for pair in quiet:
            for sock in pair:
                sock.close()
    return check.verdict(
        "one recv() per socket per turn, and round again until each raises BlockingIOError"
    )


# -- 02.3 ------------------------------------------------------------------------------


def port_in_time_wait(*, reuse_addr: bool = True) -> int:
    """A port on 127.0.0.1 that has a connection in TIME_WAIT and nothing listening.

    The listener sets SO_REUSEADDR unless ``reuse_addr`` is False (socket.create_server()
    sets it on POSIX, as servers do; Linux allows a new bind over a TIME_WAIT connection
    only if both sockets set it). The server side closes first, so TIME_WAIT stays on the
    server's port."""
    with socket.socket() as listener:
        if reuse_addr:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        server, _ = listener.accept()
    with client:
        server.close()  # the side that closes first keeps TIME_WAIT
        client.recv(1)  # its FIN has arrived
    return port


def check_listen_again(listen_again: Callable[[int], socket.socket]) -> Verdict:
    """02.3: ``listen_again(port)`` returns a socket listening on 127.0.0.1:port, a port
    whose last connection is in TIME_WAIT (a server restarted right after it stopped)."""
    check = Check("02.3", "listen again after a restart")
    port = port_in_time_wait()
    ok, sock = check.call(listen_again, port)
    if not ok:
        if any("Errno 98" in p or "in use" in p for p in check.problems):
            check.problems.append(
                "the port still has a connection in TIME_WAIT: set SO_REUSEADDR on the socket "
                "before bind() (socket.create_server does it for you on POSIX)"
            )
        return check.verdict()
    try:
        if not check.expect(
            isinstance(sock, socket.socket), f"listen_again() returned {sock!r}, not a socket"
        ):
            return check.verdict()
        bound = sock.getsockname()
        check.expect(bound[1] == port, f"the socket is bound to port {bound[1]}, not {port}")
        if (
            check.expect(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                "the socket is bound but not listening: call listen()",
            )
            and bound[1] == port
        ):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
            except OSError as exc:
                check.expect(False, f"connecting to it failed: {exc}")
    finally:
        sock.close()
    return check.verdict(
        "SO_REUSEADDR lets a restarted server bind while its old connections sit in TIME_WAIT"
    )


# -- demos ------------------------------------------------------------------------------


def _waiting(tid: int) -> bool | None:
    """Is thread ``tid`` asleep in epoll_wait? None where the kernel does not say."""
    try:
        with open(f"/proc/self/task/{tid}/wchan") as f:
            where = f.read()
    except OSError:
        return None
    if where in ("", "0"):  # running, or wchan hidden (kptr_restrict)
        return False
    return "epoll" in where or where == "ep_poll"


def thundering_herd(waiters: int = 4, *, exclusive: bool = False, timeout: float = 1.0) -> int:
    """How many of ``waiters`` threads, each blocked in its own epoll set on one listening
    socket, return from epoll_wait() for ONE connection (Linux).

    Nobody accepts, so a woken waiter finds the listener still readable and returns. The
    connection is made once every thread sleeps in epoll_wait (their /proc wchan says so;
    where it cannot be read, after a bounded wait). A waiter that is not woken sleeps
    until ``timeout`` and returns empty-handed."""
    flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
    returned: list[bool] = []
    tids: list[int] = []
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        sets = [stack.enter_context(select.epoll()) for _ in range(waiters)]
        for ep in sets:
            ep.register(listener, flags)

        def wait(ep: select.epoll) -> None:
            tids.append(threading.get_native_id())
            returned.append(bool(ep.poll(timeout)))

        threads = [threading.Thread(target=wait, args=(ep,)) for ep in sets]
        for t in threads:
            t.start()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            states = [_waiting(t) for t in tids]
            if len(tids) == waiters and all(states):
                break
            if len(tids) == waiters and None in states:
                time.sleep(0.2)  # no wchan here: give them a moment, once
                break
            time.sleep(0.001)
        with socket.create_connection(listener.getsockname(), timeout=WAIT):
            for t in threads:
                t.join(timeout + WAIT)
    return sum(returned)


def select_wall(beyond: int = 12) -> dict[str, object]:
    """Start ``python -m chatlab.server --backend select`` and connect 1024 + ``beyond``
    clients: more than it can watch. Returns what the process held before its first client
    (fd -> what, where /proc says), the number of the first refused client, and how many
    of the ones after it were refused too.

    Needs about 1,050 fds in this process (raise RLIMIT_NOFILE first); the server inherits
    the limit. The server is killed and every client closed before this returns."""
    cmd = [sys.executable, "-m", "chatlab.server", "--backend", "select", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "chatlab server on 127.0.0.1:PORT (backend select)"
        found = re.search(r":(\d+) ", line)
        if not found:
            raise RuntimeError(f"the server did not start: {line!r}")
        port = int(found.group(1))
        held: dict[int, str] = {}
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(f"/proc/{proc.pid}/fd"), key=int):
                target = os.readlink(f"/proc/{proc.pid}/fd/{name}")
                held[int(name)] = re.sub(r":\[\d+\]$", "", target)  # socket:[123] -> socket
        # Connect them all; the server accepts in order, so once the last one has its
        # answer (refused: fd 1024 is free again after each refusal), every earlier one
        # has been served or refused too. The server says nothing to a client it serves.
        for _ in range(1024 + beyond):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        _readable(clients[-1], 6 * WAIT)
        ready = _ready_set(clients)
        refused = [number for number, c in enumerate(clients, 1) if c in ready]
        return {
            "held": held,
            "first_refused": refused[0] if refused else None,
            "refused_after_it": len(refused) - 1,
            "clients_after_it": len(clients) - refused[0] if refused else 0,
        }
    finally:
        for client in clients:
            client.close()
        proc.kill()
        proc.wait(WAIT)
        if proc.stderr is not None:
            proc.stderr.close()


def _ready_set(socks: list[socket.socket]) -> set[socket.socket]:
    """The readable ones, asked with poll() (select() cannot take fds past 1023)."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return {by_fd[fd] for fd, _ in poller.poll(0)}
