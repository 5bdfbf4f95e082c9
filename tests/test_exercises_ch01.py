"""Notebook 01's exercise checks: the stub and plausible wrong answers fail with a message
that says what is wrong; a correct answer passes (chatlab/exercises/ch01.py)."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from chatlab.exercises import ch01


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before, "a check left a thread running"


# -- 01.1 ------------------------------------------------------------------------------


def test_served_next_stub_and_nonsense_fail():
    assert "not written yet" in str(ch01.check_served_next(...))
    verdict = ch01.check_served_next("alice")
    assert not verdict and "is not one of" in str(verdict)


@pytest.mark.parametrize("wrong", ["carol", "bob and carol at once", "nobody"])
def test_served_next_wrong_choices_fail_with_the_evidence(wrong):
    verdict = ch01.check_served_next(wrong)
    assert not verdict
    assert "the server served bob then carol" in str(verdict)


def test_served_next_right_choice_passes():
    verdict = ch01.check_served_next("bob")
    assert verdict, str(verdict)
    assert str(verdict).startswith("passed 01.1")


# -- 01.2 ------------------------------------------------------------------------------


def test_threads_added_stub_fails():
    def threads_added(design, clients): ...

    assert "returned None: is it written yet?" in str(ch01.check_threads_added(threads_added))


def test_threads_added_forgetting_the_accept_thread_fails():
    verdict = ch01.check_threads_added(lambda design, clients: clients)
    assert not verdict
    assert "ThreadedServer with 5 client(s): you said 5, measured 6" in str(verdict)
    assert "ChatServer with 5 client(s): you said 5, measured 1" in str(verdict)


def test_threads_added_one_thread_everywhere_fails():
    verdict = ch01.check_threads_added(lambda design, clients: 1)
    assert "ThreadedServer with 1 client(s): you said 1, measured 2" in str(verdict)


def test_threads_added_right_answer_passes():
    def threads_added(design, clients):
        return clients + 1 if design == "ThreadedServer" else 1

    verdict = ch01.check_threads_added(threads_added)
    assert verdict, str(verdict)


# -- 01.3 ------------------------------------------------------------------------------


def test_wake_accept_stub_fails():
    def wake_accept(listener, address): ...

    verdict = ch01.check_wake_accept(wake_accept)
    assert not verdict
    assert "with this machine's listener: accept() was still blocked" in str(verdict)


@pytest.mark.skipif(not hasattr(socket, "SHUT_RDWR"), reason="needs shutdown()")
def test_wake_accept_with_shutdown_only_is_linux_only():
    def wake_accept(listener, address):
        listener.shutdown(socket.SHUT_RDWR)

    verdict = ch01.check_wake_accept(wake_accept)
    assert not verdict
    assert "shutdown() fails (as it may on macOS): wake_accept() raised OSError" in str(verdict)


def test_wake_accept_with_shutdown_errors_ignored_still_fails():
    def wake_accept(listener, address):
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)

    verdict = ch01.check_wake_accept(wake_accept)
    assert not verdict
    assert "accept() was still blocked" in str(verdict)


def test_wake_accept_by_closing_fails():
    verdict = ch01.check_wake_accept(lambda listener, address: listener.close())
    assert not verdict
    assert "closed the listener" in str(verdict)


def test_wake_accept_that_raises_fails():
    def wake_accept(listener, address):
        raise RuntimeError("oops")

    assert "raised RuntimeError: oops" in str(ch01.check_wake_accept(wake_accept))


def test_wake_accept_by_connecting_passes():
    def wake_accept(listener, address):
        socket.create_connection(address, timeout=1).close()

    verdict = ch01.check_wake_accept(wake_accept)
    assert verdict, str(verdict)


# -- 01.4 ------------------------------------------------------------------------------


def test_stuck_thread_stub_fails():
    assert "not written yet" in str(ch01.check_stuck_thread(...))


@pytest.mark.parametrize("wrong", [c for c in ch01.STUCK_CHOICES if "talker" not in c])
def test_stuck_thread_wrong_choices_fail_with_the_evidence(wrong):
    verdict = ch01.check_stuck_thread(wrong)
    assert not verdict
    assert "the stacks of this run show the thread serving talker" in str(verdict)


def test_stuck_thread_right_choice_passes():
    verdict = ch01.check_stuck_thread("talker's thread, in sendall() to deaf")
    assert verdict, str(verdict)
