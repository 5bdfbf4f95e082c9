"""Checks for chapter 03, framing (notebooks/03-framing.ipynb; answers in
notebooks/solutions/03-framing.ipynb).

03.1 ``check_disagreement(data, right)``: a complete buffer on which the regex and
     ``FrameDecoder`` find different frames, and which of the two a server should trust.
03.2 ``check_length_decoder(decode_lengths)``: a length-prefixed decoder that gives the
     same payloads however the stream is cut, and refuses a length over its limit as soon
     as the 4-byte header is in, before buffering the payload.
03.3 ``check_framed_classic(FramedClassic)``: the classic server, subclassed, with a
     ``handle()`` that frames. The check runs the class on 127.0.0.1 with scripted clients:
     half a frame then the rest, two frames in one send, garbage before a frame, a frame
     that never ends, a client that leaves. It orders every step without sleeping: it waits
     until handle() has returned for each send (it counts the calls per client socket, in a
     subclass of the learner's class), then sends a marker from another client and waits for
     it at another member of the room (what the server sent him before it arrives first).

``deliver()`` is the original server's handle() after its regex matched (join the room,
broadcast), for a learner's handle() to call with each whole frame. ``wait_until()`` is a
bounded wait on a condition, for cells that wait for a server's counter.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ..classic import ClassicServer
from ..framing import FRAME_RE, MAX_FRAME_SIZE, Frame, FrameDecoder
from ..scripted import ExpectTimeout, ScriptedClient
from . import Check, Verdict

__all__ = [
    "check_disagreement",
    "check_framed_classic",
    "check_length_decoder",
    "decoder_frames",
    "deliver",
    "regex_frames",
    "wait_until",
]

ROOM = 111
WAIT = 5.0  # the longest we wait for something that a correct answer does at once
GIVE_UP = 2.0  # how long we wait for the server to close a flooding peer before saying it did not


def wait_until(condition: Callable[[], object], timeout: float = WAIT, what: str = "") -> bool:
    """Poll ``condition`` until it is true (True) or ``timeout`` seconds pass (False).

    A bounded wait for a state another thread reaches (a server's counter): it orders
    nothing by itself, it only waits for something that will happen.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


# ---- 03.1: where the regex and the decoder disagree -------------------------------------


def regex_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The frames a buffered search loop finds in a complete buffer (FRAME_RE.finditer)."""
    return [(int(m.group(1)), m.group(2)) for m in FRAME_RE.finditer(data)]


def decoder_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The frames FrameDecoder delivers from the same buffer, read to its end."""
    decoder = FrameDecoder()
    decoder.receive_data(data)
    decoder.receive_data(b"")
    return [(e.room, e.body) for e in decoder.events() if isinstance(e, Frame)]


def check_disagreement(data: Any, right: Any) -> Verdict:
    """03.1: ``data`` is a complete buffer on which regex_frames() and decoder_frames()
    differ; ``right`` says which a chat server should trust: "regex" or "decoder"."""
    check = Check("03.1", "where the regex and the decoder disagree")
    if check.answered(data, "disagreement") and check.expect(
        isinstance(data, (bytes, bytearray)),
        f"disagreement should be bytes (b'...'), not {type(data).__name__}",
    ):
        by_regex, by_decoder = regex_frames(bytes(data)), decoder_frames(bytes(data))
        check.expect(
            by_regex != by_decoder,
            f"on {bytes(data)!r} both find the same frames, {by_regex}: look for a frame the "
            "regex accepts and the decoder's rules refuse (rules 3, 4 and 7 in the docstring "
            "of chatlab/framing.py)",
        )
    if check.answered(right, "right"):
        if check.expect(
            right in ("regex", "decoder"), f'right should be "regex" or "decoder", not {right!r}'
        ):
            check.expect(
                right == "decoder",
                "the regex delivers what the decoder refuses: a room id of any length, or a body "
                "that holds another room's closing tag. Which one can a client use to confuse "
                "the server, or another client reading the body?",
            )
    return check.verdict(
        "the regex is right only for well-formed input; the decoder's rules decide the rest"
    )


# ---- 03.2: a length prefix, with a bound --------------------------------------------------

PAYLOADS = [
    b"hello",
    b"",  # an empty payload is a payload
    b"</RID:1> needs no escaping here",
    bytes(range(256)),  # binary: NUL, newlines, anything
    b"y" * 3000,
]
LIMIT = 4096


def _length_stream(payloads: list[bytes]) -> bytes:
    return b"".join(struct.pack("!I", len(p)) + p for p in payloads)


def _cuts(stream: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), 12))
    return [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def _summary(payloads: object) -> str:
    if not isinstance(payloads, list):
        return repr(payloads)[:80]
    shown = (repr(p) if len(repr(p)) <= 20 else repr(p)[:20] + "..." for p in payloads)
    return "[" + ", ".join(shown) + "]"


def check_length_decoder(answer: Callable[..., Any]) -> Verdict:
    """03.2: ``answer(chunks, limit)`` returns the payloads of a stream of
    ``struct.pack("!I", len(p)) + p`` frames, cut into ``chunks`` in any way, and raises
    ValueError as soon as a header announces more than ``limit`` bytes."""
    check = Check("03.2", "a length prefix, with a bound")
    stream = _length_stream(PAYLOADS)
    cuttings = [
        ("whole", [stream]),
        ("one byte at a time", [stream[i : i + 1] for i in range(len(stream))]),
        *((f"in 13 random pieces (seed {seed})", _cuts(stream, seed)) for seed in range(20)),
    ]
    for how, chunks in cuttings:
        ok, got = check.call(answer, chunks, LIMIT)
        if not ok:
            break
        if not check.expect(
            got == PAYLOADS,
            f"fed {how}, it returned {_summary(got)}; the stream holds {_summary(PAYLOADS)}",
        ):
            break
    if check.problems:
        return check.verdict()

    exact = struct.pack("!I", LIMIT) + b"z" * LIMIT
    ok, got = check.call(answer, [exact], LIMIT)
    if ok:
        check.expect(
            got == [b"z" * LIMIT],
            f"a payload of exactly limit={LIMIT} bytes is allowed; it returned {_summary(got)}",
        )

    header = struct.pack("!I", LIMIT + 1)
    try:
        got = answer([header], LIMIT)
    except ValueError:
        pass
    except Exception as exc:  # the learner's bug is the finding
        check.expect(False, f"a length over the limit should raise ValueError, not {exc!r}")
    else:
        check.expect(
            False,
            f"given only a header announcing {LIMIT + 1} bytes (limit {LIMIT}), it returned "
            f"{_summary(got)}: raise ValueError as soon as the 4 header bytes are in, before "
            "buffering anything (a peer may announce 4 GiB and send it slowly)",
        )
    return check.verdict(
        "no scanning and no escaping: the length says where the frame ends, and is checked first"
    )


# ---- 03.3: the classic server, framing -----------------------------------------------------


def deliver(server: ClassicServer, sock: Any, room_id: int | bytes, text: bytes) -> None:
    """What the original's handle() does once its regex matched: join ``sock`` to the room
    (announcing it) if it is not a member yet, and broadcast a non-empty ``text`` to the
    other members. ``room_id`` may be the regex's bytes (b"111"), a decoder's int, or a str."""
    if isinstance(room_id, (int, str)):
        key = str(room_id).encode()
    else:
        key = bytes(room_id)
    server.deliver(sock, key, bytes(text))


class _Run:
    """One run of the learner's class, watched: how many times handle() returned for each
    client's socket, a marker to order what reached bob, and every client to close."""

    def __init__(self, answer: type[ClassicServer], check: Check) -> None:
        handled = threading.Condition()
        counts: dict[object, int] = {}  # client address -> handle() calls for its socket

        class Watched(answer):  # type: ignore[valid-type,misc]
            def handle(self, sock: Any) -> None:
                try:
                    peer = sock.getpeername()[:2]  # before handle(): it may close sock
                except OSError:
                    peer = None
                try:
                    super().handle(sock)
                finally:
                    with handled:
                        counts[peer] = counts.get(peer, 0) + 1
                        handled.notify_all()

        self.check, self._handled, self._counts = check, handled, counts
        self.server = Watched()
        self.clients: list[ScriptedClient] = []
        self.markers = 0
        self.server.start()

    def handled(self, client: ScriptedClient) -> int:
        """How many times handle() has returned for client's socket on the server."""
        with self._handled:
            return self._counts.get(client.local_address, 0)

    def wait_handled(self, client: ScriptedClient, count: int) -> bool:
        with self._handled:
            return self._handled.wait_for(
                lambda: self._counts.get(client.local_address, 0) >= count, WAIT
            )

    def client(self, name: str, join: bool = True) -> ScriptedClient:
        client = ScriptedClient(self.server.address, name=name, timeout=WAIT)
        self.clients.append(client)
        if join:
            self.send(client, b"<RID:%d></RID:%d>" % (ROOM, ROOM))
        return client

    def send(self, client: ScriptedClient, data: bytes) -> bool:
        """Send data in one send(); return once the server's handle() has run for it."""
        before = self.handled(client)
        try:
            client.send_raw(data)
        except OSError:  # the server closed this client already
            return False
        return self.wait_handled(client, before + 1)

    def died(self) -> bool:
        crash = self.server.crash
        if crash is not None:
            self.check.expect(
                False,
                f"the server died: {type(crash).__name__}: {crash} (server.crash); a closed "
                "socket left in self.inputs makes select() fail like this",
            )
        return crash is not None

    def received(self, bob: ScriptedClient, carol: ScriptedClient) -> str:
        """Everything bob received since the last marker, up to a new one from carol."""
        self.markers += 1
        marker = f"marker {self.markers}."
        start = len(bob.transcript)
        carol.send_raw(b"<RID:%d>%s</RID:%d>" % (ROOM, marker.encode(), ROOM))
        try:
            bob.expect(marker)
        except ExpectTimeout:
            return ""
        return "".join(line.body for line in bob.transcript[start:])

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.stop()


def check_framed_classic(answer: Any) -> Verdict:
    """03.3: ``answer`` is a subclass of ClassicServer whose handle() frames: every frame a
    client sends reaches the room once, however it was cut, and the connection is closed
    when a frame passes MAX_FRAME_SIZE bytes unfinished or the client leaves."""
    check = Check("03.3", "a classic server that frames")
    if not (isinstance(answer, type) and issubclass(answer, ClassicServer)):
        check.expect(False, f"FramedClassic should be a subclass of ClassicServer, not {answer!r}")
        return check.verdict()
    try:
        run = _Run(answer, check)
    except Exception as exc:  # its __init__ is the learner's
        check.expect(False, f"FramedClassic() raised {type(exc).__name__}: {exc}")
        return check.verdict()
    try:
        _scenarios(run, check)
    finally:
        run.close()
    return check.verdict(
        "a buffer per socket, whole frames off its front, a bound, and EOF goes one way out"
    )


def _scenarios(run: _Run, check: Check) -> None:
    bob, carol = run.client("bob"), run.client("carol")
    if (
        not check.expect(
            "marker 1." in run.received(bob, carol),
            "a whole frame, sent alone, never reached the other member of the room: does "
            "handle() read the socket and call ch03.deliver(self, sock, room_id, text) for each "
            "frame?",
        )
        or run.died()
    ):
        return

    # Half a frame, handled on its own, then the rest.
    alice = run.client("alice")
    run.send(alice, b"<RID:%d>hel" % ROOM)
    run.send(alice, b"lo</RID:%d>" % ROOM)
    got = run.received(bob, carol)
    check.expect(
        ">hello" in got,
        "half a frame, then the rest: 'hello' never reached the room (the first read held "
        "<RID:111>hel, the second lo</RID:111>; keep what a read leaves over for the next)",
    )
    if run.died():
        return

    # Two frames in one send(), so in one segment and one recv().
    dave = run.client("dave")
    run.send(dave, b"<RID:%d>first</RID:%d><RID:%d>second</RID:%d>" % ((ROOM,) * 4))
    got = run.received(bob, carol)
    check.expect(
        ">first" in got and ">second" in got,
        "two frames in one send (one segment, one read): "
        + ("only 'first' reached the room" if ">first" in got else "neither reached the room")
        + " (take every whole frame off the buffer, not only the first)",
    )
    if run.died():
        return

    # Garbage, then a frame, in one read; then a frame alone.
    erin = run.client("erin")
    run.send(erin, b"x<RID:%d>hi</RID:%d>" % (ROOM, ROOM))
    run.send(erin, b"<RID:%d>after</RID:%d>" % (ROOM, ROOM))
    got = run.received(bob, carol)
    if ">after" not in got:
        check.expect(
            False,
            "after b'x<RID:111>hi</RID:111>' nothing more from that client reached the room: "
            "its buffer is stuck on a byte that can never start a frame (match() only tries "
            "position 0; skip what cannot be a frame)",
        )
    else:
        check.expect(
            ">hi" in got,
            "b'x<RID:111>hi</RID:111>': the frame after one byte of garbage was lost with it",
        )
    if run.died():
        return

    # A frame that never ends.
    mallory = run.client("mallory")
    flood = b"<RID:%d>" % ROOM + b"x" * (2 * MAX_FRAME_SIZE)
    try:
        mallory.send_raw(flood)
    except OSError:
        pass  # closed before we finished sending: that is the point
    try:
        mallory.wait_closed(timeout=GIVE_UP)
    except ExpectTimeout:
        check.expect(
            False,
            f"a client that sent {len(flood):,} bytes of one frame that never ends is still "
            f"connected: close it once its unfinished frame passes MAX_FRAME_SIZE "
            f"({MAX_FRAME_SIZE:,}) bytes, or a few such clients hold all the server's memory",
        )
    if run.died():
        return

    # A client that leaves.
    frank = run.client("frank")
    watched = len(run.server.inputs)
    before = run.handled(frank)
    frank.close()
    run.wait_handled(frank, before + 1)
    if run.died():
        return
    check.expect(
        len(run.server.inputs) == watched - 1,
        "a client closed its connection and its socket is still in self.inputs: select() "
        "reports it readable (EOF) again at once, forever, and the loop spins (chapter 05). "
        "On recv() == b'': remove it from self.inputs, close it, forget its buffer",
    )
