"""Chapter 06's checks: the stub and a plausible wrong answer fail with a useful message,
the worked answer passes (the same answers as notebooks/solutions/06-*.ipynb)."""

from __future__ import annotations

import selectors

import chatlab
from chatlab.exercises import ch06

# -- 06.1 the ready queue never sleeps


def queued_timeout(loop):
    seen = []
    loop.set_trace(seen.append)
    loop.call_soon(lambda: None)
    loop.run_once(timeout=1)
    return seen[-1].timeout


def forgot_to_queue(loop):
    seen = []
    loop.set_trace(seen.append)
    loop.run_once(timeout=1)
    return seen[-1].timeout


def test_queued_timeout():
    assert ch06.check_queued_timeout(queued_timeout)
    stub = ch06.check_queued_timeout(lambda loop: None)
    assert not stub and "returned None" in str(stub)
    wrong = ch06.check_queued_timeout(forgot_to_queue)
    assert not wrong and "call_soon" in str(wrong)
    guessed = ch06.check_queued_timeout(lambda loop: 0)
    assert not guessed and "no iteration ran" in str(guessed)


# -- 06.2 a callback that re-queues itself


def starve_attempt(loop, sock):
    runs = []

    def again():
        loop.call_soon(again)

    def reader():
        runs.append(sock.recv(1))

    loop.call_soon(again)
    loop.add_reader(sock, reader)
    for _ in range(3):
        loop.run_once()
    return len(runs)


def not_requeued(loop, sock):
    runs = []
    loop.call_soon(lambda: None)
    loop.add_reader(sock, lambda: runs.append(sock.recv(1)))
    for _ in range(3):
        loop.run_once(timeout=0)
    return len(runs)


def test_no_starvation():
    assert ch06.check_no_starvation(starve_attempt)
    assert not ch06.check_no_starvation(lambda loop, sock: None)
    wrong = ch06.check_no_starvation(not_requeued)
    assert not wrong and "call_soon(again)" in str(wrong)


# -- 06.3 close cleanly


def close_cleanly(loop, sock):
    removed = loop.remove_reader(sock)
    sock.close()
    return removed


def close_only(loop, sock):
    sock.close()
    return True


def close_backwards(loop, sock):
    sock.close()
    return loop.remove_reader(sock)  # RegistrationError: a closed socket has no fd


def test_close_cleanly():
    assert ch06.check_close_cleanly(close_cleanly)
    assert not ch06.check_close_cleanly(lambda loop, sock: None)
    wrong = ch06.check_close_cleanly(close_only)
    assert not wrong and "BEFORE sock.close()" in str(wrong)
    backwards = ch06.check_close_cleanly(close_backwards)
    assert not backwards and "raised" in str(backwards)


# -- 06.4 a burst


def make_burst(room, texts):
    return b"".join(chatlab.encode_frame(room, text) for text in texts)


def test_burst():
    assert ch06.check_burst(make_burst, 1)
    assert not ch06.check_burst(lambda room, texts: None, ...)
    wrong = ch06.check_burst(make_burst, 10)
    assert not wrong and "predicted 10" in str(wrong)
    unframed = ch06.check_burst(lambda room, texts: "".join(texts).encode(), 1)
    assert not unframed and "encode_frame" in str(unframed)


# -- 06.5 an echo server on selectors


def echo_pass(sel, listener):
    events = sel.select(timeout=0.5)
    for key, _mask in events:
        if key.fileobj is listener:
            conn, _ = listener.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
        else:
            data = key.fileobj.recv(4096)
            if data:
                key.fileobj.send(data)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
    return len(events)


def echo_pass_ignoring_eof(sel, listener):
    events = sel.select(timeout=0.05)
    for key, _mask in events:
        if key.fileobj is listener:
            conn, _ = listener.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
        else:
            key.fileobj.send(key.fileobj.recv(4096))
    return len(events)


def test_selectors_echo():
    assert ch06.check_selectors_echo(echo_pass)
    assert not ch06.check_selectors_echo(lambda sel, listener: None)
    wrong = ch06.check_selectors_echo(echo_pass_ignoring_eof)
    assert not wrong and "unregister that socket" in str(wrong)
