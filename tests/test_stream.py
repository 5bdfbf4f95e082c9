"""chatlab.stream on every backend: once-per-pass writes, the SendQ, the way out.

Real TCP sockets on 127.0.0.1 (a half-close and a reset behave as they do for clients).
"""

from __future__ import annotations

import socket

import pytest
from helpers import run_until

from chatlab import EventLoop
from chatlab.stream import (
    CLOSED,
    CLOSING,
    DRAINING,
    HALF_CLOSED,
    OPEN,
    PEER_DONE,
    TRANSITIONS,
    State,
    Stream,
    StreamStateError,
    WriteBatch,
)


@pytest.fixture
def loop(backend):
    with EventLoop(backend) as loop:
        yield loop


@pytest.fixture
def tcp_pair():
    """A connected pair of TCP sockets on loopback: (ours, non-blocking; theirs, blocking)."""
    made = []

    def make(sndbuf: int | None = None):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            theirs = socket.create_connection(listener.getsockname())
            ours, _ = listener.accept()
        ours.setblocking(False)
        if sndbuf:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        theirs.settimeout(5)
        made.extend((ours, theirs))
        return ours, theirs

    yield make
    for sock in made:
        sock.close()


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


class SendCounter:
    """Counts send()/sendmsg() calls on one socket, by wrapping it (a real socket below)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock, self.calls = sock, 0

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def send(self, data):
        self.calls += 1
        return self._sock.send(data)

    def sendmsg(self, buffers):
        self.calls += 1
        return self._sock.sendmsg(buffers)


def test_writes_in_one_pass_go_out_in_one_send(loop, tcp_pair):
    ours, theirs = tcp_pair()
    counted = SendCounter(ours)
    stream = Stream(loop, counted, WriteBatch(loop))
    for i in range(10):
        stream.write(b"frame %d;" % i)
    assert counted.calls == 0  # queued, not sent: the batch sends before the loop polls
    loop.run_once(0)
    assert counted.calls == 1
    expected = b"".join(b"frame %d;" % i for i in range(10))
    assert read_exactly(theirs, len(expected)) == expected
    assert stream.out == [] and not stream.writing


def test_the_queue_holds_references_not_copies(loop, tcp_pair):
    ours, _ = tcp_pair()
    batch = WriteBatch(loop)
    a, b = Stream(loop, ours, batch), Stream(loop, ours, batch)
    frame = b"<RID:1>shared</RID:1>"
    a.write(frame)
    b.write(frame)
    assert a.out[0] is frame and b.out[0] is frame


def test_writer_only_while_the_kernel_is_full(loop, tcp_pair):
    ours, theirs = tcp_pair(sndbuf=4096)
    stream = Stream(loop, ours, WriteBatch(loop))
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB: more than loopback's buffers hold
        stream.write(chunk)
    loop.run_once(0)
    assert stream.writing and stream.queued > 0  # the rest waits for write readiness
    theirs.setblocking(False)
    received = 0
    for _ in range(10_000):  # bounded: each pass reads what arrived, the loop sends more
        try:
            received += len(theirs.recv(1 << 20))
        except BlockingIOError:
            pass
        loop.run_once(0.001)
        if received == 64 * 65536:
            break
    assert received == 64 * 65536
    assert stream.out == [] and stream.queued == 0


def test_overflow_is_reported_past_max_queued(loop, tcp_pair):
    ours, _ = tcp_pair(sndbuf=4096)
    over = []
    stream = Stream(loop, ours, WriteBatch(loop), max_queued=100_000, on_overflow=over.append)
    for _ in range(64):
        stream.write(b"x" * 65536)
        loop.run_once(0)
        if over:
            break
    assert over == [stream]  # told once: the owner decides (the server disconnects)


def test_close_flushes_then_fin_then_waits_for_the_peers_eof(loop, tcp_pair):
    ours, theirs = tcp_pair()
    closed = []
    stream = Stream(loop, ours, WriteBatch(loop), on_closed=closed.append)
    stream.write(b"! disconnected: bye")
    stream.close(linger=5)
    assert stream.state is DRAINING  # flushed at once, FIN sent, waiting for theirs
    assert read_exactly(theirs, 19) == b"! disconnected: bye"
    assert theirs.recv(10) == b""  # our FIN
    theirs.sendall(b"late words are dropped")
    loop.run_once(0.1)
    assert stream.state is DRAINING and not closed
    theirs.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: closed)
    assert stream.state is CLOSED and closed == [stream] and ours.fileno() == -1


def test_close_after_the_peers_eof_closes_at_once(loop, tcp_pair):
    ours, theirs = tcp_pair()
    closed = []
    stream = Stream(loop, ours, WriteBatch(loop), on_closed=closed.append)
    stream.peer_done()
    assert stream.state is PEER_DONE
    stream.close(linger=5)
    assert stream.state is CLOSED and closed == [stream]
    assert not loop._timers  # no linger timer left behind (white box: see close())


def test_linger_bounds_a_peer_that_never_closes(loop, tcp_pair):
    ours, theirs = tcp_pair()
    closed = []
    stream = Stream(loop, ours, WriteBatch(loop), on_closed=closed.append)
    stream.close(linger=0.05)
    assert stream.state is DRAINING
    run_until(loop, lambda: closed)
    assert stream.state is CLOSED


def test_a_failed_send_is_reported_to_the_owner(loop, tcp_pair):
    ours, theirs = tcp_pair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    theirs.close()  # SO_LINGER 0: a reset
    lost = []
    stream = Stream(loop, ours, WriteBatch(loop), on_lost=lambda s, why: lost.append(why))
    for _ in range(50):
        stream.write(b"x" * 1000)
        loop.run_once(0.01)
        if lost:
            break
    assert lost and lost[0] in ("connection reset", "broken pipe")


def test_write_after_close_is_dropped_and_close_twice_is_harmless(loop, tcp_pair):
    ours, theirs = tcp_pair()
    stream = Stream(loop, ours, WriteBatch(loop))
    stream.write(b"last")
    stream.close(linger=5)
    stream.write(b"never sent")
    stream.close(linger=5)
    stream.abort()
    stream.abort()
    assert stream.state is CLOSED
    assert read_exactly(theirs, 4) == b"last" and theirs.recv(10) == b""


def test_every_transition_is_in_the_table():
    # From every state, each event either moves as the table says or raises: nothing else.
    for state in State:
        for event in ("eof", "write_eof", "close", "flushed", "abort"):
            stream = Stream.__new__(Stream)
            stream.state = state
            target = TRANSITIONS.get((event, state))
            if target is None:
                with pytest.raises(StreamStateError, match=event):
                    stream._advance(event)
            else:
                assert stream._advance(event) is target
    assert TRANSITIONS[("close", OPEN)] is CLOSING
    assert all(to is CLOSED for (event, _), to in TRANSITIONS.items() if event == "abort")


def test_write_eof_sends_fin_after_the_queue_and_reading_goes_on(loop, tcp_pair):
    ours, theirs = tcp_pair()
    closed = []
    stream = Stream(loop, ours, WriteBatch(loop), on_closed=closed.append)
    stream.write(b"/who")
    stream.write_eof()
    assert stream.state is HALF_CLOSED
    stream.write(b"too late")  # nothing more after the end of input
    loop.run_once(0)  # the batch sends the queue, then the FIN
    assert read_exactly(theirs, 4) == b"/who" and theirs.recv(10) == b""
    theirs.sendall(b"the reply")  # we still read (the owner does: here, by hand)
    ours.settimeout(5)
    assert read_exactly(ours, 9) == b"the reply"
    stream.peer_done()  # their EOF too: the end
    assert stream.state is CLOSED and closed == [stream]


def test_before_poll_hooks_run_once_per_pass(loop):
    calls = []
    loop.add_before_poll(lambda: calls.append(len(calls)))
    for _ in range(3):
        loop.run_once(0)
    assert calls == [0, 1, 2]
    hook = calls.append
    loop.add_before_poll(hook)
    assert loop.remove_before_poll(hook) and not loop.remove_before_poll(hook)


def test_a_hook_that_queues_work_does_not_let_the_loop_sleep(loop):
    ran = []

    def hook():
        if not ran:
            loop.call_soon(ran.append, "soon")

    loop.add_before_poll(hook)
    loop.run_once(5)  # would sleep 5 s if the hook's call_soon were not seen
    assert ran == ["soon"]
