"""What the notebooks need besides the chat itself: a look at this machine, and cells that
run only where their syscall exists.

``preflight()`` (notebook 00) prints what the course will use here: the Python, the
backends this platform has, the fd limit, a free port on 127.0.0.1, redis-server and
hiredis for chapter 09. Each line says what to do when something is missing.

``needs("epoll")`` guards a cell that only some platforms can run::

    if needs("epoll"):
        ep = select.epoll()
        ...

It returns True where the requirement is met, and otherwise prints one line that says what
is missing and why, and returns False: the cell is skipped, visibly, and "Run All" goes on.
Chapters that are not about one syscall use ``backend="auto"`` (the best one here) and need
no guard at all.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from collections.abc import Callable

from .backends import available_backends

__all__ = ["REQUIREMENTS", "needs", "preflight"]


def _has_backend(name: str) -> Callable[[], bool]:
    return lambda: name in available_backends()


#: what a cell can need: name -> (test, why it may be missing)
REQUIREMENTS: dict[str, tuple[Callable[[], bool], str]] = {
    "epoll": (_has_backend("epoll"), "epoll is Linux's; macOS and the BSDs have kqueue"),
    "kqueue": (_has_backend("kqueue"), "kqueue is macOS's and the BSDs'; Linux has epoll"),
    "poll": (_has_backend("poll"), "poll is POSIX; Windows has only select"),
    "linux": (lambda: sys.platform.startswith("linux"), "the cell shows Linux behaviour"),
    "procfs": (
        lambda: os.path.isdir("/proc/self/fd"),
        "/proc/self/fd lists a process's open files on Linux only",
    ),
    "strace": (
        lambda: shutil.which("strace") is not None,
        "strace is Linux's syscall tracer (apt install strace); macOS has dtruss",
    ),
    "ss": (
        lambda: shutil.which("ss") is not None,
        "ss lists sockets on Linux (apt install iproute2); elsewhere use netstat or lsof",
    ),
    "redis-server": (
        lambda: shutil.which("redis-server") is not None,
        "redis-server is not on PATH (apt install redis-server, brew install redis)",
    ),
    "hiredis": (
        lambda: importlib.util.find_spec("hiredis") is not None,
        "the hiredis package is not installed (pip install 'chatlab[redis]')",
    ),
}


def needs(*requirements: str) -> bool:
    """True if this machine has every requirement; else print what is missing, return False."""
    unknown = [r for r in requirements if r not in REQUIREMENTS]
    if unknown:
        raise ValueError(f"unknown requirement {unknown[0]!r}; known: {', '.join(REQUIREMENTS)}")
    missing = [r for r in requirements if not REQUIREMENTS[r][0]()]
    for name in missing:
        print(f"skipped here: this cell needs {name} ({REQUIREMENTS[name][1]}).")
    if missing:
        print(f"  This machine: {sys.platform}, backends {', '.join(available_backends())}.")
    return not missing


def _fd_limit() -> str:
    try:
        import resource
    except ImportError:  # Windows
        return "no RLIMIT_NOFILE here (Windows): select() takes at most 512 sockets"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    advice = "" if soft >= 4096 else " (chapter 08 opens ~2,000 sockets: `ulimit -n 4096` first)"
    return f"{soft} soft, {hard} hard{advice}"


def _loopback() -> str:
    try:
        with socket.create_server(("127.0.0.1", 0)) as s:
            return f"127.0.0.1 port 0 -> a free port (the course binds port 0: {s.family.name})"
    except OSError as exc:
        return f"cannot listen on 127.0.0.1 ({exc}): the course needs loopback"


def preflight() -> None:
    """Print what the course will use on this machine, a line each."""
    backends = available_backends()
    rows = [
        ("python", f"{sys.version.split()[0]} on {sys.platform}"),
        ("backends", f"{', '.join(backends)} (chapters use the first: {backends[0]})"),
        ("fd limit", _fd_limit()),
        ("loopback", _loopback()),
    ]
    for name in ("redis-server", "hiredis"):
        ok, why = REQUIREMENTS[name]
        rows.append((name, "found (chapter 09)" if ok() else f"missing: {why}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
