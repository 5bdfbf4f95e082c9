"""Chapter 05's checks: the stub and plausible wrong answers fail with a useful message, the
worked answers (as in notebooks/solutions/05-disconnect-cleanup.ipynb) pass."""

from __future__ import annotations

import socket

import pytest

from chatlab import protocol
from chatlab.classic import CLASSIC_RE, ClassicServer
from chatlab.exercises import ch05
from chatlab.scripted import ExpectTimeout

# -- 05.1 and 05.2: the classic server's way out ----------------------------------------------


class Stub(ClassicServer):
    """The chapter's stub: the original's handle(), bugs and all."""

    def handle(self, sock):
        super().handle(sock)


class NoSpin(ClassicServer):
    """The worked answer to 05.1."""

    def drop(self, sock):
        if sock in self.inputs:
            self.inputs.remove(sock)
        for members in self.rooms.values():
            if sock in members:
                members.remove(sock)
        sock.close()

    def handle(self, sock):
        data = sock.recv(1024)
        if not data:
            self.drop(sock)
            return
        self.dispatch(sock, data)

    def dispatch(self, sock, data):
        match = CLASSIC_RE.match(data)
        if match:
            self.deliver(sock, *match.groups())


class SurvivesReset(NoSpin):
    """The worked answer to 05.2."""

    def handle(self, sock):
        try:
            data = sock.recv(1024)
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
            return
        self.dispatch(sock, data)


class OnlyUnselected(NoSpin):
    """Wrong: out of select()'s list and closed, but still a member of its rooms."""

    def drop(self, sock):
        self.inputs.remove(sock)
        sock.close()


class ClosedButListed(NoSpin):
    """Wrong: closed, but left in select()'s list (bug 3) and in the room."""

    def drop(self, sock):
        sock.close()


class NotClosed(NoSpin):
    """Wrong: forgotten everywhere but never closed: a fd leaked per departure."""

    def drop(self, sock):
        self.inputs.remove(sock)
        for members in self.rooms.values():
            if sock in members:
                members.remove(sock)


class SwallowsReset(NoSpin):
    """Wrong: catches the reset and returns; the socket stays, and its recv() then gives
    b"" for ever, which this class's own handle() never sees (it returns first)."""

    def handle(self, sock):
        try:
            data = sock.recv(1024)
        except OSError:
            return
        if data:
            self.dispatch(sock, data)


def test_no_spin_stub_names_all_three_problems():
    verdict = ch05.check_no_spin(Stub)
    assert not verdict
    text = str(verdict)
    assert "still in self.inputs after his EOF" in text and "spins" in text
    assert "still a member of room 111" in text
    assert "not closed" in text


def test_no_spin_not_overridden():
    verdict = ch05.check_no_spin(ClassicServer)
    assert not verdict and "does not override handle()" in str(verdict)


def test_no_spin_not_a_class():
    verdict = ch05.check_no_spin(NoSpin.handle)  # a method, not the class
    assert not verdict and "subclass of ClassicServer" in str(verdict)


@pytest.mark.parametrize(
    "answer, problem",
    [
        (OnlyUnselected, "still a member of room 111"),
        (ClosedButListed, "closed but still in self.inputs"),
        (NotClosed, "not closed"),
    ],
)
def test_no_spin_wrong_answers(answer, problem):
    verdict = ch05.check_no_spin(answer)
    assert not verdict
    assert problem in str(verdict)


@pytest.mark.parametrize("answer", [NoSpin, SurvivesReset])
def test_no_spin_passes(answer):
    verdict = ch05.check_no_spin(answer)
    assert verdict, str(verdict)


def test_reset_stub_dies_of_the_original_name_error():
    verdict = ch05.check_survives_reset(Stub)
    assert not verdict
    assert "NameError" in str(verdict) and "while handling ConnectionResetError" in str(verdict)


def test_reset_eof_only_answer_dies_of_the_reset():
    verdict = ch05.check_survives_reset(NoSpin)
    assert not verdict
    assert "raised ConnectionResetError" in str(verdict)
    assert "catch what recv() raises" in str(verdict)


def test_reset_swallowed_leaves_the_socket():
    verdict = ch05.check_survives_reset(SwallowsReset)
    assert not verdict
    assert "still in self.inputs" in str(verdict)


def test_reset_passes():
    verdict = ch05.check_survives_reset(SurvivesReset)
    assert verdict, str(verdict)


# -- 05.3: keepalive options ------------------------------------------------------------------


def options_stub(idle, interval, count): ...


def options_switch_only(idle, interval, count):
    """Wrong: keepalive on, with the kernel's timings (two hours on Linux)."""
    return [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]


def options_forgot_switch(idle, interval, count):
    """Wrong: the timings, but keepalive never turned on."""
    return keepalive_options(idle, interval, count)[1:]


def options_swapped(idle, interval, count):
    """Wrong: idle and interval swapped."""
    return keepalive_options(interval, idle, count)


def options_not_triples(idle, interval, count):
    return {"idle": idle}


def keepalive_options(idle, interval, count):
    calls = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle_name = "TCP_KEEPIDLE" if hasattr(socket, "TCP_KEEPIDLE") else "TCP_KEEPALIVE"
    for name, value in ((idle_name, idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):
            calls.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return calls


def test_keepalive_stub():
    verdict = ch05.check_keepalive_options(options_stub)
    assert not verdict and "returned None" in str(verdict)


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux's option names")
def test_keepalive_switch_only_shows_the_defaults():
    verdict = ch05.check_keepalive_options(options_switch_only)
    assert not verdict
    assert "TCP_KEEPIDLE" in str(verdict) and "the kernel's default" in str(verdict)


def test_keepalive_forgot_the_switch():
    verdict = ch05.check_keepalive_options(options_forgot_switch)
    assert not verdict and "SO_KEEPALIVE is 0" in str(verdict)


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPINTVL"), reason="no TCP_KEEPINTVL here")
def test_keepalive_swapped():
    verdict = ch05.check_keepalive_options(options_swapped)
    assert not verdict and "expected 10" in str(verdict)


def test_keepalive_not_triples():
    verdict = ch05.check_keepalive_options(options_not_triples)
    assert not verdict and "(level, option, value)" in str(verdict)


def test_keepalive_passes():
    verdict = ch05.check_keepalive_options(keepalive_options)
    assert verdict, str(verdict)


# -- 05.4: an application ping ----------------------------------------------------------------


def ping_stub(client, timeout): ...


def ping_send_only(client, timeout):
    """Wrong: a send that succeeds proves only that a kernel took the bytes."""
    client.send(protocol.SERVER_ROOM, "/rooms")
    return True


def ping_socket_open(client, timeout):
    """Wrong: our socket being open says nothing of the other end."""
    return client.sock.fileno() >= 0


def ping_any_line(client, timeout):
    """Wrong: never sends; waits for any line at all."""
    try:
        client.expect(lambda reply: True, timeout=timeout)
    except ExpectTimeout:
        return False
    return True


def ping(client, timeout):
    try:
        client.send(protocol.SERVER_ROOM, "/rooms")
        client.expect(protocol.Rooms, timeout=timeout)
    except (ExpectTimeout, OSError):
        return False
    return True


def test_ping_stub():
    verdict = ch05.check_ping(ping_stub)
    assert not verdict and "returned None" in str(verdict)


@pytest.mark.parametrize("answer", [ping_send_only, ping_socket_open])
def test_ping_fooled_by_the_kernel(answer):
    verdict = ch05.check_ping(answer)
    assert not verdict
    assert "a server that never answers" in str(verdict)


def test_ping_that_sends_nothing():
    verdict = ch05.check_ping(ping_any_line)
    assert not verdict
    assert "live chatlab server returned False" in str(verdict)


def test_ping_passes():
    verdict = ch05.check_ping(ping)
    assert verdict, str(verdict)
