"""The server's limits: each a named default with the reason beside it.

Exceeding one gives the peer a readable "! ..." line and a log line, never a traceback; the
server goes on serving everyone else. ``Limits`` gathers them for one server; the CLI makes a
flag of each field (``--max-output-buffer N``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


# A frame still incomplete this long after its first byte is abandoned, and its sender
# disconnected. Without it, a peer that sends half a frame and stops holds up to a frame of
# our memory forever: 3,000 such peers held 191 MB (nginx's client_header_timeout and
# HAProxy's timeout http-request are the same rule). 30 s is ages for a chat line, even
# over a bad mobile link.
FRAME_TIMEOUT = 30.0
# Every connection's input and output buffers together: past this, the connection holding
# the most is disconnected (redis's maxmemory-clients). 256 MiB is far above what honest
# clients hold (a few KiB each at 10,000 connections) and bounds what an attack can make
# us hold, whatever the number of connections.
MAX_BUFFER_MEMORY = 256 * 1024 * 1024
# Messages one connection may send per second, on average, and in a burst (a token bucket:
# RFC 1459 section 8.10's flood control, without its penalty). Over it, the connection is
# not read until its budget refills: TCP's window then slows the sender, and nothing is
# dropped or buffered by us. No typist sends 100 messages a second; a paste of 500 lines
# goes through at once. 0 means no limit (the throughput benchmarks use it).
MAX_MESSAGE_RATE = 100.0
MESSAGE_BURST = 500
# How long a connection may stay over its rate (its bucket never full again) before it is
# disconnected for flooding: IRC's "Excess Flood". Without it, a flooder's kernel buffers
# hold minutes of messages that we would go on reading, at the rate, after it has left:
# 239,786 frames in 3 s, 40 minutes at 100 a second, its fd held all that time. A paste of
# 500 lines passes at once; 3,000 lines take 25 s at 100 a second, still under 30.
FLOOD_TIMEOUT = 30.0
# Frames handled per readiness callback, whatever the rate limit: the rest wait for the next
# loop pass. One 64 KiB read holds about 1,900 tiny frames, and handling them all at once
# let one flooder hold the loop while a quiet pair's p99 went from 0.9 to 39 ms.
FRAMES_PER_CALLBACK = 64
# TCP keepalive: a peer that vanishes (no FIN, no RST: a machine switched off, a cable
# pulled) is probed after this many idle seconds, then KEEPALIVE_PROBES times every
# seconds/KEEPALIVE_PROBES, so it is gone within about twice this. 0 turns it off.
KEEPALIVE_SECONDS = 60.0
KEEPALIVE_PROBES = 4


def _limit(default, help: str, unit: str = "N"):
    """A field of Limits, with the --help line its command-line flag prints."""
    return field(default=default, metadata={"help": help, "unit": unit})


@dataclass(frozen=True)
class Limits:
    """The server's limits; ``Limits(max_output_buffer=4096)`` changes one.

    Each field is a flag of ``python -m chatlab.server`` (``--max-output-buffer N``), whose
    --help line is the text beside it here."""

    max_frame_size: int = _limit(
        MAX_FRAME_SIZE, "bytes of one frame, tags included; a larger one disconnects"
    )
    max_input_buffer: int = _limit(
        MAX_INPUT_BUFFER, "bytes read from one client and not yet a whole frame"
    )
    max_output_buffer: int = _limit(
        MAX_OUTPUT_BUFFER,
        "bytes queued for one client that its kernel will not take (the SendQ); over it, "
        "the client is not reading and is disconnected",
    )
    max_connections: int = _limit(
        MAX_CONNECTIONS, "clients at once; more are told the server is full"
    )
    max_rooms_per_connection: int = _limit(MAX_ROOMS_PER_CONNECTION, "rooms one client may be in")
    linger_seconds: float = _limit(
        LINGER_SECONDS, "seconds a closing connection may take to flush its last lines", "S"
    )
    kernel_send_buffer: int | None = _limit(KERNEL_SEND_BUFFER, "SO_SNDBUF bytes per client")
    frame_timeout: float = _limit(
        FRAME_TIMEOUT, "seconds a frame may stay incomplete after its first byte (0: forever)", "S"
    )
    max_buffer_memory: int = _limit(
        MAX_BUFFER_MEMORY,
        "bytes of all clients' buffers together; over it, the biggest holder is disconnected",
    )
    max_message_rate: float = _limit(
        MAX_MESSAGE_RATE,
        "messages per second one client may send on average (0: no limit); over it, it is "
        "not read until its budget refills",
    )
    message_burst: int = _limit(MESSAGE_BURST, "messages one client may send at once")
    flood_timeout: float = _limit(
        FLOOD_TIMEOUT,
        "seconds a client may stay over its message rate before it is disconnected for "
        "flooding (0: never)",
        "S",
    )
    keepalive: float = _limit(
        KEEPALIVE_SECONDS,
        "idle seconds before TCP keepalive probes a silent peer; a vanished one is gone "
        "within about twice this (0: off)",
        "S",
    )

    def __post_init__(self) -> None:
        if self.message_burst < 1:
            raise ValueError(f"message_burst must be at least 1, got {self.message_burst}")
        if self.max_input_buffer <= self.max_frame_size:
            raise ValueError(
                f"max_input_buffer ({self.max_input_buffer}) must exceed max_frame_size "
                f"({self.max_frame_size}), or a frame of the maximum size could never arrive"
            )
