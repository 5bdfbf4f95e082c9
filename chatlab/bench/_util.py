"""Small helpers the benchmarks share."""

from __future__ import annotations

import collections
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

try:
    import resource
except ImportError:  # Windows
    resource = None


def raise_fd_limit(needed: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE towards ``needed``; return a sentence saying what we did."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        note = f"raised the open-file limit from {soft} to {target}"
    else:
        note = f"the open-file limit is {soft}, its hard limit"
    if target < needed:
        note += f" ({needed} wanted: the largest sizes may run out of fds)"
    return note


# ----------------------------------------------------------------- servers under test


#: name -> command line (after the Python interpreter); "{backend}" is filled in
SERVERS = {
    "chatlab": ["-m", "chatlab.server", "--port", "0", "--log-level", "warning"],
    "asyncio": ["-m", "chatlab.bench.baseline_asyncio", "--port", "0"],
    "uvloop": ["-m", "chatlab.bench.baseline_asyncio", "--port", "0", "--uvloop"],
    "epoll-flat": ["-m", "chatlab.bench.baseline_epoll", "--port", "0"],
    # deliberately faulty, for the benchmark's own tests
    "faulty": [
        "-m",
        "chatlab.bench.baseline_epoll",
        "--port",
        "0",
        "--drop-every",
        "97",
        "--duplicate-every",
        "89",
    ],
}
_LISTENING = re.compile(r" on ([\d.]+):(\d+)")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class ServerProcess:
    """A server under test as a real process: its address, and its own CPU accounting."""

    def __init__(self, kind: str, backend: str | None = None) -> None:
        self.kind, self.backend = kind, backend
        cmd = [sys.executable, *SERVERS[kind]]
        if kind == "chatlab":
            cmd += ["--backend", backend or "epoll", "--max-connections", "100000"]
        self.label = f"chatlab/{backend}" if kind == "chatlab" else kind
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        line = b""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            match = _LISTENING.search(line.decode(errors="replace"))
            if match:
                self.address = (match.group(1), int(match.group(2)))
                # Keep reading its stderr: a server that logs a lot (asyncio warns on every
                # write to a closed socket) would otherwise fill the pipe and block in write().
                self.last_lines: collections.deque = collections.deque(maxlen=20)
                threading.Thread(target=self._drain_stderr, daemon=True).start()
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{self.label} did not start: {line.decode(errors='replace')}")

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.last_lines.append(line)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (Linux: /proc/PID/stat)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident memory of the server process now (Linux: /proc/PID/status)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0-100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_load(server: ServerProcess, target, args_list: list[tuple], duration: float):
    """Run load-generator processes against a server and measure the server meanwhile.

    Each process runs ``target(*args, ready, go, results)``: it sets up (connects, joins),
    puts one value on ``ready``, waits for ``go``, does its work, and puts one dict on
    ``results``. The server's CPU time is read between ``go`` and the last result, so set-up
    is not counted. Returns (ready values, results, server CPU seconds, server RSS bytes at
    the start). "spawn" processes: safe from a notebook kernel, which has threads.
    """
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=target, args=(*args, ready, go, results), daemon=True)
        for args in args_list
    ]
    for proc in procs:
        proc.start()
    try:
        states = [ready.get(timeout=120) for _ in procs]
        rss = server.rss_bytes()
        cpu0 = server.cpu_seconds()
        go.set()
        parts = [results.get(timeout=duration + 60) for _ in procs]
        server_cpu = server.cpu_seconds() - cpu0
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return states, parts, server_cpu, rss
