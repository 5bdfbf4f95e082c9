"""The bus benchmark: fanout on one process, one process on a Redis bus, two workers on it.

The same load as fanout.py against three servers: chatlab on epoll alone; the same on a bus
(chatlab/bus.py) with its own throwaway redis-server; and two worker processes on one port
(SO_REUSEPORT) joined by such a bus. ``run`` says what is counted. It needs redis-server and
hiredis.

python -m chatlab.bench bus [--rooms R --clients K --window W --size B]
"""

from __future__ import annotations

import os

from . import native_load, python_load
from ._util import BUS_KINDS
from .fanout import FANOUT_KEYS
from .runner import (
    Scenario,
    add_common_arguments,
    alternate,
    bus_missing,
    choose_generator,
    label,
    load,
    medians,
    pyplot,
    server_specs,
)

#: one process without a bus, one with it, two workers joined by it (chatlab/bus.py)
BUS_SERVERS = ["chatlab/epoll", "chatlab-bus", "workers2"]
BUS_KEYS = [
    *FANOUT_KEYS,
    "redis_cpu_us_per_delivery",
    "total_cpu_us_per_delivery",
    "server_cpu_share",
    "redis_cpu_share",
]


def add_arguments(parser) -> None:
    add_common_arguments(parser, servers=None)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10, help="per room")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="bytes per frame sent")


def run_cli(args) -> dict:
    if args.quick:
        args.rounds, args.duration, args.rooms, args.clients = 1, 1.0, 4, 5
    return run(**vars(args))


def run(
    rounds=3, duration=3.0, rooms=10, clients=10, window=4, size=1024, generator="auto", **_
) -> dict:
    """Fanout without the bus, with it, and with two workers on it; a report for format_report.

    The same load as fanout.run, one load-generator process. With two workers, the kernel
    splits each room's members between them (SO_REUSEPORT hashes the client's address), so
    most deliveries cross Redis. CPU is counted for the chatlab processes and for Redis
    apart: what the bus costs per delivery is the difference with the first server.
    """
    missing = bus_missing()
    if missing:
        raise RuntimeError(f"the bus benchmark needs Redis: {missing}")
    specs = server_specs(BUS_SERVERS)
    gen, why = choose_generator(generator)
    kw = dict(rooms=rooms, k=clients, window=window, size=size, duration=duration)
    # No pinning here: two workers and Redis need the cores the generator leaves them.
    measure_load = load(
        gen,
        lambda server, _, cpu: native_load.run_once_native(server, **kw),
        lambda server, _: python_load.run_once(server, workers=1, **kw),
    )[0]

    def measure(server, _):
        r = measure_load(server, None)
        r["total_cpu_us_per_delivery"] = (
            r["server_cpu_us_per_delivery"] + r["redis_cpu_us_per_delivery"]
        )
        return r

    raw = alternate(specs, measure, rounds)
    table = {name: medians(by[None], BUS_KEYS) for name, by in raw.items()}
    for (kind, _backend), (name, by) in zip(specs, raw.items(), strict=True):
        row = table[name]
        row["bus"] = kind in BUS_KINDS
        row["processes"] = 2 if kind == "workers2" else 1
        # exactly-once is a property of every round, not a median
        row["lost"] = sum(r["lost"] for r in by[None])
        row["duplicates"] = sum(r["duplicates"] for r in by[None])
        row["out_of_order"] = sum(r["out_of_order"] for r in by[None])
        row["generator_bound_rounds"] = sum(r["generator_bound"] for r in by[None])
    base = table[label(specs[0])]
    for row in table.values():
        row["ratio_to_one_process"] = row["deliveries_per_s"] / base["deliveries_per_s"]
    return {
        "scenario": "bus",
        "params": kw,
        "rounds": rounds,
        "generator": gen,
        "generator_note": why,
        "cores": os.cpu_count(),
        "results": table,
    }


def format_report(report) -> str:
    p = report["params"]
    lines = [
        f"bus: fanout, {p['rooms']} rooms x {p['k']} clients, window {p['window']}, "
        f"{p['size']}-byte frames, {p['duration']} s x {report['rounds']} rounds (medians), "
        f"{report['cores']} cores, {report.get('generator', 'python')} generator",
        f"{'server':<14} {'deliv/s':>8} {'ratio':>5} {'msg/s':>7} {'p50 ms':>6} {'p99 ms':>6}"
        f" {'lost':>4} {'dup':>3} {'chatlab':>7} {'Redis':>5} {'total':>5} {'gen CPU':>7}",
    ]
    for name, r in report["results"].items():
        redis = f"{r['redis_cpu_us_per_delivery']:>5.2f}" if r["bus"] else f"{'-':>5}"
        flag = " generator-bound" if r["generator_bound_rounds"] else ""
        lines.append(
            f"{name:<14} {r['deliveries_per_s']:>8.0f} {r['ratio_to_one_process']:>5.2f}"
            f" {r['messages_per_s']:>7.0f} {r['p50_ms']:>6.1f} {r['p99_ms']:>6.1f}"
            f" {r['lost']:>4} {r['duplicates']:>3} {r['server_cpu_us_per_delivery']:>7.2f}"
            f" {redis} {r['total_cpu_us_per_delivery']:>5.2f} {r['generator_cpu_share']:>6.0%}"
            f"{flag}"
        )
    lines += [
        "chatlab, Redis, total: CPU us per delivery of the chatlab process(es) (both workers",
        "for workers2), of redis-server, and of the two. ratio: deliveries/s over the first",
        "server's. generator-bound: the load generator used >= 90% of a core.",
    ]
    return "\n".join(lines)


#: what each server of the bus scenario is, under its name on the x axis
_BUS_LABELS = {
    "chatlab/epoll": "1 process",
    "chatlab-bus": "1 process\n+ Redis bus",
    "workers2": "2 workers\n+ Redis bus",
}


def plot(report: dict):
    """Deliveries/s per server; beside it, CPU µs per delivery, chatlab's stacked on Redis's."""
    plt = pyplot()
    names = list(report["results"])
    rows = [report["results"][n] for n in names]
    ticks = [f"{n}\n{_BUS_LABELS[n]}" if n in _BUS_LABELS else n for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    bars = left.bar(ticks, [r["deliveries_per_s"] for r in rows], color="tab:blue")
    left.bar_label(bars, labels=[f"{r['deliveries_per_s']:,.0f}" for r in rows], fontsize=8)
    left.set_ylabel("deliveries / s (median)")
    left.set_title(f"Throughput (generator, servers, Redis on {report['cores']} cores)")
    chatlab = [r["server_cpu_us_per_delivery"] for r in rows]
    redis = [r["redis_cpu_us_per_delivery"] if r["bus"] else 0.0 for r in rows]
    right.bar(ticks, chatlab, color="tab:orange", label="chatlab process(es)")
    bars = right.bar(ticks, redis, bottom=chatlab, color="tab:red", label="redis-server")
    right.bar_label(
        bars, labels=[f"{c + r:.2f}" for c, r in zip(chatlab, redis, strict=True)], fontsize=8
    )
    right.set_ylabel("server CPU µs per delivery (median)")
    right.set_title("What a delivery costs, the bus included")
    right.legend(loc="upper left", fontsize=8)
    for ax in (left, right):
        ax.margins(y=0.15)  # room for the labels above the bars
    p = report["params"]
    fig.suptitle(
        f"bus: fanout, {p['rooms']} rooms × {p['k']} clients, window {p['window']},"
        f" {p['size']} B frames"
    )
    fig.tight_layout()
    return fig


SCENARIO = Scenario(
    name="bus",
    help="fanout on 1 process, 1 process + Redis bus, 2 workers + bus (needs Redis)",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=plot,
)
