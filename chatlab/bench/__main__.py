"""python -m chatlab.bench SCENARIO [options]: loop, micro, fanout, idle, churn, bus, soak, attack.

The load comes from a native generator (chatlab/bench/native/loadgen.c, built with the C
compiler on first use; `python -m chatlab.bench.native` builds it ahead of time), or from
the Python one where no compiler exists (then every figure it sets says generator-bound).

Each prints a table; --out writes the results as JSON, --plot a PNG (needs matplotlib);
--quick runs a small version in seconds (the notebook and the tests use it).

Each scenario is one module, whole: its options, its run, its table, its plot. SCENARIOS
below is the list of them, in the order `--help` shows; a new benchmark is a new module and
one line here. What they share (rounds, medians, --out, --plot) is runner.py.
"""

from __future__ import annotations

import argparse
import sys

from . import attack, bus, churn, fanout, idle, loop, micro, runner, soak

SCENARIOS: dict[str, runner.Scenario] = {
    s.name: s
    for s in (
        loop.SCENARIO,
        micro.SCENARIO,
        fanout.SCENARIO,
        idle.SCENARIO,
        churn.SCENARIO,
        bus.SCENARIO,
        soak.SCENARIO,
        attack.SCENARIO,
    )
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.bench",
        description="chatlab's benchmarks: servers as real processes, alternating rounds, "
        "medians. Loopback only; every run is bounded in time.",
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    for scenario in SCENARIOS.values():
        scenario.add_arguments(sub.add_parser(scenario.name, help=scenario.help))
    args = parser.parse_args(argv)
    return runner.main(SCENARIOS[args.scenario], args)


if __name__ == "__main__":
    sys.exit(main())
