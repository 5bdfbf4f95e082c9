"""Bad input from one client, on every backend (see conftest.backend).

The principle under test: bad input gets a clear error, and nothing is lost. The server keeps
serving everyone else, the offender gets a readable reason, and well-behaved clients lose no
message. "Bad" here is what one client sends that the protocol does not allow, or sends in an
awkward way: frames cut anywhere and run together, garbage and malformed frames, a frame over
the size limit, invalid UTF-8, EOF in the middle of a frame, half-closes, resets, random
protocol bytes.

Most tests play in ``helpers.room_with_offender``: alice and bob chat in room R, carol in
room S, and mallory, in R, misbehaves; afterwards the pair must still chat both ways. Every
wait is bounded (helpers.py says how); the server is stopped after the clients are closed,
and its loop must show no callback that raised and no fd closed while registered.

The limits a well-formed client can reach (output buffer, connections, file descriptors, a
1 MiB frame within raised limits) are in test_limits.py; many clients at once, in test_load.py.
"""

from __future__ import annotations

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
    connect_many,
    connection_count,
    errors_in_room0,
    in_loop,
    members,
    paced_stream,
    reset,
    room_with_offender,
    running,
    sync,
    wait_for,
)

import chatlab
from chatlab import ScriptedClient, encode_frame

# ------------------------------------------------- 1. split, coalesced, interleaved frames


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


# --------------------------------------- 2. bad bytes, malformed frames, an oversize frame

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


# --------------------------------------------------------------------------- 3. half-close


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


# ----------------------------------------------------------------- 4. resets mid-broadcast


@pytest.mark.slow
def test_100_clients_reset_in_the_middle_of_a_broadcast(backend):
    room, count, victims_n = 31, 3000, 100
    texts = [f"r{i:04d}" for i in range(count)]
    # 3,000 messages as fast as the readers take them: a load, so no flood control.
    with running(backend, limits=chatlab.Limits(max_message_rate=0)) as (server, stack):
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


# ------------------------------------------------------------------------- 5. random bytes

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
