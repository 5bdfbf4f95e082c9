"""ScriptedClient: the blocking, thread-free client that notebooks and tests read aloud."""

from __future__ import annotations

import re

import pytest

import chatlab
from chatlab import ExpectTimeout, ScriptedClient


def test_join_say_expect_and_transcript(backend):
    with chatlab.serve(backend=backend) as server:
        with (
            ScriptedClient(server.address, nick="alice") as alice,
            ScriptedClient(server.address, nick="bob") as bob,
        ):
            alice.join(111)
            bob.join(111)
            alice.say(111, "hi")
            line = bob.expect("hi")
            assert (line.room, line.kind, line.sender, line.text) == (111, "message", "alice", "hi")
            assert bob.messages(111) == ["<alice> hi"]
            assert any(
                r.kind == "notice" and "you entered room 111" in r.text for r in bob.transcript
            )
            assert bob.who(111) == ["alice", "bob"]


def test_expect_timeout_says_what_did_arrive(backend):
    with chatlab.serve(backend=backend) as server:
        with (
            ScriptedClient(server.address, nick="alice") as alice,
            ScriptedClient(server.address, nick="bob") as bob,
        ):
            alice.join(5)
            bob.join(5)
            alice.say(5, "something else")
            with pytest.raises(ExpectTimeout) as info:
                bob.expect("never sent", timeout=0.3)
            message = str(info.value)
            assert "bob expected 'never sent'" in message
            assert "<alice> something else" in message


def test_expect_consumes_in_order(backend):
    with chatlab.serve(backend=backend) as server:
        with ScriptedClient(server.address) as a, ScriptedClient(server.address) as b:
            a.join(1)
            b.join(1)
            for text in ("same", "same", "other"):
                a.say(1, text)
            b.expect("same")
            b.expect("same")
            b.expect(re.compile(r"oth.r"))
            with pytest.raises(ExpectTimeout):
                b.expect("same", timeout=0.2)  # both were consumed already


def test_send_raw_half_frame_then_two_frames(backend):
    with chatlab.serve(backend=backend) as server:
        with ScriptedClient(server.address) as a, ScriptedClient(server.address) as b:
            a.join(3)
            b.join(3)
            a.send_raw(b"<RID:3>first ha")
            a.send_raw(b"lf</RID:3><RID:3>second</RID:3>")
            assert b.expect("first half").text == "first half"
            assert b.expect("second").text == "second"


def test_nick_refused_raises_with_reason(backend):
    with chatlab.serve(backend=backend) as server:
        with ScriptedClient(server.address, nick="alice"):
            with ScriptedClient(server.address) as other:
                with pytest.raises(ExpectTimeout, match="nick 'alice' is taken"):
                    other.nick("alice")


def test_leading_slash_is_a_message_not_a_command(backend):
    with chatlab.serve(backend=backend) as server:
        with ScriptedClient(server.address) as a, ScriptedClient(server.address) as b:
            a.join(2)
            b.join(2)
            a.say(2, "/not a command")
            assert b.expect("not a command").text == "/not a command"


def test_quit_waits_for_the_server_to_close(backend):
    with chatlab.serve(backend=backend) as server:
        with ScriptedClient(server.address, nick="q") as q:
            q.join(4)
            q.quit("done")
            assert q.closed_by_server
            assert any("bye (quit: done)" in r.text for r in q.transcript)
