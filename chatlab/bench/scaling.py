"""Notebook 08's figures, from one command, with how and when they were taken.

    python -m chatlab.bench.scaling --out docs/bench/08-scaling.json \
        --plot docs/bench/08-scaling.png

Three measurements, the claims of chapters 02 to 07 in numbers:

* **loop**: one loop iteration with 1 active fd and N idle ones (loop.py's measure), timed
  in this thread's CPU time, per backend;
* **idle**: a ping-pong pair through a real server process among C idle connections
  (native generator), the server's CPU time per round trip;
* **fanout**: R rooms of K clients all talking (native generator), the server's CPU time
  per delivery, for chatlab and its yardsticks.

Why CPU ratios. On a shared machine, a neighbour that takes the core for a moment makes a
server deliver fewer messages per second, but it does not make each delivery cost more of
the server's own CPU time: CPU per unit of work holds where throughput does not. And a
ratio to a reference measured *in the same repeat* (poll at 1000 idle fds over poll at 0;
chatlab over asyncio) cancels what the machine's speed adds to both.

Why repeats. Each repeat runs every measurement once (loop, then idle, then fanout, every
server in turn), so a noisy minute hits one repeat of everything, not every round of one
server. Figures are the median over repeats, and min and max are kept beside them: a
difference smaller than that spread is not a finding. The JSON keeps every repeat's raw
samples and a ``metadata`` block: the command, the date, the machine, its load average
before, during and after, and the durations, so the run can be judged and redone.

Whose figures. The generator's share of its core is kept for every run (a generator near
100% sets the pace itself), and its own cost is measured against ``loadgen sink`` (a relay
that does nothing else) in every repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..backends import available_backends
from . import loop as loop_bench
from . import native_load, python_load
from ._util import ServerProcess, raise_fd_limit
from .runner import choose_generator, label, placement, pyplot, save, save_figure, server_specs

COMMAND = "python -m chatlab.bench.scaling"
DEFAULT_OUT = "docs/bench/08-scaling.json"
DEFAULT_PLOT = "docs/bench/08-scaling.png"
FANOUT_SERVERS = (
    "chatlab/epoll,chatlab/poll,chatlab/select,asyncio,asyncio-coalesce,epoll-flat,chatd"
)
#: the fanout's references: each server's CPU per delivery over theirs, repeat by repeat
FANOUT_REFERENCES = ("asyncio", "asyncio-coalesce", "chatd")


# ------------------------------------------------------------------------------ statistics


def spread(values) -> dict | None:
    """{"median", "min", "max", "n"} of the values that are not None; None if there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def ratios(values, references) -> list:
    """value / reference, repeat by repeat (None where either is missing)."""
    return [v / r if v is not None and r else None for v, r in zip(values, references, strict=True)]


def beyond_noise(a: dict | None, b: dict | None) -> bool:
    """Two spreads that do not overlap: every repeat of one above every repeat of the other."""
    return bool(a and b and (a["min"] > b["max"] or b["min"] > a["max"]))


# ---------------------------------------------------------------------------- the machine


def machine() -> dict:
    """What ran the measurement: enough to tell whether another run is comparable."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "system": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "python": platform.python_version(),
        "backends": available_backends(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------------- the three parts


def loop_iterations(size: int, base: int) -> int:
    """Fewer iterations where one costs more: about the same time for every size."""
    return max(100, min(base, base * 1000 // max(size, 1)))


def measure_loop(backends, sizes, base_iterations) -> dict:
    """One repeat: {backend: {size: CPU us per iteration, or None (refused)}}."""
    out: dict[str, dict[str, float | None]] = {be: {} for be in backends}
    for n in sizes:
        for be in backends:
            s = loop_bench.measure(be, n, loop_iterations(n, base_iterations), time.thread_time)
            out[be][str(n)] = None if s is None else s * 1e6
    return out


def measure_idle(specs, sizes, duration, generator, cpus) -> dict:
    """One repeat: {server: {size: the generator's result (refused, or the pair's figures)}}."""
    server_cpu, gen_cpu = cpus
    out: dict[str, dict[str, dict]] = {label(s): {} for s in specs}
    for n in sizes:
        for kind, backend in specs:
            with ServerProcess(kind, backend, cpu=server_cpu) as server:
                if generator == "native":
                    r = native_load.run_idle_native(server, n, duration, cpu=gen_cpu)
                else:
                    r = python_load.run_idle(server, n, duration)
            out[label((kind, backend))][str(n)] = r
    return out


def measure_fanout(specs, params, generator, cpus) -> dict:
    """One repeat: {server: the generator's result}, every server in turn."""
    server_cpu, gen_cpu = cpus
    out = {}
    for kind, backend in specs:
        with ServerProcess(kind, backend, cpu=server_cpu) as server:
            if generator == "native":
                r = native_load.run_once_native(server, cpu=gen_cpu, **params)
            else:
                r = python_load.run_once(server, **params)
        out[label((kind, backend))] = r
    return out


# ---------------------------------------------------------------------------------- run


def run(
    repeats=5,
    loop_sizes=(0, 10, 100, 1000, 3000, 10000),
    loop_iterations=2000,
    idle_servers=None,
    idle_sizes=(0, 1000, 5000),
    idle_duration=3.0,
    fanout_servers=FANOUT_SERVERS,
    fanout_duration=3.0,
    rooms=10,
    clients=10,
    window=4,
    size=1024,
    generator="auto",
    command=None,
    progress=None,
) -> dict:
    """Every part, ``repeats`` times; the report (the JSON of --out). progress: a stream."""
    started = time.monotonic()
    backends = available_backends()
    if idle_servers is None:
        idle_servers = [f"chatlab/{b}" for b in backends]
    gen, why = choose_generator(generator)
    loop_sizes, idle_sizes = list(loop_sizes), list(idle_sizes)
    fd_note = raise_fd_limit(max([0, *loop_sizes, *(2 * n + 256 for n in idle_sizes)]) + 64)
    idle_specs, fanout_specs = server_specs(idle_servers), server_specs(fanout_servers)
    params = dict(rooms=rooms, k=clients, window=window, size=size, duration=fanout_duration)
    cpus = placement()
    meta = {
        "command": command or COMMAND,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_average(),
        "load_average_each_repeat": [],
        "repeats": repeats,
        "durations": {
            "loop_iterations_at_0": loop_iterations,
            "loop_iterations": {str(n): _iter(n, loop_iterations) for n in loop_sizes},
            "idle_seconds": idle_duration,
            "fanout_seconds": fanout_duration,
            "generator_capacity_seconds": min(fanout_duration, 2.0),
        },
        "generator": gen,
        "generator_note": why,
        "placement": {"server_cpu": cpus[0], "generator_cpu": cpus[1]},
        "fd_limit_note": fd_note,
    }
    raw: dict = {"loop": [], "idle": [], "fanout": [], "capacity": []}
    for i in range(repeats):  # a part with no sizes or no servers is left out
        _say(progress, f"repeat {i + 1}/{repeats}: loop")
        if loop_sizes:
            raw["loop"].append(measure_loop(backends, loop_sizes, loop_iterations))
        _say(progress, f"repeat {i + 1}/{repeats}: idle")
        if idle_sizes and idle_specs:
            raw["idle"].append(measure_idle(idle_specs, idle_sizes, idle_duration, gen, cpus))
        _say(progress, f"repeat {i + 1}/{repeats}: fanout")
        if fanout_specs:
            raw["fanout"].append(measure_fanout(fanout_specs, params, gen, cpus))
        if gen == "native" and fanout_specs:
            cap = native_load.generator_capacity(
                duration=min(fanout_duration, 2.0), rooms=rooms, k=clients, window=window, size=size
            )
            raw["capacity"].append(cap)
        meta["load_average_each_repeat"].append(load_average())
    _say(progress, "")
    meta["load_average_after"] = load_average()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    return {
        "scenario": "scaling",
        "metadata": meta,
        "loop": summarize_loop(raw["loop"], backends, loop_sizes) if raw["loop"] else None,
        "idle": (
            summarize_idle(raw["idle"], [label(s) for s in idle_specs], idle_sizes)
            if raw["idle"]
            else None
        ),
        "fanout": (
            summarize_fanout(raw["fanout"], raw["capacity"], params) if raw["fanout"] else None
        ),
    }


def load_report(path: str | os.PathLike | None = None) -> dict:
    """The committed report (docs/bench/08-scaling.json in the source tree), or ``path``."""
    if path is None:
        path = Path(__file__).resolve().parents[2] / DEFAULT_OUT
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def sockets_until_fd(limit: int, most: int = 100_000) -> Iterator[list[socket.socket]]:
    """Open UDP sockets until one gets an fd number >= ``limit`` (at most ``most``); yield
    them all, the last one being that one; close them all on the way out."""
    opened: list[socket.socket] = []
    try:
        for _ in range(most):
            opened.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            if opened[-1].fileno() >= limit:
                break
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _iter(n: int, base: int) -> int:
    return loop_iterations(n, base)


def _say(progress, text: str) -> None:
    if progress is not None:
        progress.write(f"\r  {text:<60}" if text else "\r" + " " * 64 + "\r")
        progress.flush()


# ------------------------------------------------------------------------------ summaries


def summarize_loop(repeats: list[dict], backends, sizes) -> dict:
    """Per backend and size: CPU us per iteration, and two ratios taken repeat by repeat:
    over the same backend at 0 idle fds, and over epoll at the same size."""
    summary: dict = {}
    for be in backends:
        summary[be] = {}
        at0 = [r[be][str(sizes[0])] for r in repeats]
        for n in sizes:
            values = [r[be][str(n)] for r in repeats]
            refused = any(v is None for v in values)
            row: dict = {"refused": refused, "samples_us": values}
            if not refused:
                row["cpu_us"] = spread(values)
                row["x_at_0"] = spread(ratios(values, at0))
                if "epoll" in backends:
                    row["x_epoll"] = spread(ratios(values, [r["epoll"][str(n)] for r in repeats]))
            summary[be][str(n)] = row
    return {"sizes": sizes, "clock": "thread CPU time (time.thread_time)", "results": summary}


IDLE_FIELDS = ("server_cpu_us_per_round_trip", "round_trips_per_s", "generator_cpu_share")


def summarize_idle(repeats: list[dict], servers, sizes) -> dict:
    """Per server and size: CPU us per round trip, its ratio to the same server with no idle
    connection (repeat by repeat), and the generator's share of its core; or why refused."""
    summary: dict = {}
    for name in servers:
        summary[name] = {}
        at0 = [r[name][str(sizes[0])].get("server_cpu_us_per_round_trip") for r in repeats]
        for n in sizes:
            runs = [r[name][str(n)] for r in repeats]
            refused = [r for r in runs if r["refused"]]
            if refused:
                summary[name][str(n)] = {
                    "refused": True,
                    "refused_repeats": len(refused),
                    "reason": refused[0].get("reason"),
                }
                continue
            row: dict = {"refused": False}
            for key in IDLE_FIELDS:
                row[key] = spread([r.get(key) for r in runs])
            cpu = [r["server_cpu_us_per_round_trip"] for r in runs]
            row["x_at_0"] = spread(ratios(cpu, at0))
            row["samples_cpu_us"] = cpu
            summary[name][str(n)] = row
    return {"sizes": sizes, "results": summary}


FANOUT_FIELDS = (
    "server_cpu_us_per_delivery",
    "deliveries_per_s",
    "server_cpu_share",
    "generator_cpu_share",
    "p50_ms",
    "p99_ms",
)


def summarize_fanout(repeats: list[dict], capacity: list[dict], params) -> dict:
    """Per server: CPU us per delivery and its ratio to each reference (repeat by repeat),
    throughput, both processes' shares of their cores, and every loss or duplicate."""
    servers = list(repeats[0]) if repeats else []
    summary: dict = {}
    for name in servers:
        runs = [r[name] for r in repeats]
        row: dict = {key: spread([r.get(key) for r in runs]) for key in FANOUT_FIELDS}
        cpu = [r["server_cpu_us_per_delivery"] for r in runs]
        row["samples_cpu_us"] = cpu
        for ref in FANOUT_REFERENCES:
            if ref in repeats[0]:
                ref_cpu = [r[ref]["server_cpu_us_per_delivery"] for r in repeats]
                row[f"x_{ref}"] = spread(ratios(cpu, ref_cpu))
        for key in ("lost", "duplicates", "out_of_order", "misrouted"):
            row[key] = sum(r.get(key, 0) for r in runs)
        row["generator_bound_repeats"] = sum(bool(r["generator_bound"]) for r in runs)
        summary[name] = row
    cap = None
    if capacity:
        cap = {
            key: spread([c.get(key) for c in capacity])
            for key in (
                "generator_cpu_us_per_delivery",
                "capacity_deliveries_per_s",
                "generator_kernel_share",
            )
        }
    return {
        "params": params,
        "references": [r for r in FANOUT_REFERENCES if r in servers],
        "results": summary,
        "generator_capacity": cap,
    }


# ------------------------------------------------------------------------------ tables


def _s(sp: dict | None, fmt: str = "{:.2f}") -> str:
    """'median [min-max]' of a spread."""
    if sp is None:
        return "-"
    return f"{fmt.format(sp['median'])} [{fmt.format(sp['min'])}-{fmt.format(sp['max'])}]"


def fmt_spread(sp: dict | None, unit: str = "", digits: int = 2) -> str:
    """'0.12 (0.11 to 0.13)': the median, then min to max over repeats."""
    if sp is None:
        return "-"
    f = f"{{:.{digits}f}}{unit}"
    return f"{f.format(sp['median'])} ({f.format(sp['min'])} to {f.format(sp['max'])})"


def compare(a: dict | None, b: dict | None, a_name: str, b_name: str, unit: str = "") -> str:
    """Which of two spreads is lower in every repeat, or 'within noise' if they overlap."""
    said = f"{a_name} {fmt_spread(a, unit)}, {b_name} {fmt_spread(b, unit)}"
    if not beyond_noise(a, b):
        return f"within noise (the ranges overlap): {said}"
    cheaper = a_name if a and b and a["max"] < b["min"] else b_name
    return f"{cheaper} cheaper in every repeat: {said}"


def relative_spread(sp: dict | None) -> float | None:
    """(max - min) / median: how much a figure wobbled across the repeats."""
    if not sp or not sp["median"]:
        return None
    return (sp["max"] - sp["min"]) / sp["median"]


def format_noise(report: dict) -> str:
    """The load average at each repeat, and how much each fanout figure wobbled across the
    repeats: throughput, CPU per delivery, and CPU per delivery over asyncio's."""
    m = report["metadata"]
    lines = [
        "load average (1 min) at the end of each repeat: "
        + ", ".join(f"{la[0]:.2f}" for la in m["load_average_each_repeat"] if la),
        f"(max - min) / median over {m['repeats']} repeats:",
        f"{'server':<17} {'deliveries/s':>12} {'CPU us/deliv':>12} {'x asyncio':>10}",
    ]
    for name, row in (report.get("fanout") or {}).get("results", {}).items():
        cells = [
            relative_spread(row.get(k))
            for k in ("deliveries_per_s", "server_cpu_us_per_delivery", "x_asyncio")
        ]
        shown = [f"{c:.0%}" if c is not None else "-" for c in cells]
        if name == "asyncio":
            shown[2] = "(ref)"
        lines.append(f"{name:<17} {shown[0]:>12} {shown[1]:>12} {shown[2]:>10}")
    return "\n".join(lines)


def running_children() -> list[int]:
    """The pids of this process's children still running (servers, generators): [] after a
    clean run. Reads /proc (Linux)."""
    from ._util import _children

    return _children(os.getpid()) if os.path.isdir("/proc") else []


def format_metadata(report: dict) -> str:
    m = report["metadata"]
    mc = m["machine"]
    d = m["durations"]
    parts = []
    if report.get("loop"):
        parts.append(
            f"loop {d['loop_iterations_at_0']} iterations at 0 idle fds (fewer where one costs"
            " more)"
        )
    if report.get("idle"):
        parts.append(f"idle {d['idle_seconds']} s")
    if report.get("fanout"):
        parts.append(f"fanout {d['fanout_seconds']} s")
    return "\n".join(
        [
            f"command: {m['command']}",
            f"date: {m['date']}; {m['elapsed_s']} s in all; {m['repeats']} repeats",
            f"machine: {mc['system']} {mc['kernel']} {mc['arch']}, {mc['cpus']} CPUs"
            f" ({mc['cpu_model']}), Python {mc['python']}",
            f"load average (1, 5, 15 min): before {m['load_average_before']},"
            f" after {m['load_average_after']}",
            f"durations: {', '.join(parts)} per measurement; {m['generator']} load generator",
        ]
    )


def format_loop(report: dict) -> str:
    part = report["loop"]
    lines = [
        "loop: CPU us per iteration (1 active fd + N idle), median [min-max] over repeats;"
        " x0: over the same backend at 0 idle fds",
        f"{'backend':<7} {'idle':>6} {'CPU us/iter':>24} {'x0':>22} {'x epoll':>22}",
    ]
    for be, by_n in part["results"].items():
        for n, row in by_n.items():
            if row["refused"]:
                lines.append(f"{be:<7} {n:>6} refused: fd numbers >= FD_SETSIZE (1024)")
                continue
            lines.append(
                f"{be:<7} {n:>6} {_s(row['cpu_us'], '{:.1f}'):>24} {_s(row['x_at_0']):>22}"
                f" {_s(row.get('x_epoll')):>22}"
            )
    return "\n".join(lines)


def format_idle(report: dict) -> str:
    part = report["idle"]
    lines = [
        "idle: server CPU us per round trip of one pair among C idle connections;"
        " x0: over the same server with none",
        f"{'server':<15} {'C':>6} {'CPU us/rt':>24} {'x0':>22} {'gen CPU max':>11}",
    ]
    for name, by_n in part["results"].items():
        for n, row in by_n.items():
            if row["refused"]:
                lines.append(f"{name:<15} {n:>6} refused: {row['reason']}")
                continue
            gen = row["generator_cpu_share"]
            lines.append(
                f"{name:<15} {n:>6} {_s(row['server_cpu_us_per_round_trip'], '{:.1f}'):>24}"
                f" {_s(row['x_at_0']):>22} {gen['max'] if gen else 0:>10.0%}"
            )
    return "\n".join(lines)


def format_fanout(report: dict, reference: str = "asyncio") -> str:
    part = report["fanout"]
    p = part["params"]
    lines = [
        f"fanout: {p['rooms']} rooms x {p['k']} clients, window {p['window']}, {p['size']} B;"
        f" server CPU us per delivery, and over {reference}'s in the same repeat",
        f"{'server':<17} {'CPU us/deliv':>19} {'x ' + reference:>19} {'M deliv/s':>17}"
        f" {'gen CPU max':>11} {'lost+dup':>8}",
    ]
    for name, row in part["results"].items():
        rate = row["deliveries_per_s"]
        rate_m = {k: v / 1e6 for k, v in rate.items()} if rate else None
        bad = row["lost"] + row["duplicates"] + row["out_of_order"] + row["misrouted"]
        lines.append(
            f"{name:<17} {_s(row['server_cpu_us_per_delivery']):>19}"
            f" {_s(row.get('x_' + reference)):>19} {_s(rate_m):>17}"
            f" {row['generator_cpu_share']['max']:>10.0%} {bad:>8}"
        )
    cap = part.get("generator_capacity")
    if cap and cap["generator_cpu_us_per_delivery"]:
        lines.append(
            f"generator against its sink: {_s(cap['generator_cpu_us_per_delivery'], '{:.3f}')} us"
            f" CPU per delivery, so one core of it verifies"
            f" {_s({k: v / 1e6 for k, v in cap['capacity_deliveries_per_s'].items()})}"
            " M deliveries/s"
        )
    return "\n".join(lines)


def format_report(report: dict) -> str:
    parts = [format_metadata(report)]
    for name, fmt in (("loop", format_loop), ("idle", format_idle), ("fanout", format_fanout)):
        if report.get(name):
            parts.append(fmt(report))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------ plots


def _errorbar(ax, xs, spreads, **kw):
    med = [s["median"] for s in spreads]
    low = [s["median"] - s["min"] for s in spreads]
    high = [s["max"] - s["median"] for s in spreads]
    ax.errorbar(xs, med, yerr=[low, high], capsize=3, marker="o", **kw)


def plot_loop(report: dict, ax=None):
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for be, by_n in report["loop"]["results"].items():
        pts = [(int(n), r["cpu_us"]) for n, r in by_n.items() if not r["refused"]]
        if pts:
            _errorbar(ax, [n for n, _ in pts], [s for _, s in pts], label=be)
        refused = [int(n) for n, r in by_n.items() if r["refused"]]
        if refused and pts:
            ax.scatter(refused, [pts[-1][1]["median"]] * len(refused), marker="x", color="red")
            ax.annotate(f"{be}: refused", (refused[0], pts[-1][1]["median"]), color="red")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_yscale("log")
    ax.set_xlabel("idle fds registered")
    ax.set_ylabel("CPU µs per loop iteration")
    ax.set_title("loop: one ready fd among N idle")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return ax.figure


def plot_idle(report: dict, ax=None):
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for name, by_n in report["idle"]["results"].items():
        pts = [(int(n), r["x_at_0"]) for n, r in by_n.items() if not r["refused"] and int(n)]
        if pts:
            _errorbar(ax, [n for n, _ in pts], [s for _, s in pts], label=name)
        refused = [int(n) for n, r in by_n.items() if r["refused"]]
        if refused:
            ax.scatter(refused, [1] * len(refused), marker="x", color="red")
            ax.annotate(f"{name}: refused", (refused[0], 1), color="red", fontsize=8)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("idle connections")
    ax.set_ylabel("server CPU per round trip ÷ with none")
    ax.set_title("idle: what idle connections cost a pair")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return ax.figure


def plot_fanout(report: dict, ax=None, reference: str = "asyncio"):
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    rows = report["fanout"]["results"]
    names = [n for n, r in rows.items() if r.get("x_" + reference)]
    spreads = [rows[n]["x_" + reference] for n in names]
    med = [s["median"] for s in spreads]
    err = [[s["median"] - s["min"] for s in spreads], [s["max"] - s["median"] for s in spreads]]
    ax.bar(names, med, yerr=err, capsize=3, color="tab:orange")
    gen = [rows[n]["generator_cpu_share"]["max"] for n in names]
    for i, share in enumerate(gen):
        ax.annotate(f"gen {share:.0%}", (i, med[i]), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"server CPU per delivery ÷ {reference}'s")
    ax.set_title("fanout: CPU per delivery (gen: generator's core share)")
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    ax.grid(True, axis="y", alpha=0.3)
    return ax.figure


def plot(report: dict):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    plot_loop(report, axes[0])
    plot_idle(report, axes[1])
    plot_fanout(report, axes[2])
    m = report["metadata"]
    fig.suptitle(
        f"{m['date']}, {m['repeats']} repeats (bars: min to max), load average before"
        f" {m['load_average_before']}"
    )
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ the CLI


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-sizes", default="0,10,100,1000,3000,10000")
    parser.add_argument("--loop-iterations", type=int, default=2000, help="at 0 idle fds")
    parser.add_argument("--idle-sizes", default="0,1000,5000")
    parser.add_argument("--idle-duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--fanout-servers", default=FANOUT_SERVERS)
    parser.add_argument("--fanout-duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10, help="per room")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--generator", choices=["auto", "native", "python"], default="auto")
    parser.add_argument("--quick", action="store_true", help="a run of a minute (the tests)")
    parser.add_argument("--out", help=f"write the report as JSON here (notebook 08: {DEFAULT_OUT})")
    parser.add_argument("--plot", help=f"write a PNG here ({DEFAULT_PLOT})")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.loop_sizes, args.loop_iterations = 2, "0,100,1000", 300
        args.idle_sizes, args.idle_duration, args.fanout_duration = "0,300", 0.5, 0.5
        args.rooms, args.clients = 2, 4
    try:
        report = run(
            repeats=args.repeats,
            loop_sizes=[int(n) for n in args.loop_sizes.split(",")],
            loop_iterations=args.loop_iterations,
            idle_sizes=[int(n) for n in args.idle_sizes.split(",")],
            idle_duration=args.idle_duration,
            fanout_servers=args.fanout_servers,
            fanout_duration=args.fanout_duration,
            rooms=args.rooms,
            clients=args.clients,
            window=args.window,
            size=args.size,
            generator=args.generator,
            command=" ".join([COMMAND, *map(shlex.quote, argv)]),
            progress=sys.stderr if sys.stderr.isatty() else None,
        )
    except RuntimeError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    save(report, args.out)
    if args.plot:
        save_figure(plot(report), args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
