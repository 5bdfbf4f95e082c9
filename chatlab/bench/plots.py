"""Plots of the benchmarks' results (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations


def _plt():
    import matplotlib

    if not _in_notebook():
        matplotlib.use("Agg")  # a file, not a window: the CLI runs on machines with no screen
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    import sys

    return "ipykernel" in sys.modules


def plot_loop(results: dict, ax=None):
    """results: {backend: {idle_fds: seconds per iteration or None}}"""
    plt = _plt()
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


def plot_fanout(report: dict):
    plt = _plt()
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


#: what each server of the bus scenario is, under its name on the x axis
_BUS_LABELS = {
    "chatlab/epoll": "1 process",
    "chatlab-bus": "1 process\n+ Redis bus",
    "workers2": "2 workers\n+ Redis bus",
}


def plot_bus(report: dict):
    """Deliveries/s per server; beside it, CPU µs per delivery, chatlab's stacked on Redis's."""
    plt = _plt()
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


def plot_idle(report: dict):
    plt = _plt()
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


def plot_churn(report: dict):
    plt = _plt()
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


def save(fig, path: str | None) -> None:
    if path:
        fig.savefig(path, dpi=110, bbox_inches="tight")
