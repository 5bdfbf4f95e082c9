"""The churn benchmark: N clients at a time connect, join, send one message and close.

Over and over, while a ping-pong pair keeps chatting: connections per second, what each
costs the server, and what the churn does to the pair's round trips. The generator's own
connect() and close() are costly too: where it used most of its core, the figure is its
own (generator-bound).

python -m chatlab.bench churn [--servers ...] [--concurrency N]
"""

from __future__ import annotations

from ..backends import available_backends
from . import native_load, python_load
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


def add_arguments(parser) -> None:
    servers = f"chatlab/{available_backends()[0]},asyncio,uvloop,epoll-flat,chatd"
    add_common_arguments(parser, servers=servers)
    parser.add_argument("--concurrency", type=int, default=8)


def run_cli(args) -> dict:
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    return run(**vars(args))


def run(servers, concurrency=8, rounds=3, duration=3.0, generator="auto", **_) -> dict:
    """Connect-join-send-close at a given concurrency while a pair chats, per server."""
    specs = server_specs(servers)
    gen, why = choose_generator(generator)
    measure, server_cpu = load(
        gen,
        lambda server, _, cpu: native_load.run_churn_native(server, concurrency, duration, cpu),
        lambda server, _: python_load.run_churn(server, concurrency, duration),
    )
    raw = alternate(specs, measure, rounds, cpu=server_cpu)
    keys = [
        "connections_per_s",
        "pair_p99_us",
        "server_cpu_us_per_connection",
        "generator_cpu_share",
    ]
    table = {name: medians(by[None], keys) for name, by in raw.items()}
    for name, by in raw.items():
        table[name]["errors"] = [e for r in by[None] for e in r["errors"]][:3]
    return {
        "scenario": "churn",
        "generator": gen,
        "generator_note": why,
        "concurrency": concurrency,
        "duration": duration,
        "rounds": rounds,
        "results": table,
    }


def format_report(report) -> str:
    results = report["results"]
    base = results.get("asyncio", {}).get("connections_per_s")
    lines = [
        f"churn: {report['concurrency']} clients at a time connect, join, send, close, while a"
        f" pair chats; {report['duration']} s x {report['rounds']} rounds (medians),"
        f" {report.get('generator', 'python')} generator",
        f"{'server':<16} {'conn/s':>8} {'x aio':>6} {'pair p99 us':>12} {'CPU us/conn':>12}"
        f" {'gen CPU':>7}",
    ]
    for name, r in results.items():
        err = f"  errors: {r['errors']}" if r["errors"] else ""
        if r["generator_cpu_share"] >= 0.9:  # the generator's connect/close set the pace
            err = " generator-bound" + err
        ratio = f"{r['connections_per_s'] / base:.2f}" if base else "-"
        lines.append(
            f"{name:<16} {r['connections_per_s']:>8.0f} {ratio:>6} {r['pair_p99_us']:>12.0f}"
            f" {r['server_cpu_us_per_connection']:>12.1f} {r['generator_cpu_share']:>6.0%}{err}"
        )
    return "\n".join(lines)


def plot(report: dict):
    plt = pyplot()
    names = list(report["results"])
    rows = [report["results"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    # A server whose figure the generator set (it used >= 90% of its core) is hatched.
    hatch = ["//" if r.get("generator_cpu_share", 0) >= 0.9 else "" for r in rows]
    left.bar(names, [r["connections_per_s"] for r in rows], hatch=hatch)
    left.set_ylabel("connections / s (median)")
    left.set_title("Throughput (hatched: generator-bound)")
    right.bar(names, [r["server_cpu_us_per_connection"] for r in rows], color="tab:orange")
    right.set_ylabel("server CPU µs per connection (median)")
    right.set_title("Server cost")
    for ax in (left, right):
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    fig.suptitle(f"churn: {report['concurrency']} at a time connect, join, send, close")
    fig.tight_layout()
    return fig


SCENARIO = Scenario(
    name="churn",
    help="connect, join, send, close at concurrency N",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=plot,
)
