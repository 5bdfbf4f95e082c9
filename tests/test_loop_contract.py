"""The event-loop contract, run against every backend (see conftest.backend).

Each test says one thing every backend must do the same way. Where the backends must differ
(select's FD_SETSIZE wall, epoll's edge-triggered mode, how a closed fd is noticed) the test
says so and asserts each backend's documented outcome.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest
from helpers import run_until

import chatlab
from chatlab import EventLoop
from chatlab.backends import FD_SETSIZE


@pytest.fixture
def loop(backend):
    with EventLoop(backend) as loop:
        yield loop


@pytest.fixture(params=["socket", "fd"])
def as_key(request):
    """Run a test with the socket object and with its raw int fd (trio's habit)."""
    if request.param == "socket":
        return lambda sock: sock
    return lambda sock: sock.fileno()


# ------------------------------------------------------------------------- readiness


def test_backend_name(loop, backend):
    assert loop.backend_name == backend
    assert loop.statistics().backend == backend


def test_reader_called_when_data_arrives(loop, socketpair, as_key):
    a, b = socketpair()
    got = []
    loop.add_reader(as_key(a), lambda: got.append(a.recv(100)))
    loop.run_once(0)
    assert got == [], "nothing was sent yet, so nothing may be read"
    b.send(b"hello")
    run_until(loop, lambda: got)
    assert got == [b"hello"]


def test_reader_gets_its_args(loop, socketpair):
    a, b = socketpair()
    got = []
    loop.add_reader(a, lambda *args: got.append(args), 1, "two")
    b.send(b"x")
    run_until(loop, lambda: got)
    assert got[0] == (1, "two")


def test_level_triggered_repeats_until_drained(loop, socketpair):
    a, b = socketpair()
    calls = []
    loop.add_reader(a, lambda: calls.append(1))  # never reads
    b.send(b"x")
    for _ in range(3):
        loop.run_once(0.5)
    assert len(calls) == 3, "level-triggered: an undrained fd is reported on every call"


def test_writer_follows_buffer_space(loop, socketpair, as_key):
    a, b = socketpair()
    a.setblocking(False)
    writable = []
    loop.add_writer(as_key(a), lambda: writable.append(1))
    loop.run_once(0.5)
    assert writable == [1], "a fresh socket has buffer space: writable at once"

    # Fill the send buffer until the kernel refuses: now it must not be reported writable.
    sent = 0
    try:
        while True:
            sent += a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    writable.clear()
    loop.run_once(0.05)
    assert writable == [], "a full socket is not writable"

    # Drain the peer: space returns and so does the event.
    b.setblocking(False)
    received = 0
    while received < sent:
        try:
            received += len(b.recv(1 << 20))
        except BlockingIOError:
            break
    run_until(loop, lambda: writable)
    assert writable


def test_reader_and_writer_on_one_fd(loop, socketpair):
    a, b = socketpair()
    seen = []
    loop.add_reader(a, lambda: seen.append(("r", a.recv(10))))
    loop.add_writer(a, lambda: seen.append(("w",)))
    b.send(b"x")
    loop.run_once(0.5)
    assert ("r", b"x") in seen and ("w",) in seen
    assert loop.remove_writer(a) is True
    seen.clear()
    b.send(b"y")
    run_until(loop, lambda: seen)
    assert seen == [("r", b"y")], "removing the writer keeps the reader"


def test_peer_close_reads_eof(loop, socketpair):
    a, b = socketpair()
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(100)))
    b.close()
    run_until(loop, lambda: got)
    assert got[0] == b"", "a peer that closed reads as EOF (b''), reported as readable"


def test_peer_reset_is_reported(loop):
    # A TCP reset (SO_LINGER 0) must wake the reader, whose recv() then raises.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        outcome = []

        def on_read():
            try:
                outcome.append(server_side.recv(100))
            except ConnectionResetError as exc:
                outcome.append(exc)

        loop.add_reader(server_side, on_read)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        client.close()
        run_until(loop, lambda: outcome)
        loop.remove_reader(server_side)
        server_side.close()
    assert isinstance(outcome[0], ConnectionResetError) or outcome[0] == b""


# ------------------------------------------------------------------- registration rules


def test_add_reader_twice_replaces_callback(loop, socketpair):
    a, b = socketpair()
    got = []
    loop.add_reader(a, lambda: got.append("first"))
    loop.add_reader(a, lambda: got.append(("second", a.recv(10))))
    b.send(b"x")
    run_until(loop, lambda: got)
    assert got == [("second", b"x")], "as in asyncio, a second add_reader replaces the first"


def test_remove_unregistered_returns_false(loop, socketpair):
    a, _ = socketpair()
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a.fileno()) is False


def test_registering_closed_socket_is_refused(loop):
    sock = socket.socket()
    sock.close()
    with pytest.raises(chatlab.RegistrationError, match="closed"):
        loop.add_reader(sock, lambda: None)


def test_registering_closed_fd_number_is_refused(loop, socketpair):
    a, _ = socketpair()
    fd = a.detach()
    socket.close(fd)
    with pytest.raises(chatlab.RegistrationError, match=f"fd {fd} is not open"):
        loop.add_reader(fd, lambda: None)


def test_registering_non_fd_is_refused(loop):
    with pytest.raises(chatlab.RegistrationError, match="fileno"):
        loop.add_reader("not a socket", lambda: None)


def test_fd_closed_while_registered_is_dropped_not_spun_on(loop, backend, socketpair, caplog):
    a, b = socketpair()
    c, d = socketpair()
    calls = []
    loop.add_reader(a, lambda: calls.append("closed one"))
    loop.add_reader(c, lambda: calls.append(c.recv(10)))
    a.close()  # the bug: closed without remove_reader()

    # A busy loop would run thousands of iterations in this time; a correct one waits.
    loop.call_later(0.2, loop.stop)
    caplog.set_level(logging.WARNING, logger="chatlab.loop")
    loop.run_forever()
    stats = loop.statistics()
    assert stats.iterations < 20, f"the loop spun: {stats.iterations} iterations in 0.2 s"
    assert "closed one" not in calls

    if backend in ("select", "poll"):
        # select fails with EBADF, poll returns POLLNVAL: the loop drops the fd and says so.
        assert stats.dropped_fds == 1
        assert "closed while still registered" in caplog.text
    else:
        # epoll: that was the file's last fd, so the kernel released the file and dropped it
        # from the set (with a dup alive it would not: see the dup trap below). kqueue drops
        # a fd's kevents when the fd is closed. Nothing to report.
        assert stats.dropped_fds == 0

    d.send(b"still")  # the loop goes on serving the others
    run_until(loop, lambda: b"still" in calls)


# ------------------------------------------------------------- the dup trap (issue 14)
#
# The kernel forgets a file only when the LAST fd referring to it is closed. Close a
# registered fd while a dup() or a fork()ed child keeps its file open, and epoll goes on
# reporting the file under the closed number (epoll(7), Q6). The contract, on every backend:
# the dead reader runs at most once, and the loop goes back to sleeping.

PASSES = 20


def _sleeps(loop, timeout=0.02, passes=PASSES) -> tuple[bool, float]:
    """Run ``passes`` run_once(timeout): (did the loop sleep?, seconds taken).

    A loop that sleeps takes about passes * timeout (a pass or two may return at once, on
    the way to finding a dead fd); a busy loop takes a few milliseconds."""
    start = time.monotonic()
    for _ in range(passes):
        loop.run_once(timeout)
    elapsed = time.monotonic() - start
    return elapsed >= 0.7 * passes * timeout, elapsed


def _fork_holding():
    """fork() a child that keeps its copies of our fds open until the returned fd is closed.

    Returns (pid, release_fd). Close release_fd, then waitpid(pid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: touch nothing, wait for the parent's word, leave at once
        try:
            os.close(w)
            os.read(r, 1)  # b"" when the parent closes its end
        finally:
            os._exit(0)
    os.close(r)
    return pid, w


def _release(pid, release_fd):
    os.close(release_fd)
    os.waitpid(pid, 0)


#: what each backend measurably does (kqueue, untested here, is held to the bare contract)
DUP_TRAP = {
    # backend: (calls of the dead reader, dropped_fds, stale_fds)
    "select": (0, 1, 0),  # fd closed: select fails with EBADF at once
    "poll": (0, 1, 0),  # POLLNVAL at once
    "epoll": (1, 0, 1),  # the file is still in the set: one call, then the loop's check
}


def test_dup_trap_costs_one_call_and_no_busy_loop(loop, backend, socketpair, caplog):
    a, b = socketpair()
    calls = []
    loop.add_reader(a.fileno(), lambda: calls.append("dead reader"))
    keep = os.dup(a.fileno())  # a second fd for a's file
    caplog.set_level(logging.WARNING, logger="chatlab.loop")
    try:
        a.close()  # the bug: closed without remove_reader(), while the dup keeps the file
        b.send(b"x")  # the file is readable: epoll reports it on every call
        slept, elapsed = _sleeps(loop, timeout=0.05)
    finally:
        os.close(keep)
    stats = loop.statistics()
    assert len(calls) <= 1, f"the dead reader ran {len(calls)} times"
    assert slept, f"the loop spun: {PASSES} passes of run_once(0.05) in {elapsed:.3f} s"
    if backend in DUP_TRAP:
        assert (len(calls), stats.dropped_fds, stats.stale_fds) == DUP_TRAP[backend]
        assert caplog.text.count(f"the {backend} loop dropped it") == 1, "one warning per fd"
    if backend == "epoll":
        assert "a dup or a child keeps its file open" in caplog.text

    c, d = socketpair()  # the loop goes on serving the others
    got = []
    loop.add_reader(c, lambda: got.append(c.recv(10)))
    d.send(b"still")
    run_until(loop, lambda: got)
    assert got == [b"still"]


def test_dup_trap_through_fork(loop, backend, socketpair):
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    a, b = socketpair()
    calls = []
    loop.add_reader(a.fileno(), lambda: calls.append("dead reader"))
    pid, release = _fork_holding()  # the child's copy of a keeps a's file open
    try:
        a.close()
        b.send(b"x")
        slept, elapsed = _sleeps(loop)
    finally:
        _release(pid, release)
    stats = loop.statistics()
    assert len(calls) <= 1 and slept, f"{len(calls)} calls, {elapsed:.3f} s"
    if backend in DUP_TRAP:
        assert (len(calls), stats.dropped_fds, stats.stale_fds) == DUP_TRAP[backend]


def test_dup_trap_beside_a_plain_closed_fd(loop, backend, socketpair):
    # Two fds closed while registered, one of them with a dup alive. On epoll, dropping the
    # first makes a fresh set, which cannot take the second (closed, its file gone): that one
    # is reported INVALID, as poll reports POLLNVAL, and dropped too.
    a, b = socketpair()
    c, _d = socketpair()
    calls = []
    loop.add_reader(a.fileno(), lambda: calls.append("a"))
    loop.add_reader(c.fileno(), lambda: calls.append("c"))
    keep = os.dup(a.fileno())
    try:
        a.close()
        c.close()
        b.send(b"x")
        slept, elapsed = _sleeps(loop)
    finally:
        os.close(keep)
    stats = loop.statistics()
    assert len(calls) <= 1 and slept, f"{calls}, {elapsed:.3f} s"
    if backend in DUP_TRAP:
        assert stats.dropped_fds + stats.stale_fds == 2
        assert stats.registered == 1  # the wake-up socket only


def test_fd_number_given_to_another_file_is_dropped(loop, backend, socketpair, caplog):
    # dup2() closes the registered fd and gives its number to another file in one step, as
    # a close() followed by any open() does: the number is open, but names the wrong file.
    a, b = socketpair()
    c, d = socketpair()
    calls = []
    fd = a.fileno()
    loop.add_reader(fd, lambda: calls.append("dead reader"))
    keep = os.dup(fd)  # a's file lives on (epoll still holds it)
    caplog.set_level(logging.WARNING, logger="chatlab.loop")
    try:
        os.dup2(c.fileno(), fd)  # the bug: fd now names c's file, still registered
        b.send(b"x")  # a's file readable (what epoll watches)
        d.send(b"y")  # c's file readable (what select and poll watch under that number)
        slept, elapsed = _sleeps(loop)
    finally:
        os.close(keep)  # (the fixture closes fd, through a)
    stats = loop.statistics()
    assert len(calls) <= 1 and slept, f"{len(calls)} calls, {elapsed:.3f} s"
    if backend in DUP_TRAP:  # every one of the three calls the reader once, then checks
        assert (len(calls), stats.stale_fds) == (1, 1)
        assert "its number now names another file" in caplog.text


def test_remove_after_close_with_a_dup_does_not_spin(loop, backend, socketpair):
    # Removing too late: epoll_ctl(DEL) fails (EBADF), as the dup keeps the file in the set.
    # The epoll backend then starts a fresh set, so nothing is left to report.
    a, b = socketpair()
    calls = []
    fd = a.fileno()
    loop.add_reader(fd, lambda: calls.append("dead reader"))
    keep = os.dup(fd)
    try:
        a.close()
        assert loop.remove_reader(fd) is True
        b.send(b"x")
        slept, elapsed = _sleeps(loop)
    finally:
        os.close(keep)
    assert calls == [] and slept, f"{len(calls)} calls, {elapsed:.3f} s"
    assert loop.statistics().registered == 1  # the wake-up socket only


def test_ready_fd_with_no_callback_is_dropped(loop, backend, caplog):
    # After fork(), parent and child share one epoll set: a fd the child registers is
    # reported to the parent, which has no reader or writer for it. (select and poll keep
    # the interest set in the process: the child changes only its own copy; a kqueue is not
    # inherited at all.)
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    ready_r, ready_w = os.pipe()
    pid, release = None, None
    caplog.set_level(logging.WARNING, logger="chatlab.loop")
    try:
        r, release = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(release)
                x, y = socket.socketpair()
                loop.add_reader(x, lambda: None)  # the child's registration
                y.send(b"!")  # ...readable at once
                os.write(ready_w, b"r")
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        os.close(ready_w)
        os.read(ready_r, 1)  # b"" if the child failed: the parent goes on all the same
        slept, elapsed = _sleeps(loop)
    finally:
        os.close(ready_r)
        if pid is not None:
            _release(pid, release)
    stats = loop.statistics()
    assert slept, f"the loop spun: {PASSES} passes in {elapsed:.3f} s"
    if backend == "epoll":
        assert stats.stale_fds == 1
        assert "reported ready with no reader or writer" in caplog.text
    elif backend in DUP_TRAP:
        assert stats.stale_fds == 0


def test_a_healthy_fd_that_stays_ready_is_never_dropped(loop, socketpair):
    # The check runs on passes that repeat the one before, which is exactly what a reader
    # that does not drain its socket causes: it must find the fd alive, every time.
    a, b = socketpair()
    calls = []
    loop.add_reader(a, lambda: calls.append(1))  # never reads: ready on every pass
    b.send(b"x")
    for _ in range(40):
        loop.run_once(0.5)
    stats = loop.statistics()
    assert len(calls) == 40
    assert stats.stale_fds == 0 and stats.dropped_fds == 0


def test_handler_may_remove_another_ready_fd(loop, socketpair):
    pairs = [socketpair() for _ in range(2)]
    ran = []

    def handler(me, other):
        ran.append(me)
        me.recv(10)
        loop.remove_reader(other)  # the other is ready in this same batch

    (a, b), (c, d) = pairs
    loop.add_reader(a, handler, a, c)
    loop.add_reader(c, handler, c, a)
    b.send(b"x")
    d.send(b"x")
    loop.run_once(0.5)
    assert len(ran) == 1, "a reader removed earlier in the batch must not be called"


def test_handler_may_close_and_reuse_fd_number(loop, socketpair):
    # A handler closes one socket and opens another, which gets the same fd number: the
    # loop must call the *new* socket's reader for it, not the old one's.
    a, b = socketpair()
    seen = []
    state = {}

    def first():
        seen.append("old")
        loop.remove_reader(a)
        fd = a.fileno()
        a.close()
        new_a, new_b = socketpair()
        state["pair"] = (new_a, new_b)
        state["same_number"] = new_a.fileno() == fd or new_b.fileno() == fd
        loop.add_reader(new_a, lambda: seen.append(("new", new_a.recv(10))))
        new_b.send(b"n")

    loop.add_reader(a, first)
    b.send(b"x")
    run_until(loop, lambda: len(seen) >= 2)
    assert seen == ["old", ("new", b"n")]


def test_handler_exception_is_logged_and_loop_continues(loop, socketpair, caplog):
    a, b = socketpair()
    got = []

    def broken():
        a.recv(10)
        raise RuntimeError("handler bug")

    loop.add_reader(a, broken)
    loop.call_soon(got.append, "next")
    b.send(b"x")
    caplog.set_level(logging.ERROR, logger="chatlab.loop")
    loop.run_once(0.5)
    assert got == ["next"]
    assert loop.statistics().errors == 1
    assert "handler bug" in caplog.text


# ------------------------------------------------------------------- timers and soon


def test_call_soon_runs_in_order(loop):
    got = []
    for i in range(5):
        loop.call_soon(got.append, i)
    loop.run_once(0)
    assert got == [0, 1, 2, 3, 4]


def test_call_soon_from_callback_waits_for_next_iteration(loop):
    got = []

    def again():
        got.append("again")
        loop.call_soon(again)

    loop.call_soon(again)
    loop.run_once(0)
    assert got == ["again"], "a callback that re-queues itself cannot starve the loop"
    loop.run_once(0)
    assert got == ["again", "again"]


def test_timers_fire_in_time_order(loop):
    got = []
    loop.call_later(0.03, got.append, "c")
    loop.call_later(0.01, got.append, "a")
    loop.call_later(0.02, got.append, "b")
    loop.call_at(loop.time() + 0.02, got.append, "b2")  # due with b or just after: FIFO
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert got == ["a", "b", "b2", "c"]


def test_timers_with_equal_time_keep_creation_order(loop):
    got = []
    when = loop.time() + 0.01
    for i in range(5):
        loop.call_at(when, got.append, i)
    run_until(loop, lambda: len(got) == 5)
    assert got == [0, 1, 2, 3, 4]


def test_timer_does_not_fire_early(loop):
    fired = []
    start = loop.time()
    loop.call_later(0.05, lambda: fired.append(loop.time() - start))
    run_until(loop, lambda: fired)
    assert fired[0] >= 0.05


def test_cancelled_timer_and_soon_do_not_run(loop):
    got = []
    loop.call_later(0.01, got.append, "timer").cancel()
    loop.call_soon(got.append, "soon").cancel()
    loop.call_later(0.03, got.append, "kept")
    run_until(loop, lambda: got)
    assert got == ["kept"]


def test_run_once_timeout_bounds_the_wait(loop):
    # No fd ready, no timer: run_once(0) returns at once, and the loop counts one iteration.
    loop.run_once(0)
    stats = loop.statistics()
    assert stats.iterations == 1 and stats.wakeups == 0


# ------------------------------------------------------------------------- threads


def test_stop_from_another_thread(loop):
    started = threading.Event()
    loop.call_soon(started.set)
    timer = threading.Timer(0.05, loop.stop)
    with_thread = threading.Thread(target=lambda: (started.wait(2), timer.start()))
    with_thread.start()
    loop.run_forever()  # blocks with no timers: only the wake-up can end it
    with_thread.join()
    timer.join()
    assert not loop.is_running()


def test_call_soon_threadsafe_wakes_a_blocked_loop(loop):
    got = []

    def other_thread():
        loop.call_soon_threadsafe(got.append, threading.get_ident())
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    loop.run_forever()  # no timers, no fds but the wake-up pipe: would block forever
    assert len(got) == 1 and got[0] != threading.get_ident()


def test_call_and_wait_runs_on_the_loop_thread_and_hands_back_result_and_error(loop):
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        assert loop.call_and_wait(threading.get_ident) == thread.ident
        assert loop.call_and_wait(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            loop.call_and_wait(lambda: 1 / 0)
        # from the loop's own thread it is a plain call (waiting there would deadlock)
        assert loop.call_and_wait(lambda: loop.call_and_wait(lambda: "inner")) == "inner"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    with pytest.raises(TimeoutError, match="did not run"):
        loop.call_and_wait(lambda: None, timeout=0.05)  # stopped: nobody runs it


def test_many_threads_call_soon_threadsafe(loop):
    got = []
    n_threads, per_thread = 4, 250

    def worker(k):
        for i in range(per_thread):
            loop.call_soon_threadsafe(got.append, (k, i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_until(loop, lambda: len(got) == n_threads * per_thread)
    for k in range(n_threads):
        assert [i for kk, i in got if kk == k] == list(range(per_thread)), "per-thread order"


# ------------------------------------------------------------------- stats and trace


def test_statistics_count_what_happened(loop, socketpair):
    a, b = socketpair()
    loop.add_reader(a, lambda: a.recv(10))
    b.send(b"x")
    run_until(loop, lambda: loop.statistics().events >= 1)
    stats = loop.statistics()
    assert stats.iterations >= 1 and stats.wakeups >= 1 and stats.callbacks >= 1
    assert stats.registered == 2  # a, and the loop's own wake-up socket
    assert stats.time_blocked >= 0 and stats.time_working >= 0


def test_trace_hook_sees_each_iteration_and_ready_set(loop, socketpair):
    a, b = socketpair()
    records = []
    loop.set_trace(records.append)
    loop.add_reader(a, lambda: a.recv(10))
    b.send(b"x")
    loop.run_once(0.5)
    loop.run_once(0)
    assert len(records) == 2
    assert (a.fileno(), chatlab.backends.READ) in records[0].ready
    assert records[1].ready == []
    assert records[0].blocked >= 0 and records[0].working >= 0


# ------------------------------------------------------------------- life cycle


def test_close_is_idempotent_and_final(backend):
    loop = EventLoop(backend)
    loop.close()
    loop.close()
    assert loop.is_closed()
    with pytest.raises(chatlab.LoopClosedError):
        loop.call_soon(print)
    with pytest.raises(chatlab.LoopClosedError):
        loop.run_once(0)


def test_close_while_running_is_refused(loop):
    errors = []

    def try_close():
        try:
            loop.close()
        except chatlab.LoopRunningError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert errors and "stop() first" in str(errors[0])


def test_run_forever_twice_is_refused(loop):
    errors = []

    def nested():
        try:
            loop.run_forever()
        except chatlab.LoopRunningError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(nested)
    loop.run_forever()
    assert errors


# ----------------------------------------------------------- many fds and the wall


def _open_sockets_until(min_fd, made):
    """Open UDP sockets (no traffic) until one's fd number is >= min_fd."""
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        made.append(sock)
        if sock.fileno() >= min_fd:
            return sock


@pytest.mark.slow
def test_two_thousand_fds(loop, backend, socketpair):
    if loop.max_fd is not None:
        pytest.skip(f"{backend} cannot watch fds >= {loop.max_fd}; see test_select_wall")
    made = []
    try:
        for _ in range(2000):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            made.append(sock)
            loop.add_reader(sock, pytest.fail, "an idle socket must not be reported")
        a, b = socketpair()
        assert a.fileno() > 2000
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(10)))
        b.send(b"needle")
        run_until(loop, lambda: got)
        assert got == [b"needle"]
        assert loop.statistics().registered == 2002
        for sock in made:
            assert loop.remove_reader(sock)
        assert loop.statistics().registered == 2
    finally:
        for sock in made:
            sock.close()


def test_select_wall_is_a_clear_error_at_registration(backend):
    made = []
    try:
        with EventLoop(backend) as loop:
            high = _open_sockets_until(FD_SETSIZE, made)
            if loop.max_fd is None:
                loop.add_reader(high, lambda: None)  # no wall: accepted
                assert loop.remove_reader(high)
                return
            with pytest.raises(chatlab.FDLimitError) as info:
                loop.add_reader(high, lambda: None)
            message = str(info.value)
            assert f"fd {high.fileno()}" in message
            assert "FD_SETSIZE is 1024" in message and "poll or epoll" in message
            assert isinstance(info.value, ValueError)
            # The loop is unharmed and still serves fds below the wall.
            a, b = socket.socketpair()
            made += [a, b]
            if a.fileno() < FD_SETSIZE:
                got = []
                loop.add_reader(a, lambda: got.append(a.recv(5)))
                b.send(b"ok")
                run_until(loop, lambda: got)
                assert got == [b"ok"]
    finally:
        for sock in made:
            sock.close()


# --------------------------------------------------------------- edge-triggered epoll


def test_edge_triggered_only_on_epoll(backend, socketpair):
    if backend != "epoll":
        with pytest.raises(ValueError, match="edge-triggered mode needs backend='epoll'"):
            EventLoop(backend, edge_triggered=True)
        return
    with EventLoop("epoll", edge_triggered=True) as loop:
        assert loop.edge_triggered
        a, b = socketpair()
        calls = []
        loop.add_reader(a, lambda: calls.append(a.recv(1)))  # reads 1 byte of 2
        b.send(b"xy")
        loop.run_once(0.5)
        loop.run_once(0.05)
        assert calls == [b"x"], "edge-triggered: the undrained byte is never reported again"
        b.send(b"z")  # a new edge
        run_until(loop, lambda: len(calls) == 2)
        assert calls[1] == b"y"


def test_select_loop_created_past_the_wall_says_so_and_leaks_nothing():
    # The loop registers its own wake-up socket; past FD_SETSIZE even that is refused.
    made = []
    try:
        _open_sockets_until(FD_SETSIZE + 2, made)
        before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        with pytest.raises(chatlab.FDLimitError, match="the loop's own wake-up socket"):
            EventLoop("select")
        if before is not None:
            assert len(os.listdir("/proc/self/fd")) == before, "the socketpair was closed"
    finally:
        for sock in made:
            sock.close()
