"""python -m chatlab.bench SCENARIO [options]"""

from __future__ import annotations

import argparse
import sys

from . import loop as loop_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.bench",
        description="chatlab's benchmarks. Figures are medians of alternating rounds.",
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    loop_bench.add_arguments(
        sub.add_parser("loop", help="cost of one loop iteration with 1 active and N idle fds")
    )
    args = parser.parse_args(argv)
    if args.scenario == "loop":
        return loop_bench.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
