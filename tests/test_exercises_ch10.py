"""Chapter 10's grading: the stub and plausible wrong servers fail with a useful message, a
correct one passes; grading stops at the first failing step; nothing is left running.

The worked six-step server is in notebooks/solutions/10-build-your-own.ipynb (strict nbval
shows every check passing there); tests/grade_servers/tiny.py stands in for it here.
"""

from __future__ import annotations

import selectors
import sys
import threading
from pathlib import Path

import pytest

from chatlab.exercises import ch10
from chatlab.exercises.ch10 import OWN_CHECKS, Plumbing, _run_own, _starter, check_step

sys.path.insert(0, str(Path(__file__).parent / "grade_servers"))
import tiny  # noqa: E402


class Stub(Plumbing):
    """Step 1 as the chapter gives it."""

    def serve_forever(self):
        self.wait_for_close()


class Echo(Plumbing):
    """Step 1 done."""

    def serve_forever(self):
        self.sel.register(self.listener, selectors.EVENT_READ, self.accept)
        while not self.closing:
            for key, events in self.sel.select():
                key.data(key.fileobj, events)
        self.close_all()

    def accept(self, listener, events):
        conn, _ = listener.accept()
        conn.setblocking(True)
        self.sel.register(conn, selectors.EVENT_READ, self.handle)
        self.last = conn

    def handle(self, sock, events):
        data = sock.recv(4096)
        if not data:
            self.sel.unregister(sock)
            sock.close()
            return
        self.reply(sock, data)

    def reply(self, sock, data):
        sock.sendall(data)


class EchoToLast(Echo):
    """Wrong: answers the newest connection, whoever spoke."""

    def reply(self, sock, data):
        self.last.sendall(data)


class NeverAccepts(Plumbing):
    """Wrong: a loop that never registers the listener (the grader's accept still passes)."""

    def serve_forever(self):
        while not self.closing:
            for key, events in self.sel.select():
                key.data(key.fileobj, events)
        self.close_all()


def test_the_stub_fails_step_1_with_what_to_do():
    before = threading.active_count()
    report = check_step(Stub, "accept")
    assert not report
    text = str(report)
    assert "FAIL  registered: alice connected, and in 5 s the server did not register" in text
    assert "is serve_forever still the placeholder?" in text
    assert "FAIL  echo: alice should receive 'echo-1-qz'" in text
    assert text.endswith("not yet: step 1 (accept) fails (see above).")
    assert threading.active_count() == before


def test_a_later_step_is_not_graded_until_the_earlier_ones_pass():
    report = check_step(Stub, "limits")
    assert [name for name, _ in report.boards] == ["accept"]
    assert str(report).endswith(
        "not yet: step 1 (accept) fails, so step 6 (limits) was not graded: make step 1 pass first."
    )


def test_a_correct_echo_passes_step_1():
    report = check_step(Echo, "accept")
    assert report, str(report)
    assert str(report).splitlines()[1:4] == ["  pass  accept", "  pass  registered", "  pass  echo"]


def test_an_echo_to_the_wrong_client_fails():
    report = check_step(EchoToLast, "accept")
    board = report.boards[0][1]
    assert board.failed == ["echo"], str(report)
    assert "should receive 'echo-1-qz'" in str(report)


def test_a_server_that_never_accepts_fails_registered():
    board = check_step(NeverAccepts, "accept").boards[0][1]
    assert {"registered", "accept"} <= set(board.failed)  # see ch10's docstring


def test_echo_is_step_1_only_and_a_correct_server_passes_the_next_steps():
    report = check_step(tiny.Tiny, "frames")  # no echo: rooms replace it
    assert report, str(report)
    assert "echo" not in str(report)


@pytest.mark.slow
def test_slow_dropped_passes_with_a_cap_and_fails_without(monkeypatch):
    spec = OWN_CHECKS["slow-dropped"]
    servers: list = []
    capped = _run_own(spec, _starter(tiny.Tiny, servers))
    assert capped.outcome == "pass", capped
    monkeypatch.setattr(tiny, "MAX_OUT", 1 << 40)
    uncapped = _run_own(spec, _starter(tiny.Tiny, servers))
    assert uncapped.outcome == "fail"
    assert "nothing limits what the server buffers for a member" in uncapped.detail
    assert "cap each member's output buffer" in uncapped.hint


def test_since_grades_step_1_then_the_steps_from_since():
    report = check_step(tiny.Tiny, "frames", since="frames")
    assert [name for name, _ in report.boards] == ["accept", "frames"]
    assert report and str(report).endswith("the checks of steps 1, 3 pass.")
    stub = check_step(Stub, "limits", since="limits")  # the gate still holds
    assert [name for name, _ in stub.boards] == ["accept"] and not stub
    with pytest.raises(ValueError, match="comes after"):
        check_step(Echo, "rooms", since="limits")


def test_plumbing_close_all_is_safe_twice_and_close_after_it():
    server = Plumbing()
    server.close_all()
    server.close_all()
    server.close()  # the grader may call close() after serve_forever returned


def test_check_step_refuses_an_unknown_step():
    with pytest.raises(ValueError, match="no step named 'room'"):
        check_step(Echo, "room")
    assert ch10.FRAME.findall(b"<RID:1>a</RID:1>x<RID:2>b</RID:2>") == [(b"1", b"a"), (b"2", b"b")]
