"""python -m chatlab.grade: grade a <RID:n> chat server (see chatlab/grade/__init__.py)."""

from __future__ import annotations

import argparse
import sys

from .checks import BUGS, CHECKS, STEPS
from .runner import grade, select_checks
from .targets import AddressTarget, CommandTarget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.grade",
        description="Grade a <RID:n> chat server: one line per check, exit 0 if none fails.",
        epilog="checks: "
        + "; ".join(f"{c.name} ({c.step})" for c in CHECKS.values())
        + ". The original server's bugs and the checks that catch them: "
        + "; ".join(
            f"{bug}: {', '.join(c.name for c in CHECKS.values() if bug in c.catches)}"
            for bug in BUGS
        ),
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--cmd", help='the command that starts the server, with {port}: "./server {port}"'
    )
    target.add_argument("--port", type=int, help="the port of a server already running")
    parser.add_argument("--host", default="127.0.0.1", help="with --port (default 127.0.0.1)")
    parser.add_argument("--only", default="", help="comma-separated check names")
    parser.add_argument("--step", default="", help=f"comma-separated steps: {', '.join(STEPS)}")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for c in CHECKS.values():
            print(f"{c.name:<22} {c.step:<11} {c.summary}")
        return 0
    if args.cmd is None and args.port is None:
        parser.error("say which server: --cmd COMMAND (with {port}) or --port N")
    try:
        names = select_checks(
            [n for n in args.only.split(",") if n], [s for s in args.step.split(",") if s]
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.cmd:
        board = grade(lambda: CommandTarget(args.cmd, args.host), names, report=print)
    else:
        board = grade(lambda: AddressTarget(args.host, args.port), names, report=print)
    print(board.summary())
    return 0 if board else 1


if __name__ == "__main__":
    sys.exit(main())
