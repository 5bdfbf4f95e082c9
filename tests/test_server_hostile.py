"""The chat server under hostile input and load, on every backend (see conftest.backend).

The principle under test: bad input gets a clear error, and nothing is lost. The server keeps
serving everyone else, the offender gets a readable reason, and well-behaved clients lose no
message.

How these tests stay honest and bounded:

- Real sockets on 127.0.0.1, port 0, a real server on a background thread (``helpers.running``);
  no mocks. Every test runs once per backend.
- Nothing asserts speed. Every wait has a generous deadline and fails saying what it waited
  for; every load loop has a fixed count and stops by itself.
- Load tests pace the sender against the readers (at most WINDOW messages in flight), so a
  test about a slow reader, or about resets, is never accidentally about a flooding sender.
- Server state is read through its public snapshots (``connections()``, ``rooms()``,
  ``statistics()``) on the loop's own thread (``in_loop``): a consistent snapshot, taken
  between two handlers, never in the middle of one.
- Clients are closed before the server stops (``running``); after it stops, the loop's
  counters must show no callback that raised and no fd closed while registered.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import re
import socket
import threading
import time

import pytest
from helpers import (
    TIMEOUT,
    Peer,
    R,
    S,
    check_refused_for_fd_setsize,
    connect_many,
    connection_count,
    errors_in_room0,
    held_ports,
    in_loop,
    loop_held,
    members,
    paced_stream,
    read_to_eof,
    reset,
    room_with_offender,
    running,
    sync,
    wait_for,
)

import chatlab
from chatlab import ScriptedClient, encode_frame
from chatlab.backends import FD_SETSIZE

try:
    import resource
except ImportError:  # Windows
    resource = None


# -------------------------------------------------- 1. split, coalesced, interleaved frames


def test_split_coalesced_and_interleaved_frames_reach_their_rooms_in_order(backend):
    with running(backend) as (server, stack):
        alice = stack.enter_context(ScriptedClient(server.address, nick="alice"))
        bob = stack.enter_context(ScriptedClient(server.address, nick="bob"))
        carol = stack.enter_context(ScriptedClient(server.address, nick="carol"))
        alice.join(11)
        alice.join(22)
        bob.join(11)
        carol.join(22)
        want_bob: list[str] = []
        want_carol: list[str] = []

        # One frame, then three, byte by byte (TCP_NODELAY: each byte is its own segment).
        stream = encode_frame(11, "byte by byte") + b"\r\n"
        stream += b"".join(encode_frame(11, f"slow {i}") for i in range(3))
        for i in range(len(stream)):
            alice.send_raw(stream[i : i + 1])
            time.sleep(0.0005)
        want_bob += ["<alice> byte by byte", "<alice> slow 0", "<alice> slow 1", "<alice> slow 2"]

        # A hundred frames in one send().
        alice.send_raw(b"".join(encode_frame(11, f"burst {i:03d}") for i in range(100)))
        want_bob += [f"<alice> burst {i:03d}" for i in range(100)]

        # Two rooms interleaved in one send(), then again cut at random places.
        mixed = [(11 if i % 2 else 22, f"mix {i:03d}") for i in range(60)]
        stream = b"".join(encode_frame(room, text) for room, text in mixed)
        alice.send_raw(stream)
        rng = random.Random(1)
        cuts = sorted(rng.sample(range(1, len(stream)), 80))
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            alice.send_raw(stream[a:b])
            time.sleep(0.0005)
        for _ in range(2):
            want_bob += [f"<alice> {text}" for room, text in mixed if room == 11]
            want_carol += [f"<alice> {text}" for room, text in mixed if room == 22]

        # An end marker per room: once it arrives, everything before it has arrived too.
        alice.say(11, "end")
        alice.say(22, "end")
        bob.expect("<alice> end", room=11)
        carol.expect("<alice> end", room=22)
        assert bob.messages(11) == [*want_bob, "<alice> end"]
        assert carol.messages(22) == [*want_carol, "<alice> end"]
        assert bob.messages(22) == [] and carol.messages(11) == []
        assert errors_in_room0(alice) == []


# ------------------------------------------------------------------------ 2. bad input

# (id, bad bytes, reason, bytes skipped): each is followed by a good frame for room R.
SKIPPED = [
    ("garbage", b"garbage!", "garbage before frame", 8),
    ("binary", b"\x00\x01\xfe\xff", "garbage before frame", 4),
    ("stray-closing-tag", b"</RID:700>", "garbage before frame", 10),
    ("non-numeric-room", b"<RID:abc>hi</RID:abc>", "room id must be decimal digits", 21),
    ("negative-room", b"<RID:-1>hi</RID:-1>", "room id must be decimal digits", 19),
    ("space-in-room", b"<RID:7 00>hi</RID:700>", "room id must be decimal digits", 22),
    ("missing-room", b"<RID:>hi</RID:>", "room id is missing", 15),
    (
        "ten-digits",
        b"<RID:1234567890>hi</RID:1234567890>",
        "room id has more than 9 digits",
        35,
    ),
    (
        "mismatched-closing-tag",
        b"<RID:700>oops</RID:800>",
        "mismatched closing tag <\\/RID:800> for <RID:700>",
        23,
    ),
    (
        "closing-tag-not-digits",
        b"<RID:700>oops</RID:70a>",
        "mismatched closing tag <\\/RID:70a for <RID:700>",
        23,
    ),
    (
        "leading-zero",  # digits must match as written: 0700 is not 700
        b"<RID:0700>oops</RID:700>",
        "mismatched closing tag <\\/RID:700> for <RID:0700>",
        24,
    ),
]


@pytest.mark.parametrize(
    "bad, reason, skipped", [case[1:] for case in SKIPPED], ids=[case[0] for case in SKIPPED]
)
def test_bad_bytes_are_skipped_with_the_reason_and_the_next_frame_is_delivered(
    backend, bad, reason, skipped
):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(bad + encode_frame(R, "after"))
        bob.expect("<mallory> after", room=R)
        alice.expect("<mallory> after", room=R)
        sync(mallory)
        # However TCP cut the input, the reasons are the same and the counts add up.
        lines = errors_in_room0(mallory)
        counts = []
        for line in lines:
            match = re.fullmatch(r"! skipped (\d+) bytes: (.*)", line)
            assert match and match.group(2) == reason, f"unexpected error line {line!r}"
            counts.append(int(match.group(1)))
        assert sum(counts) == skipped, lines
        # Only the good frame reached anyone; nothing reached the wrong room.
        assert bob.messages(R) == alice.messages(R) == ["<mallory> after"]
        assert carol.messages() == []
        assert server.statistics().disconnects == {}


def test_a_frame_inside_a_broken_one_goes_to_its_own_room(backend):
    # Rule 4 of framing.py: <RID:700>hi<RID:800>there</RID:800> skips "<RID:700>hi" and
    # delivers "there" to room 800, never to room 700.
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(b"<RID:700>hi<RID:800>there</RID:800>" + encode_frame(R, "after"))
        bob.expect("<mallory> after", room=R)
        alice.expect("<mallory> after", room=R)
        carol.expect("<mallory> there", room=S)
        sync(mallory)
        assert errors_in_room0(mallory) == [
            "! skipped 11 bytes: mismatched closing tag <\\/RID:800> for <RID:700>"
        ]
        assert bob.messages() == alice.messages() == ["<mallory> after"]
        assert carol.messages() == ["<mallory> there"]


def test_an_opening_tag_inside_a_body_is_text(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(b"<RID:700>a<RID:800>b</RID:700>")
        bob.expect("<mallory> a<RID:800>b", room=R)
        sync(mallory)
        assert errors_in_room0(mallory) == []
        assert carol.messages() == []


def test_whitespace_between_frames_is_ignored_silently(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(b"\r\n \t" + encode_frame(R, "one") + b"\r\n" + encode_frame(R, "two"))
        bob.expect("<mallory> two", room=R)
        sync(mallory)
        assert errors_in_room0(mallory) == []
        assert bob.messages(R) == ["<mallory> one", "<mallory> two"]


def test_a_flood_of_garbage_is_skipped_as_it_comes_and_costs_no_memory(backend):
    garbage = bytes(random.Random(7).choices(b"abc:>/RID 0123456789", k=1 << 20))
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(garbage)
        # Not one byte of it can start a frame, so the decoder keeps at most a tail that
        # might still become "<RID:" (4 bytes), however much garbage arrives.
        sync(mallory)
        held = max(c.input_buffered for c in in_loop(server, server.connections))
        assert held <= 4
        mallory.send(R, "after")
        bob.expect("<mallory> after", room=R)
        sync(mallory)
        lines = errors_in_room0(mallory)
        assert all(re.fullmatch(r"! skipped \d+ bytes: garbage before frame", x) for x in lines)
        assert sum(int(x.split()[2]) for x in lines) == len(garbage)
        assert bob.messages() == ["<mallory> after"]
        assert server.statistics().disconnects == {}


def test_a_frame_for_room_0_gets_an_error(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(encode_frame(0, "hello everyone") + encode_frame(R, "after"))
        bob.expect("<mallory> after", room=R)
        mallory.expect("! room 0 is the server's; pick another room", room=0)
        assert bob.messages() == ["<mallory> after"] and carol.messages() == []


def test_an_unknown_command_gets_an_error_in_its_room(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send(R, "/frobnicate now")
        mallory.expect("! unknown command /frobnicate; try /help", room=R, kind="error")
        sync(mallory)
        assert bob.messages() == [] and errors_in_room0(mallory) == []


def test_invalid_utf8_is_replaced_not_fatal(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(b"<RID:700>caf\xe9 \xff\xfe ok \xf0\x9f\x98\x80</RID:700>")
        line = bob.expect("<mallory> caf", room=R)
        assert line.text == "caf\ufffd \ufffd\ufffd ok \U0001f600"
        sync(mallory)
        assert errors_in_room0(mallory) == []


def test_a_frame_at_the_limit_is_delivered_and_one_byte_more_disconnects(backend):
    limit = chatlab.Limits().max_frame_size
    body = b"y" * (limit - len(encode_frame(R, b"")))
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(encode_frame(R, body))  # exactly `limit` bytes
        line = bob.expect("<mallory> yyy", room=R)
        assert line.text == body.decode()
        mallory.send_raw(encode_frame(R, body + b"y"))
        bob.expect(f"* mallory left room {R} (frame larger than {limit} bytes).", room=R)
        mallory.wait_closed()
        assert errors_in_room0(mallory) == [f"! disconnected: frame larger than {limit} bytes"]
        assert server.statistics().disconnects == {f"frame larger than {limit} bytes": 1}


def test_a_frame_over_the_limit_disconnects_the_sender_with_the_reason(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(b"<RID:700>" + b"z" * 70_000)  # no closing tag in sight
        mallory.wait_closed()
        assert errors_in_room0(mallory) == ["! disconnected: frame larger than 65536 bytes"]
        bob.expect("* mallory left room 700 (frame larger than 65536 bytes).", room=R)
        alice.expect("* mallory left room 700 (frame larger than 65536 bytes).", room=R)
        assert bob.messages() == [] and carol.messages() == []


@pytest.mark.parametrize("how", ["shutdown", "close"])
def test_eof_in_the_middle_of_a_frame_delivers_nothing_of_it(backend, how):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        mallory.send_raw(encode_frame(R, "complete") + b"<RID:700>partial, never fini")
        bob.expect("<mallory> complete", room=R)
        if how == "shutdown":
            mallory.sock.shutdown(socket.SHUT_WR)
        else:
            mallory.close()
        bob.expect("* mallory left room 700 (closed the connection).", room=R)
        alice.expect("* mallory left room 700 (closed the connection).", room=R)
        if how == "shutdown":
            mallory.wait_closed()  # it can still read: nothing more came, then EOF
            assert errors_in_room0(mallory) == []
        assert bob.messages() == alice.messages() == ["<mallory> complete"]
        assert not any("partial" in line.body for line in bob.transcript + carol.transcript)
        assert server.statistics().disconnects == {"closed the connection": 1}


# --------------------------------------------------------------------- 3. a 1 MiB frame


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


# --------------------------------------------------------- 4. a client that never reads


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
    limits = chatlab.Limits(max_output_buffer=out_limit, linger_seconds=30.0)
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


# ---------------------------------------------------------- 5. resets mid-broadcast


@pytest.mark.slow
def test_100_clients_reset_in_the_middle_of_a_broadcast(backend):
    room, count, victims_n = 31, 3000, 100
    texts = [f"r{i:04d}" for i in range(count)]
    with running(backend) as (server, stack):
        readers = [stack.enter_context(Peer(server.address, f"reader{i}")) for i in (1, 2)]
        sender = stack.enter_context(Peer(server.address, "sender"))
        for peer in (*readers, sender):
            peer.join(room)
        victims, refused = connect_many(server, victims_n, stack)
        assert not refused
        for sock in victims:
            sock.sendall(encode_frame(room, ""))
        wait_for(lambda: len(members(server, room)) == 3 + victims_n, "100 victims to join")

        failures: list[BaseException] = []

        def reset_all() -> None:
            try:
                for sock in victims:
                    reset(sock)
            except BaseException as exc:  # reported by the test thread below
                failures.append(exc)

        resetter = threading.Thread(target=reset_all, daemon=True)

        def maybe_reset(sent):
            # Resets start a third of the way in and are all done before the last third is
            # sent: the server meets them with output queued for the victims, mid-stream.
            if sent == 1000:
                resetter.start()
            elif sent == 2000:
                resetter.join(TIMEOUT)

        try:
            paced_stream(sender, room, texts, readers, on_batch=maybe_reset)
        finally:
            if resetter.ident is not None:
                resetter.join(TIMEOUT)
        assert not failures, f"resetting failed: {failures[0]!r}"
        for reader in readers:
            wait_for(
                lambda reader=reader: len(reader.messages(room, "sender")) >= count,
                f"{reader} to receive all {count} messages",
            )
            assert reader.messages(room, "sender") == texts
        wait_for(lambda: connection_count(server) == 3, "the server to drop the 100 reset clients")
        assert sum(server.statistics().disconnects.values()) == victims_n
        assert len(members(server, room)) == 3
        # Still serving: a newcomer chats with the readers.
        late = stack.enter_context(ScriptedClient(server.address, nick="late"))
        late.say(room, "anyone?")
        readers[0].wait_for("<late> anyone?", room=room)


# ---------------------------------------------------- 5b. many cut off at the same moment


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
    limits = chatlab.Limits(max_output_buffer=out_limit, kernel_send_buffer=4096)
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


# ------------------------------------------------------------------------ 6. half-close


def test_a_half_closed_client_is_heard_and_still_gets_what_was_queued(backend):
    with room_with_offender(backend) as (server, alice, bob, carol, mallory):
        for i in range(5):
            bob.say(R, f"for mallory {i}")
        sync(bob)  # all five are queued for mallory now
        for i in range(3):
            mallory.say(R, f"last words {i}")
        mallory.sock.shutdown(socket.SHUT_WR)
        for member in (alice, bob):
            for i in range(3):
                member.expect(f"<mallory> last words {i}", room=R)
            member.expect("* mallory left room 700 (closed the connection).", room=R)
        mallory.wait_closed()
        assert mallory.messages(R) == [f"<bob> for mallory {i}" for i in range(5)]
        assert errors_in_room0(mallory) == []


# --------------------------------------------------------- 7. 500 stalled half-frames


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


# ------------------------------------------------------------------- 8. random bytes

ALPHABET = b"<>/RID:0123456789 abc\r\n"
BODY = b"abc /<>:RID\r\n"
# Pieces of the protocol, between the frame-shaped runs below.
TOKENS = [b"<RID:", b"</RID:", b">", b"<", b"/", b"a", b"bc", b" ", b"\r\n", b":", b"7"]


def random_input(rng: random.Random, size: int, shaped: bool) -> bytes:
    """``size`` random bytes of the protocol's alphabet.

    Uniform bytes almost never form a header (5 given bytes in a row), so half the inputs
    are shaped: frames for random rooms (1 to 3 digits, or 10: too many), whose closing tag
    mostly matches, with random bodies (joins, commands, text), between random tokens.
    """
    if not shaped:
        return bytes(rng.choices(ALPHABET, k=size))
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.4:
            digits = str(rng.randrange(10 ** rng.choice((1, 2, 3, 3, 10)))).encode()
            closing = digits if rng.random() < 0.7 else str(rng.randrange(100)).encode()
            body = bytes(rng.choice(BODY) for _ in range(rng.randrange(12)))
            out += b"<RID:" + digits + b">" + body + b"</RID:" + closing + b">"
        else:
            out += rng.choice(TOKENS)
    return bytes(out[:size])


@pytest.mark.slow
def test_random_protocol_bytes_on_many_connections_never_reach_a_pair(backend, caplog):
    room, n, size = 987654321, 50, 20 * 1024
    rng = random.Random(20240601)
    inputs = [random_input(rng, size, shaped=i % 2 == 1) for i in range(n)]
    # The pair's room must be out of reach of the random bytes, or the test proves nothing.
    assert not any(str(room).encode() in data for data in inputs)
    with running(backend) as (server, stack):
        alice = stack.enter_context(Peer(server.address, "alice"))
        bob = stack.enter_context(Peer(server.address, "bob"))
        alice.join(room)
        bob.join(room)
        pair_frames = server.statistics().frames
        fuzzers, refused = connect_many(server, n, stack)
        assert not refused
        chunk, said = 1024, 0
        for offset in range(0, size, chunk):
            for sock, data in zip(fuzzers, inputs, strict=True):
                sock.sendall(data[offset : offset + chunk])
            alice.send(room, f"a{said:03d}")
            bob.send(room, f"b{said:03d}")
            said += 1
        # Half-close: the server reads every byte up to EOF, then lets each fuzzer go.
        for sock in fuzzers:
            sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: connection_count(server) == 2, "the server to finish with the fuzzers")
        bob.wait_for(f"<alice> a{said - 1:03d}", room=room)
        alice.wait_for(f"<bob> b{said - 1:03d}", room=room)
        assert bob.messages(room, "alice") == [f"a{i:03d}" for i in range(said)]
        assert alice.messages(room, "bob") == [f"b{i:03d}" for i in range(said)]
        # Nothing in the pair's room but the pair: no message, no notice about a fuzzer
        # (they have no nick, so they would show as host:port).
        for peer, other in ((alice, "bob"), (bob, "alice")):
            for r, body in peer.frames:
                assert r in (0, room), (r, body)
                assert "127.0.0.1" not in body, body
                if r == room and not body.startswith("* "):
                    assert body.startswith(f"<{other}> "), body
        stats = server.statistics()
        assert stats.frames - pair_frames - 2 * said > 1000, "the shaped input formed frames"
        assert stats.bytes_in >= n * size
        assert stats.disconnects == {"closed the connection": n}
        assert in_loop(server, server.loop.statistics).errors == 0
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# ---------------------------------------------------------------- 9. 1,000 clients


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


# ------------------------------------------------------- 10. exactly once, in order


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


# ----------------------------------------------------------------- 11. no stale sockets


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


# ------------------------------------------------------------- 11b. out of descriptors


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


# ------------------------------------------------------------------ 12. max_connections


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
