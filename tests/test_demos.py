"""chatlab.demos: the blocking and the thread-per-client servers that notebook 01 compares.

Each must do what the notebook says it does (one client at a time; everyone at once), and
each must stop at once whatever its threads are blocked in, leaving no thread behind.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest
from helpers import wait_for

from chatlab import ExpectTimeout, ScriptedClient
from chatlab.demos import BlockingServer, ThreadedServer

SERVERS = [BlockingServer, ThreadedServer]


def server_threads(server) -> list[threading.Thread]:
    """The threads a demo server started (they are named after its kind and port)."""
    prefix = f"{server.kind}-{server.address[1]}"
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


# ------------------------------------------------------------------------ BlockingServer


def test_blocking_server_serves_one_client_at_a_time():
    with BlockingServer() as server:
        with (
            ScriptedClient(server.address, nick="alice") as alice,
            ScriptedClient(server.address, name="bob") as bob,  # connect() succeeds: backlog
        ):
            alice.join(111)
            alice.say(111, "hello")
            assert alice.expect("echo:").body == "* echo: hello"
            bob.say(111, "anyone there?")
            with pytest.raises(ExpectTimeout, match="received since the last match: nothing"):
                bob.expect("echo:", timeout=0.3)
            assert server.clients_served == 0
            alice.close()  # alice leaves: the server accept()s bob and reads what he sent
            assert bob.expect("echo:").body == "* echo: anyone there?"
            assert bob.transcript[0].text.startswith("you entered room 111; here: nobody else")
            assert server.clients_served == 1


def test_blocking_server_frames_errors_and_nick():
    with BlockingServer() as server, ScriptedClient(server.address, nick="carol") as carol:
        assert carol.name == "carol"
        carol.send_raw(b"<RID:5>split ")
        carol.send_raw(b"frame</RID:5><RID:5>second</RID:5>")
        assert carol.expect("echo:").text == "echo: split frame"
        assert carol.expect("echo:").text == "echo: second"
        carol.send(5, "/who")
        assert carol.expect("knows only /nick", kind="error")
        carol.send(0, "hi")
        assert carol.expect("room 0 is the server's", kind="error")
        carol.send_raw(b"junk")
        carol.send(5, "after")
        assert carol.expect("skipped 4 bytes: garbage before frame", kind="error")
        carol.expect("echo: after")


# ------------------------------------------------------------------------ ThreadedServer


def test_threaded_server_serves_everyone_at_once():
    with ThreadedServer() as server:
        with (
            ScriptedClient(server.address, nick="alice") as alice,
            ScriptedClient(server.address, nick="bob") as bob,
        ):
            alice.join(111)
            bob.join(111)
            alice.expect("bob entered room 111.")
            assert bob.transcript[-1].text == "you entered room 111; here: alice"
            alice.say(111, "hi bob")
            bob.say(111, "hi alice")
            assert bob.expect("hi bob").sender == "alice"
            assert alice.expect("hi alice").sender == "bob"
            assert alice.messages() == ["<bob> hi alice"], "nobody hears their own message"
            assert server.rooms() == {111: ["alice", "bob"]}
            bob.close()
            alice.expect("bob left room 111.")
            wait_for(lambda: server.rooms() == {111: ["alice"]}, "bob to be gone from room 111")


def test_threaded_server_has_a_thread_per_client():
    with ThreadedServer() as server:
        clients = [ScriptedClient(server.address, name=f"c{i}") for i in range(5)]
        try:
            for client in clients:
                client.join(7)  # the reply proves that client's thread is running
            assert len(server_threads(server)) == 1 + 5  # accept() thread + one per client
        finally:
            for client in clients:
                client.close()
        wait_for(lambda: len(server_threads(server)) == 1, "the client threads to end")


def test_threaded_server_messages_do_not_interleave():
    # Four senders at once to one reader: the per-socket lock keeps every frame whole.
    with ThreadedServer() as server, ScriptedClient(server.address, nick="reader") as reader:
        reader.join(3)
        senders = [ScriptedClient(server.address, nick=f"s{i}") for i in range(4)]
        try:
            for s in senders:
                s.join(3)
            big = "x" * 20_000
            workers = [
                threading.Thread(target=lambda s=s: [s.say(3, big) for _ in range(10)])
                for s in senders
            ]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            for _ in range(40):
                assert reader.expect(big, kind="message").text == big
            assert not [r for r in reader.transcript if r.kind in ("raw", "error")]
        finally:
            for s in senders:
                s.close()


# ------------------------------------------------------------------------ stopping


@pytest.mark.parametrize("cls", SERVERS)
def test_stop_while_blocked_in_accept(cls):
    before = set(threading.enumerate())
    server = cls().start()
    wait_for(lambda: len(server_threads(server)) == 1, "the accept() thread to start")
    started = time.monotonic()
    assert server.stop(timeout=5) is True
    assert time.monotonic() - started < 1.0
    assert set(threading.enumerate()) == before, "no thread left behind"
    assert server.stop() is True, "stop() twice is fine"
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=1)


@pytest.mark.parametrize("cls", SERVERS)
def test_stop_while_blocked_in_recv(cls):
    before = set(threading.enumerate())
    server = cls().start()
    with ScriptedClient(server.address, name="idle") as idle:
        idle.join(1)  # served, then idle: the server thread sleeps in recv()
        started = time.monotonic()
        assert server.stop(timeout=5) is True
        assert time.monotonic() - started < 1.0
        idle.wait_closed(timeout=2)  # the client sees the server go
    assert set(threading.enumerate()) == before


def test_stop_while_a_thread_is_blocked_in_sendall():
    # A member who never reads: the sender's thread ends up blocked in sendall() to it.
    # stop() must still end every thread, at once.
    before = set(threading.enumerate())
    server = ThreadedServer().start()
    with (
        ScriptedClient(server.address, name="deaf") as deaf,
        ScriptedClient(server.address, name="talker") as talker,
    ):
        deaf.join(9)
        talker.join(9)
        talker.sock.settimeout(0.5)
        frame = b"<RID:9>" + b"y" * 60_000 + b"</RID:9>"
        with pytest.raises(TimeoutError):  # every buffer on the way to deaf is full
            for _ in range(10_000):
                talker.sock.sendall(frame)
        started = time.monotonic()
        assert server.stop(timeout=5) is True
        assert time.monotonic() - started < 1.0
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize("cls", SERVERS)
def test_stop_before_start_and_context_manager(cls):
    server = cls()
    assert server.stop() is True
    with cls() as server, ScriptedClient(server.address, nick="ann") as ann:
        ann.join(2)
    assert server_threads(server) == []


def test_threaded_server_stops_with_many_clients_connected():
    before = set(threading.enumerate())
    server = ThreadedServer().start()
    clients = [ScriptedClient(server.address) for _ in range(30)]
    try:
        for client in clients:
            client.join(4, wait=False)
        wait_for(lambda: len(server.rooms().get(4, ())) == 30, "30 clients to join room 4")
        assert server.stop(timeout=5) is True
    finally:
        for client in clients:
            client.close()
    assert set(threading.enumerate()) == before


class _ListenerThatFailsShutdown(socket.socket):
    """A listening socket whose shutdown() fails, as it may on macOS and the BSDs."""

    def shutdown(self, how: int) -> None:
        raise OSError(errno.ENOTCONN, "Socket is not connected (as on macOS)")


class _ListenerThatIgnoresShutdown(socket.socket):
    """A listening socket whose shutdown() succeeds and wakes nobody (POSIX allows it)."""

    def shutdown(self, how: int) -> None:
        pass


@pytest.mark.parametrize("listener", [_ListenerThatFailsShutdown, _ListenerThatIgnoresShutdown])
@pytest.mark.parametrize("cls", SERVERS)
def test_stop_wakes_accept_where_shutdown_of_a_listener_does_not(cls, listener):
    # Waking a blocked accept() with shutdown() is Linux behaviour: stop() must not rely on it.
    before = set(threading.enumerate())
    server = cls()
    plain = server._listener
    server._listener = listener(plain.family, plain.type, fileno=plain.detach())
    server.start()
    wait_for(lambda: len(server_threads(server)) == 1, "the accept() thread to start")
    started = time.monotonic()
    assert server.stop(timeout=5) is True
    assert time.monotonic() - started < 1.0
    assert set(threading.enumerate()) == before, "no thread left behind"
