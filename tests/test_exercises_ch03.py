"""The checks of chapter 03 fail on the stub and on plausible wrong answers, and pass on a
right one (the worked answers of notebooks/solutions/03-framing.ipynb)."""

from __future__ import annotations

import struct

from chatlab import FRAME_RE, FrameDecoder
from chatlab.classic import ClassicServer
from chatlab.exercises import ch03
from chatlab.framing import Frame, FrameTooLarge

# ---- 03.1 -----------------------------------------------------------------------------------


def test_disagreement_stub_fails():
    verdict = ch03.check_disagreement(..., ...)
    assert not verdict
    assert "disagreement is not written yet" in str(verdict)
    assert "right is not written yet" in str(verdict)


def test_disagreement_on_a_plain_frame_fails():
    verdict = ch03.check_disagreement(b"<RID:1>hi</RID:1>", "decoder")
    assert not verdict
    assert "both find the same frames" in str(verdict)


def test_disagreement_trusting_the_regex_fails():
    verdict = ch03.check_disagreement(b"<RID:1>a</RID:2>b</RID:1>", "regex")
    assert not verdict
    assert "the regex delivers what the decoder refuses" in str(verdict)


def test_disagreement_not_bytes_fails():
    assert "should be bytes" in str(ch03.check_disagreement("<RID:1>a</RID:1>", "decoder"))


def test_disagreement_right_answers_pass():
    assert ch03.check_disagreement(b"<RID:1>a</RID:2>b</RID:1>", "decoder")
    assert ch03.check_disagreement(b"<RID:1234567890>x</RID:1234567890>", "decoder")


# ---- 03.2 -----------------------------------------------------------------------------------


def decode_stub(chunks, limit): ...


def decode_unbounded(chunks, limit):
    """The chapter's decoder, without the bound."""
    buf, out = b"", []
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 4:
            (n,) = struct.unpack_from("!I", buf)
            if len(buf) < 4 + n:
                break
            out.append(buf[4 : 4 + n])
            buf = buf[4 + n :]
    return out


def decode_bound_too_late(chunks, limit):
    """Checks the bound only once the whole payload is buffered."""
    out = decode_unbounded(chunks, limit)
    if any(len(p) > limit for p in out):
        raise ValueError("too long")
    return out


def decode_one_chunk_one_frame(chunks, limit):
    out = []
    for chunk in chunks:
        if len(chunk) >= 4:
            (n,) = struct.unpack_from("!I", chunk)
            out.append(chunk[4 : 4 + n])
    return out


def decode_bounded(chunks, limit):
    buf, out = b"", []
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 4:
            (n,) = struct.unpack_from("!I", buf)
            if n > limit:
                raise ValueError(f"frame of {n} bytes announced; the limit is {limit}")
            if len(buf) < 4 + n:
                break
            out.append(buf[4 : 4 + n])
            buf = buf[4 + n :]
    return out


def test_length_stub_fails():
    verdict = ch03.check_length_decoder(decode_stub)
    assert not verdict
    assert "returned None" in str(verdict)


def test_length_unbounded_fails_on_the_bound():
    verdict = ch03.check_length_decoder(decode_unbounded)
    assert not verdict
    assert "raise ValueError as soon as the 4 header bytes are in" in str(verdict)


def test_length_bound_checked_too_late_fails():
    verdict = ch03.check_length_decoder(decode_bound_too_late)
    assert not verdict
    assert "announcing 4097 bytes" in str(verdict)


def test_length_one_chunk_one_frame_fails():
    verdict = ch03.check_length_decoder(decode_one_chunk_one_frame)
    assert not verdict
    assert "fed whole" in str(verdict)


def test_length_bounded_passes():
    assert ch03.check_length_decoder(decode_bounded)


# ---- 03.3 -----------------------------------------------------------------------------------


class Stub(ClassicServer):
    def handle(self, sock):
        super().handle(sock)  # the original


class Idle(ClassicServer):
    def handle(self, sock): ...


class SearchLoop(ClassicServer):
    """A buffer and FRAME_RE.search: split, coalesced, garbage and EOF right; no bound."""

    def __init__(self):
        super().__init__()
        self.buffers = {}

    def handle(self, sock):
        data = sock.recv(1024)
        if not data:
            self.inputs.remove(sock)
            sock.close()
            return
        buf = self.buffers.get(sock, b"") + data
        while m := FRAME_RE.search(buf):
            ch03.deliver(self, sock, m.group(1), m.group(2))
            buf = buf[m.end() :]
        self.buffers[sock] = buf


class MatchLoop(SearchLoop):
    """Like SearchLoop but with match(): garbage at the front sticks forever."""

    def handle(self, sock):
        data = sock.recv(1024)
        if not data:
            self.inputs.remove(sock)
            sock.close()
            return
        buf = self.buffers.get(sock, b"") + data
        while m := FRAME_RE.match(buf):
            ch03.deliver(self, sock, m.group(1), m.group(2))
            buf = buf[m.end() :]
        if len(buf) > 65536:
            self.inputs.remove(sock)
            sock.close()
        self.buffers[sock] = buf


class ClosesButKeepsWatching(ClassicServer):
    """Uses a decoder, but closes a socket without removing it from self.inputs."""

    def __init__(self):
        super().__init__()
        self.decoders = {}

    def handle(self, sock):
        decoder = self.decoders.setdefault(sock, FrameDecoder())
        data = sock.recv(1024)
        decoder.receive_data(data)
        for event in decoder.events():
            if isinstance(event, Frame):
                ch03.deliver(self, sock, event.room, event.body)
            elif isinstance(event, FrameTooLarge):
                data = b""
        if not data:
            sock.close()


class Framed(ClosesButKeepsWatching):
    def handle(self, sock):
        decoder = self.decoders.setdefault(sock, FrameDecoder())
        try:
            data = sock.recv(1024)
        except OSError:
            data = b""
        decoder.receive_data(data)
        for event in decoder.events():
            if isinstance(event, Frame):
                ch03.deliver(self, sock, event.room, event.body)
            elif isinstance(event, FrameTooLarge):
                data = b""
        if not data:
            self.inputs.remove(sock)
            del self.decoders[sock]
            sock.close()


def test_framed_classic_stub_lists_the_originals_bugs():
    text = str(ch03.check_framed_classic(Stub))
    assert text.startswith("not yet 03.3")
    for finding in ("'hello' never reached", "only 'first'", "lost with it", "still connected"):
        assert finding in text
    assert "still in self.inputs" in text


def test_framed_classic_that_never_reads_fails_fast():
    text = str(ch03.check_framed_classic(Idle))
    assert "never reached the other member" in text


def test_framed_classic_not_a_class_fails():
    assert "subclass of ClassicServer" in str(ch03.check_framed_classic(...))


def test_framed_classic_search_loop_has_no_bound():
    verdict = ch03.check_framed_classic(SearchLoop)
    assert [p for p in verdict.problems if "still connected" in p] == verdict.problems


def test_framed_classic_match_loop_sticks_on_garbage():
    verdict = ch03.check_framed_classic(MatchLoop)
    assert any("its buffer is stuck" in p for p in verdict.problems)


def test_framed_classic_closed_socket_left_watched_kills_the_server():
    verdict = ch03.check_framed_classic(ClosesButKeepsWatching)
    assert any("the server died" in p for p in verdict.problems)


def test_framed_classic_with_a_decoder_passes():
    verdict = ch03.check_framed_classic(Framed)
    assert verdict, str(verdict)
