"""``python -m chatlab.server``: the command line, from flags to a running server.

Every field of ``Limits`` is a flag (``--max-output-buffer N``); ``--workers N`` hands over to
the supervisor (workers.py); SIGINT and SIGTERM become a graceful shutdown on the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time

from ..backends import BACKENDS, available_backends
from ..errors import ChatlabError
from .core import ChatServer
from .limits import Limits
from .workers import run_workers

__all__ = ["DEFAULT_PORT", "main"]

DEFAULT_PORT = 9898


def _shown(default: object) -> str:
    """A default as --help shows it: 1 MiB as 1048576 (1 MiB), None as the kernel's."""
    if default is None:
        return "the kernel's autotuning"
    if isinstance(default, int) and default >= 1024 and default % 1024 == 0:
        kib = default // 1024
        unit = f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"
        return f"{default} ({unit})"
    return f"{default:g}" if isinstance(default, float) else str(default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlab.server",
        description="A multi-room chat server speaking <RID:n>text</RID:n> frames.",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        default="auto",
        help=f"readiness syscall (available here: {', '.join(available_backends())})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    net = parser.add_argument_group("several servers (needs chatlab[redis])")
    net.add_argument(
        "--bus",
        metavar="URL",
        help="share rooms with other servers through Redis: redis://127.0.0.1:6379/0",
    )
    net.add_argument("--bus-name", metavar="NAME", help="this server in /servers (host:port)")
    net.add_argument(
        "--bus-namespace", default="chatlab", metavar="NS", help="prefix of keys and channels"
    )
    net.add_argument(
        "--bus-ttl",
        type=float,
        default=None,
        metavar="S",
        help="a server that stops its heartbeat is gone from /who after S seconds (5)",
    )
    net.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on one port (SO_REUSEPORT), joined by --bus",
    )
    net.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    net.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    limits = parser.add_argument_group(
        "limits (chatlab/server/limits.py says why each is what it is)"
    )
    for f in dataclasses.fields(Limits):
        default = f.default
        limits.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int if default is None else type(default),
            default=default,
            metavar=f.metadata["unit"],
            help=f"{f.metadata['help']} (default: {_shown(default)})",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        if not args.bus:
            parser.error("--workers N needs --bus URL: the workers share rooms through it")
        return run_workers(args, sys.argv[1:] if argv is None else argv)
    bus = None
    if args.bus:
        from ..bus import DEFAULT_TTL, BusConfig

        bus = BusConfig(args.bus, args.bus_name, args.bus_namespace, args.bus_ttl or DEFAULT_TTL)
    try:
        server = ChatServer(
            args.host,
            args.port,
            args.backend,
            limits=Limits(**{name: getattr(args, name) for name in vars(Limits())}),
            reuse_port=args.reuse_port,
            bus=bus,
        )
    except (ChatlabError, ValueError) as exc:
        print(f"chatlab.server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"chatlab.server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    def on_signal(signum, frame):
        # A signal handler runs between two bytecodes of the main thread: hand the work to
        # the loop, whose wake-up socket interrupts the syscall it may be sleeping in.
        with contextlib.suppress(ChatlabError):  # the loop already closed: we are exiting
            server.loop.call_soon_threadsafe(
                server.shutdown, f"server stopped ({signal.strsignal(signum)})"
            )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port = server.address
    via = ""
    if server.bus is not None:
        # Give the bus a moment to come up, so that "listening" also means "on the network"
        # (scripts and the benchmarks wait for this line). If Redis is down, serve anyway.
        # Meanwhile clients wait in the kernel's backlog: a worker restarted by --workers
        # gets connections (SO_REUSEPORT) from the moment it listens, and served now they
        # would be told the network is degraded for the few milliseconds it takes.
        server.conns.listener.stop()
        deadline = time.monotonic() + 3.0
        while not server.bus.up and time.monotonic() < deadline:
            server.loop.run_once(0.05)
        # Coming up queued our registration (SADD...); the loop sends it before it next
        # polls: do that pass now, so that whoever we tell "ready" finds us on the network.
        server.loop.run_once(0)
        server.conns.listener.start()
        state = "" if server.bus.up else f", down ({server.bus.statistics().last_error}), retrying"
        via = f", bus {args.bus} as {server.name}{state}"
    print(
        f"chatlab server on {host}:{port} (backend {server.backend}{via}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    if args.ready_fd is not None:  # a worker tells its parent it is listening
        os.write(args.ready_fd, b"1")
        os.close(args.ready_fd)
    server.serve_forever()
    return 0
