"""Notebook 02's exercise checks: the stub and plausible wrong answers fail with a message
that says what is wrong; a correct answer passes (chatlab/exercises/ch02.py)."""

from __future__ import annotations

import select
import socket
import sys
import threading

import pytest

from chatlab.exercises import ch02


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before, "a check left a thread running"


# -- 02.1 ------------------------------------------------------------------------------


def peer_state_right(sock):
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "reset"
    return "open" if data else "closed"


def test_peer_state_stub_fails():
    def peer_state(sock): ...

    verdict = ch02.check_peer_state(peer_state)
    assert not verdict and "returned None: is it written yet?" in str(verdict)


def test_peer_state_readable_means_closed_fails():
    def peer_state(sock):
        return "closed" if select.select([sock], [], [], 0)[0] else "open"

    verdict = ch02.check_peer_state(peer_state)
    assert not verdict
    assert "sent b'hi' you have not read: you said 'closed', it is 'open'" in str(verdict)
    assert "readable does not mean closed" in str(verdict)
    assert "reset (RST: SO_LINGER 0, then close): you said 'closed', it is 'reset'" in str(verdict)


def test_peer_state_plain_recv_fails_on_the_idle_socket():
    def peer_state(sock):
        return "open" if sock.recv(1) else "closed"

    verdict = ch02.check_peer_state(peer_state)
    assert not verdict and "raised BlockingIOError" in str(verdict)


def test_peer_state_that_takes_the_data_fails():
    def peer_state(sock):
        try:
            data = sock.recv(100)
        except BlockingIOError:
            return "open"
        except ConnectionResetError:
            return "reset"
        return "open" if data else "closed"

    verdict = ch02.check_peer_state(peer_state)
    assert not verdict and "peer_state() took the data (left b'')" in str(verdict)


def test_peer_state_right_answer_passes():
    verdict = ch02.check_peer_state(peer_state_right)
    assert verdict, str(verdict)
    assert str(verdict).startswith("passed 02.1")


# -- 02.2 ------------------------------------------------------------------------------


def take_turns_right(socks, budget):
    order, live = [], list(range(len(socks)))
    while live:
        for i in list(live):
            try:
                data = socks[i].recv(budget)
            except BlockingIOError:
                live.remove(i)
                continue
            if data:
                order.append(i)
            else:
                live.remove(i)
    return order


def test_take_turns_stub_fails():
    def take_turns(socks, budget): ...

    verdict = ch02.check_take_turns(take_turns)
    assert not verdict and "returned None: is it written yet?" in str(verdict)


def test_take_turns_greedy_drain_starves_the_quiet_ones():
    def take_turns(socks, budget):
        order = []
        for i, sock in enumerate(socks):
            while True:
                try:
                    if not sock.recv(budget):
                        break
                except BlockingIOError:
                    break
                order.append(i)
        return order

    verdict = ch02.check_take_turns(take_turns)
    assert not verdict
    assert "quiet socket 1 waited behind 64 reads" in str(verdict)
    assert "still have data" not in str(verdict)


def test_take_turns_one_read_each_leaves_data_behind():
    def take_turns(socks, budget):
        return [i for i, sock in enumerate(socks) if sock.recv(budget)]

    verdict = ch02.check_take_turns(take_turns)
    assert not verdict
    assert "socket(s) [0] still have data: edge-triggered" in str(verdict)


def test_take_turns_right_answer_passes():
    verdict = ch02.check_take_turns(take_turns_right)
    assert verdict, str(verdict)
    assert str(verdict).startswith("passed 02.2")


# -- 02.3 ------------------------------------------------------------------------------


def test_listen_again_stub_fails():
    def listen_again(port): ...

    verdict = ch02.check_listen_again(listen_again)
    assert not verdict and "returned None: is it written yet?" in str(verdict)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's TIME_WAIT rule")
def test_listen_again_without_reuseaddr_fails_with_the_hint():
    def listen_again(port):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        sock.listen()
        return sock

    verdict = ch02.check_listen_again(listen_again)
    assert not verdict
    assert "Address already in use" in str(verdict)
    assert "set SO_REUSEADDR on the socket before bind()" in str(verdict)


def test_listen_again_bound_but_not_listening_fails():
    def listen_again(port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    verdict = ch02.check_listen_again(listen_again)
    assert not verdict and "bound but not listening: call listen()" in str(verdict)


def test_listen_again_on_another_port_fails():
    verdict = ch02.check_listen_again(lambda port: socket.create_server(("127.0.0.1", 0)))
    assert not verdict and "is bound to port" in str(verdict)


@pytest.mark.parametrize("how", ["create_server", "setsockopt"])
def test_listen_again_right_answers_pass(how):
    def listen_again(port):
        if how == "create_server":
            return socket.create_server(("127.0.0.1", port))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock

    verdict = ch02.check_listen_again(listen_again)
    assert verdict, str(verdict)
    assert str(verdict).startswith("passed 02.3")


# -- the demos -------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")
def test_thundering_herd_every_waiter_without_exclusive_fewer_with():
    assert ch02.thundering_herd(3) == 3
    assert 1 <= ch02.thundering_herd(3, exclusive=True) < 3
