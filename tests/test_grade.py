"""The grader grades: chatlab's server passes every check on every backend, and a small server
broken in one of the original's ways fails exactly the checks that name that bug.

tests/grade_servers/tiny.py is the small server: correct by default, with one bug by flag.
The classic server (chatlab/classic.py, all five bugs) fails at least every named check.
Each grading starts a fresh server per check, as `python -m chatlab.grade --cmd` does.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import chatlab
from chatlab.grade import BUGS, CHECKS, STEPS, grade_class, grade_command, select_checks

TINY = Path(__file__).parent / "grade_servers" / "tiny.py"
sys.path.insert(0, str(TINY.parent))
from tiny import Tiny  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def named_for(bug: str) -> set[str]:
    return {c.name for c in CHECKS.values() if bug in c.catches}


def test_every_bug_has_a_check_and_every_check_a_step():
    for bug in BUGS:
        assert named_for(bug), f"no check catches {bug}"
    assert [c.step for c in CHECKS.values()] == sorted(
        (c.step for c in CHECKS.values()), key=STEPS.index
    ), "checks are listed in the order of the steps"


@pytest.mark.grading
@pytest.mark.parametrize("backend", chatlab.available_backends())
def test_chatlab_passes_every_check(backend):
    board = grade_command(f"python -m chatlab.server --backend {backend} --port {{port}}")
    assert board.failed == [], str(board)
    assert len(board.passed) == len(CHECKS), str(board)


@pytest.mark.grading
def test_the_correct_tiny_server_passes_every_check():
    board = grade_command(f"python {TINY} {{port}}")
    assert board.failed == [], str(board)


@pytest.mark.grading
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_server_with_one_bug_fails_exactly_the_checks_named_for_it(bug):
    board = grade_command(f"python {TINY} {{port}} --bug {bug}")
    assert set(board.failed) == named_for(bug), str(board)
    for result in board.results:
        if result.outcome == "fail":
            assert result.hint == CHECKS[result.name].hint  # the hint names the usual bug


@pytest.mark.grading
def test_the_original_server_fails_every_named_check():
    board = grade_command("python -m chatlab.classic --port {port}")
    named = set().union(*(named_for(bug) for bug in BUGS))
    assert named <= set(board.failed), str(board)


def test_an_in_process_server_class_is_graded_the_same_way():
    before = threading.active_count()
    board = grade_class(Tiny, steps=["rooms", "frames"])
    assert board.failed == [] and len(board.passed) == len(select_checks(steps=["rooms", "frames"]))
    broken = grade_class(lambda: Tiny(bug="one-recv-one-frame"), steps=["frames"])
    assert set(broken.failed) == named_for("one-recv-one-frame")
    assert threading.active_count() == before  # every server thread was joined


def test_an_in_process_server_that_crashes_is_reported_with_its_exception():
    class Broken:
        address = ("127.0.0.1", 1)

        def __init__(self):
            import socket

            self.listener = socket.create_server(("127.0.0.1", 0))
            self.address = self.listener.getsockname()

        def serve_forever(self):
            raise RuntimeError("forgot to write serve_forever")

        def close(self):
            self.listener.close()

    board = grade_class(Broken, only=["accept"])
    assert board.failed == ["accept"]
    assert "serve_forever() raised RuntimeError: forgot to write serve_forever" in str(board)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatlab.grade", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_prints_a_line_per_check_and_exits_0_when_all_pass():
    result = run_cli("--cmd", "python -m chatlab.server --port {port}", "--only", "broadcast,eof")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["pass  broadcast", "pass  eof", "2 passed, 0 failed"]


def test_cli_exits_1_with_the_failure_what_arrived_and_a_hint():
    result = run_cli(
        "--cmd", f"python {TINY} {{port}} --bug one-recv-one-frame", "--step", "frames"
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL  split-frame: bob should receive 'm-")
    assert "(alice sent it one byte at a time); in 5 s it received" in lines[0]
    assert lines[1].startswith("      hint: one recv() is not one frame")
    assert lines[-1] == "1 passed, 3 failed"


def test_cli_grades_a_server_that_is_already_running():
    with chatlab.serve() as server:
        port = str(server.address[1])
        result = run_cli("--port", port, "--only", "broadcast,rooms-apart")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed"


def test_cli_refuses_an_unknown_check_and_lists_them():
    result = run_cli("--cmd", "true {port}", "--only", "brodcast")
    assert result.returncode == 2 and "no check named 'brodcast'" in result.stderr
    listed = run_cli("--list").stdout.splitlines()
    assert [line.split()[0] for line in listed] == list(CHECKS)


def test_cli_says_when_the_server_does_not_start():
    result = run_cli(
        "--cmd", f"{sys.executable} -c 'raise SystemExit(3)' {{port}}", "--only", "accept"
    )
    assert result.returncode == 1
    assert "FAIL  accept: the server did not start" in result.stdout
