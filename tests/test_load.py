"""The chat server under load, on every backend (see conftest.backend).

The principle under test: many clients at once cost the server work, never correctness. A
crowd of idle, stalled or vanishing connections holds up no one; 1,000 clients are served
(on select, those whose fd would pass FD_SETSIZE are refused with the reason, the rest
served); concurrent senders are delivered exactly once and in each sender's order; and after
a busy session no socket is left open.

Nothing asserts speed. Every wait has a generous deadline and fails saying what it waited
for; every load loop has a fixed count and stops by itself (helpers.py says how).
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading

import pytest
from helpers import (
    TIMEOUT,
    Peer,
    check_refused_for_fd_setsize,
    connect_many,
    connection_count,
    in_loop,
    members,
    read_to_eof,
    reset,
    running,
    wait_for,
)

from chatlab import ScriptedClient, encode_frame
from chatlab.backends import FD_SETSIZE

# -------------------------------------------------------------- 1. 500 stalled half-frames


@pytest.mark.slow
def test_500_half_frames_do_not_hold_up_a_chatting_pair(backend):
    room, n = 77, 500
    with running(backend) as (server, stack):
        alice = stack.enter_context(ScriptedClient(server.address, nick="alice"))
        bob = stack.enter_context(ScriptedClient(server.address, nick="bob"))
        alice.join(room)
        bob.join(room)
        stalled, refused = connect_many(server, n, stack)
        check_refused_for_fd_setsize(backend, refused)
        for i, sock in enumerate(stalled):
            frame = encode_frame(room if i % 2 else i + 1, f"half {i} never finished")
            sock.sendall(frame[: 1 + i % (len(frame) - 1)])  # cut anywhere, never whole
        for i in range(50):
            alice.say(room, f"a{i:02d}")
            bob.say(room, f"b{i:02d}")
        bob.expect("<alice> a49", room=room)
        alice.expect("<bob> b49", room=room)
        assert bob.messages() == [f"<alice> a{i:02d}" for i in range(50)]
        assert alice.messages() == [f"<bob> b{i:02d}" for i in range(50)]
        assert members(server, room) == ["alice", "bob"]
        for sock in stalled:
            sock.close()
        wait_for(lambda: connection_count(server) == 2, "the server to drop the 500 half frames")
        alice.say(room, "done")
        bob.expect("<alice> done", room=room)
        assert not any("never finished" in line.body for line in bob.transcript)
        assert not any("never finished" in line.body for line in alice.transcript)


# ------------------------------------------------------------------------ 2. 1,000 clients


@pytest.mark.slow
def test_1000_simultaneous_clients(backend):
    n, rooms = 1000, [101, 102, 103, 104, 105, 106, 107, 108]
    with running(backend) as (server, stack):
        # A first hundred, all served before the rest arrive (so that on select, where the
        # rest soon pass FD_SETSIZE, there is surely a crowd below it left to chat).
        kept, refused = connect_many(server, 100, stack)
        assert not refused
        more_kept, refused = connect_many(server, n - 100, stack)
        kept += more_kept
        if backend == "select":
            # The test process holds the client ends, so the server's fds pass 1024 quickly:
            # those past it are told why and closed, the others are served.
            assert refused, "on select, some of 1000 connections must pass FD_SETSIZE"
            fds = [c.fd for c in in_loop(server, server.connections)]
            assert max(fds) < FD_SETSIZE
        check_refused_for_fd_setsize(backend, refused)
        assert connection_count(server) == len(kept)
        assert server.statistics().refused == len(refused)

        where = {}
        for i, sock in enumerate(kept):
            where[sock] = rooms[i % len(rooms)]
            sock.sendall(encode_frame(where[sock], ""))
        wait_for(
            lambda: sum(len(m) for m in in_loop(server, server.rooms).values()) == len(kept),
            f"{len(kept)} clients to join",
        )
        speakers = {}
        for sock in kept:
            speakers.setdefault(where[sock], sock)
        for room, sock in speakers.items():
            sock.sendall(encode_frame(room, f"hello room {room}"))
        names = {c.address[1]: c.name for c in in_loop(server, server.connections)}
        for sock in kept:
            room = where[sock]
            speaker = speakers[room]
            if sock is speaker:
                continue
            name = names[speaker.getsockname()[1]]
            want = encode_frame(room, f"<{name}> hello room {room}")
            data = bytearray()
            while want not in data:
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    pytest.fail(f"a member of room {room} never got {want!r}")
                assert chunk, f"a member of room {room} was disconnected"
                data += chunk
        for sock in kept + refused:
            sock.close()
        wait_for(lambda: connection_count(server) == 0, "the server to drop 1000 clients")
        # And it goes on serving: a fresh pair chats.
        alice = stack.enter_context(ScriptedClient(server.address, nick="alice"))
        bob = stack.enter_context(ScriptedClient(server.address, nick="bob"))
        bob.join(5)
        alice.say(5, "after the crowd")
        bob.expect("<alice> after the crowd", room=5)


# --------------------------------------------------------------- 3. exactly once, in order


def test_concurrent_senders_are_delivered_exactly_once_in_order(backend):
    room, senders_n, readers_n, count = 9000, 5, 5, 200
    with running(backend) as (server, stack):
        senders = [stack.enter_context(Peer(server.address, f"s{k}")) for k in range(senders_n)]
        readers = [stack.enter_context(Peer(server.address, f"r{k}")) for k in range(readers_n)]
        everyone = senders + readers
        for peer in everyone:
            peer.join(room)

        failures: list[BaseException] = []

        def send_all(k: int) -> None:
            try:
                for i in range(count):
                    senders[k].send(room, f"s{k}-m{i:04d}")
                senders[k].send(room, f"s{k}-end")
            except BaseException as exc:  # reported by the test thread below
                failures.append(exc)

        threads = [threading.Thread(target=send_all, args=(k,)) for k in range(senders_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not failures, f"a sender failed: {failures[0]!r}"
        # A sender's end marker comes after all it sent (one connection, one order), so once
        # every member has every other sender's marker, any duplicate would be here too.
        for peer in everyone:
            for k in range(senders_n):
                if peer is not senders[k]:
                    peer.wait_for(f"<s{k}> s{k}-end", room=room)
        for peer in everyone:
            for k in range(senders_n):
                got = peer.messages(room, f"s{k}")
                if peer is senders[k]:
                    assert got == [], "a sender must not get its own messages back"
                else:
                    assert got == [f"s{k}-m{i:04d}" for i in range(count)] + [f"s{k}-end"]


# --------------------------------------------------------------------- 4. no stale sockets


def test_no_socket_is_left_open_after_a_busy_session(backend):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting open fds needs /proc/self/fd (Linux)")

    def open_fds() -> int:
        gc.collect()  # a socket some earlier test dropped without closing is not ours
        return len(os.listdir("/proc/self/fd"))

    baseline = open_fds()
    with running(backend) as (server, stack):
        with contextlib.ExitStack() as clients:
            peers = [clients.enter_context(Peer(server.address, f"p{i}")) for i in range(30)]
            for i, peer in enumerate(peers):
                peer.join(1 + i % 3)
            raw = [
                clients.enter_context(socket.create_connection(server.address, timeout=TIMEOUT))
                for _ in range(40)
            ]
            for i, sock in enumerate(raw[10:]):
                sock.sendall(encode_frame(1 + i % 3, "") + b"garbage <RID:1>half a fra")
            for round_ in range(10):
                for i, peer in enumerate(peers[10:]):
                    peer.send(1 + i % 3, f"round {round_} from {i}")
                # Meanwhile, ways to go: reset (some before the server has even read
                # anything), half-close, close, /leave, /quit, a frame over the limit.
                reset(raw[round_])
                reset(raw[10 + round_])
                raw[20 + round_].shutdown(socket.SHUT_WR)
                raw[30 + round_].close()
                peers[round_].send(1 + round_ % 3, "/leave")
                if round_ % 2:
                    peers[round_].send(0, "/quit bye")
            big = clients.enter_context(socket.create_connection(server.address, timeout=TIMEOUT))
            with contextlib.suppress(OSError):
                big.sendall(b"<RID:1>" + b"q" * 100_000)
            assert read_to_eof(big).endswith(b"frame larger than 65536 bytes</RID:0>")
            peers[10].wait_for("<p29> round 9 from 19", room=2)
        wait_for(lambda: connection_count(server) == 0, "the server to drop every client")
    assert open_fds() == baseline, "a socket (or the loop's own fds) outlived the server"
