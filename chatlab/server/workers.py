"""``--workers N``: N server processes on one port, supervised (tornado's fork_processes).

Discussion: with SO_REUSEPORT, several sockets listen on one port, and on Linux (3.9+) the
kernel spreads new connections over them (by a hash of the client's address and port).
Elsewhere it does not: macOS and the BSDs let the sockets bind but give the connections to
one of them (FreeBSD 12+ spreads with SO_REUSEPORT_LB instead), and Windows has no
SO_REUSEPORT at all. So --workers shares the load on Linux only. Each listener has its own
accept queue: the connections waiting in a worker's queue when it dies are reset, not handed
to the others (unless net.ipv4.tcp_migrate_req=1, Linux 5.14+); notebook 09 shows both.
Each worker is an ordinary single-threaded server, so N workers use N cores; the bus makes
them one chat network. Here we reserve the port (bound, never listening, so it gets no
clients), start the workers with --reuse-port, and wait for them; Ctrl-C reaches the whole
process group, and SIGTERM is passed on. A worker that dies is started again, within a
restart budget.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time

__all__ = ["run_workers"]

# How long the workers may take to listen and reach the bus before we give up.
WORKER_START_TIMEOUT = 30.0
# A worker that exits more often than this (RESTART_BUDGET times in RESTART_WINDOW seconds)
# is crashing, not unlucky: we stop restarting it and say so.
RESTART_BUDGET = 5
RESTART_WINDOW = 60.0


def run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """--workers N: N server processes on one port, sharing rooms through the bus."""

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    reserve = socket.socket(family)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserve.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"chatlab.server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    port = reserve.getsockname()[1]
    base = _without_options(argv, {"--workers", "--port", "--bus-name"})
    name = args.bus_name or f"{args.host}:{port}"

    def start_worker(i: int, ready_fd: int | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "chatlab.server", *base, "--port", str(port)]
        cmd += ["--reuse-port", "--bus-name", f"{name}/{i + 1}"]
        if ready_fd is None:
            return subprocess.Popen(cmd)
        return subprocess.Popen([*cmd, "--ready-fd", str(ready_fd)], pass_fds=(ready_fd,))

    read_fd, write_fd = os.pipe()
    workers = [start_worker(i, write_fd) for i in range(args.workers)]
    os.close(write_fd)
    ready = 0
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    with os.fdopen(read_fd, "rb") as pipe:
        # One byte per worker that is listening (and on the bus); EOF once every worker
        # has written or died. Bounded: a worker that hangs must not hang us.
        while ready < args.workers and time.monotonic() < deadline:
            if select.select([pipe], [], [], deadline - time.monotonic())[0]:
                if not pipe.read(1):
                    break
                ready += 1
    if ready < args.workers:
        print(f"chatlab.server: {args.workers - ready} worker(s) failed to start", file=sys.stderr)
        for proc in workers:
            proc.terminate()
            proc.wait()
        return 1

    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"chatlab: {args.workers} workers on {args.host}:{port} (bus {args.bus}); "
        "Ctrl-C stops them",
        file=sys.stderr,
        flush=True,
    )
    # Supervise: a worker that dies (a crash, the OOM killer, a stray kill -9) is started
    # again, so the port keeps N listeners; the others serve meanwhile. One that keeps
    # dying (RESTART_BUDGET times in RESTART_WINDOW) is given up on, with a line saying so.
    restarts: list[list[float] | None] = [[] for _ in workers]
    while any(proc.poll() is None for proc in workers) or not stopping:
        for i, proc in enumerate(workers):
            code = proc.poll()
            recent = restarts[i]
            if code is None or stopping or recent is None:
                continue
            now = time.monotonic()
            recent = restarts[i] = [t for t in recent if now - t < RESTART_WINDOW] + [now]
            if len(recent) > RESTART_BUDGET:
                print(f"chatlab: worker {i + 1} keeps exiting; not restarting it", file=sys.stderr)
                restarts[i] = None
                continue
            print(f"chatlab: worker {i + 1} exited ({code}); restarting it", file=sys.stderr)
            workers[i] = start_worker(i)
        if not stopping and all(r is None for r in restarts):
            break  # every worker given up on
        time.sleep(0.2)
    reserve.close()
    codes = [proc.wait() for proc in workers]
    return max(codes, key=abs)


def _without_options(argv: list[str], names: set[str]) -> list[str]:
    """argv without the named options and their values (``--port 0`` and ``--port=0``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.split("=", 1)[0] not in names:
            out.append(arg)
    return out
