"""chatlab.children: what a process spawns dies with it, even when it dies by SIGKILL (what a
kernel restart does to a notebook's kernel), and a plain exit of the program leaves nothing
behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from chatlab.children import GRACE, release, spawn
from chatlab.redis_server import redis_server_path

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the lifeline needs fork (POSIX)")

# A parent that starts what notebook 09 starts, prints the pids and waits to be killed.
PARENT = textwrap.dedent(
    """
    import json, subprocess, sys, time
    from chatlab.children import spawn
    from chatlab.redis_server import RedisServer, redis_server_path

    sleeper = spawn([sys.executable, "-c", "import time; time.sleep(120)"])
    # one that ignores SIGTERM: the watchdog must go on to SIGKILL
    stubborn = spawn([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    stubborn.stdout.readline()
    pids = {"sleeper": sleeper.pid, "stubborn": stubborn.pid}
    if redis_server_path():
        pids["redis"] = RedisServer().start().proc.pid
    print(json.dumps(pids), flush=True)
    time.sleep(120)
    """
)


def gone(pid: int) -> bool:
    """No such process, or only its zombie (init reaps it when it gets to it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (macOS): ask ps
        out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True)
        return out.stdout.strip().startswith(b"Z") or not out.stdout.strip()


def wait_gone(pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return []
        time.sleep(0.05)
    return [pid for pid in pids if not gone(pid)]


def test_children_die_when_the_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        assert set(pids) >= {"sleeper", "stubborn"}
        if redis_server_path():
            assert "redis" in pids
        assert not any(gone(pid) for pid in pids.values())
        parent.kill()  # SIGKILL: no handler, no atexit, nothing of the parent's runs
        parent.wait()
        # SIGTERM at once, SIGKILL GRACE seconds later for the one that ignores SIGTERM.
        left = wait_gone(pids.values(), timeout=GRACE + 5)
        assert left == [], f"still running after their parent's death: {left} of {pids}"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait()
        parent.stdout.close()


def test_a_spawned_program_is_an_ordinary_child():
    """Same pid, same stdio, same return code as Popen; its watchdog exits with it."""
    proc = spawn(
        [sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(3)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(proc.stdout.read()) == proc.pid  # EOF: the watchdog holds no stdout
        assert proc.wait(10) == 3
    finally:
        proc.stdout.close()
        release(proc)
        release(proc)  # twice is fine


def test_kill_reaches_the_program_itself():
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        release(proc)


def test_the_watchdog_leaves_with_its_program():
    marker = f"chatlab-test-{os.getpid()}-{time.monotonic_ns()}"  # in the watchdog's args too
    proc = spawn([sys.executable, "-c", "import time; time.sleep(0.5)", marker])
    assert proc.wait(10) == 0
    release(proc)

    def running() -> list[str]:
        out = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True)
        return [ln for ln in out.stdout.splitlines() if marker in ln and not ln.startswith("Z")]

    deadline = time.monotonic() + 5
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running() == []
