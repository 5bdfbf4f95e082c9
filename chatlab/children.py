"""Child processes that die with their parent: ``spawn(cmd)`` is ``subprocess.Popen(cmd)``
plus a lifeline.

Why: a notebook starts redis-server and a server process. "Restart Kernel" kills the kernel
process, and its children do not die with it: on every Unix a process whose parent dies is
handed to init (or a subreaper) and runs on, holding its port, until someone finds it with
``ps``. Linux can ask for a signal when the parent dies (``prctl(PR_SET_PDEATHSIG)``), but
only Linux, and Python can set it only through ``preexec_fn``, which is unsafe in a process
with threads (a kernel has several).

How, on every POSIX system: ``spawn`` makes a pipe and keeps its write end, the **lifeline**,
in this process only (close-on-exec, so no other child inherits it). The child starts as
``python -m chatlab.children FD -- cmd...``, which forks a small **watchdog** holding the
pipe's read end, and then ``exec``\\ s the real program: same pid, so ``kill()``, ``wait()``,
``stderr`` and the return code are the program's own, as with a plain ``Popen``. The
watchdog sleeps in ``select()`` on the pipe. Nothing is ever written to it, so it wakes only
when every write end is closed, and the kernel closes the last one when this process dies,
however it dies, ``SIGKILL`` included: EOF. The watchdog then sends the program ``SIGTERM``
(a server says goodbye), and ``SIGKILL`` if it is still there after ``GRACE`` seconds. A
watchdog whose program exits first notices (its parent is no longer the program) and exits
too.

On Windows (no fork) ``spawn`` is a plain ``Popen``: use a Job object there. (redis-server
has no Windows build, and chapter 09 is the only user.)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

__all__ = ["GRACE", "release", "spawn"]

#: seconds between the watchdog's SIGTERM and its SIGKILL
GRACE = 2.0
# How often a watchdog checks that its program is still its parent (it exits when not).
_CHECK_EVERY = 0.5


def spawn(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **popen_kwargs)``, and the program dies when this process does.

    The returned Popen is the program's own (its pid, its return code); it also holds the
    lifeline as ``proc.lifeline`` (an fd), closed by ``release(proc)`` once the program is
    waited for. Do not pass ``preexec_fn``.
    """
    if os.name != "posix":
        return subprocess.Popen(cmd, **popen_kwargs)
    read_end, write_end = os.pipe()  # both close-on-exec: only the child gets read_end
    pass_fds = (*popen_kwargs.pop("pass_fds", ()), read_end)
    launcher = [sys.executable, "-m", "chatlab.children", str(read_end), "--", *cmd]
    try:
        proc = subprocess.Popen(launcher, pass_fds=pass_fds, **popen_kwargs)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    proc.lifeline = write_end  # type: ignore[attr-defined]
    return proc


def release(proc: subprocess.Popen) -> None:
    """Close the lifeline of a program already waited for (safe to call twice)."""
    fd = getattr(proc, "lifeline", None)
    if fd is not None:
        proc.lifeline = None  # type: ignore[attr-defined]
        os.close(fd)


def _watch(lifeline: int, program: int) -> None:
    """The watchdog: wait for EOF on the lifeline while ``program`` is our parent."""
    while os.getppid() == program:
        readable, _, _ = select.select([lifeline], [], [], _CHECK_EVERY)
        if readable and not os.read(lifeline, 1):  # EOF: the spawning process is gone
            for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, 0.0)):
                if os.getppid() != program:
                    return
                os.kill(program, sig)
                deadline = time.monotonic() + wait
                while os.getppid() == program and time.monotonic() < deadline:
                    time.sleep(0.05)
            return


def _main(argv: list[str]) -> None:
    """``python -m chatlab.children FD -- cmd...``: fork the watchdog, exec the program."""
    lifeline, cmd = int(argv[0]), argv[2:]
    program = os.getpid()
    if os.fork() == 0:  # the watchdog: nothing of the program's, no terminal signals
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the program
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # hold no pipe of the program's (its reader would wait for us)
            os.dup2(devnull, fd)
        try:
            _watch(lifeline, program)
        finally:
            os._exit(0)
    os.close(lifeline)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"chatlab.children: cannot run {cmd[0]}: {exc}", file=sys.stderr)
        os._exit(127)


if __name__ == "__main__":
    _main(sys.argv[1:])
