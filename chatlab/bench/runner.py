"""Running the scenarios: servers side by side, rounds A B A B, medians, ratios, plots.

Every server under test is a real process, started fresh for each measurement. Rounds
alternate the servers (A B C, A B C, ...) and each figure is the median over rounds, so a
burst of noise on this shared machine hits every server alike, and ratios measured within
one run hold better than any absolute figure.

The load comes from the native generator (native/loadgen.c) wherever a C compiler can build
it: the Python one fills its own core long before a fast server does, so its figures are
the generator's. The server gets one core and the generator another. Where no compiler
exists, the Python generator runs, and the report says so on every line it marks.

What a scenario is (``Scenario``): its options, a run that turns them into a report (a dict
that is also the JSON written by --out), the table printed from that report, and a plot of
it. Each scenario is one module (loop.py, micro.py, fanout.py, idle.py, churn.py, bus.py);
the table of them is in __main__.py. ``main()`` below is what every one of them shares:
run, print, --out, --plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..backends import available_backends
from . import native
from ._util import BUS_KINDS, ServerProcess, median, uvloop_available


@dataclass(frozen=True)
class Scenario:
    """One benchmark, whole: ``python -m chatlab.bench NAME`` runs it."""

    name: str
    help: str
    #: adds the scenario's options to its subcommand's parser
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: the parsed options (--quick applied by the scenario itself) -> the report
    run: Callable[[argparse.Namespace], dict]
    #: the report -> the table printed
    format: Callable[[dict], str]
    #: the report -> a matplotlib figure, or None for a scenario without --plot
    plot: Callable[[dict], object] | None = None


def main(scenario: Scenario, args: argparse.Namespace) -> int:
    """Run ``scenario`` with ``args``: print its table, write --out and --plot; an exit code."""
    try:
        report = scenario.run(args)
    except RuntimeError as exc:  # a server that did not start, Redis missing: say so, briefly
        print(f"chatlab.bench {scenario.name}: {exc}", file=sys.stderr)
        return 1
    print(scenario.format(report))
    save(report, args.out)
    if scenario.plot is not None and args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'chatlab[notebooks]'", file=sys.stderr)
            return 1
        save_figure(scenario.plot(report), args.plot)
        print(f"plot written to {args.plot}")
    return 0


def add_common_arguments(parser, servers: str | None, rounds=3, duration=3.0) -> None:
    """The options of every scenario that runs servers against a load generator."""
    if servers is not None:
        parser.add_argument(
            "--servers", default=servers, help="comma-separated (default: %(default)s)"
        )
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--duration", type=float, default=duration, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument(
        "--generator",
        choices=["auto", "native", "python"],
        default="auto",
        help="the load generator: native (C, built on first use) where a compiler exists",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--plot", help="write a PNG plot here")


def save(report: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)


# ----------------------------------------------------------------------------- plotting


def pyplot():
    """matplotlib.pyplot, imported only when a plot is asked for."""
    import matplotlib

    if "ipykernel" not in sys.modules:  # not in a notebook
        matplotlib.use("Agg")  # a file, not a window: the CLI runs on machines with no screen
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | None) -> None:
    if path:
        fig.savefig(path, dpi=110, bbox_inches="tight")


# ------------------------------------------------------------------ generator and cores


def choose_generator(requested: str = "auto") -> tuple[str, str | None]:
    """("native", None) where native/loadgen.c can be built, else ("python", why not)."""
    if requested == "python":
        return "python", "--generator python"
    why = native.missing()
    if why is None:
        try:
            native.build("loadgen")
        except native.BuildError as exc:
            why = str(exc)
        else:
            return "native", None
    if requested == "native":
        raise RuntimeError(f"the native load generator cannot be built here: {why}")
    return "python", why


def placement() -> tuple[int | None, int | None]:
    """(the server's CPU, the generator's): two different cores where we may use two."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def load(generator: str, native_run, python_run):
    """The measure() for alternate(): the generator's run function, on its own core.

    Returns (measure, the CPU to pin the server to)."""
    server_cpu, gen_cpu = placement()
    if generator == "native":
        return (lambda server, p: native_run(server, p, gen_cpu)), server_cpu
    return (lambda server, p: python_run(server, p)), server_cpu


# ------------------------------------------------------------------- servers under test


def server_specs(names) -> list[tuple[str, str | None]]:
    """'chatlab/epoll,asyncio' or a list of such names -> (kind, backend) pairs, skipping
    (with a line on stderr) what this machine lacks."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    specs = []
    for name in names:
        kind, _, backend = name.partition("/")
        if kind == "chatlab" and backend not in available_backends():
            print(f"skipping {name}: not available on this platform", file=sys.stderr)
            continue
        if kind.startswith("uvloop") and not uvloop_available():
            print(f"skipping {name}: not installed (pip install 'chatlab[bench]')", file=sys.stderr)
            continue
        if kind == "chatd" and native.missing():
            print(f"skipping chatd: {native.missing()}", file=sys.stderr)
            continue
        if kind in BUS_KINDS and bus_missing():
            print(f"skipping {name}: {bus_missing()}", file=sys.stderr)
            continue
        specs.append((kind, backend or None))
    return specs


def bus_missing() -> str | None:
    """Why the bus kinds cannot run here (redis-server or hiredis missing), or None."""
    from ..redis_server import redis_server_path

    if redis_server_path() is None:
        return "redis-server not found (Debian: apt-get install redis-server)"
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return "hiredis not installed (pip install 'chatlab[redis]')"
    return None


def label(spec) -> str:
    kind, backend = spec
    return f"chatlab/{backend}" if kind == "chatlab" else kind


# ------------------------------------------------------------------- rounds and medians


def _progress(done: int, total: int, what: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {done}/{total} {what:<50}")
        sys.stderr.flush()
        if done == total:
            sys.stderr.write("\r" + " " * 70 + "\r")


def alternate(specs, measure, rounds: int, points=(None,), cpu: int | None = None) -> dict:
    """{label: {point: [result per round]}}, servers alternating within each round; each
    server pinned to ``cpu`` (if not None)."""
    out: dict[str, dict] = {label(s): {p: [] for p in points} for s in specs}
    total, done = rounds * len(specs) * len(points), 0
    for p in points:
        for _ in range(rounds):
            for kind, backend in specs:
                name = label((kind, backend))
                done += 1
                _progress(done, total, f"{name} {p if p is not None else ''}")
                with ServerProcess(kind, backend, cpu=cpu) as server:
                    out[name][p].append(measure(server, p))
    return out


def medians(samples: list[dict], keys) -> dict:
    return {k: median([s.get(k) for s in samples]) for k in keys}
