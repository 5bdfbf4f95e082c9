"""Each limit of chatlab.Limits (and the process's own fd limit), reached, on every backend.

The principle under test: a client that reaches a limit is told which one and why, in a
sentence, and cut off or refused; everyone else goes on and loses nothing, and the server's
memory for that client stays within the limit. One section per limit (redis's
tests/unit/obuf-limits.tcl, querybuf.tcl): the frame and input buffer sizes (a 1 MiB frame),
the output buffer (a client that never reads, and 300 that stall at once), the process's file
descriptors, max_connections. State is read through the server's public snapshots
(``connections()``, ``statistics()``, ``rooms()``), on its loop's thread (``helpers.in_loop``).

A frame just over max_frame_size, as one client's bad input, is in test_bad_input.py.
"""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
from helpers import (
    TIMEOUT,
    Peer,
    R,
    connect_many,
    connection_count,
    errors_in_room0,
    held_ports,
    in_loop,
    loop_held,
    members,
    paced_stream,
    read_to_eof,
    room_with_offender,
    running,
    sync,
    wait_for,
)

import chatlab
from chatlab import ScriptedClient, encode_frame

try:
    import resource
except ImportError:  # Windows
    resource = None


# -------------------------------------- 1. max_frame_size, max_input_buffer: a 1 MiB frame


def one_mib_body() -> bytes:
    # Distinct, checkable content: "0000000,0000001,..." cut to exactly 1 MiB.
    text = ",".join(f"{i:07d}" for i in range(140_000)).encode()
    return text[: 1024 * 1024]


def test_a_1mib_frame_with_default_limits_disconnects_only_its_sender(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        try:
            mallory.send(R, one_mib_body())
        except OSError:
            # The server may reset us while we are still sending: it closed a socket it had
            # not read to the end. The reason was sent before the reset; we read it below.
            pass
        mallory.wait_closed()
        assert errors_in_room0(mallory) == ["! disconnected: frame larger than 65536 bytes"]
        bob.expect("* mallory left room 700 (frame larger than 65536 bytes).", room=R)
        assert bob.messages() == [] and carol.messages() == []


def test_a_1mib_frame_within_raised_limits_is_delivered_whole(backend):
    limits = chatlab.Limits(
        max_frame_size=2 * 1024 * 1024,
        max_input_buffer=4 * 1024 * 1024,
        max_output_buffer=8 * 1024 * 1024,
    )
    body = one_mib_body()
    with room_with_offender(backend, limits=limits) as (server, alice, bob, carol, mallory):
        mallory.send(R, body)
        for member in (alice, bob):
            line = member.expect("<mallory> 0000000,", room=R)
            assert line.text.encode() == body
        sync(mallory)
        assert errors_in_room0(mallory) == []
        assert carol.messages() == []


# ----------------------------------------- 2. max_output_buffer: a client that never reads


def kernel_send_buffer_max() -> int:
    """The most a kernel lets one TCP socket queue for sending (Linux autotunes up to it)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024  # Linux's default, for platforms without /proc


@pytest.mark.slow
def test_a_client_that_never_reads_is_cut_off_and_the_readers_lose_nothing(backend):
    room, count = 4242, 20_000
    out_limit = 64 * 1024
    reason = f"output buffer over {out_limit} bytes: you are not reading"
    # Before the server's output buffer for the slow client grows at all, the kernel queues
    # as much as that socket's send buffer holds, and Linux autotunes it up to tcp_wmem's
    # maximum (4 MiB by default; measured here: the whole 20,000 short messages fit). So the
    # messages are padded until the stream is twice what kernel and limit can hold together.
    frame_size = 2 * (kernel_send_buffer_max() + out_limit) // count
    pad = "x" * max(80, frame_size - len(encode_frame(room, "<sender> m00000 ")))
    texts = [f"m{i:05d} {pad}" for i in range(count)]
    # The readers must never be the ones cut off: with at most half the limit in flight,
    # their output buffers cannot reach it even if their kernel buffers held nothing.
    window = max(3, out_limit // 2 // len(encode_frame(room, f"<sender> {texts[0]}")))
    # A long linger: the slow client reads its goodbye only after the stream, and we want
    # to see that it does get it (the bound is only a bound: it reads at once, below).
    # The sender streams 20,000 messages as fast as the readers take them: a load, not a
    # person, so the flood control (100 a second by default) is off, as in the benchmarks.
    limits = chatlab.Limits(max_output_buffer=out_limit, linger_seconds=30.0, max_message_rate=0)
    with running(backend, limits=limits) as (server, stack):
        readers = [stack.enter_context(Peer(server.address, f"reader{i}")) for i in (1, 2)]
        sender = stack.enter_context(Peer(server.address, "sender"))
        for peer in (*readers, sender):
            peer.join(room)
        # A small receive buffer too, so the kernel holds as little as it can for it.
        slow = stack.enter_context(Peer(server.address, rcvbuf=4096, read=False))
        slow.send(0, "/nick slow")
        slow.send(room, "")
        wait_for(lambda: "slow" in members(server, room), "slow to join")

        # Memory stays bounded: the server's only per-client memory that grows with what
        # others send is each connection's output buffer, and the limit is on exactly that.
        # Process RSS would be noise (allocator, GC, the test's own threads), so we sample,
        # on the loop thread between handlers, the largest output buffer of any connection.
        peak = 0

        def sample(sent):
            nonlocal peak
            if sent % 1000 < window // 3:
                snapshot = in_loop(server, server.connections)
                peak = max(peak, max(c.output_queued for c in snapshot))

        paced_stream(
            sender, room, texts, readers, on_batch=sample, window=window, batch=window // 3
        )
        for reader in readers:
            wait_for(
                lambda reader=reader: len(reader.messages(room, "sender")) >= count,
                f"{reader} to receive all {count} messages",
            )
            assert reader.messages(room, "sender") == texts
            reader.wait_for(f"* slow left room {room} ({reason}).", room=room)
        assert server.statistics().disconnects == {reason.partition(":")[0]: 1}
        assert peak <= out_limit

        # Now it reads: what the kernel held for it, in order and without a gap (the rest
        # was dropped with its buffer), then the reason, then EOF.
        slow.start_reading()
        wait_for(lambda: slow.eof, "the server to close the slow client")
        got = slow.messages(room, "sender")
        assert 0 < len(got) < count and got == texts[: len(got)]
        assert slow.frames[-1] == (0, f"! disconnected: {reason}")
        # The server half-closed (FIN) and waits for ours before close(), so that its reason
        # is never lost to a reset; a client closes when it reads EOF.
        slow.close()
        wait_for(lambda: connection_count(server) == 3, "the server to let the slow client go")


# ----------------------------------- 3. max_output_buffer: many cut off at the same moment


@pytest.mark.slow
def test_a_room_of_300_stalled_members_cut_off_at_once(backend):
    # One burst overflows every stalled member in the same pass; each one cut off sends a
    # leave notice to the others, which pushes the next one over, and so on 300 deep.
    room, n, out_limit = 55, 300, 64 * 1024
    reason = f"output buffer over {out_limit} bytes: you are not reading"
    # The server offers the kernel what it has before it calls anyone slow, so the stalled
    # members' kernel buffers must be small: a 4 KiB SO_SNDBUF on the server's side and a
    # 4 KiB receive buffer on theirs. (So small a window makes loopback TCP crawl through
    # zero-window probes if they read later, so they never do: the reason's arrival is
    # checked by the single slow-reader test above.)
    # The burst is 3,000 messages: no flood control for it (the members all receive the same
    # frames, so they still cross the limit in the same pass, 64 frames a pass or not).
    limits = chatlab.Limits(
        max_output_buffer=out_limit, kernel_send_buffer=4096, max_message_rate=0
    )
    with running(backend, limits=limits) as (server, stack):
        sender = stack.enter_context(Peer(server.address, "sender"))
        sender.join(room)
        alice = stack.enter_context(ScriptedClient(server.address, nick="alice"))
        bob = stack.enter_context(ScriptedClient(server.address, nick="bob"))
        alice.join(room + 1)
        bob.join(room + 1)
        stalled, refused = connect_many(server, n, stack, rcvbuf=4096)
        assert not refused
        for sock in stalled:
            sock.sendall(encode_frame(room, ""))
        wait_for(lambda: len(members(server, room)) == n + 1, f"{n} members to join")
        # Tiny frames, fewer than one recv() takes, that queue more than the limit for
        # every member: "<RID:55>123</RID:55>" goes out as "<RID:55><sender> 123</RID:55>".
        burst = b"".join(encode_frame(room, f"{i}") for i in range(3000))
        queued_per_member = len(burst) + 3000 * len("<sender> ")
        assert len(burst) <= 64 * 1024 and queued_per_member > out_limit * 1.2
        with loop_held(server):
            sender.send_raw(burst)
        kind = reason.partition(":")[0]
        wait_for(
            lambda: server.statistics().disconnects.get(kind) == n, f"the server to cut off all {n}"
        )
        assert server.statistics().disconnects == {kind: n}
        assert members(server, room) == ["sender"]
        for sock in stalled:
            sock.close()  # the server waits for our FIN (or its linger) before close()
        wait_for(lambda: connection_count(server) == 3, "the server to close all of them")

        def lefts() -> int:
            return sum(1 for r, b in sender.frames if r == room and b.endswith(f"({reason})."))

        wait_for(lambda: lefts() >= n, f"the sender to see {n} leave notices")
        assert lefts() == n
        alice.say(room + 1, "unaffected")
        bob.expect("<alice> unaffected", room=room + 1)


# -------------------------------------------------------------- 4. out of file descriptors


def open_fd_numbers() -> set[int]:
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    alive = set()
    for fd in listed:  # one of them was listdir's own, closed by now
        with contextlib.suppress(OSError):
            os.fstat(fd)
            alive.add(fd)
    return alive


def test_out_of_file_descriptors_the_server_says_so_and_keeps_serving(backend):
    if resource is None or not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs setrlimit and /proc/self/fd (Linux)")
    n, room_for = 10, 3  # ten clients, fd numbers left for three
    with running(backend) as (server, stack):
        alice = stack.enter_context(ScriptedClient(server.address, nick="alice"))
        bob = stack.enter_context(ScriptedClient(server.address, nick="bob"))
        alice.join(9)
        bob.join(9)
        # Made before the limit drops: connect() takes no new fd, accept() does.
        clients = [stack.enter_context(socket.socket()) for _ in range(n)]
        used = open_fd_numbers()
        limit, unused = 0, 0
        while unused < room_for:  # the lowest fd limit with room_for numbers free below it
            unused += limit not in used
            limit += 1
        before = server.statistics()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            for sock in clients:
                sock.settimeout(TIMEOUT)
                sock.connect(server.address)

            def handled() -> int:
                now = server.statistics()
                return now.accepted - before.accepted + now.refused - before.refused

            wait_for(lambda: handled() == n, f"the server to handle {n} clients")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        stats = server.statistics()
        assert stats.accepted - before.accepted == room_for
        assert stats.refused - before.refused == n - room_for
        held = held_ports(server)
        for sock in clients:
            if sock.getsockname()[1] not in held:
                reason = "! server out of file descriptors; try again later"
                assert read_to_eof(sock) == encode_frame(0, reason)
        alice.say(9, "still serving")
        bob.expect("<alice> still serving", room=9)
        late = stack.enter_context(ScriptedClient(server.address, nick="late"))
        late.say(9, "me too")
        bob.expect("<late> me too", room=9)


# ---------------------------------------------------------------------- 5. max_connections


def test_the_client_over_max_connections_is_told_why_and_the_others_go_on(backend):
    with running(backend, limits=chatlab.Limits(max_connections=5)) as (server, stack):
        clients = [
            stack.enter_context(ScriptedClient(server.address, nick=f"c{i}")) for i in range(5)
        ]
        sixth = stack.enter_context(socket.create_connection(server.address, timeout=TIMEOUT))
        assert read_to_eof(sixth) == encode_frame(0, "! server full (5 connections)")
        for client in clients:
            client.join(3)
        clients[0].say(3, "five is enough")
        for client in clients[1:]:
            client.expect("<c0> five is enough", room=3)
        stats = server.statistics()
        assert (stats.accepted, stats.refused, stats.connections) == (6, 1, 5)
