"""The grader's clients: raw TCP peers that read bytes, not replies.

The grader must judge servers that word their replies in any way: chatlab's frames
(``<RID:111><alice> hi</RID:111>``), the original's bare ``\\n<('127.0.0.1', 4242)>hi``, a
learner's ``alice: hi\\n``. So a peer does not parse what it receives. It keeps every byte,
and a check asks one question of them: did a unique token (``m-17-3fa2``), sent inside a
message, arrive here? Tokens are unique per check, so a join notice or a prompt can never be
mistaken for a message.

Nothing reads in the background: a peer reads only inside ``wait_for`` and ``quiet``, each
bounded by a deadline, so a peer that is never asked to read is exactly a client that stops
reading.
"""

from __future__ import annotations

import select
import socket
import struct
import time

__all__ = ["Peer"]


def _readable(sock: socket.socket, timeout: float) -> bool:
    """select() cannot take fds >= 1024 (FD_SETSIZE), and a grader in the same process as a
    server with a thousand clients has such fds: poll() where there is one (not on Windows)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


class Peer:
    """One client of the server under test, with everything it has received so far."""

    def __init__(self, address: tuple[str, int], name: str, *, rcvbuf: int | None = None) -> None:
        self.name = name
        self.received = bytearray()
        self.closed_by_server = False  # recv() returned b"" or failed: the server hung up
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect(): the window is agreed in the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5.0)
        self.sock.connect(address)
        # One byte at a time must mean one segment at a time: no Nagle batching.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, timeout: float = 5.0) -> bool:
        """Send all of ``data``; False if the server did not take it within ``timeout``
        (it stopped reading us) or the connection is gone."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # socket.timeout is an OSError too
            return False

    def join(self, room: int) -> bool:
        return self.send(b"<RID:%d></RID:%d>" % (room, room))

    def say(self, room: int, text: str) -> bool:
        return self.send(b"<RID:%d>%s</RID:%d>" % (room, text.encode(), room))

    # -- receiving -------------------------------------------------------------------------

    def pump(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for bytes, then take all that are there; True if any came."""
        got, wait = False, timeout
        while not self.closed_by_server:
            if not _readable(self.sock, wait):
                break
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed_by_server = True
                break
            self.received += data
            got, wait = True, 0  # what else is there already, without waiting again
        return got

    def saw(self, token: str) -> bool:
        return token.encode() in self.received

    def wait_for(self, token: str, timeout: float) -> bool:
        """Read until ``token`` has arrived (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while not self.saw(token):
            left = deadline - time.monotonic()
            if left <= 0 or self.closed_by_server:
                return self.saw(token)
            self.pump(min(left, 0.05))
        return True

    def quiet(self, token: str, window: float) -> bool:
        """Read for ``window`` seconds; True if ``token`` did not arrive."""
        deadline = time.monotonic() + window
        while time.monotonic() < deadline and not self.closed_by_server:
            self.pump(deadline - time.monotonic())
        return not self.saw(token)

    def tail(self, limit: int = 120) -> str:
        """The last bytes received, for a failure message."""
        if not self.received:
            return "nothing"
        text = bytes(self.received[-limit:]).decode(errors="replace")
        return ("..." if len(self.received) > limit else "") + repr(text)

    # -- leaving ---------------------------------------------------------------------------

    def close(self) -> None:
        """A normal close: FIN (or RST, if received bytes are left unread: the kernel's rule)."""
        self.sock.close()

    def reset(self) -> None:
        """Vanish with RST: SO_LINGER on with a zero timeout makes close() abort."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def half_close(self) -> None:
        """shutdown(SHUT_WR): 'I have nothing more to send'; we can still receive."""
        self.sock.shutdown(socket.SHUT_WR)

    def __repr__(self) -> str:
        return f"<Peer {self.name}: {len(self.received)} bytes received>"
