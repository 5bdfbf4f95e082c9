"""The chat server's behaviour, on every backend (see conftest.backend).

Every test talks to a real server over real sockets on 127.0.0.1, port 0: a server started
with ``chatlab.serve()`` on a background thread, and ``ScriptedClient``s (or raw sockets that
speak only the original protocol). Nothing is mocked and nothing is timed: every wait is an
``expect()`` (or ``read_until()``/``wait_for()`` from tests/helpers.py) bounded by a timeout
that fails with what did arrive.

How a test proves that something did NOT arrive, without sleeping: ``sync(client)`` sends
a command and waits for its reply. One connection's bytes arrive in order, and the server
handles frames in the order it reads them, so everything the server queued for that client
before it handled the command arrives before the reply. If the unwanted line is not among
the lines before the reply, it was never sent.
"""

from __future__ import annotations

import re
import socket
import struct
import threading

import pytest
from helpers import read_to_eof, read_until, sync, wait_for

import chatlab
from chatlab import ScriptedClient, encode_frame, protocol, serve
from chatlab.backends import available_backends

TIMEOUT = 5.0


# ---- helpers ---------------------------------------------------------------------------


@pytest.fixture
def server(backend):
    with serve(backend=backend) as srv:
        assert srv.backend == backend
        yield srv


@pytest.fixture
def client(server):
    """client(nick=None) -> a ScriptedClient on the test's server; all closed afterwards."""
    made: list[ScriptedClient] = []

    def make(nick: str | None = None) -> ScriptedClient:
        c = ScriptedClient(server.address, nick=nick, timeout=TIMEOUT)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def raw(server):
    """raw() -> a plain connected socket (an original-protocol client); all closed afterwards."""
    made: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.create_connection(server.address, timeout=TIMEOUT)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


def since(c: ScriptedClient, start: int) -> list[str]:
    """The lines a client received from transcript index ``start``, as "[room] body"."""
    return [str(line) for line in c.transcript[start:]]


def assert_readable_frames(data: bytes) -> list[tuple[int, str]]:
    """The bytes are UTF-8 text made only of whole frames with printable bodies."""
    text = data.decode("utf-8")  # strict: a UnicodeDecodeError fails the test
    frames = re.findall(r"<RID:(\d+)>(.*?)</RID:\1>", text, re.DOTALL)
    rebuilt = "".join(f"<RID:{room}>{body}</RID:{room}>" for room, body in frames)
    assert rebuilt == text, f"bytes outside whole frames: {text!r}"
    for _, body in frames:
        assert body.isprintable(), f"unprintable body {body!r}"
    return [(int(room), body) for room, body in frames]


def address_name(sock: socket.socket) -> str:
    """How the server names a member without a nick: the client's own host:port."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


# ---- wire compatibility with the original chat room ----------------------------------


def test_original_client_chats_with_scripted_client(client, raw):
    alice = client("alice")
    alice.join(111)
    old = raw()
    old_name = address_name(old)
    old.sendall(b"<RID:111></RID:111>")
    alice.expect(f"* {old_name} entered room 111.", room=111)
    old.sendall(b"<RID:111>hello from 1999</RID:111>")
    line = alice.expect("hello from 1999", room=111)
    assert (line.kind, line.sender, line.text) == ("message", old_name, "hello from 1999")

    alice.say(111, "hello from today")
    data = read_until(old, b"<RID:111><alice> hello from today</RID:111>")
    frames = assert_readable_frames(data)
    assert frames == [
        (111, "* you entered room 111; here: alice"),
        (111, "<alice> hello from today"),
    ]


def test_original_client_sends_join_and_message_in_one_send(client, raw):
    # The original client wrote whatever it had; the server must not take a recv() as a frame.
    bob = client("bob")
    bob.join(111)
    old = raw()
    old.sendall(b"<RID:111></RID:111><RID:111>one</RID:111><RID:111>two</RID:111>")
    bob.expect("<" + address_name(old) + "> two", room=111)
    assert bob.messages(111) == [f"<{address_name(old)}> one", f"<{address_name(old)}> two"]


def test_original_clients_chat_with_each_other(raw):
    first, second = raw(), raw()
    first.sendall(b"<RID:111></RID:111>")
    read_until(first, b"you entered room 111")
    second.sendall(b"<RID:111></RID:111>")
    read_until(first, b"entered room 111.</RID:111>")
    second.sendall(b"<RID:111>ping</RID:111>")
    data = read_until(first, b"ping</RID:111>")
    assert_readable_frames(data)
    assert f"<RID:111><{address_name(second)}> ping</RID:111>".encode() in data


# ---- rooms -----------------------------------------------------------------------------


def test_join_notices_and_who_is_here(client):
    alice, bob, carol = client("alice"), client("bob"), client("carol")
    alice.join(5)
    assert alice.transcript[-1].body == "* you entered room 5; here: nobody else yet"
    bob.join(5)
    assert bob.transcript[-1].body == "* you entered room 5; here: alice"
    alice.expect("* bob entered room 5.", room=5, kind="notice")
    carol.join(5)
    assert carol.transcript[-1].body == "* you entered room 5; here: alice, bob"
    alice.expect("* carol entered room 5.", room=5)
    bob.expect("* carol entered room 5.", room=5)
    # The joiner is not told of its own entry the way the others are.
    assert not [line for line in sync(carol) if "carol entered" in line.body]


def test_first_message_to_a_room_joins_it(server, client):
    alice, bob = client("alice"), client("bob")
    bob.join(5)
    alice.say(5, "hi")  # no join frame first
    alice.expect("* you entered room 5; here: bob", room=5)
    bob.expect("* alice entered room 5.", room=5)
    bob.expect("<alice> hi", room=5)
    assert server.rooms() == {5: ["bob", "alice"]}


def test_joining_twice_is_harmless(server, client):
    alice, bob = client("alice"), client("bob")
    alice.join(5)
    bob.join(5)
    alice.send(5, "")  # the original join frame again: nothing happens
    alice.command(5, "/join 5", reply="* you are already in room 5.")
    assert [line.body for line in sync(bob)] == []  # no second entry notice
    assert server.rooms() == {5: ["alice", "bob"]}


def test_each_room_framed_with_its_own_id_and_no_other(client):
    alice = client("alice")
    others = {room: client(f"m{room}") for room in (1, 2, 3)}
    for room, member in others.items():
        member.join(room)
        alice.join(room)
    # Two rooms in one send, as a client multiplexing rooms may well do.
    alice.send_raw(encode_frame(1, "to one") + encode_frame(2, "to two"))
    alice.say(3, "to three")
    for room, member in others.items():
        member.say(room, f"from {room}")
    for room, member in others.items():
        member.expect(f"<alice> to {['one', 'two', 'three'][room - 1]}", room=room)
        alice.expect(f"<m{room}> from {room}", room=room)
    received = [(line.room, line.body) for line in alice.transcript if line.kind == "message"]
    assert sorted(received) == [(1, "<m1> from 1"), (2, "<m2> from 2"), (3, "<m3> from 3")]
    for room, member in others.items():
        sync(member)
        wrong = [str(line) for line in member.transcript if line.room not in (room, 0)]
        assert wrong == [], f"m{room} received lines of another room"


def test_messages_reach_every_other_member_whole_and_in_order(client):
    alice, bob, carol = client("alice"), client("bob"), client("carol")
    for c in (alice, bob, carol):
        c.join(9)
    texts = [f"line {i}: " + "x" * (i * 37 % 300) for i in range(50)]
    texts.append("with a newline\ninside")
    # Half sent frame by frame, half glued into one send.
    for text in texts[:25]:
        alice.say(9, text)
    alice.send_raw(b"".join(encode_frame(9, text) for text in texts[25:]))
    for member in (bob, carol):
        member.expect("<alice> with a newline\ninside", room=9)
        assert member.messages(9) == [f"<alice> {text}" for text in texts]
    # Not back to the sender.
    assert [line for line in sync(alice) if line.kind == "message"] == []


def test_leave_command_notifies_and_stops_delivery(server, client):
    alice, bob = client("alice"), client("bob")
    alice.join(5)
    bob.join(5)
    bob.leave(5)  # waits for "* you left room 5."
    alice.expect("* bob left room 5.", room=5)
    assert alice.transcript[-1].body == "* bob left room 5."  # no reason on a plain /leave
    alice.say(5, "anyone?")
    assert [line.body for line in sync(bob)] == []
    assert server.rooms() == {5: ["alice"]}


def test_leave_notice_on_disconnect_gives_the_reason(server, client):
    alice, bob = client("alice"), client("bob")
    alice.join(5)
    bob.join(5)
    bob.close()  # EOF
    alice.expect("* bob left room 5 (closed the connection).", room=5, kind="notice")
    wait_for(lambda: server.rooms() == {5: ["alice"]}, "bob to be gone from room 5")


def test_empty_rooms_disappear(server, client):
    alice, bob = client("alice"), client("bob")
    alice.join(5)
    alice.join(6)
    bob.join(6)
    assert server.rooms() == {5: ["alice"], 6: ["alice", "bob"]}
    alice.leave(5)
    assert server.rooms() == {6: ["alice", "bob"]}
    assert server.statistics().rooms == 1
    alice.quit()
    wait_for(lambda: server.rooms() == {6: ["bob"]}, "alice to be gone from room 6")
    bob.close()
    wait_for(lambda: server.rooms() == {}, "room 6 to disappear")
    assert server.statistics().rooms == 0


def test_members_without_nick_are_shown_as_host_port(server, client):
    alice = client("alice")
    anon = client()
    name = "{}:{}".format(*anon.local_address)
    assert anon.local_address[0] == "127.0.0.1"
    alice.join(4)
    anon.join(4)
    assert anon.transcript[-1].body == "* you entered room 4; here: alice"
    alice.expect(f"* {name} entered room 4.", room=4)
    anon.say(4, "who am I?")
    line = alice.expect("who am I?", room=4)
    assert line.sender == name
    assert anon.who(4) == ["alice", name]
    assert server.rooms() == {4: ["alice", name]}


# ---- commands ----------------------------------------------------------------------------
# Each command's replies are tested directly in test_commands.py (no client, one backend);
# here, what needs the network: real departures, quits, and that replies reach only the
# one who asked.


def test_longest_nick_is_accepted(client):
    longest = "a" * protocol.MAX_NICK_LENGTH
    c = client(longest)
    assert c.name == longest


def test_nick_released_on_disconnect_and_on_rename(client):
    alice, bob = client("alice"), client("bob")
    alice.join(1)
    bob.join(1)
    sync(alice)  # closing with unread bytes would be a reset, not an EOF
    alice.close()
    bob.expect("* alice left room 1 (closed the connection).", room=1)
    client("alice")  # free again: nick() raises ExpectTimeout if refused
    bob.nick("robert")
    client("bob")  # the old nick is released by a rename too
    with pytest.raises(chatlab.ExpectTimeout, match="is taken"):
        client("Robert")


def test_nick_released_on_quit(client):
    alice = client("alice")
    alice.quit()
    client("alice")


@pytest.mark.parametrize("reason", ["gone fishing", ""])
def test_quit_command(server, client, reason):
    alice, bob = client("alice"), client("bob")
    for room in (1, 2):
        alice.join(room)
        bob.join(room)
    shown = f"quit: {reason}" if reason else "quit"
    bob.send(1, f"/quit {reason}".rstrip())
    line = bob.expect(f"* bye ({shown}).", room=0, kind="notice")
    assert bob.transcript[-1] is line, "the goodbye is the last line"
    bob.wait_closed()
    for room in (1, 2):
        alice.expect(f"* bob left room {room} ({shown}).", room=room)
    wait_for(lambda: server.statistics().disconnects.get("quit") == 1, "the quit to be counted")


def test_quit_ignores_what_follows_it(client):
    alice, bob = client("alice"), client("bob")
    alice.join(1)
    bob.join(1)
    bob.send_raw(encode_frame(1, "/quit") + encode_frame(1, "after the quit"))
    bob.wait_closed()
    alice.expect("* bob left room 1 (quit).", room=1)
    assert [line for line in sync(alice) if line.kind == "message"] == []


def test_reset_right_after_quit_releases_the_connection(backend):
    # The goodbye cannot be sent to a peer that reset: the connection must be released at
    # once, not after the linger timer (30 s here, far past this test's 5 s bound).
    with serve(backend=backend, limits=chatlab.Limits(linger_seconds=30)) as srv:
        with ScriptedClient(srv.address, "alice") as alice:
            alice.join(1)
            sock = socket.create_connection(srv.address, timeout=TIMEOUT)
            sock.sendall(b"<RID:1></RID:1><RID:1>/quit</RID:1>")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # SO_LINGER 0: close() sends a reset
            alice.expect(re.compile(r"left room 1 \((quit|connection reset)\)\."), room=1)
            wait_for(
                lambda: srv.statistics().connections == 1,
                "the reset connection to be released",
                timeout=TIMEOUT,  # the bound the comment above counts on: far below 30 s
            )
            assert srv.rooms() == {1: ["alice"]}


def test_replies_go_only_to_the_sender(client):
    alice, bob = client("alice"), client("bob")
    alice.join(1)
    bob.join(1)
    replies = {
        "/who": "* room 1: ",
        "/rooms": "* rooms (members): ",
        "/help": "* commands: ",
        "/frob": "! unknown command",
        "/leave 9": "! you are not in room 9",
        "/nick bad nick": "! invalid nick",
        "/nick bob": "! nick 'bob' is taken",
        "/me": "! usage: /me ACTION",
        "/join 1": "* you are already in room 1.",
        "/join x": "! not a room number",
    }
    for line, reply in replies.items():
        alice.command(1, line, reply=reply)
    alice.command(0, "/who 1", reply="* room 1: ")  # replies come in the room asked from
    assert [line.body for line in sync(bob)] == []


# ---- text ------------------------------------------------------------------------------


def test_non_ascii_text_round_trips(client):
    alice, bob = client("alice"), client("bob")
    alice.join(1)
    bob.join(1)
    text = "héllo wörld — 你好, мир 🎉"
    alice.say(1, text)
    line = bob.expect(text, room=1)
    assert line.text == text
    assert bob.messages(1) == [f"<alice> {text}"]


def test_invalid_utf8_is_replaced_and_not_fatal(client):
    alice, bob = client("alice"), client("bob")
    alice.join(1)
    bob.join(1)
    alice.send(1, b"caf\xe9 \xff\xfe!")
    line = bob.expect("caf", room=1)
    assert line.text == "caf\ufffd \ufffd\ufffd!"
    alice.say(1, "still here")  # the sender stays connected and is heard
    bob.expect("<alice> still here", room=1)
    alice.command(1, "/who", reply="* room 1: alice, bob (2 members)")
    assert not alice.closed_by_server


# ---- output buffering, statistics -----------------------------------------------------


def test_a_run_of_messages_keeps_its_place_among_commands_and_rooms(server, client):
    # Messages read together go out as one buffer per room (a "run", ChatServer._deliver_run).
    # A run must never overtake what the same read causes next: a /nick, a message to another
    # room, a /me, a join. bob, in both rooms, must see everything in the order alice sent it.
    alice, bob = client("alice"), client("bob")
    for room in (1, 2):
        alice.join(room)
        bob.join(room)
    sync(bob)
    frames = [
        (1, "a1"),
        (1, "a2"),
        (2, "b1"),
        (1, "a3"),
        (1, "/nick alice2"),
        (1, "a4"),
        (1, "/me waves"),
        (2, "b2"),
        (3, ""),  # a join: bob is not there, alice's others see nothing
        (1, "a5"),
    ]
    alice.send_raw(b"".join(encode_frame(room, text) for room, text in frames))
    bob.expect("<alice2> a5", room=1)
    lines = [(line.room, line.body) for line in bob.transcript if line.room in (1, 2)]
    lines = lines[lines.index((1, "<alice> a1")) :]
    assert lines == [
        (1, "<alice> a1"),
        (1, "<alice> a2"),
        (2, "<alice> b1"),
        (1, "<alice> a3"),
        (1, "* alice is now known as alice2."),
        (2, "* alice is now known as alice2."),
        (1, "<alice2> a4"),
        (1, "* alice2 waves"),
        (2, "<alice2> b2"),
        (1, "<alice2> a5"),
    ]
    stats = server.statistics()
    assert stats.frames >= len(frames)


def test_a_run_reaches_the_others_before_its_senders_disconnect_notice(backend):
    # Messages, then a frame over the size limit, all in one read: the others get every
    # message, then the notice that alice was cut off, never the other way round (and the
    # messages are not lost with her).
    limits = chatlab.Limits(max_frame_size=1024)
    with serve(backend=backend, limits=limits) as server:
        alice = ScriptedClient(server.address, nick="alice", timeout=TIMEOUT)
        bob = ScriptedClient(server.address, nick="bob", timeout=TIMEOUT)
        try:
            alice.join(1)
            bob.join(1)
            sync(bob)
            too_big = b"<RID:1>" + b"x" * 2000
            alice.send_raw(encode_frame(1, "one") + encode_frame(1, "two") + too_big)
            bob.expect("alice left room 1", room=1)
            lines = [line.body for line in bob.transcript if line.room == 1]
            assert lines[-3:] == [
                "<alice> one",
                "<alice> two",
                "* alice left room 1 (frame larger than 1024 bytes).",
            ]
        finally:
            alice.close()
            bob.close()


def test_many_queued_messages_arrive_whole_and_in_order(server, client):
    alice, bob = client("alice"), client("bob")
    alice.join(1)
    bob.join(1)
    sync(bob)
    before = server.statistics()
    # 500 messages of ~1 KB (under the 1 MiB output limit), all read by the server before
    # bob reads a byte: what the kernel does not take waits in bob's output buffer.
    texts = [f"{i:03d} " + "abcdefghij" * 100 for i in range(500)]
    for i in range(0, 500, 50):
        alice.send_raw(b"".join(encode_frame(1, text) for text in texts[i : i + 50]))
    sync(alice)  # the server has read all 500 before bob reads a byte
    after = server.statistics()
    bob.expect(f"<alice> {texts[-1]}", room=1, timeout=10)
    assert bob.messages(1) == [f"<alice> {text}" for text in texts]
    assert not bob.closed_by_server
    # The counters: 500 frames in, 500 messages, one delivery each (bob), plus the sync.
    assert after.frames - before.frames == 501
    assert after.messages - before.messages == 500
    assert after.deliveries - before.deliveries == 501
    assert after.bytes_in - before.bytes_in > 500 * 1000
    assert after.connections == 2
    assert after.disconnects == {}


def test_statistics_count_what_happened(server, client):
    zero = server.statistics()
    assert (zero.accepted, zero.connections, zero.rooms, zero.frames, zero.deliveries) == (
        (0, 0, 0, 0, 0)
    )
    alice, bob, carol = client("alice"), client("bob"), client("carol")
    for c in (alice, bob, carol):
        c.join(1)
    sync(alice)
    before = server.statistics()
    assert (before.accepted, before.connections, before.rooms) == (3, 3, 1)
    for i in range(10):
        alice.say(1, f"m{i}")
    sync(alice)
    after = server.statistics()
    assert after.frames - before.frames == 11  # ten messages and the sync
    assert after.messages - before.messages == 10
    assert after.deliveries - before.deliveries == 21  # two copies each, and the sync reply
    assert after.bytes_in > before.bytes_in and after.bytes_out > before.bytes_out
    bob.expect("<alice> m9")
    carol.expect("<alice> m9")
    bob.close()
    carol.quit("done")
    stats = wait_for(
        lambda: (s := server.statistics()).connections == 1 and s,
        "two disconnects to be counted",
    )
    assert stats.disconnects == {"closed the connection": 1, "quit": 1}
    assert (stats.accepted, stats.rooms) == (3, 1)
    assert server.rooms() == {1: ["alice"]}


# ---- servers as objects ----------------------------------------------------------------


def test_two_servers_in_one_process_are_independent(backend):
    other = next((b for b in available_backends() if b != backend), None)
    if other is None:
        pytest.skip("only one backend available here")
    with serve(backend=backend) as first, serve(backend=other) as second:
        assert (first.backend, second.backend) == (backend, other)
        assert first.address != second.address
        with (
            ScriptedClient(first.address, "alice") as a1,
            ScriptedClient(first.address, "bob") as b1,
            ScriptedClient(second.address, "alice") as a2,  # nicks are per server
            ScriptedClient(second.address, "bob") as b2,
        ):
            for c in (a1, b1, a2, b2):
                c.join(1)
            a1.say(1, "on the first")
            a2.say(1, "on the second")
            b1.expect("<alice> on the first", room=1)
            b2.expect("<alice> on the second", room=1)
            assert b1.messages() == ["<alice> on the first"]
            assert b2.messages() == ["<alice> on the second"]
            assert first.rooms() == second.rooms() == {1: ["alice", "bob"]}
            a1.quit()
            b1.expect("* alice left room 1 (quit).")
            assert [line.body for line in sync(b2)] == []
            assert second.rooms() == {1: ["alice", "bob"]}
    for srv in (first, second):
        assert srv.loop.is_closed()


def test_rooms_and_statistics_can_be_read_from_another_thread(backend):
    # Tests and notebooks read the server's state from their own thread while the loop's
    # thread changes it; a copy must never fail with "changed size during iteration".
    # alice sends 3,160 frames at once: the flood control (100 a second) is off for her.
    with serve(backend=backend, limits=chatlab.Limits(max_message_rate=0)) as server:
        with ScriptedClient(server.address, "alice", timeout=TIMEOUT) as alice:
            _read_while_rooms_change(server, alice)


def _read_while_rooms_change(server, alice):
    problems: list[BaseException] = []
    done = threading.Event()

    def read_state() -> None:
        while not done.is_set():
            try:
                server.rooms()
                server.statistics()
            except Exception as exc:  # any failure is the finding
                problems.append(exc)
                return

    reader = threading.Thread(target=read_state, name="state-reader")
    reader.start()
    try:
        for _ in range(20):
            alice.send_raw(b"".join(encode_frame(room, "") for room in range(1, 80)))
            alice.send_raw(b"".join(encode_frame(room, "/leave") for room in range(1, 80)))
        sync(alice)
    finally:
        done.set()
        reader.join(TIMEOUT)
    assert not reader.is_alive()
    assert problems == []
    assert server.rooms() == {}


def _server_threads(port: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"chatlab-server-{port}"]


def test_serve_stops_cleanly(backend):
    with serve(backend=backend) as srv:
        host, port = srv.address
        assert len(_server_threads(port)) == 1
        with ScriptedClient(srv.address, "alice") as alice:
            alice.join(1)
            alice.quit()
    assert _server_threads(port) == [], "the server thread outlived serve()"
    assert srv.loop.is_closed()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=TIMEOUT).close()


def test_serve_stops_cleanly_with_no_client_ever(backend):
    with serve(backend=backend) as srv:
        host, port = srv.address
    assert _server_threads(port) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=TIMEOUT).close()


def test_clients_told_when_serve_block_exits(backend):
    with serve(backend=backend) as srv:
        alice = ScriptedClient(srv.address, "alice")
        bob = ScriptedClient(srv.address, "bob")
        old = socket.create_connection(srv.address, timeout=TIMEOUT)
        try:
            for c in (alice, bob):
                c.join(1)
                c.join(2)
            old.sendall(b"<RID:1></RID:1>")
            read_until(old, b"you entered room 1")
            sync(alice)
            sync(bob)
        except BaseException:
            for c in (alice, bob, old):
                c.close()
            raise
    try:
        for c in (alice, bob):
            start = len(c.transcript)
            line = c.expect("* bye (server shutting down).", room=0, kind="notice")
            c.wait_closed()
            assert c.transcript[-1] is line, f"lines after the goodbye: {since(c, start)}"
            # Everyone is going: no leave notices for the others.
            assert not [x for x in c.transcript[start:] if "left room" in x.body]
        data = read_to_eof(old)
        assert data.endswith(b"<RID:0>* bye (server shutting down).</RID:0>"), data
        assert_readable_frames(data)
    finally:
        for c in (alice, bob, old):
            c.close()
