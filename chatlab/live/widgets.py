"""The live chapter's widgets (ipywidgets, the notebooks extra): a chat, and a server's view.

- ``ChatWidget(hub, address, "alice", room=1)``: a message list and an input line, bound to
  a LiveClient. Lines it receives are drawn from the hub's loop thread (ipywidgets sends a
  widget's new value over its comm from any thread); what you type is sent when you press
  Enter (or the Send button), from the kernel's thread, through the hub's loop.
- ``LiveView(server, hub, room=1)``: the server's last loop iterations (ready fds, time
  blocked and working), each connection's output queue against its limit (a bar), rooms
  and members, redrawn a few times a second by a thread of its own, with buttons that
  inject the course's situations (situations.py) on a worker thread.

Neither blocks the kernel: a cell that shows one returns at once. Where widgets do not
render (nbval, a static viewer, GitHub), their text/plain is a short fixed description,
and ``summary()`` gives a plain line a cell can print.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets  # type: ignore[import-untyped,unused-ignore]

from ..scripted import Received
from ..server import ChatServer
from .clients import ClientHub, LiveClient
from .monitor import Monitor, Snapshot, rooms_text
from .situations import Situations

__all__ = ["ChatWidget", "LiveView"]

# Lines a chat widget shows (the newest), and characters of each; the client keeps them all.
SHOWN_LINES = 40
SHOWN_CHARS = 120
# How often the live view redraws: a few times a second is what an eye follows.
REFRESH_SECONDS = 0.25
LOG_STYLE = (
    "height: 14em; overflow-y: auto; font-family: monospace; font-size: 12px; "
    "border: 1px solid #ccc; padding: 4px; white-space: pre-wrap; display: flex; "
    "flex-direction: column-reverse"  # keeps the newest line in sight
)


class ChatWidget(widgets.VBox):
    """A chat client in a widget: ``ChatWidget(hub, server.address, "alice", room=1)``."""

    def __init__(
        self, hub: ClientHub, address: tuple[str, int], nick: str, *, room: int, **kwargs: Any
    ) -> None:
        self.nick, self.chat_room = nick, room
        self._lock = threading.Lock()
        self._shown: list[str] = []
        self._log = widgets.HTML(value=self._render())
        self._log.add_class("chatlab-chat-log")
        self._input = widgets.Text(
            placeholder=f"a message to room {room} as {nick}; Enter sends",
            continuous_update=False,
            layout=widgets.Layout(width="70%"),
        )
        self._input.add_class("chatlab-chat-input")
        self._button = widgets.Button(description="Send")
        title = widgets.HTML(f"<b>{html.escape(nick)}</b> in room {room}")
        super().__init__(
            [title, self._log, widgets.HBox([self._input, self._button])],
            layout=widgets.Layout(width="32em", margin="0 1em 0 0"),
            **kwargs,
        )
        self.add_class("chatlab-chat")
        self.add_class(f"chatlab-chat-{nick}")
        self.client: LiveClient = hub.connect(address, nick, room=room, on_line=self._on_line)
        self._input.observe(self._on_submit, names="value")
        self._button.on_click(lambda _: self._send_line(self._input.value))

    def __repr__(self) -> str:
        # What a notebook stores as text/plain: fixed, whatever was said.
        return f"ChatWidget({self.nick} in room {self.chat_room})"

    def summary(self) -> str:
        return f"{self.nick} is in room {self.chat_room}, connected from a live client"

    def say(self, text: str) -> None:
        """Send a line, as if typed (the widget shows it too: the server does not echo)."""
        self._send_line(text)

    def _on_submit(self, change: dict) -> None:
        if change["new"]:
            self._send_line(change["new"])

    def _send_line(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self.client.say(text)
        self._add(f"<{self.nick}> {text}")
        self._input.value = ""

    def _on_line(self, client: LiveClient, line: Received) -> None:
        self._add(str(line) if line.room is None else line.body)  # on the hub's loop thread

    def _add(self, text: str) -> None:
        if len(text) > SHOWN_CHARS:
            text = text[: SHOWN_CHARS - 1] + "\u2026"
        with self._lock:
            self._shown.append(text)
            del self._shown[:-SHOWN_LINES]
            self._log.value = self._render()

    def _render(self) -> str:
        rows = "".join(f"<div>{html.escape(t)}</div>" for t in reversed(self._shown))
        return f'<div style="{LOG_STYLE}">{rows or "<div>(nothing yet)</div>"}</div>'

    def close_client(self) -> None:
        """Close the connection; the widget stays on the page, its input disabled."""
        self.client.close()
        self._input.disabled = self._button.disabled = True


class LiveView(widgets.VBox):
    """A running server, live: ``LiveView(server, hub, room=1)``; ``stop()`` stops it
    (``close()`` is ipywidgets' own: it would take the widget off the page)."""

    BUTTONS = {
        "slow reader": "slow_reader",
        "talk": "talk",
        "flood": "flood",
        "reset mid-broadcast": "reset_mid_broadcast",
        "half frame": "half_frame",
    }

    def __init__(
        self, server: ChatServer, hub: ClientHub, *, room: int = 1, redis: Any = None
    ) -> None:
        """``redis``: the RedisServer of the server's bus, for a "kill/restart Redis" button."""
        self.server = server
        self.monitor = Monitor(server)
        self.situations = Situations(server, hub, room, redis=redis)
        self._header = widgets.HTML()
        self._trace = widgets.HTML()
        self._conns = widgets.HTML()
        self._rooms = widgets.HTML()
        self.status = widgets.HTML("<i>press a button to inject a situation</i>")
        self.status.add_class("chatlab-live-status")
        self._buttons = []
        buttons = dict(self.BUTTONS)
        if redis is not None and server.bus is not None:
            buttons["kill / restart Redis"] = "toggle_redis"
        for label, method in buttons.items():
            button = widgets.Button(description=label)
            button.add_class("chatlab-live-" + method.replace("_", "-"))
            button.on_click(lambda _, m=method: self.inject(m))
            self._buttons.append(button)
        super().__init__(
            [
                self._header,
                self._trace,
                self._conns,
                self._rooms,
                widgets.HBox(self._buttons),
                self.status,
            ]
        )
        self.add_class("chatlab-live")
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.refresh()
        self._thread = threading.Thread(
            target=self._refresh_loop, name="chatlab-live-view", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"LiveView(server {self.server.name}, room {self.situations.room})"

    def summary(self) -> str:
        snap = self.monitor.snapshot()
        return (
            f"live view of {snap.name}: {len(snap.connections)} connections; "
            f"rooms {rooms_text(snap.rooms)}"
        )

    # -- drawing (on the view's thread) ---------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):  # a period, not an ordering: a redraw
            if self.server.loop.is_closed():
                self._header.value = "<b>the server has stopped</b>"
                return
            self.refresh()

    def refresh(self) -> None:
        """Redraw from a fresh snapshot (the view's thread does it a few times a second)."""
        snap = self.monitor.snapshot()
        for widget, value in (
            (self._header, self._draw_header(snap)),
            (self._trace, self._draw_trace(snap)),
            (self._conns, self._draw_connections(snap)),
            (self._rooms, f"<b>rooms</b>: {html.escape(rooms_text(snap.rooms))}"),
        ):
            if widget.value != value:
                widget.value = value

    @staticmethod
    def _draw_header(snap: Snapshot) -> str:
        share = snap.blocked_share
        gone = ", ".join(f"{k} {v}" for k, v in snap.disconnects.items())
        return (
            f"<b>server {html.escape(snap.name)}</b> ({snap.backend}): "
            f"{snap.iterations:,} loop iterations, blocked in the syscall {share:.1%} of the "
            f"time, working {1 - share:.1%}; {snap.frames:,} frames received"
            + (f"; disconnects: {html.escape(gone)}" if gone else "")
        )

    @staticmethod
    def _draw_trace(snap: Snapshot) -> str:
        lines = "\n".join(snap.trace_lines(8)) or "(no iteration yet)"
        return (
            "<b>last loop iterations</b>, newest first (ready fds, time blocked and working):"
            f'<pre style="font-size: 11px; margin: 2px 0">{html.escape(lines)}</pre>'
        )

    @staticmethod
    def _draw_connections(snap: Snapshot) -> str:
        limit = snap.max_output_buffer
        rows = []
        for c in snap.connections:
            pct = min(100.0, 100.0 * c.output_queued / limit) if limit else 0.0
            color = "#d9534f" if pct > 75 else "#f0ad4e" if pct > 0 else "#5cb85c"
            rows.append(
                f'<div class="chatlab-conn" data-name="{html.escape(c.name)}" '
                f'data-queued="{c.output_queued}" data-limit="{limit}" '
                'style="font-family: monospace; font-size: 12px">'
                f'<span style="display: inline-block; width: 12em">{html.escape(c.name)}</span>'
                '<span style="display: inline-block; width: 200px; height: 10px; '
                'background: #eee; vertical-align: middle">'
                f'<span class="chatlab-bar" style="display: block; width: {pct:.1f}%; '
                f'height: 100%; background: {color}"></span></span> '
                f"out {c.output_queued:,} / {limit:,} B, in {c.input_buffered:,} B, {c.state}"
                "</div>"
            )
        return "<b>connections</b>: output queued against the limit (SendQ)" + "".join(rows)

    # -- the buttons ------------------------------------------------------------------------

    def inject(self, situation: str) -> None:
        """Run one of Situations' methods on a worker thread; its sentence goes to status."""
        if self._worker is not None and self._worker.is_alive():
            self.status.value = "<i>busy: one situation at a time</i>"
            return
        self.status.value = f"<i>{html.escape(situation)}...</i>"

        def work() -> None:
            try:
                text = getattr(self.situations, situation)()
            except Exception as exc:  # shown in the view, never raised into the page
                text = f"{situation} failed: {exc}"
            self.status.value = html.escape(text)
            self.refresh()

        self._worker = threading.Thread(target=work, name="chatlab-live-situation", daemon=True)
        self._worker.start()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until the situation a button started has finished."""
        if self._worker is not None:
            self._worker.join(timeout)

    def stop(self) -> None:
        """Stop redrawing, close the situations' clients, remove the trace hook."""
        self._stop.set()
        self._thread.join(5)
        self.wait_idle()
        self.situations.stop()
        self.monitor.close()
        for button in self._buttons:
            button.disabled = True
        self.status.value = "<i>stopped</i>"
