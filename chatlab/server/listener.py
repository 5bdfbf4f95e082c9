"""Accepting: the listening socket, and what happens before a client is a Connection.

Design notes:

1. Accept in a loop until the backlog is empty (asyncio does the same), but at most 64 per
   readiness event, so that a flood of connections cannot starve the connected clients.
2. A full server, or a fd that select() cannot watch, gets one readable line ("! server
   full (10000 connections)") and is closed: never a silent reset.
3. Out of fds (EMFILE), accept() fails and the pending client stays in the backlog, keeping
   the listener readable: the loop would spin. A spare fd, opened at start, is given up to
   accept that client, tell it why and close it, then opened again.
4. Options set on the listening socket are copied by Linux to every socket it accepts
   (TCP keepalive here: test_accepted_connections_have_tcp_keepalive in tests/test_guards.py
   checks an accepted socket's): one setsockopt at start instead of four per connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

from .. import protocol
from ..framing import encode_frame
from .limits import KEEPALIVE_PROBES

if TYPE_CHECKING:
    from .connections import Connections

__all__ = ["Listener"]

logger = logging.getLogger("chatlab.server")

# At most this many accept() calls per readiness event (design note 1).
ACCEPTS_PER_EVENT = 64


class Listener:
    """The listening socket of one server; new clients go to ``conns.add()``."""

    def __init__(
        self, conns: Connections, host: str, port: int, backlog: int, reuse_port: bool
    ) -> None:
        self.conns = conns
        self.loop = conns.loop
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server(
            (host, port), family=family, backlog=backlog, reuse_port=reuse_port
        )
        self.sock.setblocking(False)
        try:
            keepalive(self.sock, conns.limits.keepalive)
            self._spare_fd = _open_spare_fd()  # design note 3
            self.loop.add_reader(self.sock, self._on_accept)
        except BaseException:
            self.sock.close()
            raise

    def _on_accept(self) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse_for_lack_of_fds()
                    return
                # ECONNABORTED and friends: that client gave up before we got to it.
                logger.info("accept failed: %s", exc)
                continue
            self.conns.stats.accepted += 1
            self.conns.add(sock, address)

    def _refuse_for_lack_of_fds(self) -> None:
        if self._spare_fd is None:
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            sock, _ = self.sock.accept()
        except OSError:
            pass
        else:
            refuse(sock, protocol.OutOfFds(), self.conns)
        finally:
            self._spare_fd = _open_spare_fd()

    def stop(self) -> None:
        """Leave new clients in the kernel's backlog (shutdown; a bus still coming up)."""
        if self.sock.fileno() >= 0 and not self.loop.is_closed():
            self.loop.remove_reader(self.sock)

    def start(self) -> None:
        self.loop.add_reader(self.sock, self._on_accept)

    def close(self) -> None:
        self.stop()
        self.sock.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None


def refuse(sock: socket.socket, why: protocol.ErrorReply, conns: Connections) -> None:
    """Tell a client we cannot serve why, in one line, and close (design note 2)."""
    conns.stats.refused += 1
    logger.warning("refused a connection: %s", why.sentence())
    with contextlib.suppress(OSError):
        sock.send(encode_frame(protocol.SERVER_ROOM, why.body()))
    sock.close()


def keepalive(sock: socket.socket, seconds: float) -> None:
    """TCP keepalive on sock: probed after ``seconds`` idle, KEEPALIVE_PROBES times every
    seconds/KEEPALIVE_PROBES, so a vanished peer is gone within about 2 x seconds; the
    kernel also gives up on data unacknowledged that long (TCP_USER_TIMEOUT, Linux)."""
    if not seconds:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, round(seconds))
    options = {
        "TCP_KEEPIDLE": idle,  # Linux, and FreeBSD; macOS calls it TCP_KEEPALIVE
        "TCP_KEEPALIVE": idle,
        "TCP_KEEPINTVL": max(1, round(seconds / KEEPALIVE_PROBES)),
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
        "TCP_USER_TIMEOUT": round(2 * seconds * 1000),  # milliseconds
    }
    for name, value in options.items():
        if hasattr(socket, name):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _open_spare_fd() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return None
