"""Small helpers the benchmarks share."""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import queue as queue_module
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import overload

from .. import protocol
from ..framing import Frame, FrameDecoder

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]


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


# chatlab's server as the throughput benchmarks run it: the flood control off, since every
# simulated client sends far more than the 100 messages a second a person may (limits.py).
_CHATLAB = ["-m", "chatlab.server", "--port", "0", "--log-level", "warning"]
_CHATLAB += ["--max-message-rate", "0"]

#: name -> command line (after the Python interpreter, or after a native tool's path)
SERVERS = {
    "chatlab": _CHATLAB,
    "asyncio": ["-m", "chatlab.bench.baseline_asyncio", "--port", "0"],
    "uvloop": ["-m", "chatlab.bench.baseline_asyncio", "--port", "0", "--uvloop"],
    # the same, writing each member's frames once per loop pass, as chatlab does
    "asyncio-coalesce": ["-m", "chatlab.bench.baseline_asyncio", "--port", "0", "--coalesce"],
    "uvloop-coalesce": [
        "-m",
        "chatlab.bench.baseline_asyncio",
        "--port",
        "0",
        "--coalesce",
        "--uvloop",
    ],
    # the same design in C (chatlab/bench/native/chatd.c): the machine's yardstick
    "chatd": ["--port", "0"],
    "epoll-flat": ["-m", "chatlab.bench.baseline_epoll", "--port", "0"],
    # the same, one frame per broadcast (no runs): the design the first flat loop had
    "epoll-flat-noruns": ["-m", "chatlab.bench.baseline_epoll", "--port", "0", "--no-runs"],
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
    # chatlab with a Redis bus (chatlab/bus.py), each with its own throwaway redis-server:
    # one process on the bus, and two worker processes on one port (SO_REUSEPORT) joined by it
    "chatlab-bus": _CHATLAB,
    "workers2": [*_CHATLAB, "--workers", "2"],
}
#: the kinds that are chatlab's own server (they take --backend), and those that need Redis
CHATLAB_KINDS = {"chatlab", "chatlab-bus", "workers2"}
#: the kinds that run a native tool (chatlab/bench/native), not Python: kind -> tool
NATIVE_KINDS = {"chatd": "chatd"}
BUS_KINDS = {"chatlab-bus", "workers2"}
_LISTENING = re.compile(r" on ([\d.]+):(\d+)")
# With --workers, each worker prints its own "chatlab server on" line first (same port); the
# parent's line comes once every worker listens and is on the bus: that one means ready.
_WORKERS_LISTENING = re.compile(r"^chatlab: \d+ workers on ([\d.]+):(\d+)")
# A server whose bus did not come up in time says so on its line, and serves anyway; a
# benchmark of the bus must not measure it.
_BUS_DOWN = re.compile(r"bus \S+ as \S+, down \((.*)\), retrying")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class ServerProcess:
    """A server under test as a real process: its address, and its own CPU accounting.

    ``cpu``: pin the server to that CPU (not the bus kinds, which need several).
    ``extra_args``: more flags for the server's command line (``["--frame-timeout", "5"]``);
    a server that does not know one exits with its usage line, and this raises RuntimeError
    quoting it (``flag_missing()`` reads the flag back out).

    For the bus kinds, a redis-server is started first (one per server under test, stopped
    with it), and its CPU is accounted separately: ``redis_cpu_seconds()``. For "workers2",
    ``cpu_seconds()`` is the sum over the supervisor and its worker processes.
    """

    def __init__(
        self,
        kind: str,
        backend: str | None = None,
        cpu: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kind, self.backend = kind, backend
        self.redis = None
        self.proc = None
        self.pids: list[int] = []  # the chatlab server processes whose CPU is counted
        self.last_lines: collections.deque = collections.deque(maxlen=20)
        if kind in NATIVE_KINDS:
            from .native import build

            cmd = [str(build(NATIVE_KINDS[kind])), *SERVERS[kind]]
        else:
            cmd = [sys.executable, *SERVERS[kind]]
        if kind in CHATLAB_KINDS:
            cmd += ["--backend", backend or "epoll", "--max-connections", "100000"]
        cmd += list(extra_args)
        self.label = f"chatlab/{backend}" if kind == "chatlab" else kind
        try:
            if kind in BUS_KINDS:
                from ..redis_server import RedisServer

                self.redis = RedisServer().start()
                cmd += ["--bus", self.redis.url]
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if cpu is not None and kind not in BUS_KINDS:
                # One core for the server, another for the load generator: each is measured
                # on a core of its own. (The bus kinds keep every core: Redis and a second
                # worker need one.)
                os.sched_setaffinity(self.proc.pid, {cpu})
            ready = _WORKERS_LISTENING if kind == "workers2" else _LISTENING
            self.address = self._wait_for(ready, deadline=time.monotonic() + 30)
            self.pids = [self.proc.pid]
            if kind == "workers2":  # the supervisor idles; its workers serve
                self.pids += _children(self.proc.pid)
            if kind == "workers2" and len(self.pids) != 3:
                raise RuntimeError(f"workers2: expected 2 worker processes, found {self.pids[1:]}")
        except BaseException:
            self.stop()
            raise
        # Keep reading its stderr: a server that logs a lot (asyncio warns on every write to
        # a closed socket) would otherwise fill the pipe and block in write().
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _wait_for(self, ready: re.Pattern, deadline: float) -> tuple[str, int]:
        """Read stderr lines until one matches ``ready``; bounded by ``deadline``.

        Raw reads with select(), not readline(): a server that hangs silently must not hang
        the benchmark. What is read past the ready line is kept in ``last_lines``.
        """
        assert self.proc is not None and self.proc.stderr is not None  # started, stderr=PIPE
        fd, pending = self.proc.stderr.fileno(), b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if readable else b""
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for i, raw in enumerate(lines):
                line = raw.decode(errors="replace")
                self.last_lines.append(raw + b"\n")
                down = _BUS_DOWN.search(line)
                if down:
                    raise RuntimeError(f"{self.label}: its bus did not come up: {down.group(1)}")
                match = ready.search(line)
                if match:
                    self.last_lines.extend(r + b"\n" for r in lines[i + 1 :])
                    if pending:
                        self.last_lines.append(pending)
                    return match.group(1), int(match.group(2))
            if not chunk and self.proc.poll() is not None:
                break
        said = b"".join(self.last_lines).decode(errors="replace").strip()
        raise RuntimeError(f"{self.label} did not start: {said or '(it said nothing)'}")

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.last_lines.append(line)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server's processes have used (Linux: /proc/PID/stat)."""
        return sum(_cpu_of(pid) for pid in self.pids)

    def redis_cpu_seconds(self) -> float:
        """The same for its redis-server (every thread of it); 0 for a server without one."""
        if self.redis is None or self.redis.proc is None:
            return 0.0
        return _cpu_of(self.redis.proc.pid)

    def rss_bytes(self) -> int:
        """Resident memory of the server's processes now (Linux: /proc/PID/status)."""
        return sum(rss_of(pid) for pid in self.pids)

    def stop(self) -> None:
        """SIGTERM (a supervisor passes it on to its workers), SIGKILL after 10 s; then Redis."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.pids[1:]:  # workers a killed supervisor could not stop
            if _cpu_of(pid, missing=None) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_UNKNOWN_FLAG = re.compile(r"unrecognized arguments: (--[\w-]+)")


def flag_missing(error: BaseException | str) -> str | None:
    """The first flag a server refused as unknown ("--frame-timeout"), read from the
    RuntimeError ServerProcess raised (its usage error), or None if that was not why."""
    match = _UNKNOWN_FLAG.search(str(error))
    return match.group(1) if match else None


def rss_of(pid: int) -> int:
    """Resident memory of one process now, in bytes (Linux: /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    """How many file descriptors a process has open now (Linux: /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


#: /proc/net/tcp's state codes (include/net/tcp_states.h)
_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def tcp_connections(pid: int) -> list[tuple[str, int, str]]:
    """The TCP connections a process holds open, listeners left out: (state, the peer's
    port, the socket's inode) for each (Linux: its socket fds in /proc/PID/fd, looked up in
    /proc/net/tcp{,6}).

    A socket the process closed is not counted, whatever the kernel still does with it
    (TIME_WAIT, or data still to send): what the process holds is what a leak would be.
    A socket the kernel has done with (reset by the peer) but whose fd the process has
    not closed is in no table: it counts as ("CLOSED", 0, inode), unless it is a Unix
    socket (an earlier call may have seen its port, under the same inode)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    listed = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for fields in _proc_table(table):
            if fields[9] in inodes:
                listed.add(fields[9])
                if fields[3] != "0A":
                    port = int(fields[2].rsplit(":", 1)[1], 16)
                    found.append((_TCP_STATES.get(fields[3], fields[3]), port, fields[9]))
    unix = {fields[6] for fields in _proc_table("/proc/net/unix") if len(fields) > 6}
    found += [("CLOSED", 0, inode) for inode in inodes - listed - unix]
    return found


def _proc_table(path: str) -> Iterable[list[str]]:
    """The rows of a /proc/net table, split into fields (none if the table is missing)."""
    try:
        with open(path) as f:
            next(f)  # the header
            return [line.split() for line in f]
    except FileNotFoundError:  # no IPv6, say
        return []


def recv_or_eof(sock: socket.socket, size: int = 65536) -> bytes | None:
    """One recv() on a non-blocking socket for a load's client: None if nothing is there
    yet; b"" at EOF, and after any error (a reset ends a client as EOF does)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def disconnect_reason(decoder: FrameDecoder) -> str | None:
    """Take every frame out of ``decoder``; the reason of the last ``! disconnected: REASON``
    among them (the server's last word to this client), or None."""
    reason = None
    for event in decoder.events():
        if isinstance(event, Frame) and event.room == protocol.SERVER_ROOM:
            reply = protocol.parse_reply(event.text)
            if isinstance(reply, protocol.Disconnected):
                reason = reply.reason
    return reason


def reason_kind(reason: str | None) -> str:
    """The type of error a disconnect's reason is (protocol's: "NotReading",
    "FrameTimedOut", "BuffersFull"...), "Error" for a sentence no type reads, "none" for
    a connection closed without one."""
    if reason is None:
        return "none"
    return type(protocol.parse_reply("! " + reason)).__name__


@overload
def _cpu_of(pid: int, missing: float = 0.0) -> float: ...
@overload
def _cpu_of(pid: int, missing: None) -> float | None: ...
def _cpu_of(pid: int, missing: float | None = 0.0) -> float | None:
    """User + system CPU seconds of one process (all its threads); ``missing`` if it is gone.

    Waited-for children are not included (those are fields 16-17): a supervisor's workers
    are counted one by one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return missing
    if fields[0] == "Z":  # exited, not yet reaped: not ours to count any more
        return missing
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``: /proc/PID/task/PID/children where the kernel has it
    (CONFIG_PROC_CHILDREN), else a scan of every /proc/N/stat for its parent pid."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        pass
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                children.append(int(entry))
    return sorted(children)


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0-100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ms(seconds: float | None) -> float | None:
    """Seconds to milliseconds; None (no sample: nothing was delivered) stays None."""
    return None if seconds is None else 1e3 * seconds


def us(seconds: float | None) -> float | None:
    """Seconds to microseconds; None stays None."""
    return None if seconds is None else 1e6 * seconds


def _get_each(queue, procs, timeout: float) -> list:
    """One value from ``queue`` per process; a process that died without one fails at once
    (its traceback is on stderr) rather than after the whole timeout."""
    values: list = []
    deadline = time.monotonic() + timeout
    while len(values) < len(procs):
        try:
            values.append(queue.get(timeout=0.2))
            continue
        except queue_module.Empty:
            pass
        failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if failed:
            raise RuntimeError(f"a load-generator process failed (exit code {failed[0]})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the load generator gave no result within {timeout:.0f} s")
    return values


def run_load(server: ServerProcess, target, args_list: list[tuple], duration: float):
    """Run load-generator processes against a server and measure the server meanwhile.

    Each process runs ``target(*args, ready, go, results)``: it sets up (connects, joins),
    puts one value on ``ready``, waits for ``go``, does its work, and puts one dict on
    ``results``. The server's CPU time is read between ``go`` and the last result, so set-up
    is not counted. Returns (ready values, results, server CPU seconds, server RSS bytes at
    the start, its Redis's CPU seconds: 0 without one). "spawn" processes: safe from a
    notebook kernel, which has threads.
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
        states = _get_each(ready, procs, timeout=120)
        rss = server.rss_bytes()
        cpu0, redis0 = server.cpu_seconds(), server.redis_cpu_seconds()
        go.set()
        parts = _get_each(results, procs, timeout=duration + 60)
        server_cpu = server.cpu_seconds() - cpu0
        redis_cpu = server.redis_cpu_seconds() - redis0
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return states, parts, server_cpu, rss, redis_cpu
