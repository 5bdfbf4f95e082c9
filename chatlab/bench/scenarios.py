"""Running the scenarios: servers side by side, rounds A B A B, medians, ratios, plots.

Every server under test is a real process, started fresh for each measurement. Rounds
alternate the servers (A B C, A B C, ...) and each figure is the median over rounds, so a
burst of noise on this shared machine hits every server alike, and ratios measured within
one run hold better than any absolute figure.
"""

from __future__ import annotations

import json
import os
import sys

from ..backends import available_backends
from . import fanout, pingpong
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
    "generator_cpu_share",
]


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
        if kind == "uvloop" and not uvloop_available():
            print("skipping uvloop: not installed (pip install 'chatlab[bench]')", file=sys.stderr)
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


def alternate(specs, measure, rounds: int, points=(None,)) -> dict:
    """{label: {point: [result per round]}}, servers alternating within each round."""
    out = {label(s): {p: [] for p in points} for s in specs}
    total, done = rounds * len(specs) * len(points), 0
    for p in points:
        for _ in range(rounds):
            for spec in specs:
                done += 1
                _progress(done, total, f"{label(spec)} {p if p is not None else ''}")
                with ServerProcess(*spec) as server:
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
    **_,
) -> dict:
    """Fanout for each server, rounds alternating; a report for format_fanout/plot_fanout."""
    specs = server_specs(servers)
    kw = dict(rooms=rooms, k=clients, window=window, size=size, duration=duration, workers=workers)
    raw = alternate(specs, lambda server, _: fanout.run_once(server, **kw), rounds)
    table = {name: medians(by[None], FANOUT_KEYS) for name, by in raw.items()}
    for name, by in raw.items():  # exactly-once is a property of every round, not a median
        table[name]["lost"] = sum(r["lost"] for r in by[None])
        table[name]["duplicates"] = sum(r["duplicates"] for r in by[None])
        table[name]["generator_bound_rounds"] = sum(r["generator_bound"] for r in by[None])
    base = table.get(baseline, {}).get("deliveries_per_s")
    for row in table.values():
        row["ratio_to_baseline"] = row["deliveries_per_s"] / base if base else None
    return {
        "scenario": "fanout",
        "params": kw,
        "rounds": rounds,
        "baseline": baseline,
        "results": table,
    }


def format_fanout(report) -> str:
    p = report["params"]
    lines = [
        f"fanout: {p['rooms']} rooms x {p['k']} clients, "
        f"window {p['window']}, {p['size']}-byte frames, {p['duration']} s x "
        f"{report['rounds']} rounds (medians); ratio to {report['baseline']}",
        f"{'server':<14} {'deliv/s':>9} {'ratio':>6} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU us/deliv':>12} {'lost':>5} {'dup':>4} {'gen CPU':>7}",
    ]
    for name, r in report["results"].items():
        ratio = f"{r['ratio_to_baseline']:.2f}" if r["ratio_to_baseline"] else "-"
        flag = " generator-bound" if r["generator_bound_rounds"] else ""
        lines.append(
            f"{name:<14} {r['deliveries_per_s']:>9.0f} {ratio:>6} {r['messages_per_s']:>8.0f}"
            f" {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['server_cpu_us_per_delivery']:>12.2f}"
            f" {r['lost']:>5} {r['duplicates']:>4} {r['generator_cpu_share']:>6.0%}{flag}"
        )
    lines.append(
        "CPU us/deliv: the server process's own CPU time per delivery, the figure that holds on"
        " a noisy machine. generator-bound: the load generator used >= 90% of a core."
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


def run_bus(rounds=3, duration=3.0, rooms=10, clients=10, window=4, size=1024, **_) -> dict:
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
    kw = dict(rooms=rooms, k=clients, window=window, size=size, duration=duration, workers=1)

    def measure(server, _):
        r = fanout.run_once(server, **kw)
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
        "cores": os.cpu_count(),
        "results": table,
    }


def format_bus(report) -> str:
    p = report["params"]
    lines = [
        f"bus: fanout, {p['rooms']} rooms x {p['k']} clients, window {p['window']}, "
        f"{p['size']}-byte frames, {p['duration']} s x {report['rounds']} rounds (medians), "
        f"{report['cores']} cores",
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


def run_idle(servers, sizes=(0, 1000, 5000, 10000), rounds=3, duration=2.0, **_) -> dict:
    """A ping-pong pair among each number of idle connections, per server."""
    specs = server_specs(servers)
    if isinstance(sizes, str):
        sizes = [int(n) for n in sizes.split(",")]
    sizes = list(sizes)
    note = raise_fd_limit(max(sizes) * 2 + 256)
    raw = alternate(specs, lambda server, n: pingpong.run_idle(server, n, duration), rounds, sizes)
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
        "sizes": sizes,
        "duration": duration,
        "rounds": rounds,
        "fd_limit_note": note,
        "results": table,
    }


def format_idle(report) -> str:
    lines = [
        f"idle: one ping-pong pair + C idle connections, {report['duration']} s x "
        f"{report['rounds']} rounds (medians)",
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


def run_churn(servers, concurrency=8, rounds=3, duration=3.0, **_) -> dict:
    """Connect-join-send-close at a given concurrency while a pair chats, per server."""
    specs = server_specs(servers)
    raw = alternate(
        specs, lambda server, _: pingpong.run_churn(server, concurrency, duration), rounds
    )
    keys = ["connections_per_s", "pair_p99_us", "server_cpu_us_per_connection"]
    table = {name: medians(by[None], keys) for name, by in raw.items()}
    for name, by in raw.items():
        table[name]["errors"] = [e for r in by[None] for e in r["errors"]][:3]
    return {
        "scenario": "churn",
        "concurrency": concurrency,
        "duration": duration,
        "rounds": rounds,
        "results": table,
    }


def format_churn(report) -> str:
    lines = [
        f"churn: {report['concurrency']} clients at a time connect, join, send, close, while a"
        f" pair chats; {report['duration']} s x {report['rounds']} rounds (medians)",
        f"{'server':<14} {'conn/s':>8} {'pair p99 us':>12} {'CPU us/conn':>12}",
    ]
    for name, r in report["results"].items():
        err = f"  errors: {r['errors']}" if r["errors"] else ""
        lines.append(
            f"{name:<14} {r['connections_per_s']:>8.0f} {r['pair_p99_us']:>12.0f}"
            f" {r['server_cpu_us_per_connection']:>12.1f}{err}"
        )
    return "\n".join(lines)


def save(report: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
