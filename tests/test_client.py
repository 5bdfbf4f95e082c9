"""The terminal client, as people use it: in a real terminal (tmux), with a pipe, and as the
Windows path (a thread feeding stdin lines), against chatlab's server and the original one."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from helpers import child_env, read_until, wait_for

import chatlab
from chatlab.classic import ClassicServer

CLIENT = [sys.executable, "-m", "chatlab.client"]
ENV = child_env()


def run_client(port, *args, input=b"", timeout=15):
    return subprocess.run(
        [*CLIENT, "--port", str(port), *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=ENV,
    )


# --------------------------------------------------------------------------- piped stdin


def test_piped_stdin_sends_each_line_and_exits_at_eof(backend):
    with chatlab.serve(backend=backend) as server, chatlab.ScriptedClient(server.address) as bob:
        bob.join(7)
        done = run_client(
            server.address[1],
            "--room",
            "7",
            "--nick",
            "alice",
            "--backend",
            backend,
            input=b"hello\nsecond line\n/who\n",
        )
        assert done.returncode == 0, done.stderr.decode()
        bob.expect("<alice> hello")
        bob.expect("<alice> second line")
        out = done.stdout.decode()
        assert "<alice> hello" in out, "the client shows its own lines"
        assert re.search(r"\* room 7: .*alice", out), f"the /who reply is shown: {out!r}"
        bob.expect("alice left room 7")
        assert "Traceback" not in done.stderr.decode()


def test_piped_stdin_without_trailing_newline(backend):
    with chatlab.serve(backend=backend) as server, chatlab.ScriptedClient(server.address) as bob:
        bob.join(7)
        done = run_client(server.address[1], "--room", "7", input=b"no newline at end")
        assert done.returncode == 0
        bob.expect("no newline at end")


def test_stdin_thread_path(backend):
    # The path Windows takes (no select() on stdin), forced here so it is tested on Linux.
    with chatlab.serve(backend=backend) as server, chatlab.ScriptedClient(server.address) as bob:
        bob.join(9)
        done = run_client(
            server.address[1],
            "--room",
            "9",
            "--stdin-thread",
            "--nick",
            "win",
            input=b"from a thread\n",
        )
        assert done.returncode == 0, done.stderr.decode()
        bob.expect("<win> from a thread")
        assert "you entered room 9" in done.stdout.decode()


def test_stdin_from_dev_null(backend):
    # epoll refuses /dev/null (EPERM); the client falls back to the thread and still works.
    with chatlab.serve(backend=backend) as server, chatlab.ScriptedClient(server.address) as bob:
        bob.join(3)
        done = subprocess.run(
            [*CLIENT, "--port", str(server.address[1]), "--room", "3", "--backend", backend],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=15,
            env=ENV,
        )
        assert done.returncode == 0, done.stderr.decode()
        bob.expect("entered room 3")


def test_connection_refused_names_host_and_port():
    # A port nobody listens on: bind one, never listen, so nothing else can take it.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        done = run_client(port, "--room", "1")
    err = done.stderr.decode()
    assert done.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_server_gone_is_one_line_and_nonzero(backend):
    server_cm = chatlab.serve(backend=backend)
    server = server_cm.__enter__()
    proc = subprocess.Popen(
        [*CLIENT, "--port", str(server.address[1]), "--room", "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        with chatlab.ScriptedClient(server.address) as watcher:
            watcher.join(5)
            watcher.expect("entered room 5.")  # the client is in
        server_cm.__exit__(None, None, None)  # the server goes away; stdin stays open
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1
    assert f"the server at 127.0.0.1:{server.address[1]} closed the connection" in out.decode()
    assert "Traceback" not in err.decode()


def test_talks_to_the_original_server():
    # The classic select() server takes one recv() as one frame, so frames that arrive
    # together are lost (its bug, not ours): we write the line only once it has seen the
    # client's join, as a person typing would.
    with ClassicServer() as classic:
        port = classic.address[1]
        raw = socket.create_connection(classic.address, timeout=5)
        proc = subprocess.Popen(
            [*CLIENT, "--port", str(port), "--room", "111"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        try:
            raw.sendall(b"<RID:111></RID:111>")
            wait_for(
                lambda: len(classic.rooms.get(b"111", ())) == 2, "both to join the classic room"
            )
            out, err = proc.communicate(input=b"hi from chatlab\n", timeout=15)
            received = read_until(raw, b"hi from chatlab")
            assert b"entered room." in received and b">hi from chatlab" in received
        finally:
            raw.close()
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "<you> hi from chatlab" in out.decode()


def test_shows_the_original_servers_plain_text():
    with ClassicServer() as classic:
        port = classic.address[1]
        proc = subprocess.Popen(
            [*CLIENT, "--port", str(port), "--room", "111"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        try:
            # Until the client's join frame was handled.
            wait_for(lambda: classic.rooms.get(b"111"), "the client to join the classic room")
            with socket.create_connection(classic.address, timeout=5) as raw:
                raw.sendall(b"<RID:111></RID:111>")
                time.sleep(0.2)
                raw.sendall(b"<RID:111>plain hello</RID:111>")
                time.sleep(0.3)
            out, err = proc.communicate(input=b"", timeout=15)
        finally:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert re.search(r"\[127\.0\.0\.1:\d+\] entered room\.", text), text
    assert re.search(r"<\('127\.0\.0\.1', \d+\)>plain hello", text), text
    assert "Traceback" not in err.decode()


# ------------------------------------------------------------------ a real terminal: tmux

tmux_missing = shutil.which("tmux") is None


class Tmux:
    """One private tmux server (-L), one window per client; killed at the end."""

    def __init__(self) -> None:
        self.socket = f"chatlab-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def start(self, name: str, command: str) -> None:
        # The shell line prints the exit status, so the test can read how the client ended.
        line = f"{command}; echo EXIT=$?; sleep 60"
        self.run("new-session", "-d", "-s", name, "-x", "120", "-y", "30", line)

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", name, *keys)

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", name, "-l", text)

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name)

    def wait_for(self, name: str, pattern: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(name)
            if re.search(pattern, screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on {name}'s screen:\n{screen}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux():
    if tmux_missing:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    t = Tmux()
    yield t
    t.kill()


def client_command(port: int, *args: str) -> str:
    return " ".join([sys.executable, "-m", "chatlab.client", "--port", str(port), *args])


def test_terminal_typing_survives_incoming_messages(tmux, backend):
    with chatlab.serve(backend=backend) as server:
        port = server.address[1]
        tmux.start("alice", client_command(port, "--room", "111", "--nick", "alice"))
        tmux.wait_for("alice", r"you entered room 111")
        tmux.start("bob", client_command(port, "--room", "111", "--nick", "bob"))
        tmux.wait_for("bob", r"you entered room 111; here: alice")
        tmux.wait_for("alice", r"bob entered room 111")

        # Alice is half-way through a line when Bob's messages arrive.
        tmux.type("alice", "half typed li")
        tmux.wait_for("alice", r"#111> half typed li")
        for i in range(3):
            tmux.type("bob", f"message {i} from bob")
            tmux.keys("bob", "Enter")
        screen = tmux.wait_for("alice", r"<bob> message 2 from bob")
        lines = [line for line in screen.splitlines() if line.strip()]
        assert lines[-1].rstrip() == "#111> half typed li", screen
        assert all(f"<bob> message {i} from bob" in screen for i in range(3))
        assert re.search(r"\d\d:\d\d #111 <bob> message 0 from bob", screen), "time and nick"

        # She finishes the line: it goes out whole, and her own copy is marked as hers.
        tmux.type("alice", "ne")
        tmux.keys("alice", "Enter")
        tmux.wait_for("bob", r"<alice> half typed line")
        screen = tmux.wait_for("alice", r"#111 <alice> half typed line")
        assert screen.count("half typed line") == 1, "sent once, shown once"

        # /quit leaves cleanly, exit status 0; the other side sees it.
        tmux.type("alice", "/quit")
        tmux.keys("alice", "Enter")
        tmux.wait_for("alice", r"EXIT=0")
        tmux.wait_for("bob", r"alice left room 111 \(quit\)")
        tmux.keys("bob", "C-d")  # Ctrl-D on an empty line leaves too
        screen = tmux.wait_for("bob", r"EXIT=\d+")
        assert "EXIT=0" in screen and "Traceback" not in screen


def test_terminal_ctrl_c_leaves_without_traceback(tmux):
    with chatlab.serve() as server, chatlab.ScriptedClient(server.address) as watcher:
        watcher.join(4)
        tmux.start("carol", client_command(server.address[1], "--room", "4", "--nick", "carol"))
        tmux.wait_for("carol", r"you entered room 4")
        tmux.type("carol", "something unsent")
        tmux.keys("carol", "C-c")
        screen = tmux.wait_for("carol", r"EXIT=\d+")
        assert (
            "EXIT=0" in screen and "Traceback" not in screen and "KeyboardInterrupt" not in screen
        )
        watcher.expect("carol left room 4")


def test_terminal_join_switches_room_and_asks_for_room(tmux):
    with chatlab.serve() as server, chatlab.ScriptedClient(server.address, nick="dan") as dan:
        dan.join(222)
        # No --room: the client asks, as the original did.
        tmux.start("erin", client_command(server.address[1], "--nick", "erin"))
        tmux.wait_for("erin", r"<Room ID>")
        tmux.type("erin", "111")
        tmux.keys("erin", "Enter")
        tmux.wait_for("erin", r"you entered room 111")
        tmux.type("erin", "/join 222")
        tmux.keys("erin", "Enter")
        tmux.wait_for("erin", r"#222>")
        dan.expect("erin entered room 222.")
        tmux.type("erin", "in two rooms now")
        tmux.keys("erin", "Enter")
        dan.expect("<erin> in two rooms now", room=222)
        dan.say(222, "welcome")
        tmux.wait_for("erin", r"#222 <dan> welcome")
        tmux.keys("erin", "C-d")
        tmux.wait_for("erin", r"EXIT=0")


def test_sigterm_to_client_is_quiet(backend):
    with chatlab.serve(backend=backend) as server:
        proc = subprocess.Popen(
            [*CLIENT, "--port", str(server.address[1]), "--room", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        try:
            with chatlab.ScriptedClient(server.address) as w:
                w.join(2)
                w.expect("entered room 2.")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0
        assert "Traceback" not in err.decode()
