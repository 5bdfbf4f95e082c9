"""A conformance grader for ``<RID:n>`` chat servers, written in any language.

    python -m chatlab.grade --cmd "python -m chatlab.server --port {port}"
    python -m chatlab.grade --cmd "./my-server {port}" --only split-frame,eof
    python -m chatlab.grade --host 127.0.0.1 --port 9898      # a server already running

It starts the server for each check (``--cmd``, ``{port}`` replaced by a free port) or
connects to one (``--host``/``--port``), drives it with raw TCP clients on 127.0.0.1, and
prints one line per check: ``pass``, or ``FAIL`` with what was expected, what arrived and a
hint that names the usual bug; then ``N passed, M failed``. The exit status is 0 only when
nothing failed.

What a server must do, and nothing more (so the original server, chatlab's, and a learner's
all fit): a client's frame ``<RID:n>text</RID:n>`` puts it in room n (the first one joins)
and sends ``text`` to every other member of room n. How the server words what it sends is
its own business: the grader looks for each message's text, a unique token, in the bytes a
member receives. The checks, in the order notebook 10 builds a server (``STEPS``), are in
chatlab/grade/checks.py; each of the original server's five bugs (``BUGS``) is caught by the
checks that name it.

In a notebook (chapter 10), a server class in the kernel is graded the same way::

    from chatlab.grade import grade_class
    grade_class(MyServer, steps=["accept", "rooms"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .checks import BUGS, CHECKS, STEPS, Check, Context, Failed, Skipped
from .runner import Result, Scoreboard, grade, select_checks
from .targets import AddressTarget, CommandTarget, InProcessTarget

__all__ = [
    "BUGS",
    "CHECKS",
    "STEPS",
    "AddressTarget",
    "Check",
    "CommandTarget",
    "Context",
    "Failed",
    "InProcessTarget",
    "Result",
    "Scoreboard",
    "Skipped",
    "grade",
    "grade_class",
    "grade_command",
    "select_checks",
]


def grade_command(command: str, only: Iterable[str] = (), steps: Iterable[str] = ()) -> Scoreboard:
    """Grade the server that ``command`` starts (``{port}`` is replaced), fresh per check."""
    return grade(lambda: CommandTarget(command), select_checks(only, steps))


def grade_class(
    factory: Callable[[], Any], only: Iterable[str] = (), steps: Iterable[str] = ()
) -> Scoreboard:
    """Grade an in-process server: ``factory()`` returns an object with ``address``,
    ``serve_forever()`` and ``close()`` (a class with a no-argument constructor will do)."""
    return grade(lambda: InProcessTarget(factory), select_checks(only, steps))
