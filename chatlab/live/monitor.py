"""What a live view shows of a running server, read without stopping or waking it.

``Monitor(server)`` installs the loop's trace hook (chatlab/loop.py, design note 6), which
keeps the last iterations in a ring; ``snapshot()`` reads that ring and the server's public
snapshots (``connections()``, ``rooms()``, ``statistics()``, ``loop.statistics()``), all
safe from any thread. It does not use call_soon_threadsafe on purpose: that would wake the
loop, and a view refreshed four times a second would then see mostly its own wake-ups.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from ..loop import IterationTrace
from ..server import ChatServer
from ..server.connections import ConnectionInfo

__all__ = ["Monitor", "Snapshot"]

READ, WRITE = 1, 2  # chatlab.backends' bits, as the trace reports them


@dataclass(frozen=True)
class Snapshot:
    """The server at one moment: its loop's last iterations, connections, rooms, counters."""

    name: str
    backend: str
    iterations: int
    time_blocked: float
    time_working: float
    recent: list[IterationTrace]  # newest last
    connections: list[ConnectionInfo]
    rooms: dict[int, list[str]]
    max_output_buffer: int
    disconnects: dict[str, int] = field(default_factory=dict)
    frames: int = 0

    def fd_name(self, fd: int) -> str:
        for c in self.connections:
            if c.fd == fd:
                return c.name
        return "the listener or the wake-up socket"

    def connection(self, name: str) -> ConnectionInfo | None:
        """The connection named ``name`` (a nick), if it is there."""
        return next((c for c in self.connections if c.name == name), None)

    @property
    def blocked_share(self) -> float:
        total = self.time_blocked + self.time_working
        return self.time_blocked / total if total else 1.0

    def trace_lines(self, n: int = 8) -> list[str]:
        """The last ``n`` iterations, newest first: ready fds, time blocked and working."""
        lines = []
        for t in reversed(self.recent[-n:]):
            ready = (
                ", ".join(
                    f"fd {fd} {'R' if ev & READ else ''}{'W' if ev & WRITE else ''} "
                    f"({self.fd_name(fd)})"
                    for fd, ev in t.ready
                )
                or "none (a timer or a timeout)"
            )
            lines.append(
                f"blocked {t.blocked * 1e3:7.2f} ms, working {t.working * 1e3:6.2f} ms; "
                f"ready: {ready}"
            )
        return lines

    def text(self) -> str:
        """Everything, as plain text (what the view shows, for a terminal or a log)."""
        out = [
            f"server {self.name} ({self.backend}): {self.iterations} iterations, "
            f"blocked {self.blocked_share:.1%} of the time",
            "last iterations, newest first:",
            *("  " + line for line in self.trace_lines()),
            f"connections (output queued / limit {self.max_output_buffer:,} bytes):",
        ]
        for c in self.connections:
            out.append(
                f"  {c.name:16} {c.state:10} in {c.input_buffered:>7,} B  "
                f"out {c.output_queued:>9,} B  {bar(c.output_queued, self.max_output_buffer)}"
            )
        out.append("rooms: " + rooms_text(self.rooms))
        if self.disconnects:
            out.append("disconnects: " + ", ".join(f"{k} {v}" for k, v in self.disconnects.items()))
        return "\n".join(out)


def bar(value: int, limit: int, width: int = 20) -> str:
    """A text bar: ``[#####...............]``."""
    filled = min(width, round(width * value / limit)) if limit else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def rooms_text(rooms: dict[int, list[str]]) -> str:
    return "; ".join(f"{r}: {', '.join(m)}" for r, m in sorted(rooms.items())) or "none"


class Monitor:
    """Watches one running server: ``Monitor(server, keep=50)``; ``close()`` removes the hook.

    The trace hook runs on the server's loop thread after every iteration: it appends one
    record to a ring under a lock (a microsecond), so leaving it on costs little.
    """

    def __init__(self, server: ChatServer, keep: int = 50) -> None:
        self.server = server
        self._recent: deque[IterationTrace] = deque(maxlen=keep)
        self._lock = threading.Lock()
        server.loop.set_trace(self._on_iteration)

    def _on_iteration(self, trace: IterationTrace) -> None:
        with self._lock:
            self._recent.append(trace)

    def snapshot(self) -> Snapshot:
        """The server now, from any thread (each part is a copy taken in one step)."""
        with self._lock:
            recent = list(self._recent)
        loop = self.server.loop.statistics()
        stats = self.server.statistics()
        return Snapshot(
            name=self.server.name,
            backend=self.server.backend,
            iterations=loop.iterations,
            time_blocked=loop.time_blocked,
            time_working=loop.time_working,
            recent=recent,
            connections=self.server.connections(),
            rooms=self.server.rooms(),
            max_output_buffer=self.server.limits.max_output_buffer,
            disconnects=stats.disconnects,
            frames=stats.frames,
        )

    def close(self) -> None:
        """Remove the trace hook (if the loop is still there)."""
        if not self.server.loop.is_closed():
            self.server.loop.set_trace(None)
