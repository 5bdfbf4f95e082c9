"""Run checks against a target and keep the score: ``grade()`` and ``Scoreboard``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .checks import CHECKS, FD_LIMIT, STEPS, Context, Failed, Skipped
from .targets import Target

__all__ = ["Result", "Scoreboard", "grade", "select_checks"]


@dataclass(frozen=True)
class Result:
    name: str
    outcome: str  # "pass", "fail" or "skip"
    detail: str = ""
    hint: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.outcome == "pass":
            return f"pass  {self.name}"
        if self.outcome == "skip":
            return f"skip  {self.name}: {self.detail}"
        return f"FAIL  {self.name}: {self.detail}\n      hint: {self.hint}"


@dataclass
class Scoreboard:
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> list[str]:
        return [r.name for r in self.results if r.outcome == "pass"]

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.outcome == "fail"]

    def __bool__(self) -> bool:
        """True when nothing failed (skipped checks are not failures)."""
        return not self.failed

    def summary(self) -> str:
        skipped = len(self.results) - len(self.passed) - len(self.failed)
        return f"{len(self.passed)} passed, {len(self.failed)} failed" + (
            f", {skipped} skipped" if skipped else ""
        )

    def __str__(self) -> str:
        return "\n".join([*(str(r) for r in self.results), self.summary()])

    __repr__ = __str__  # a notebook cell shows the scoreboard


def select_checks(only: Iterable[str] = (), steps: Iterable[str] = ()) -> list[str]:
    """Check names, in order: all, or those named in ``only`` / belonging to ``steps``."""
    only, steps = list(only), list(steps)
    for name in only:
        if name not in CHECKS:
            raise ValueError(f"no check named {name!r}; the checks: {', '.join(CHECKS)}")
    for step in steps:
        if step not in STEPS:
            raise ValueError(f"no step named {step!r}; the steps: {', '.join(STEPS)}")
    return [
        name
        for name, c in CHECKS.items()
        if (not only and not steps) or name in only or c.step in steps
    ]


def grade(
    start: Callable[[], Target],
    names: Iterable[str] | None = None,
    *,
    report: Callable[[Result], None] | None = None,
) -> Scoreboard:
    """Run each check on a server from ``start()`` (a fresh one per check), in order."""
    _raise_fd_limit(FD_LIMIT)
    board = Scoreboard()
    for name in names if names is not None else list(CHECKS):
        spec = CHECKS[name]
        began = time.monotonic()
        try:
            target = start()
        except Exception as exc:
            result = Result(name, "fail", f"the server did not start: {exc}", spec.hint)
        else:
            ctx = Context(target)
            try:
                spec.run(ctx)
                ctx.expect_alive(f"during {name}")
                result = Result(name, "pass")
            except Skipped as exc:
                result = Result(name, "skip", str(exc))
            except Failed as exc:
                result = Result(name, "fail", str(exc), spec.hint)
            finally:
                ctx.close()
                output = target.stop()
                if hasattr(target, "close"):
                    target.close()
            if result.outcome == "fail" and output.strip():
                # the last line that is not indented: an exception's, or a log line
                lines = [ln for ln in output.strip().splitlines() if ln and not ln[0].isspace()]
                last = lines[-1] if lines else output.strip().splitlines()[-1]
                result = Result(
                    name, "fail", f"{result.detail} [server's last words: {last}]", spec.hint
                )
        result = Result(
            result.name, result.outcome, result.detail, result.hint, time.monotonic() - began
        )
        board.results.append(result)
        if report is not None:
            report(result)
    return board


def _raise_fd_limit(need: int) -> None:
    """Raise this process's soft fd limit (servers started from here inherit it)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        ceiling = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
