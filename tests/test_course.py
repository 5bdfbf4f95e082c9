"""What the course's notebooks lean on besides the chat: needs(), preflight(), the exercise
checks' base (chatlab/exercises), and the classic server's faithful bugs and its sync."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import pytest
from helpers import wait_for

from chatlab.classic import CLASSIC_RE, ClassicServer
from chatlab.course import REQUIREMENTS, needs, preflight
from chatlab.exercises import Check, Verdict, unanswered

# ---------------------------------------------------------------- needs() and preflight()


def test_needs_a_backend_this_platform_has(capsys):
    assert needs("poll") is True
    assert capsys.readouterr().out == ""


def test_needs_what_is_missing_prints_why_and_says_false(capsys, monkeypatch):
    monkeypatch.setitem(REQUIREMENTS, "epoll", (lambda: False, "epoll is Linux's"))
    assert needs("poll", "epoll") is False
    out = capsys.readouterr().out
    assert "skipped here: this cell needs epoll (epoll is Linux's)." in out
    assert out.count("skipped here") == 1  # only what is missing is named


def test_needs_a_misspelled_requirement_is_an_error():
    with pytest.raises(ValueError, match="unknown requirement 'epol'"):
        needs("epol")


def test_needs_without_epoll_in_a_real_interpreter():
    """As on macOS: select.epoll absent, so needs('epoll') is False and says why."""
    code = (
        "import select; del select.epoll\nfrom chatlab.course import needs\nprint(needs('epoll'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0].startswith("skipped here: this cell needs epoll")
    assert out.splitlines()[-1] == "False"


def test_preflight_prints_one_line_per_thing_the_course_uses(capsys):
    preflight()
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys == ["python", "backends", "fd", "loopback", "redis-server", "hiredis"]
    assert "a free port" in lines[3]


# ---------------------------------------------------------------- the exercise checks' base


def test_a_verdict_passes_only_without_problems():
    assert bool(Verdict("03.2", "t")) is True
    failing = Verdict("03.2", "t", ["expected 2 frames, got 1"])
    assert bool(failing) is False
    assert repr(failing) == "not yet 03.2 (t):\n  - expected 2 frames, got 1"
    assert str(Verdict("03.2", "t", note="the point")) == "passed 03.2 (t): the point"


def test_check_call_reports_the_stub_an_exception_and_a_non_function():
    def stub(x): ...

    def broken(x):
        return x[5]

    check = Check("01.1", "demo")
    assert check.call(stub, 1) == (False, None)
    assert check.call(broken, [1]) == (False, None)
    assert check.call(42) == (False, None)
    assert check.call(lambda x: x + 1, 1) == (True, 2)
    problems = check.verdict().problems
    assert problems[0] == "stub() returned None: is it written yet?"
    assert problems[1].startswith("broken() raised IndexError: list index out of range")
    assert "return x[5]" in problems[1]
    assert problems[2] == "42 should be a function, not int"
    assert len(problems) == 3


def test_check_expect_and_answered():
    check = Check("02.1", "demo")
    assert check.expect(1 == 1, "never said") is True
    assert check.expect(1 == 2, "one is not two") is False
    assert check.answered(..., "ANSWER") is False
    assert check.answered(3, "ANSWER") is True
    assert check.verdict().problems == [
        "one is not two",
        "ANSWER is not written yet (it is still `...`)",
    ]
    assert unanswered(None) and unanswered(...) and not unanswered(0)


# ---------------------------------------------------------------- the classic server


def test_classic_regex_is_the_original_and_match_differs_from_search():
    assert CLASSIC_RE.pattern == rb"^<RID:(\d+)>([\s\S]*?)</RID:\1>"
    assert CLASSIC_RE.match(b"<RID:1>a\nb</RID:1>").groups() == (b"1", b"a\nb")
    assert CLASSIC_RE.match(b"x<RID:1>a</RID:1>") is None
    assert CLASSIC_RE.search(b"x<RID:1>a</RID:1>") is None  # ^ anchors search() too
    assert CLASSIC_RE.match(b"<RID:1>a</RID:2>b</RID:1>").group(2) == b"a</RID:2>b"


def test_classic_wait_reads_orders_a_split_frame_without_sleeping():
    with ClassicServer() as classic:
        with socket.create_connection(classic.address, timeout=5) as alice:
            alice.sendall(b"<RID:1>hel")
            classic.wait_reads(1)
            assert classic.rooms == {}  # the half frame did not match, and is gone
            alice.sendall(b"lo</RID:1>")
            classic.wait_reads(2)
            assert classic.rooms == {}  # nor does the other half: the message is lost
            with pytest.raises(TimeoutError, match="made 2 reads, not 3"):
                classic.wait_reads(3, timeout=0.2)


def test_classic_dies_of_the_originals_name_error_on_a_reset():
    with ClassicServer() as classic:
        victim = socket.create_connection(classic.address, timeout=5)
        victim.sendall(b"<RID:1></RID:1>")
        classic.wait_reads(1)
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()  # RST: the server's next recv() raises ConnectionResetError
        wait_for(lambda: classic.crash is not None, "the classic server to die")
        assert isinstance(classic.crash, NameError)
        assert "member" in str(classic.crash)
        assert isinstance(classic.crash.__context__, ConnectionResetError)
