"""Running the scenarios: servers side by side, rounds A B A B, medians, ratios, plots.

Every server under test is a real process, started fresh for each measurement. Rounds
alternate the servers (A B C, A B C, ...) and each figure is the median over rounds, so a
burst of noise on this shared machine hits every server alike, and ratios measured within
one run hold better than any absolute figure.

The load comes from the native generator (native/loadgen.c) wherever a C compiler can build
it: the Python one fills its own core long before a fast server does, so its figures are
the generator's. The server gets one core and the generator another. Where no compiler
exists, the Python generator runs, and the report says so on every line it marks.
"""

from __future__ import annotations

import json
import os
import sys

from ..backends import available_backends
from . import native, native_load, python_load
from ._util import BUS_KINDS, ServerProcess, median, raise_fd_limit, uvloop_available

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


def _load(generator: str, native_run, python_run):
    """The measure() for alternate(): the generator's run function, on its own core."""
    server_cpu, gen_cpu = placement()
    if generator == "native":
        return (lambda server, p: native_run(server, p, gen_cpu)), server_cpu
    return (lambda server, p: python_run(server, p)), server_cpu


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


def _progress(done: int, total: int, what: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {done}/{total} {what:<50}")
        sys.stderr.flush()
        if done == total:
            sys.stderr.write("\r" + " " * 70 + "\r")


def alternate(specs, measure, rounds: int, points=(None,), cpu: int | None = None) -> dict:
    """{label: {point: [result per round]}}, servers alternating within each round; each
    server pinned to ``cpu`` (if not None)."""
    out = {label(s): {p: [] for p in points} for s in specs}
    total, done = rounds * len(specs) * len(points), 0
    for p in points:
        for _ in range(rounds):
            for spec in specs:
                done += 1
                _progress(done, total, f"{label(spec)} {p if p is not None else ''}")
                with ServerProcess(*spec, cpu=cpu) as server:
                    out[label(spec)][p].append(measure(server, p))
    return out


def medians(samples: list[dict], keys) -> dict:
    return {k: median([s.get(k) for s in samples]) for k in keys}


# ------------------------------------------------------------------------------ fanout


def run_fanout(
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
    """Fanout for each server, rounds alternating; a report for format_fanout/plot_fanout.

    With the native generator, the generator's own capacity (fanout against ``loadgen
    sink``, the cheapest relay there is) is measured too, and compared with the fastest
    Python server of the run: a generator that could be the limit is visible at once."""
    specs = server_specs(servers)
    gen, why = choose_generator(generator)
    kw = dict(rooms=rooms, k=clients, window=window, size=size, duration=duration)
    measure, server_cpu = _load(
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


def format_fanout(report) -> str:
    p = report["params"]
    refs = dict.fromkeys((report["baseline"], "epoll-flat-noruns", "epoll-flat", "chatd"))
    refs = [r for r in refs if r in report["results"]]
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


# --------------------------------------------------------------------------------- bus

#: one process without a bus, one with it, two workers joined by it (chatlab/bus.py)
BUS_SERVERS = ["chatlab/epoll", "chatlab-bus", "workers2"]
BUS_KEYS = [
    *FANOUT_KEYS,
    "redis_cpu_us_per_delivery",
    "total_cpu_us_per_delivery",
    "server_cpu_share",
    "redis_cpu_share",
]


def run_bus(
    rounds=3, duration=3.0, rooms=10, clients=10, window=4, size=1024, generator="auto", **_
) -> dict:
    """Fanout without the bus, with it, and with two workers on it; a report for format_bus.

    The same load as run_fanout, one load-generator process. With two workers, the kernel
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
    load, _ = _load(
        gen,
        lambda server, _, cpu: native_load.run_once_native(server, **kw),
        lambda server, _: python_load.run_once(server, workers=1, **kw),
    )

    def measure(server, _):
        r = load(server, None)
        r["total_cpu_us_per_delivery"] = (
            r["server_cpu_us_per_delivery"] + r["redis_cpu_us_per_delivery"]
        )
        return r

    raw = alternate(specs, measure, rounds)
    table = {name: medians(by[None], BUS_KEYS) for name, by in raw.items()}
    for (kind, _), (name, by) in zip(specs, raw.items(), strict=True):
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


def format_bus(report) -> str:
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


# -------------------------------------------------------------------------------- idle

IDLE_KEYS = [
    "round_trips_per_s",
    "p50_us",
    "p99_us",
    "server_cpu_us_per_round_trip",
    "server_rss_bytes",
]


def run_idle(
    servers, sizes=(0, 1000, 5000, 10000), rounds=3, duration=2.0, generator="auto", **_
) -> dict:
    """A ping-pong pair among each number of idle connections, per server."""
    specs = server_specs(servers)
    gen, why = choose_generator(generator)
    if isinstance(sizes, str):
        sizes = [int(n) for n in sizes.split(",")]
    sizes = list(sizes)
    note = raise_fd_limit(max(sizes) * 2 + 256)
    measure, server_cpu = _load(
        gen,
        lambda server, n, cpu: native_load.run_idle_native(server, n, duration, cpu=cpu),
        lambda server, n: python_load.run_idle(server, n, duration),
    )
    raw = alternate(specs, measure, rounds, sizes, cpu=server_cpu)
    table = {}
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


def format_idle(report) -> str:
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


# ------------------------------------------------------------------------------- churn


def run_churn(servers, concurrency=8, rounds=3, duration=3.0, generator="auto", **_) -> dict:
    """Connect-join-send-close at a given concurrency while a pair chats, per server."""
    specs = server_specs(servers)
    gen, why = choose_generator(generator)
    measure, server_cpu = _load(
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


def format_churn(report) -> str:
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


def save(report: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
