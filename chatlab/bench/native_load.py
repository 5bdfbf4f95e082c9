"""The native load generator (``native/loadgen.c``), driven from Python.

Same loads as python_load.py, same rules, same result keys; only the process that makes
the load changes. The Python generator fills its own core at about 100,000
deliveries/s, so any server faster than that was measured at the generator's speed. The C
one costs a fraction of a microsecond of CPU per delivery (``generator_capacity()`` measures
how much, against ``loadgen sink``, a relay that does nothing else), so a figure it produces
is the server's.

How a run goes (``NativeLoad``): start ``loadgen MODE ...`` (pinned to a CPU if asked); it
connects and joins, then prints ``READY n`` and blocks on stdin. We read the server's CPU
time, write ``GO``, and read the server's CPU time again when the generator's JSON result
arrives, exactly as ``_util.run_load`` does for the Python workers: set-up is not counted.
Every wait is bounded, and the child is killed on any way out.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from typing import IO, NoReturn

from ._util import _cpu_of, ms, rss_of, us
from .native import build

#: a generator process that used this share of a core was likely the one setting the pace
GENERATOR_BOUND_SHARE = 0.9


def _cpu_arg(cpu: int | None) -> list[str]:
    """``--cpu N`` when CPU ``cpu`` is one this process may run on; else no pinning.

    The program pins itself (sched_setaffinity), which is safe where a preexec_fn is not:
    the harness has threads (ServerProcess drains stderr on one)."""
    if cpu is None or cpu not in os.sched_getaffinity(0):
        return []
    return ["--cpu", str(cpu)]


class NativeLoad:
    """One run of the native load generator: ``wait_ready()``, ``go()``, ``result()``.

    ``options`` become command-line options (``first_room=1`` -> ``--first-room 1``). A
    non-zero exit raises RuntimeError carrying the generator's own message. Use it as a
    context manager: the child is always reaped, and killed if it has to be.
    """

    def __init__(self, mode: str, address, options: dict | None = None, cpu: int | None = None):
        self.mode = mode
        cmd = [str(build("loadgen")), mode, "--host", str(address[0]), "--port", str(address[1])]
        for key, value in (options or {}).items():
            cmd += ["--" + key.replace("_", "-"), str(value)]
        cmd += _cpu_arg(cpu)
        # stderr to a file, not a pipe: nobody has to keep reading it for the child to go on.
        self._stderr = tempfile.TemporaryFile()
        self._pending = b""
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both PIPE
        self._stdin: IO[bytes] = self.proc.stdin
        self._stdout: IO[bytes] = self.proc.stdout

    # -- the protocol ----------------------------------------------------------------------

    def wait_ready(self, timeout: float = 120.0) -> int:
        """Wait for ``READY n`` (set-up done); return n, the number of connections."""
        line = self._read_line(time.monotonic() + timeout, "before it was ready")
        if not line.startswith(b"READY "):
            self._fail(f"said {line[:200]!r} instead of READY")
        return int(line.split()[1])

    def go(self) -> None:
        """Start the measurement."""
        try:
            self._stdin.write(b"GO\n")
            self._stdin.close()
        except BrokenPipeError:
            self._fail("exited before GO")

    def result(self, timeout: float) -> dict:
        """The generator's JSON result, once it has exited (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        out = self._pending
        while True:
            chunk = self._read(deadline, "gave no result")
            if not chunk:
                break
            out += chunk
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._fail(f"gave no result within {timeout:.0f} s")
        if self.proc.returncode != 0:
            self._fail("failed")
        lines = out.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            self._fail(f"printed no JSON result: {out[-200:]!r}")

    # -- plumbing --------------------------------------------------------------------------

    def _read(self, deadline: float, what: str) -> bytes:
        """One chunk of stdout; b"" at end of file. Raw reads with select(): bounded."""
        fd = self._stdout.fileno()
        left = deadline - time.monotonic()
        readable = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
        if not readable:
            self._fail(f"{what} in time")
        return os.read(fd, 65536)

    def _read_line(self, deadline: float, what: str) -> bytes:
        while b"\n" not in self._pending:
            chunk = self._read(deadline, f"said nothing {what}")
            if not chunk:
                self._fail(f"exited {what}")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def _fail(self, what: str) -> NoReturn:
        # Stop it first: its stderr is then complete, and nothing is left running.
        self.close()
        said = self.stderr_text()
        code = self.proc.returncode
        raise RuntimeError(
            f"native load generator ({self.mode}) {what} (exit code {code})"
            + (f": {said}" if said else "")
        )

    def close(self) -> None:
        """End the child: EOF on stdin first (before GO it then exits quietly), then kill."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._stdin.close()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self._stdin, self._stdout):
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def __enter__(self) -> NativeLoad:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self._stderr.close()


def _run(server, mode: str, options: dict, cpu: int | None, timeout: float):
    """Set up, GO, result; with the server's CPU (and its Redis's) read around the run."""
    with NativeLoad(mode, server.address, options, cpu) as gen:
        gen.wait_ready()
        rss = server.rss_bytes() if hasattr(server, "rss_bytes") else None
        cpu0, redis0 = server.cpu_seconds(), server.redis_cpu_seconds()
        gen.go()
        part = gen.result(timeout)
        server_cpu = server.cpu_seconds() - cpu0
        redis_cpu = server.redis_cpu_seconds() - redis0
    return part, server_cpu, redis_cpu, rss


# ------------------------------------------------------------------------------ fanout


def run_once_native(
    server, rooms=10, k=10, window=4, size=1024, duration=3.0, drain=10.0, cpu=None
) -> dict:
    """One fanout measurement with the native generator: python_load.run_once's keys, plus
    misrouted and the generator's own CPU per delivery."""
    options = dict(rooms=rooms, clients=k, window=window, size=size, duration=duration)
    options["drain"] = drain
    part, server_cpu, redis_cpu, _ = _run(server, "fanout", options, cpu, duration + drain + 60)
    receipts = part["receipts"]
    wall = part["wall"] if part["wall"] > 0 else duration  # wall ends at the last receipt
    gen_share = part["cpu"] / wall
    return {
        "deliveries_per_s": receipts / wall,
        "messages_per_s": part["messages"] / wall,
        "p50_ms": ms(part["p50_s"]),
        "p90_ms": ms(part["p90_s"]),
        "p99_ms": ms(part["p99_s"]),
        "lost": part["lost"],
        "duplicates": part["duplicates"],
        "out_of_order": part["out_of_order"],
        "misrouted": part["misrouted"],
        "server_cpu_us_per_delivery": 1e6 * server_cpu / max(receipts, 1),
        "server_cpu_share": server_cpu / wall,
        "redis_cpu_us_per_delivery": 1e6 * redis_cpu / max(receipts, 1),
        "redis_cpu_share": redis_cpu / wall,
        "generator_cpu_share": gen_share,
        "generator_bound": gen_share >= GENERATOR_BOUND_SHARE,
        "generator_cpu_us_per_delivery": 1e6 * part["cpu"] / max(receipts, 1),
        # The kernel's share of that (recv and send): the floor no change to loadgen.c lowers.
        "generator_kernel_share": part["cpu_sys"] / part["cpu"] if part["cpu"] > 0 else None,
        "generator": "native",
    }


# ------------------------------------------------------------------------ idle, churn


def run_idle_native(server, idle: int, duration: float = 2.0, cpu=None) -> dict:
    """python_load.run_idle with the native generator: C idle connections, then the pair."""
    part, server_cpu, _, rss = _run(
        server, "idle", dict(idle=idle, duration=duration), cpu, duration + 120
    )
    if part["refused"]:
        return {"idle": idle, "refused": True, "reason": part.get("reason"), "generator": "native"}
    trips = part["round_trips"]
    return {
        "idle": idle,
        "refused": False,
        "round_trips_per_s": trips / part["wall"],
        "p50_us": us(part["p50_s"]),
        "p99_us": us(part["p99_s"]),
        "server_cpu_us_per_round_trip": 1e6 * server_cpu / max(trips, 1),
        "server_rss_bytes": rss,
        "generator_cpu_share": part["cpu"] / part["wall"],
        "generator": "native",
    }


def run_churn_native(server, concurrency: int = 8, duration: float = 2.0, cpu=None) -> dict:
    """python_load.run_churn with the native generator: N connection slots and the pair."""
    part, server_cpu, _, _ = _run(
        server, "churn", dict(concurrency=concurrency, duration=duration), cpu, duration + 60
    )
    return {
        "concurrency": concurrency,
        "connections_per_s": part["connections"] / part["wall"],
        "pair_p99_us": us(part["pair_p99_s"]),
        "server_cpu_us_per_connection": 1e6 * server_cpu / max(part["connections"], 1),
        "generator_cpu_share": part["cpu"] / part["wall"],
        "errors": part["errors"],
        "generator": "native",
    }


# --------------------------------------------------------------------- the generator's own cost

_LISTENING = re.compile(rb" on ([\d.]+):(\d+)")


class SinkProcess:
    """``loadgen sink``: the cheapest relay fanout accepts, as a server under test.

    It has what the benchmarks use of a ServerProcess: ``address``, ``label``,
    ``cpu_seconds()``, ``redis_cpu_seconds()`` (0: no Redis), ``rss_bytes()``, ``stop()``.
    """

    label = "sink"

    def __init__(self, cpu: int | None = None, timeout: float = 10.0) -> None:
        cmd = [str(build("loadgen")), "sink", "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(
            cmd + _cpu_arg(cpu),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None  # PIPE
        self._stderr: IO[bytes] = self.proc.stderr
        try:
            self.address = self._wait_for_address(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        # it writes nothing more on stderr, but keep the pipe drained all the same
        threading.Thread(target=self._stderr.read, daemon=True).start()

    def _wait_for_address(self, deadline: float) -> tuple[str, int]:
        fd, said = self._stderr.fileno(), b""
        while time.monotonic() < deadline:
            left = max(0.0, deadline - time.monotonic())
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                said += chunk
                match = _LISTENING.search(said)
                if match:
                    return match.group(1).decode(), int(match.group(2))
                if not chunk:
                    break
        raise RuntimeError(f"loadgen sink did not start: {said.decode(errors='replace').strip()}")

    def cpu_seconds(self) -> float:
        return _cpu_of(self.proc.pid)

    def redis_cpu_seconds(self) -> float:
        return 0.0

    def rss_bytes(self) -> int:
        return rss_of(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def generator_capacity(duration=2.0, rooms=10, k=10, window=4, size=1024) -> dict:
    """What the native generator itself can drive: fanout against the sink.

    The sink and the generator get a core each when there are two. The generator's CPU per
    delivery is the figure; its inverse, the deliveries per second one core of generator
    could verify, is ``capacity_deliveries_per_s``. The rate reached in the run is lower
    when the sink, not the generator, was the limit (look at ``sink_cpu_share``).
    """
    cpus = sorted(os.sched_getaffinity(0))
    sink_cpu, gen_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    with SinkProcess(cpu=sink_cpu) as sink:
        r = run_once_native(sink, rooms, k, window, size, duration, drain=5.0, cpu=gen_cpu)
    us = r["generator_cpu_us_per_delivery"]
    return {
        "params": dict(rooms=rooms, k=k, window=window, size=size, duration=duration),
        "deliveries_per_s": r["deliveries_per_s"],
        "generator_cpu_share": r["generator_cpu_share"],
        "generator_cpu_us_per_delivery": us,
        "generator_kernel_share": r["generator_kernel_share"],
        "capacity_deliveries_per_s": 1e6 / us if us > 0 else None,
        "sink_cpu_share": r["server_cpu_share"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "lost": r["lost"],
        "duplicates": r["duplicates"],
        "out_of_order": r["out_of_order"],
        "misrouted": r["misrouted"],
    }


if __name__ == "__main__":  # python -m chatlab.bench.native_load: the generator's capacity
    for shape in (dict(rooms=10, k=10), dict(rooms=1, k=50)):
        print(json.dumps(generator_capacity(**shape)))
