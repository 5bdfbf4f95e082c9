"""A small line editor for the terminal client, so that incoming text never garbles typing.

Why not readline? Python's readline module reads a whole line in a blocking call; it has no
way to say "a message arrived: put it above what the person is typing, then redraw their
half-typed line". (C readline can, through rl_callback_read_char, but Python does not expose
it.) So the client puts the terminal in cbreak mode (keys arrive one by one, not echoed;
Ctrl-C still sends SIGINT) and edits the line itself, with this class.

It is sans-I/O like the framing codec: ``feed(bytes)`` takes key presses and returns what
happened (lines submitted, end of input); ``render()`` returns the escape sequences that
redraw the prompt line; ``print_above(text)`` returns what to write so that ``text`` appears
above the prompt line, which is then redrawn intact. Nothing here touches a terminal.

Keys: printable text, Backspace, Delete, Left/Right, Home/End (and Ctrl-A/Ctrl-E), Up/Down
(history), Ctrl-U (clear line), Ctrl-W (delete word), Enter, Ctrl-D (end, on an empty line).
"""

from __future__ import annotations

import codecs

__all__ = ["EOF", "LineEditor"]

EOF = object()  # feed() result: Ctrl-D on an empty line

CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line

# Escape sequences of the keys we understand (xterm and VT100 forms).
_KEYS = {
    "\x1b[D": "left",
    "\x1b[C": "right",
    "\x1b[A": "up",
    "\x1b[B": "down",
    "\x1b[H": "home",
    "\x1b[F": "end",
    "\x1bOH": "home",
    "\x1bOF": "end",
    "\x1b[1~": "home",
    "\x1b[4~": "end",
    "\x1b[3~": "delete",
}


class LineEditor:
    """The state of the line being typed: text, cursor, history."""

    def __init__(self, prompt: str = "> ") -> None:
        self.prompt = prompt
        self.buffer: list[str] = []
        self.cursor = 0
        self.history: list[str] = []
        self._history_pos = 0
        self._escape = ""  # an escape sequence split across reads
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def text(self) -> str:
        return "".join(self.buffer)

    def feed(self, data: bytes) -> list:
        """Key presses in; a list of submitted lines (str) and possibly EOF out."""
        results: list = []
        for ch in self._utf8.decode(data):
            if self._escape:
                self._escape += ch
                key = _KEYS.get(self._escape)
                if key:
                    self._escape = ""
                    self._key(key)
                elif not any(seq.startswith(self._escape) for seq in _KEYS):
                    self._escape = ""  # a sequence we do not know: ignore it whole
                continue
            if ch == "\x1b":
                self._escape = ch
            elif ch in "\r\n":
                line = self.text
                if line.strip():
                    self.history.append(line)
                self._history_pos = len(self.history)
                self.buffer, self.cursor = [], 0
                results.append(line)
            elif ch == "\x04":  # Ctrl-D
                if not self.buffer:
                    results.append(EOF)
                    return results
                self._key("delete")
            elif ch in "\x7f\x08":  # Backspace
                if self.cursor:
                    self.cursor -= 1
                    del self.buffer[self.cursor]
            elif ch == "\x01":
                self._key("home")
            elif ch == "\x05":
                self._key("end")
            elif ch == "\x15":  # Ctrl-U
                self.buffer, self.cursor = [], 0
            elif ch == "\x17":  # Ctrl-W: the word before the cursor, and spaces before it
                start = self.cursor
                while start and self.buffer[start - 1] == " ":
                    start -= 1
                while start and self.buffer[start - 1] != " ":
                    start -= 1
                del self.buffer[start : self.cursor]
                self.cursor = start
            elif ch >= " ":
                self.buffer.insert(self.cursor, ch)
                self.cursor += 1
        return results

    def _key(self, key: str) -> None:
        if key == "left":
            self.cursor = max(0, self.cursor - 1)
        elif key == "right":
            self.cursor = min(len(self.buffer), self.cursor + 1)
        elif key == "home":
            self.cursor = 0
        elif key == "end":
            self.cursor = len(self.buffer)
        elif key == "delete":
            if self.cursor < len(self.buffer):
                del self.buffer[self.cursor]
        elif key in ("up", "down") and self.history:
            step = -1 if key == "up" else 1
            self._history_pos = max(0, min(len(self.history), self._history_pos + step))
            line = self.history[self._history_pos] if self._history_pos < len(self.history) else ""
            self.buffer, self.cursor = list(line), len(line)

    def render(self) -> str:
        """Redraw the prompt line, cursor included."""
        back = len(self.buffer) - self.cursor
        return CLEAR_LINE + self.prompt + self.text + (f"\x1b[{back}D" if back else "")

    def print_above(self, text: str) -> str:
        """Show ``text`` above the prompt line, then redraw the line being typed."""
        return CLEAR_LINE + text.replace("\n", "\r\n") + "\r\n" + self.render()
