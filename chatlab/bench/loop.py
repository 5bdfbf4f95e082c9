"""The loop benchmark: what one iteration costs with 1 active fd and N idle ones.

This is the O(n) vs O(ready) story in numbers. One socketpair carries a ping; N UDP sockets
(bound to nothing, so they never become readable and send nothing) sit in the interest set.
Each iteration: write one byte, run_once(), whose reader reads it back. select and poll copy
all N+1 entries into the kernel on every call; epoll's wait only looks at what is ready.

Backends are measured in alternating rounds (A B C A B C ...) and the median per backend is
reported, so that the noise of a shared machine hits all of them alike.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time

from ..backends import available_backends
from ..loop import EventLoop
from ._util import raise_fd_limit
from .runner import Scenario, pyplot

DEFAULT_SIZES = [0, 10, 100, 1000, 5000, 10000]


def add_arguments(parser) -> None:
    parser.add_argument(
        "--backends",
        default=",".join(available_backends()),
        help="comma-separated backends (default: all available)",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="numbers of idle fds (default: %(default)s)",
    )
    parser.add_argument("--iterations", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--plot", help="write a PNG plot here")


def measure(backend: str, idle: int, iterations: int, clock=time.perf_counter) -> float | None:
    """Seconds per loop iteration, or None if the backend cannot watch that many fds.

    ``clock``: wall time by default; ``time.thread_time`` counts only this thread's CPU
    time, which a busy neighbour on a shared machine does not inflate (scaling.py uses it).
    """
    idle_socks = []
    a, b = socket.socketpair()
    try:
        with EventLoop(backend) as loop:
            try:
                for _ in range(idle):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    idle_socks.append(sock)
                    loop.add_reader(sock, _never)
                loop.add_reader(a, a.recv, 1)
            except ValueError:  # FDLimitError: select's wall
                return None
            run_once, send = loop.run_once, b.send
            for _ in range(50):  # warm up
                send(b"x")
                run_once(1.0)
            start = clock()
            for _ in range(iterations):
                send(b"x")
                run_once(1.0)
            return (clock() - start) / iterations
    finally:
        for sock in idle_socks:
            sock.close()
        a.close()
        b.close()


def _never() -> None:
    raise AssertionError("an idle socket was reported ready")


def run(backends, sizes, iterations, rounds, progress=None):
    """{backend: {idle: median seconds per iteration or None}}; progress: a terminal stream"""
    samples: dict[str, dict[int, list]] = {be: {n: [] for n in sizes} for be in backends}
    total = len(sizes) * rounds * len(backends)
    done = 0
    for n in sizes:
        for _ in range(rounds):
            for be in backends:  # alternate backends inside each round
                samples[be][n].append(measure(be, n, iterations))
                done += 1
                if progress is not None:
                    progress.write(f"\r  measuring: {done}/{total} ({be}, {n} idle fds)   ")
                    progress.flush()
    if progress is not None:
        progress.write("\r" + " " * 60 + "\r")
    return {
        be: {n: (None if None in s else statistics.median(s)) for n, s in by_n.items()}
        for be, by_n in samples.items()
    }


def format_table(results, sizes) -> str:
    backends = list(results)
    head = f"{'idle fds':>9} | " + " | ".join(f"{be:>12}" for be in backends)
    lines = [
        "microseconds per loop iteration (1 active fd), median of rounds",
        head,
        "-" * len(head),
    ]
    for n in sizes:
        cells = []
        for be in backends:
            v = results[be][n]
            cells.append(f"{'refused':>12}" if v is None else f"{v * 1e6:>12.1f}")
        lines.append(f"{n:>9} | " + " | ".join(cells))
    return "\n".join(lines)


def run_cli(args) -> dict:
    """The options -> the report (the JSON of --out): the results and how they were taken."""
    backends = [b for b in args.backends.split(",") if b]
    sizes = [int(n) for n in args.sizes.split(",") if n]
    iterations, rounds = args.iterations, args.rounds
    if args.quick:
        sizes, iterations, rounds = [n for n in sizes if n <= 1000], 300, 3
    note = raise_fd_limit(max(sizes) + 64)
    if note:
        print(note)  # before the measurement, which takes a while; the table comes after
    progress = sys.stderr if sys.stderr.isatty() else None
    results = run(backends, sizes, iterations, rounds, progress)
    return {
        "scenario": "loop",
        "iterations": iterations,
        "rounds": rounds,
        "seconds_per_iteration": results,
    }


def format_report(report) -> str:
    results = report["seconds_per_iteration"]
    sizes = list(next(iter(results.values()), {}))
    return (
        format_table(results, sizes)
        + "\n'refused': select() cannot watch fds >= FD_SETSIZE (1024)."
    )


def plot(results: dict, ax=None):
    """results: {backend: {idle_fds: seconds per iteration or None}}"""
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for backend, by_n in results.items():
        points = [(int(n), v * 1e6) for n, v in by_n.items() if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=backend)
        refused = [int(n) for n, v in by_n.items() if v is None]
        if refused:
            ax.scatter(
                refused,
                [points[-1][1]] * len(refused),
                marker="x",
                color="red",
                label=f"{backend}: refused (FD_SETSIZE)",
            )
    ax.set_xscale("symlog", linthresh=10)
    ax.set_yscale("log")
    ax.set_xlabel("idle fds registered")
    ax.set_ylabel("µs per loop iteration (1 active fd)")
    ax.set_title("One ready socket among N idle ones: O(n) vs O(ready)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return ax.figure


SCENARIO = Scenario(
    name="loop",
    help="cost of one loop iteration with 1 active and N idle fds",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=lambda report: plot(report["seconds_per_iteration"]),
)
