"""python -m chatlab.bench SCENARIO [options]: loop, micro, fanout, idle, churn, bus.

The load comes from a native generator (chatlab/bench/native/loadgen.c, built with the C
compiler on first use; `python -m chatlab.bench.native` builds it ahead of time), or from
the Python one where no compiler exists (then every figure it sets says generator-bound).

Each prints a table; --out writes the results as JSON, --plot a PNG (needs matplotlib);
--quick runs a small version in seconds (the notebook and the tests use it).
"""

from __future__ import annotations

import argparse
import sys

from ..backends import available_backends
from . import loop as loop_bench
from . import micro, scenarios

DEFAULT_SERVERS = ",".join(
    [f"chatlab/{b}" for b in available_backends()]
    + ["asyncio", "asyncio-coalesce", "uvloop", "uvloop-coalesce"]
    + ["epoll-flat-noruns", "epoll-flat", "chatd"]
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.bench",
        description="chatlab's benchmarks: servers as real processes, alternating rounds, "
        "medians. Loopback only; every run is bounded in time.",
    )
    sub = parser.add_subparsers(dest="scenario", required=True)

    def common(p, servers=DEFAULT_SERVERS, rounds=3, duration=3.0):
        if servers is not None:
            p.add_argument(
                "--servers", default=servers, help="comma-separated (default: %(default)s)"
            )
        p.add_argument("--rounds", type=int, default=rounds)
        p.add_argument("--duration", type=float, default=duration, help="seconds per measurement")
        p.add_argument("--quick", action="store_true", help="a small run, in seconds")
        p.add_argument(
            "--generator",
            choices=["auto", "native", "python"],
            default="auto",
            help="the load generator: native (C, built on first use) where a compiler exists",
        )
        p.add_argument("--out", help="write the results as JSON here")
        p.add_argument("--plot", help="write a PNG plot here")

    lp = sub.add_parser("loop", help="cost of one loop iteration with 1 active and N idle fds")
    loop_bench.add_arguments(lp)
    lp.add_argument("--plot", help="write a PNG plot here")

    mp = sub.add_parser("micro", help="decoder and event-loop costs per frame and per event")
    mp.add_argument("--rounds", type=int, default=5)
    mp.add_argument("--quick", action="store_true", help="a small run, in seconds")
    mp.add_argument("--out", help="write the results as JSON here")

    fp = sub.add_parser("fanout", help="R rooms x K clients, each with W messages in flight")
    common(fp)
    fp.add_argument("--rooms", type=int, default=10)
    fp.add_argument("--clients", type=int, default=10, help="per room")
    fp.add_argument("--window", type=int, default=4)
    fp.add_argument("--size", type=int, default=1024, help="bytes per frame sent")
    fp.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Python generator processes (--generator python)",
    )
    fp.add_argument("--baseline", default="asyncio")

    ip = sub.add_parser("idle", help="a ping-pong pair among C idle connections")
    common(ip, servers=",".join(f"chatlab/{b}" for b in available_backends()), duration=2.0)
    ip.add_argument("--sizes", default="0,1000,5000,10000", help="idle connection counts")

    cp = sub.add_parser("churn", help="connect, join, send, close at concurrency N")
    common(cp, servers=f"chatlab/{available_backends()[0]},asyncio,uvloop,epoll-flat,chatd")
    cp.add_argument("--concurrency", type=int, default=8)

    bp = sub.add_parser(
        "bus", help="fanout on 1 process, 1 process + Redis bus, 2 workers + bus (needs Redis)"
    )
    common(bp, servers=None)
    bp.add_argument("--rooms", type=int, default=10)
    bp.add_argument("--clients", type=int, default=10, help="per room")
    bp.add_argument("--window", type=int, default=4)
    bp.add_argument("--size", type=int, default=1024, help="bytes per frame sent")

    args = parser.parse_args(argv)
    if args.scenario == "loop":
        return loop_bench.main(args)
    if args.scenario == "micro":
        report = micro.run(rounds=1 if args.quick else args.rounds)
        print(micro.format_micro(report))
        scenarios.save(report, args.out)
        return 0
    if args.quick:
        args.rounds, args.duration = 1, 1.0
        if args.scenario in ("fanout", "bus"):
            args.rooms, args.clients = 4, 5
        if args.scenario == "idle":
            args.sizes = "0,100,1000"
    run, fmt, plot = {
        "fanout": (scenarios.run_fanout, scenarios.format_fanout, "plot_fanout"),
        "idle": (scenarios.run_idle, scenarios.format_idle, "plot_idle"),
        "churn": (scenarios.run_churn, scenarios.format_churn, "plot_churn"),
        "bus": (scenarios.run_bus, scenarios.format_bus, "plot_bus"),
    }[args.scenario]
    try:
        report = run(**vars(args))
    except RuntimeError as exc:  # a server that did not start, Redis missing: say so, briefly
        print(f"chatlab.bench {args.scenario}: {exc}", file=sys.stderr)
        return 1
    print(fmt(report))
    scenarios.save(report, args.out)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'chatlab[notebooks]'", file=sys.stderr)
            return 1
        from . import plots

        plots.save(getattr(plots, plot)(report), args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
