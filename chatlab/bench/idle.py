"""The idle benchmark: one ping-pong pair measured among C connections that never say a word.

select() and poll() pay for every idle connection on every loop iteration; epoll does not.
The pair's round trips show it, and so does the server's CPU time per round trip. The
server's resident memory before and after says what one idle connection costs it.

python -m chatlab.bench idle [--servers ...] [--sizes 0,1000,5000,10000]
"""

from __future__ import annotations

from ..backends import available_backends
from . import native_load, python_load
from ._util import raise_fd_limit
from .runner import (
    Scenario,
    add_common_arguments,
    alternate,
    choose_generator,
    load,
    medians,
    pyplot,
    server_specs,
)

IDLE_KEYS = [
    "round_trips_per_s",
    "p50_us",
    "p99_us",
    "server_cpu_us_per_round_trip",
    "server_rss_bytes",
]


def add_arguments(parser) -> None:
    servers = ",".join(f"chatlab/{b}" for b in available_backends())
    add_common_arguments(parser, servers=servers, duration=2.0)
    parser.add_argument("--sizes", default="0,1000,5000,10000", help="idle connection counts")


def run_cli(args) -> dict:
    if args.quick:
        args.rounds, args.duration, args.sizes = 1, 1.0, "0,100,1000"
    return run(**vars(args))


def run(
    servers, sizes=(0, 1000, 5000, 10000), rounds=3, duration=2.0, generator="auto", **_
) -> dict:
    """A ping-pong pair among each number of idle connections, per server."""
    specs = server_specs(servers)
    gen, why = choose_generator(generator)
    if isinstance(sizes, str):
        sizes = [int(n) for n in sizes.split(",")]
    sizes = list(sizes)
    note = raise_fd_limit(max(sizes) * 2 + 256)
    measure, server_cpu = load(
        gen,
        lambda server, n, cpu: native_load.run_idle_native(server, n, duration, cpu=cpu),
        lambda server, n: python_load.run_idle(server, n, duration),
    )
    raw = alternate(specs, measure, rounds, sizes, cpu=server_cpu)
    table: dict[str, dict] = {}
    for name, by in raw.items():
        table[name] = {}
        for n, samples in by.items():
            if any(s["refused"] for s in samples):
                table[name][n] = {"refused": True}
            else:
                table[name][n] = {"refused": False, **medians(samples, IDLE_KEYS)}
        base = table[name].get(sizes[0], {})
        for n, row in table[name].items():
            if not row["refused"] and not base.get("refused", True) and n:
                row["cpu_ratio_to_0"] = (
                    row["server_cpu_us_per_round_trip"] / base["server_cpu_us_per_round_trip"]
                )
                row["rss_per_idle_bytes"] = (row["server_rss_bytes"] - base["server_rss_bytes"]) / n
    return {
        "scenario": "idle",
        "generator": gen,
        "generator_note": why,
        "sizes": sizes,
        "duration": duration,
        "rounds": rounds,
        "fd_limit_note": note,
        "results": table,
    }


def format_report(report) -> str:
    lines = [
        f"idle: one ping-pong pair + C idle connections, {report['duration']} s x "
        f"{report['rounds']} rounds (medians), {report.get('generator', 'python')} generator",
        f"{'server':<14} {'C':>6} {'rt/s':>8} {'p50 us':>8} {'p99 us':>8} "
        f"{'CPU us/rt':>10} {'x C=0':>6} {'RSS/idle':>9}",
    ]
    for name, by in report["results"].items():
        for n, r in by.items():
            if r["refused"]:
                lines.append(f"{name:<14} {n:>6} refused: select() cannot watch fds >= 1024")
                continue
            ratio = f"{r['cpu_ratio_to_0']:.2f}" if r.get("cpu_ratio_to_0") else "-"
            per = f"{r['rss_per_idle_bytes']:.0f} B" if r.get("rss_per_idle_bytes") else "-"
            lines.append(
                f"{name:<14} {n:>6} {r['round_trips_per_s']:>8.0f} {r['p50_us']:>8.0f}"
                f" {r['p99_us']:>8.0f} {r['server_cpu_us_per_round_trip']:>10.1f}"
                f" {ratio:>6} {per:>9}"
            )
    if report.get("fd_limit_note"):
        lines.append(report["fd_limit_note"])
    return "\n".join(lines)


def plot(report: dict):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, by_n in report["results"].items():
        points = [
            (int(n), r["server_cpu_us_per_round_trip"]) for n, r in by_n.items() if not r["refused"]
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        refused = [int(n) for n, r in by_n.items() if r["refused"]]
        if refused and points:
            ax.scatter(refused, [points[-1][1]] * len(refused), marker="x", color="red")
            ax.annotate(
                "select: refused past FD_SETSIZE",
                (refused[0], points[-1][1]),
                textcoords="offset points",
                xytext=(-60, 10),
                color="red",
            )
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlabel("idle connections")
    ax.set_ylabel("server CPU µs per round trip")
    ax.set_title("A ping-pong pair among idle connections")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return fig


SCENARIO = Scenario(
    name="idle",
    help="a ping-pong pair among C idle connections",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=plot,
)
