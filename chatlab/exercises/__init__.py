"""Checks for the course's exercises: one module per chapter, one function per exercise.

A chapter's exercise cell holds the learner's answer, with a stub to start from, and ends
with its check::

    from chatlab.exercises import ch03

    def frames_of_any_chunking(stream, seed):
        ...  # your answer

    ch03.check_chunking(frames_of_any_chunking)

A check runs the answer for real (sockets on 127.0.0.1, servers on port 0, scripted
clients) and returns a ``Verdict``: shown in the notebook as one line that says "passed",
or as the list of what is still wrong. It never raises for a wrong answer, so a notebook
with unfinished exercises still runs top to bottom. The worked solutions are in
notebooks/solutions/NN-*.ipynb, where every check passes; tests/test_exercises_chNN.py show
that each check also fails on a wrong answer.

Writing a check (chatlab/exercises/chNN.py)::

    def check_chunking(answer) -> Verdict:
        check = Check("03.2", "chunking never matters")
        ok, frames = check.call(answer, b"<RID:1>a</RID:1>", 0)
        if ok:
            check.expect(frames == [...], f"expected [...], got {frames!r}")
        return check.verdict("the decoder does not care how the bytes were cut")
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "Verdict", "unanswered"]


@dataclass
class Verdict:
    """What a check found: passed when ``problems`` is empty (``bool(verdict)``)."""

    exercise: str  # "03.2": chapter 03, exercise 2
    title: str
    problems: list[str] = field(default_factory=list)
    note: str = ""  # said when it passes: the point of the exercise, in one line

    def __bool__(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if not self.problems:
            note = f": {self.note}" if self.note else ""
            return f"passed {self.exercise} ({self.title}){note}"
        lines = [f"not yet {self.exercise} ({self.title}):"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)

    __repr__ = __str__  # the notebook shows a cell's last value with repr()


def unanswered(value: Any) -> bool:
    """True for what a stub leaves: None (a body of ``...``) or ``...`` itself."""
    return value is None or value is Ellipsis


class Check:
    """Collects the problems found in one answer; ``verdict()`` ends it."""

    def __init__(self, exercise: str, title: str) -> None:
        self.exercise, self.title = exercise, title
        self.problems: list[str] = []

    def expect(self, condition: object, problem: str) -> bool:
        """Note ``problem`` unless ``condition`` holds; return whether it held."""
        if not condition:
            self.problems.append(problem)
        return bool(condition)

    def answered(self, value: Any, what: str) -> bool:
        """Note that ``what`` is still the stub's, if it is (see ``unanswered``)."""
        return self.expect(not unanswered(value), f"{what} is not written yet (it is still `...`)")

    def call(self, answer: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Run the learner's function: (True, its value), or (False, None) with the problem
        noted: an exception it raised, or the None that a stub's ``...`` returns."""
        name = getattr(answer, "__name__", repr(answer))
        if not callable(answer):
            self.problems.append(f"{name} should be a function, not {type(answer).__name__}")
            return False, None
        try:
            value = answer(*args, **kwargs)
        except Exception as exc:  # the learner's bug is the finding, not a crash of the check
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.problems.append(
                f"{name}() raised {type(exc).__name__}: {exc} (line {where.lineno}: {where.line})"
            )
            return False, None
        if unanswered(value):
            self.problems.append(f"{name}() returned {value!r}: is it written yet?")
            return False, None
        return True, value

    def verdict(self, note: str = "") -> Verdict:
        return Verdict(self.exercise, self.title, list(self.problems), note)
