"""``python -m chatlab.server``, run as a real process.

Each test starts the server with ``sys.executable -m chatlab.server --port 0`` and learns the
port from its banner on stderr ("chatlab server on HOST:PORT (backend NAME); Ctrl-C stops
it"). A thread reads stderr line by line, so the pipe never fills and every wait for a line
is bounded (``helpers.ServerProcess``). Every process a test starts is killed in a finally
(the ``launch`` fixture), and every wait fails with what the process did print.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers import BANNER, EXIT_TIMEOUT, STARTUP_TIMEOUT, ServerProcess, run_cli

from chatlab import ExpectTimeout, Limits, ScriptedClient
from chatlab.backends import BACKENDS, available_backends


@pytest.fixture
def launch():
    """launch(*args) -> a started ServerProcess on port 0; every one is killed afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess("--host", "127.0.0.1", "--port", "0", *args)
        started.append(server)
        server.wait_started()
        return server

    yield start
    for server in started:
        server.kill()


# ---- arguments -------------------------------------------------------------------------


def test_help_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    options = ["--backend", "--host", "--port", "--log-level"]
    options += ["--" + name.replace("_", "-") for name in vars(Limits())]
    for option in options:
        assert option in result.stdout, f"{option} missing from --help"
    for name in available_backends():
        assert name in result.stdout


def test_bad_argument_is_argparse_error():
    result = run_cli("--port", "notanumber")
    assert result.returncode == 2
    assert "argument --port: invalid int value: 'notanumber'" in result.stderr
    assert result.stderr.startswith("usage:")
    assert "Traceback" not in result.stderr


def test_inconsistent_limits_are_one_clear_line():
    result = run_cli("--port", "0", "--max-frame-size", "4096", "--max-input-buffer", "100")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "max_input_buffer (100) must exceed max_frame_size (4096)" in lines[0]
    assert "Traceback" not in result.stderr


def test_unavailable_backend_is_one_clear_line():
    missing = [name for name in BACKENDS if name not in available_backends()]
    if not missing:
        pytest.skip(f"every backend is available on {sys.platform}")
    result = run_cli("--port", "0", "--backend", missing[0])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert missing[0] in lines[0] and sys.platform in lines[0]
    for name in available_backends():
        assert name in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = run_cli("--host", "127.0.0.1", "--port", str(port), timeout=15)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in result.stderr


# ---- the original protocol, across processes -------------------------------------------

# A client from the original blog post, in spirit: a plain socket, the <RID:n> frames, and
# whatever bytes arrive printed as they come. Only the standard library's socket module.
ORIGINAL_CLIENT = """\
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection((host, port), timeout=10)
sock.sendall(b"<RID:111></RID:111>")
sock.sendall(b"<RID:111>hello from 1999</RID:111>")
seen = b""
while b"hello back" not in seen:
    data = sock.recv(4096)
    if not data:
        break
    seen += data
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
sock.close()
"""


def test_original_client_process_chats_through_server_process(launch, backend, tmp_path):
    server = launch("--backend", backend)
    assert server.backend == backend
    script = tmp_path / "original_client.py"
    script.write_text(textwrap.dedent(ORIGINAL_CLIENT))
    with ScriptedClient(server.address, "alice") as alice:
        alice.join(111)
        old = subprocess.Popen(
            [sys.executable, str(script), *map(str, server.address)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            line = alice.expect("hello from 1999", room=111, timeout=STARTUP_TIMEOUT)
            assert line.kind == "message"
            assert re.fullmatch(r"127\.0\.0\.1:\d+", line.sender), line.sender
            alice.say(111, "hello back")
            out, err = old.communicate(timeout=EXIT_TIMEOUT)
        finally:
            if old.poll() is None:
                old.kill()
            old.communicate()
    assert old.returncode == 0, err.decode(errors="replace")
    text = out.decode("utf-8")  # readable bytes: strict UTF-8
    assert text == (
        "<RID:111>* you entered room 111; here: alice</RID:111>"
        "<RID:111><alice> hello back</RID:111>"
    )


# ---- signals ---------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_traffic_stops_gracefully(launch, backend, signum):
    server = launch("--backend", backend)
    alice = ScriptedClient(server.address, "alice")
    bob = ScriptedClient(server.address, "bob")
    try:
        alice.join(1)
        bob.join(1)
        stopped_at = None
        for i in range(200):
            try:
                alice.say(1, f"a{i}")
                bob.say(1, f"b{i}")
                if i == 100:
                    server.proc.send_signal(signum)  # while a100 and b100 are in flight
                bob.expect(f"<alice> a{i}", room=1)
                alice.expect(f"<bob> b{i}", room=1)
            except (OSError, ExpectTimeout):
                stopped_at = i
                break
        assert stopped_at is not None and stopped_at >= 100, "the signal did not stop the chat"
        reason = f"server stopped ({signal.strsignal(signum)})"
        for c in (alice, bob):
            line = c.expect(f"* bye ({reason}).", room=0, kind="notice")
            c.wait_closed()
            assert c.transcript[-1] is line, "nothing may follow the goodbye"
    finally:
        alice.close()
        bob.close()
    assert server.wait_exit() == 0, server.stderr
    assert "Traceback" not in server.stderr
    server.wait_for_line(f"shutting down: {re.escape(reason)}")


def test_signal_when_idle_exits_zero(launch):
    server = launch()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.stderr
    assert "Traceback" not in server.stderr


# ---- logs ------------------------------------------------------------------------------


def test_info_logs_connections_joins_leaves_and_disconnect_reasons(launch):
    server = launch("--log-level", "info")
    with ScriptedClient(server.address) as anon:
        port = anon.local_address[1]
        server.wait_for_line(rf"connection from 127\.0\.0\.1:{port} \(fd \d+\)")
        anon.nick("alice")
        anon.join(5)
        server.wait_for_line(r"alice joined room 5$")
        anon.leave(5)
        server.wait_for_line(r"alice left room 5$")
        anon.join(6)
        anon.command(6, "/who", reply="room 6: alice")  # read everything: close is an EOF
    server.wait_for_line(r"disconnect alice: closed the connection$")
    server.wait_for_line(r"alice left room 6 \(closed the connection\)$")
    with ScriptedClient(server.address, "bob") as bob:
        bob.quit("see you")
    server.wait_for_line(r"disconnect bob: quit: see you$")
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.stderr
    assert "INFO" in server.stderr


def test_warning_log_level_hides_info(launch):
    server = launch("--log-level", "warning")
    with ScriptedClient(server.address, "alice") as alice:
        alice.join(5)
        alice.quit()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.stderr
    assert BANNER.search(server.stderr)
    for info in ("connection from", "joined room", "disconnect", "shutting down"):
        assert info not in server.stderr, server.stderr
