"""The server under test: a command the grader starts, an address it connects to, or a
server object running in this process (notebook 10).

Each check gets a fresh server where the grader can start one, so that a server that dies
in one check is not blamed again in the next: every check judges one behaviour.

A target also answers two questions the checks ask besides "what did the peers receive":
is the server still alive, and how much CPU has it used (to catch a loop that spins)?
CPU is read from /proc/PID/stat for a process (Linux) and from the thread's CPU clock for
an in-process server; where neither is available, the CPU checks say so and are skipped.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["AddressTarget", "CommandTarget", "InProcessTarget", "Target", "free_port"]

START_TIMEOUT = 15.0  # seconds for a started server to accept a connection


class Target(Protocol):
    address: tuple[str, int]

    def alive(self) -> bool: ...
    def cpu_seconds(self) -> float | None: ...
    def stop(self) -> str: ...  # returns what the server printed, for a failure message


def free_port() -> int:
    """A port nobody listens on now (the command needs a number; port 0 cannot be passed)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def _connect(address: tuple[str, int]) -> socket.socket | None:
    try:
        return socket.create_connection(address, timeout=1)
    except OSError:
        return None


class CommandTarget:
    """``CommandTarget("python -m chatlab.server --port {port}")``: started per check."""

    def __init__(self, command: str, host: str = "127.0.0.1") -> None:
        port = free_port()
        self.address = (host, port)
        argv = shlex.split(command.replace("{port}", str(port)).replace("{host}", host))
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the grader's own interpreter, with its packages
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        # The probe that finds the server up stays connected until stop(): closing it would
        # be an EOF, and a server with the EOF bug would spin through the whole check.
        deadline = time.monotonic() + START_TIMEOUT
        while (probe := _connect(self.address)) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.stop()
                raise RuntimeError(
                    f"the server did not accept connections on port {port} within "
                    f"{START_TIMEOUT:.0f} s: {argv!r}\n{output}"
                )
            time.sleep(0.05)
        self._probe = probe

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        try:  # fields 14 and 15 of /proc/PID/stat: user and system time, in clock ticks
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        if hasattr(self, "_probe"):
            self._probe.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.seek(0)
        output = self._log.read().decode(errors="replace")
        self._log.close()
        return output[-2000:]


class AddressTarget:
    """A server someone else runs: never restarted, CPU unknown. Checks are not isolated
    (a server broken by one check stays broken for the next): prefer a CommandTarget."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self._probes: list[socket.socket] = []

    def alive(self) -> bool:
        probe = _connect(self.address)
        if probe is None:
            return False
        self._probes.append(probe)  # closed only at the end: a close is an EOF to the server
        return True

    def cpu_seconds(self) -> float | None:
        return None

    def stop(self) -> str:
        return ""

    def close(self) -> None:
        for probe in self._probes:
            probe.close()


class InProcessTarget:
    """A server object in this process: ``start()`` gives it a thread, ``stop()`` ends it.

    ``factory()`` returns an object with ``address``, ``serve_forever()`` and ``close()``
    (notebook 10's servers): serve_forever runs on a thread, close() is called from here and
    must make serve_forever return (the grader then joins the thread).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.server = factory()
        self.address = tuple(self.server.address[:2])
        self.error: BaseException | None = None
        self._clock: int | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="graded-server", daemon=True)
        self.thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        if hasattr(time, "pthread_getcpuclockid"):
            self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._ready.set()
        try:
            self.server.serve_forever()
        except BaseException as exc:  # the learner's bug is the finding
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def cpu_seconds(self) -> float | None:
        if self._clock is None or not self.thread.is_alive():
            return None
        return time.clock_gettime(self._clock)

    def stop(self) -> str:
        try:
            self.server.close()
        except Exception as exc:
            return f"close() raised {type(exc).__name__}: {exc}"
        self.thread.join(5)
        if self.thread.is_alive():
            return "serve_forever() did not return within 5 s of close()"
        if self.error is not None:
            return f"serve_forever() raised {type(self.error).__name__}: {self.error}"
        return ""
