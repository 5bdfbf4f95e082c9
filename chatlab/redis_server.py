"""A throwaway redis-server on a free loopback port, for the notebooks, tests and benchmarks.

``with RedisServer() as redis: ... redis.url ...``. It runs the ``redis-server`` program
(Debian's package: ``apt-get install redis-server``) with nothing saved to disk, listening
on 127.0.0.1 only. ``kill()`` and ``start()`` again (same port) play a crash and a restart.

It dies with the process that started it (``chatlab.children.spawn``): a notebook's kernel
that is restarted, or a test run killed with ``SIGKILL``, leaves no redis-server behind.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

from .children import release, spawn
from .errors import RedisServerError

__all__ = ["RedisServer", "RedisServerError", "redis_server_path"]


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process: ``start()``, ``url``, ``kill()``, ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start it (on the same port as before, after a kill), and wait until it answers."""
        program = redis_server_path()
        if program is None:
            raise RedisServerError(
                "redis-server not found: install it (Debian: apt-get install redis-server)"
            )
        for _attempt in range(5):  # a free port can be taken before redis binds it: retry
            port = self.port or _free_port(self.host)
            self.proc = proc = spawn(
                [program, "--bind", self.host, "--port", str(port), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_until_up(proc, port, timeout):
                self.port = port
                return self
            proc.kill()
            proc.wait()
            release(proc)
            if self.port is not None:
                break  # a fixed port (a restart): retrying would not help
        raise RedisServerError(f"redis-server did not start on {self.host}:{self.port or port}")

    def _wait_until_up(self, proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
        """True once *our* redis-server answers on ``port``.

        Discussion: the port was free when we chose it, but another process may bind it
        before our redis-server does (tests and benchmarks start many at once). Ours then
        exits, and meanwhile the other one answers PING: two runs would share one Redis and
        read each other's rooms. So we ask who answers (INFO's process_id) and accept only
        our own process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((self.host, port), timeout=1) as s:
                    s.sendall(b"INFO server\r\n")
                    reply = b""
                    while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        reply += chunk
                    pid = re.search(rb"\bprocess_id:(\d+)", reply)
                    if pid:
                        return int(pid.group(1)) == proc.pid
            except OSError:
                pass
            time.sleep(0.05)
        return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: Redis dies at once, as in a crash; its kernel closes its connections: FIN,
        or RST where Redis had unread input (notebook 05 shows both)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        release(proc)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        release(proc)

    def __enter__(self) -> RedisServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"
