"""The server's limits: each a named default with the reason beside it.

Exceeding one gives the peer a readable "! ..." line and a log line, never a traceback; the
server goes on serving everyone else. ``Limits`` gathers them for one server; the CLI makes a
flag of each field (``--max-output-buffer N``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..framing import MAX_FRAME_SIZE

__all__ = ["Limits"]


# Output queued for one member and not yet taken by its kernel buffer. 1 MiB holds hundreds
# of ordinary messages, or a dozen pasted logs at the maximum frame size; a member further
# behind than that is not reading, and keeping more for it would let one idle client make
# the server grow without bound.
MAX_OUTPUT_BUFFER = 1024 * 1024
# Bytes read from one member but not yet parsed. The decoder keeps at most one incomplete
# frame, so this must exceed the maximum frame size; we never recv() more than fits.
MAX_INPUT_BUFFER = 2 * MAX_FRAME_SIZE
# Each connection costs a fd and two small buffers. 10,000 fits a default fd limit raised
# to its usual hard limit; beyond it a new client is told the server is full.
MAX_CONNECTIONS = 10_000
# Rooms one connection may be in: each room costs the server an entry per member.
MAX_ROOMS_PER_CONNECTION = 100
# How much one recv() takes: large enough for many frames per call, small enough to be fair.
RECV_SIZE = 64 * 1024
# The kernel's send buffer per connection (SO_SNDBUF). None leaves Linux's autotuning, which
# grows it to several MiB for a reader that falls behind; a small value makes a slow reader
# reach max_output_buffer quickly, which is what a lesson or a test of the SendQ wants.
KERNEL_SEND_BUFFER = None
# How long a closing connection may take to flush its last output (a notice, the reason),
# and how long shutdown waits for everyone's, before closing anyway.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """The server's limits; ``Limits(max_output_buffer=4096)`` changes one."""

    max_frame_size: int = MAX_FRAME_SIZE
    max_input_buffer: int = MAX_INPUT_BUFFER
    max_output_buffer: int = MAX_OUTPUT_BUFFER
    max_connections: int = MAX_CONNECTIONS
    max_rooms_per_connection: int = MAX_ROOMS_PER_CONNECTION
    linger_seconds: float = LINGER_SECONDS
    kernel_send_buffer: int | None = KERNEL_SEND_BUFFER

    def __post_init__(self) -> None:
        if self.max_input_buffer <= self.max_frame_size:
            raise ValueError(
                f"max_input_buffer ({self.max_input_buffer}) must exceed max_frame_size "
                f"({self.max_frame_size}), or a frame of the maximum size could never arrive"
            )
