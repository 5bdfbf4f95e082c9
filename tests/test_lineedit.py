"""The terminal client's line editor, fed key presses as bytes (no terminal needed)."""

from __future__ import annotations

from chatlab.lineedit import CLEAR_LINE, EOF, LineEditor


def test_typing_and_enter_submit_a_line():
    ed = LineEditor("#1> ")
    assert ed.feed(b"hello") == []
    assert ed.render() == CLEAR_LINE + "#1> hello"
    assert ed.feed(b"\r") == ["hello"]
    assert ed.text == "" and ed.render() == CLEAR_LINE + "#1> "


def test_many_lines_in_one_read_and_split_utf8():
    ed = LineEditor()
    data = "héllo\rwörld\r".encode()
    lines = []
    for i in range(len(data)):  # one byte at a time: UTF-8 sequences split across reads
        lines += ed.feed(data[i : i + 1])
    assert lines == ["héllo", "wörld"]


def test_backspace_ctrl_u_ctrl_w():
    ed = LineEditor()
    ed.feed(b"abc\x7f")
    assert ed.text == "ab"
    ed.feed(b" two words\x17")
    assert ed.text == "ab two "
    ed.feed(b"\x15")
    assert ed.text == "" and ed.cursor == 0


def test_cursor_keys_edit_in_the_middle():
    ed = LineEditor("> ")
    ed.feed(b"helo")
    ed.feed(b"\x1b[D")  # left
    ed.feed(b"l")
    assert ed.text == "hello" and ed.cursor == 4
    assert ed.render().endswith("\x1b[1D"), "the cursor is drawn where it is"
    ed.feed(b"\x1b[H")  # home, the escape sequence in one read
    assert ed.cursor == 0
    ed.feed(b"\x1b")  # and split across reads
    ed.feed(b"[")
    ed.feed(b"F")
    assert ed.cursor == 5
    ed.feed(b"\x01\x1b[3~")  # Ctrl-A, Delete
    assert ed.text == "ello"


def test_unknown_escape_sequence_is_ignored():
    ed = LineEditor()
    ed.feed(b"a\x1b[Zb")
    assert ed.text == "ab"


def test_history_up_and_down():
    ed = LineEditor()
    ed.feed(b"first\rsecond\r")
    ed.feed(b"\x1b[A")
    assert ed.text == "second"
    ed.feed(b"\x1b[A")
    assert ed.text == "first"
    ed.feed(b"\x1b[B\x1b[B")
    assert ed.text == ""


def test_ctrl_d_ends_only_an_empty_line():
    ed = LineEditor()
    ed.feed(b"ab\x01")
    assert ed.feed(b"\x04") == [] and ed.text == "b", "Ctrl-D deletes under the cursor"
    ed.feed(b"\x15")
    assert ed.feed(b"\x04") == [EOF]


def test_print_above_keeps_the_half_typed_line():
    ed = LineEditor("#7> ")
    ed.feed(b"half typed")
    out = ed.print_above("12:00 #7 <bob> hi")
    assert out.startswith(CLEAR_LINE + "12:00 #7 <bob> hi\r\n")
    assert out.endswith("#7> half typed")
    assert ed.text == "half typed"
