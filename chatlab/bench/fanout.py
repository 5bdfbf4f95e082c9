"""The fanout benchmark: R rooms of K clients, every client talking, W messages in flight.

Each client sends messages carrying a unique token (its id and a sequence number). A
message is *in flight* until every other member of its room has received it; a client
keeps at most W of its own in flight, so the load is closed-loop: the server's speed, not
a fixed rate, sets the pace. Every receiver checks exactly-once, in-order delivery of every
sender's tokens, so a fast figure from a server that loses or duplicates is impossible to
miss. The load generator runs in its own process(es), measures its own CPU, and says so
when it, rather than the server, is the bottleneck.

python -m chatlab.bench fanout [--servers ...] [--rooms R --clients K --window W --size B]
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

DEFAULT_SERVERS = ",".join(
    [f"chatlab/{b}" for b in available_backends()]
    + ["asyncio", "asyncio-coalesce", "uvloop", "uvloop-coalesce"]
    + ["epoll-flat-noruns", "epoll-flat", "chatd"]
)
FANOUT_KEYS = [
    "deliveries_per_s",
    "messages_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "lost",
    "duplicates",
    "server_cpu_us_per_delivery",
    "server_cpu_share",
    "generator_cpu_share",
]
#: the servers chatlab is compared with, when they run: a ratio to each is reported
YARDSTICKS = ("asyncio", "asyncio-coalesce", "epoll-flat-noruns", "epoll-flat", "chatd")


def add_arguments(parser) -> None:
    add_common_arguments(parser, servers=DEFAULT_SERVERS)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10, help="per room")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024, help="bytes per frame sent")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Python generator processes (--generator python)",
    )
    parser.add_argument("--baseline", default="asyncio")


def run_cli(args) -> dict:
    if args.quick:
        args.rounds, args.duration, args.rooms, args.clients = 1, 1.0, 4, 5
    return run(**vars(args))


def run(
    servers,
    rounds=3,
    duration=3.0,
    rooms=10,
    clients=10,
    window=4,
    size=1024,
    workers=1,
    baseline="asyncio",
    generator="auto",
    **_,
) -> dict:
    """Fanout for each server, rounds alternating; a report for format_report and plot.

    With the native generator, the generator's own capacity (fanout against ``loadgen
    sink``, the cheapest relay there is) is measured too, and compared with the fastest
    Python server of the run: a generator that could be the limit is visible at once."""
    specs = server_specs(servers)
    gen, why = choose_generator(generator)
    kw = dict(rooms=rooms, k=clients, window=window, size=size, duration=duration)
    measure, server_cpu = load(
        gen,
        lambda server, _, cpu: native_load.run_once_native(server, cpu=cpu, **kw),
        lambda server, _: python_load.run_once(server, workers=workers, **kw),
    )
    raw = alternate(specs, measure, rounds, cpu=server_cpu)
    table = {name: medians(by[None], FANOUT_KEYS) for name, by in raw.items()}
    for name, by in raw.items():  # exactly-once is a property of every round, not a median
        table[name]["lost"] = sum(r["lost"] for r in by[None])
        table[name]["duplicates"] = sum(r["duplicates"] for r in by[None])
        table[name]["out_of_order"] = sum(r["out_of_order"] for r in by[None])
        table[name]["misrouted"] = sum(r.get("misrouted", 0) for r in by[None])
        table[name]["generator_bound_rounds"] = sum(r["generator_bound"] for r in by[None])
    for row in table.values():
        for ref in dict.fromkeys((baseline, *YARDSTICKS)):
            base = table.get(ref, {}).get("deliveries_per_s")
            row[f"ratio_to_{ref}"] = row["deliveries_per_s"] / base if base else None
    report = {
        "scenario": "fanout",
        "params": kw,
        "rounds": rounds,
        "baseline": baseline,
        "generator": gen,
        "generator_note": why,
        "results": table,
    }
    if gen == "native":
        cap = native_load.generator_capacity(
            duration=min(duration, 2.0), rooms=rooms, k=clients, window=window, size=size
        )
        python = [r["deliveries_per_s"] for n, r in table.items() if n != "chatd"]
        if python and cap["capacity_deliveries_per_s"]:
            cap["ratio_to_fastest_python"] = cap["capacity_deliveries_per_s"] / max(python)
        report["generator_capacity"] = cap
    return report


def _ratio(row, ref) -> str:
    value = row.get(f"ratio_to_{ref}")
    return f"{value:.2f}" if value else "-"


def format_report(report) -> str:
    p = report["params"]
    wanted = (report["baseline"], "epoll-flat-noruns", "epoll-flat", "chatd")
    refs = [r for r in dict.fromkeys(wanted) if r in report["results"]]
    short = {
        "asyncio": "x aio",
        "epoll-flat-noruns": "x flat1",
        "epoll-flat": "x flat",
        "chatd": "x C",
    }
    lines = [
        f"fanout: {p['rooms']} rooms x {p['k']} clients, "
        f"window {p['window']}, {p['size']}-byte frames, {p['duration']} s x "
        f"{report['rounds']} rounds (medians); {report.get('generator', 'python')} generator",
        f"{'server':<17} {'deliv/s':>9}"
        + "".join(f" {short.get(r, 'x ' + r[:5]):>6}" for r in refs)
        + f" {'p50 ms':>7} {'p99 ms':>7} {'CPU us/deliv':>12} {'srv CPU':>7} {'lost':>5}"
        f" {'dup':>4} {'gen CPU':>7}",
    ]
    for name, r in report["results"].items():
        bad = r["lost"] + r["duplicates"] + r.get("out_of_order", 0) + r.get("misrouted", 0)
        flag = " generator-bound" if r["generator_bound_rounds"] else ""
        if bad and (r["duplicates"] or r.get("misrouted")):
            flag += f" ({r.get('misrouted', 0)} misrouted, {r.get('out_of_order', 0)} reordered)"
        lines.append(
            f"{name:<17} {r['deliveries_per_s']:>9.0f}"
            + "".join(f" {_ratio(r, ref):>6}" for ref in refs)
            + f" {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['server_cpu_us_per_delivery']:>12.2f}"
            f" {r['server_cpu_share']:>6.0%} {r['lost']:>5} {r['duplicates']:>4}"
            f" {r['generator_cpu_share']:>6.0%}{flag}"
        )
    lines.append(
        "x NAME: deliveries/s over that server's (flat1: epoll-flat-noruns). CPU us/deliv: the"
        " server's own CPU time per delivery. srv CPU, gen CPU: the share of a core the server"
        " and the load generator used; generator-bound: the generator used >= 90% of its core."
    )
    cap = report.get("generator_capacity")
    if cap:
        lines.append(
            f"generator: {cap['generator_cpu_us_per_delivery']:.3f} us of CPU per delivery"
            f" against its sink, so one core verifies up to"
            f" {cap['capacity_deliveries_per_s'] / 1e6:.2f} M deliveries/s:"
            f" {cap.get('ratio_to_fastest_python', 0):.1f} x the fastest Python server here."
        )
        if cap.get("generator_kernel_share") is not None:
            lines.append(
                f"  {cap['generator_kernel_share']:.0%} of the generator's CPU is the kernel's"
                " (recv and send of the frames): a floor that no change to loadgen.c lowers."
            )
    elif report.get("generator_note"):
        lines.append(
            f"the Python load generator ran ({report['generator_note']}): it fills its core near"
            " 100-350k deliveries/s, so figures above that are the generator's, not the server's."
        )
    return "\n".join(lines)


def plot(report: dict):
    plt = pyplot()
    names = list(report["results"])
    rows = [report["results"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.bar(names, [r["deliveries_per_s"] / 1e6 for r in rows], color="tab:blue")
    left.set_ylabel("million deliveries / s (median)")
    left.set_title("Throughput")
    right.bar(names, [r["server_cpu_us_per_delivery"] for r in rows], color="tab:orange")
    right.set_ylabel("server CPU µs per delivery (median)")
    right.set_title("Server cost (holds on a noisy machine)")
    for ax in (left, right):
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    p = report["params"]
    generator = report.get("generator", "python")
    fig.suptitle(
        f"fanout: {p['rooms']} rooms × {p['k']} clients, window {p['window']}, {p['size']} B"
        f" frames; {generator} load generator"
    )
    fig.tight_layout()
    return fig


SCENARIO = Scenario(
    name="fanout",
    help="R rooms x K clients, each with W messages in flight",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=plot,
)
