"""Tests for the sans-I/O framing codec, in the style of h11's test_io.py.

Every input goes through ``check()``, which decodes it whole, one byte at a time, and in a
few random chunkings, and asserts that all of them agree. ``Skipped`` events are emitted
eagerly, so how a run of garbage is cut into events depends on the chunking: ``normalise()``
merges adjacent ``Skipped`` events with the same reason before comparing (the bytes and the
reasons must still agree exactly). Everything else must be identical.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlab.framing import (
    CLOSED,
    FRAME_RE,
    MAX_FRAME_SIZE,
    MAX_ROOM_DIGITS,
    NEED_DATA,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    FramingError,
    Skipped,
    Truncated,
    encode_frame,
)

# ---- helpers ---------------------------------------------------------------------------------


def feed(chunks, *, max_frame_size=MAX_FRAME_SIZE, eof=True):
    """Feed chunks to a fresh decoder, draining events after each; return all events.

    Along the way, check the invariants every caller relies on: NEED_DATA and CLOSED are
    stable, FrameTooLarge is sticky, and the buffer never holds more than one frame's worth
    plus the latest read.
    """
    decoder = FrameDecoder(max_frame_size)
    events = []

    def drain():
        events.extend(decoder.events())
        if events and isinstance(events[-1], FrameTooLarge):
            assert decoder.next_event() is events[-1]
            assert decoder.buffered == 0
            return True
        return False

    for chunk in chunks:
        decoder.receive_data(chunk)
        assert decoder.buffered <= max_frame_size + len(chunk)
        if drain():
            return events
        assert decoder.next_event() is NEED_DATA
        assert decoder.buffered < max_frame_size
    if eof:
        decoder.receive_data(b"")
        if drain():
            return events
        assert decoder.next_event() is CLOSED
        assert decoder.next_event() is CLOSED
        assert decoder.buffered == 0
    return events


def normalise(events):
    """Merge adjacent Skipped events with the same reason; forget FrameTooLarge.size."""
    out = []
    for event in events:
        if isinstance(event, Skipped) and out and isinstance(out[-1], Skipped):
            if out[-1].reason == event.reason:
                out[-1] = Skipped(out[-1].data + event.data, event.reason)
                continue
        if isinstance(event, FrameTooLarge):
            # How much had arrived when the limit was hit depends on the chunking.
            assert event.size >= event.limit
            event = FrameTooLarge(event.limit, event.limit)
        out.append(event)
    return out


def chunkings(data, seeds=3):
    """The ways check() cuts data: whole, one byte at a time, and random chunk sizes."""
    yield "whole", [data] if data else []  # receive_data(b"") would mean EOF
    yield "one byte at a time", [data[i : i + 1] for i in range(len(data))]
    for seed in range(seeds):
        rng = random.Random(seed)
        chunks, i = [], 0
        while i < len(data):
            n = rng.randint(1, 7)
            chunks.append(data[i : i + n])
            i += n
        yield f"random chunks (seed {seed})", chunks


def check(data, expected=None, *, max_frame_size=MAX_FRAME_SIZE, eof=True):
    """Decode data in every chunking; all must agree (and match expected, if given)."""
    results = {
        name: feed(chunks, max_frame_size=max_frame_size, eof=eof)
        for name, chunks in chunkings(data)
    }
    whole = results["whole"]
    for name, events in results.items():
        assert normalise(events) == normalise(whole), name
    if expected is not None:
        assert whole == expected
    return whole


def frames(events):
    return [(e.room, e.body) for e in events if isinstance(e, Frame)]


# ---- well-formed input -----------------------------------------------------------------------


def test_single_frame():
    assert check(b"<RID:111>hello</RID:111>") == [Frame(111, b"hello")]


def test_many_frames_in_one_read():
    data = b"".join(encode_frame(7, f"line {i}") for i in range(50))
    assert frames(check(data)) == [(7, f"line {i}".encode()) for i in range(50)]


def test_frames_for_two_rooms_coalesced():
    data = b"<RID:1>a</RID:1><RID:2>b</RID:2><RID:1>c</RID:1><RID:2>d</RID:2>"
    assert check(data) == [Frame(1, b"a"), Frame(2, b"b"), Frame(1, b"c"), Frame(2, b"d")]


def test_partial_frame_waits_for_the_rest():
    decoder = FrameDecoder()
    decoder.receive_data(b"<RID:1>hi</RID:1><RID:1>hel")
    assert decoder.next_event() == Frame(1, b"hi")
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == len(b"<RID:1>hel")
    decoder.receive_data(b"lo</RI")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"D:1>")
    assert decoder.next_event() == Frame(1, b"hello")
    assert decoder.buffered == 0


def test_whitespace_between_frames_is_ignored():
    data = b"  <RID:1>a</RID:1>\r\n\t<RID:2> b </RID:2>\r\n \n"
    # Whitespace inside a body is the body's.
    assert check(data) == [Frame(1, b"a"), Frame(2, b" b ")]


def test_empty_body_is_a_frame():
    # The original protocol's "join room" message.
    assert check(b"<RID:111></RID:111>") == [Frame(111, b"")]


def test_largest_room_id_and_leading_zeros():
    top = 10**MAX_ROOM_DIGITS - 1
    assert check(encode_frame(top, "x")) == [Frame(top, b"x")]
    assert check(b"<RID:007>x</RID:007>") == [Frame(7, b"x")]


def test_opening_tag_inside_body_is_text():
    assert check(b"<RID:5>a<RID:7>b</RID:5>") == [Frame(5, b"a<RID:7>b")]


def test_invalid_utf8_becomes_replacement_character():
    [frame] = check(b"<RID:1>caf\xc3\xa9 \xff!</RID:1>")
    assert frame.body == b"caf\xc3\xa9 \xff!"
    assert frame.text == "caf\u00e9 \ufffd!"


# ---- garbage and resynchronisation -----------------------------------------------------------


def test_garbage_before_frame_is_skipped():
    assert check(b"hello?\r\n<RID:1>hi</RID:1>") == [
        Skipped(b"hello?\r\n", "garbage before frame"),
        Frame(1, b"hi"),
    ]


def test_possible_tag_start_is_kept_while_garbage_is_skipped():
    decoder = FrameDecoder()
    decoder.receive_data(b"xx<RI")
    assert decoder.next_event() == Skipped(b"xx", "garbage before frame")
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 3
    decoder.receive_data(b"D:1>ok</RID:1>")
    assert decoder.next_event() == Frame(1, b"ok")


def test_garbage_only_stream_does_not_grow_the_buffer():
    decoder = FrameDecoder(max_frame_size=100)
    skipped = 0
    for _ in range(200):
        decoder.receive_data(b"no frames here <RID" * 50)
        for event in decoder.events():
            assert isinstance(event, Skipped)
            skipped += len(event.data)
        assert decoder.buffered <= len(b"<RID")
    assert skipped + decoder.buffered == 200 * len(b"no frames here <RID" * 50)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"<RID:abc>", "room id must be decimal digits"),
        (b"<RID:1a>", "room id must be decimal digits"),
        (b"<RID:-1>", "room id must be decimal digits"),
        (b"<RID:>", "room id is missing"),
        (b"<RID:1234567890>", f"room id has more than {MAX_ROOM_DIGITS} digits"),
    ],
)
def test_bad_header_is_skipped_up_to_next_frame(header, reason):
    data = header + b"x</RID:1>\n<RID:2>ok</RID:2>"
    assert check(data) == [
        Skipped(header + b"x</RID:1>\n", reason),
        Frame(2, b"ok"),
    ]


def test_mismatched_closing_tag_resyncs():
    assert check(b"<RID:1>a</RID:2> <RID:3>b</RID:3>") == [
        Skipped(b"<RID:1>a</RID:2> ", "mismatched closing tag </RID:2> for <RID:1>"),
        Frame(3, b"b"),
    ]


def test_frame_start_inside_broken_frame_is_found():
    assert check(b"<RID:1>hi<RID:2>there</RID:2>") == [
        Skipped(b"<RID:1>hi", "mismatched closing tag </RID:2> for <RID:1>"),
        Frame(2, b"there"),
    ]


def test_malformed_closing_tag():
    assert check(b"<RID:1>a</RID:x><RID:1>b</RID:1>") == [
        Skipped(b"<RID:1>a</RID:x>", "mismatched closing tag </RID:x for <RID:1>"),
        Frame(1, b"b"),
    ]


def test_room_digits_must_match_exactly():
    # Like FRAME_RE's backreference: </RID:7> does not close <RID:007>, so no frame for room 7
    # is made from it (rule 7: never the wrong room, and no guessing).
    events = check(b"<RID:007>x</RID:7>")
    assert events == [
        Skipped(b"<RID:007>x</RID:7>", "mismatched closing tag </RID:7> for <RID:007>")
    ]


# ---- size limit ------------------------------------------------------------------------------


def test_frame_exactly_at_the_limit_is_accepted_one_more_byte_is_not():
    limit = 100
    overhead = len(encode_frame(1, b""))
    at_limit = encode_frame(1, b"x" * (limit - overhead))
    assert len(at_limit) == limit
    assert check(at_limit, max_frame_size=limit) == [Frame(1, b"x" * (limit - overhead))]

    over = encode_frame(1, b"x" * (limit - overhead + 1))
    [event] = check(over, max_frame_size=limit)
    assert isinstance(event, FrameTooLarge)
    assert event.limit == limit


def test_too_large_is_reported_before_the_closing_tag_arrives():
    decoder = FrameDecoder(max_frame_size=100)
    decoder.receive_data(b"<RID:1>" + b"x" * 92)
    assert decoder.next_event() is NEED_DATA  # 99 bytes: could still be a 100-byte frame
    decoder.receive_data(b"x")
    assert decoder.next_event() == FrameTooLarge(100, 100)


def test_too_large_is_sticky():
    decoder = FrameDecoder(max_frame_size=50)
    decoder.receive_data(b"<RID:1>" + b"x" * 1000)
    error = decoder.next_event()
    assert error == FrameTooLarge(1007, 50)
    # Data that arrives afterwards is discarded (the caller is about to disconnect).
    decoder.receive_data(b"</RID:1><RID:2>more</RID:2>")
    assert decoder.buffered == 0
    assert decoder.next_event() is error
    assert list(decoder.events()) == [error]  # yielded once, not forever


def test_max_frame_size_must_fit_the_smallest_frame():
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_size=5)


# ---- end of input ----------------------------------------------------------------------------


def test_clean_eof_is_closed():
    assert check(b"<RID:1>a</RID:1>") == [Frame(1, b"a")]
    assert check(b"") == []
    assert check(b"<RID:1>a</RID:1> \r\n") == [Frame(1, b"a")]


def test_eof_in_the_middle_of_a_frame_is_truncated():
    assert check(b"<RID:1>a</RID:1><RID:2>unfini") == [
        Frame(1, b"a"),
        Truncated(b"<RID:2>unfini"),
    ]
    assert check(b"\r\n<RI") == [Truncated(b"<RI")]


def test_eof_during_garbage_skips_the_rest():
    # Without EOF, "<RI" is kept in case it becomes a tag; at EOF it is skipped too.
    assert check(b"junk<RI") == [
        Skipped(b"junk", "garbage before frame"),
        Skipped(b"<RI", "garbage before frame"),
    ]


def test_data_after_eof_raises():
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    decoder.receive_data(b"")  # repeating EOF is harmless
    with pytest.raises(FramingError, match="after end of input"):
        decoder.receive_data(b"<RID:1>a</RID:1>")
    assert decoder.next_event() is CLOSED


def test_sentinels_have_readable_reprs():
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(CLOSED) == "CLOSED"


# ---- linearity -------------------------------------------------------------------------------


class CountingBuffer(bytearray):
    """A bytearray that counts how many bytes its find() calls looked at."""

    searched = 0

    def find(self, sub, start=0, end=None):
        hit = super().find(sub, start, end)
        stop = (len(self) if end is None else min(end, len(self))) if hit == -1 else hit + len(sub)
        self.searched += max(0, stop - start)
        return hit


def counted_feed(chunks, max_frame_size=MAX_FRAME_SIZE):
    decoder = FrameDecoder(max_frame_size)
    decoder._buf = CountingBuffer()  # white box: the claim is about how much we search
    events = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        events.extend(decoder.events())
    return events, decoder._buf.searched


# Fed one byte at a time, each search must look again at the last len("</RID:") - 1 bytes
# (the needle may straddle the old end), so "linear" here means a few times the input length.
SEARCH_BUDGET = 8


def test_byte_at_a_time_does_not_rescan_the_body():
    data = encode_frame(1, b"x" * 20_000)
    events, searched = counted_feed([data[i : i + 1] for i in range(len(data))])
    assert events == [Frame(1, b"x" * 20_000)]
    assert searched <= SEARCH_BUDGET * len(data)  # rescanning would be ~200 million


def test_resync_does_not_rescan_the_body():
    # Every <RID:1> is a frame start whose first closing tag is the same </RID:2> at the end.
    data = b"<RID:1>" * 5_000 + b"</RID:2>"
    events, searched = counted_feed([data])
    assert len(events) == 5_000 and all(isinstance(e, Skipped) for e in events)
    assert searched <= SEARCH_BUDGET * len(data)


def test_garbage_byte_at_a_time_is_linear():
    data = b"<RI" * 10_000
    events, searched = counted_feed([data[i : i + 1] for i in range(len(data))])
    assert sum(len(e.data) for e in events) == len(data) - len(b"<RI")
    assert searched <= SEARCH_BUDGET * len(data)


# ---- encode_frame ----------------------------------------------------------------------------


def test_encode_frame():
    assert encode_frame(111, "hello") == b"<RID:111>hello</RID:111>"
    assert encode_frame(0, b"") == b"<RID:0></RID:0>"
    assert encode_frame(2, "caf\u00e9") == b"<RID:2>caf\xc3\xa9</RID:2>"
    data = encode_frame(42, b"<RID:7>\x00\xff")
    assert check(data) == [Frame(42, b"<RID:7>\x00\xff")]


@pytest.mark.parametrize(
    ("room", "body", "message"),
    [
        (-1, "x", "must be >= 0"),
        (10**MAX_ROOM_DIGITS, "x", "more than 9 digits"),
        (1, "a</RID:1>b", "end the frame early"),
        (1, b"</RID:", "end the frame early"),
    ],
)
def test_encode_frame_rejects(room, body, message):
    with pytest.raises(FramingError, match=message):
        encode_frame(room, body)
    assert issubclass(FramingError, ValueError)


def test_encode_frame_type_errors():
    with pytest.raises(TypeError):
        encode_frame("1", "x")
    with pytest.raises(TypeError):
        encode_frame(1, 5)


# ---- agreement with FRAME_RE, and properties -------------------------------------------------

# Bodies built from pieces of the protocol itself, so that near-miss tags are common.
TAG_PIECES = [b"<", b"/", b"R", b"I", b"D", b":", b">", b"1", b"2", b"0", b"<RID:", b"</RID"]
TAG_PIECES += [b"RID:", b"<RID:1>", b"</RID:1", b" ", b"\r\n", b"\xff", b"\xc3\xa9"]

bodies = (
    st.lists(st.sampled_from(TAG_PIECES) | st.binary(max_size=3), max_size=8)
    .map(b"".join)
    .filter(lambda body: b"</RID:" not in body)
)
rooms = st.integers(0, 20) | st.integers(0, 10**MAX_ROOM_DIGITS - 1)
separators = st.sampled_from([b"", b"", b" ", b"\r\n", b"\n\t "])


def test_agrees_with_frame_re_on_examples():
    data = b"<RID:5>a<RID:7>b</RID:5>\r\n<RID:0></RID:0><RID:12>x>y</RI</RID:12>"
    expected = [(int(m[1]), m[2]) for m in FRAME_RE.finditer(data)]
    assert expected == [(5, b"a<RID:7>b"), (0, b""), (12, b"x>y</RI")]
    assert frames(check(data)) == expected


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(st.tuples(rooms, bodies, separators), max_size=6), data=st.data())
def test_round_trip_in_any_chunking(messages, data):
    stream = b"".join(sep + encode_frame(room, body) for room, body, sep in messages)
    expected = [(room, body) for room, body, _ in messages]
    assert [(int(m[1]), m[2]) for m in FRAME_RE.finditer(stream)] == expected

    events = check(stream)
    assert events == [Frame(room, body) for room, body in expected]  # nothing skipped

    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed([c for c in chunks if c]) == events


# Arbitrary input: protocol pieces and random bytes, but no stray digits, so a room id never
# has leading zeros and each Frame's wire length is len(encode_frame(room, body)).
FUZZ_PIECES = [b"<RID:1>", b"</RID:1>", b"<RID:2>", b"</RID:2>", b"<RID:0>", b"</RID:0>"]
FUZZ_PIECES += [b"<RID:", b"</RID:", b"<RID", b"<", b">", b"/", b"x", b" ", b"\r\n", b"\xff"]
no_digits = st.binary(max_size=4).map(lambda b: bytes(c for c in b if not 48 <= c <= 57))
fuzz_input = st.lists(st.sampled_from(FUZZ_PIECES) | no_digits, max_size=40).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(stream=fuzz_input, max_frame_size=st.sampled_from([15, 24, 40, MAX_FRAME_SIZE]))
def test_arbitrary_input_is_decoded_consistently(stream, max_frame_size):
    # check() also asserts: no exception, same events in every chunking, buffer bounded.
    events = check(stream, max_frame_size=max_frame_size)

    for event in events:
        if isinstance(event, Frame):
            # Rule 7: a frame comes from a literal <RID:n>body</RID:n> in the input.
            assert encode_frame(event.room, event.body) in stream
            assert len(encode_frame(event.room, event.body)) <= max_frame_size

    if not any(isinstance(e, FrameTooLarge) for e in events):
        # Every byte is accounted for exactly once, except whitespace between frames.
        accounted = sum(
            len(encode_frame(e.room, e.body)) if isinstance(e, Frame) else len(e.data)
            for e in events
        )
        whitespace = sum(stream.count(c) for c in (b" ", b"\t", b"\r", b"\n"))
        assert len(stream) - whitespace <= accounted <= len(stream)
