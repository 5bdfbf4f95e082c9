"""python -m chatlab.bench micro: what chatlab's layers cost per frame and per event.

The fanout tables compare whole servers. These two measurements split the difference between
chatlab and the flat loop (baseline_epoll) into its two per-message parts, in one process,
with no network in between:

- **decoding a frame**: ``FrameDecoder.events()`` (every rule of framing.py: resync with a
  reason, size limit, linear search) against the flat loop's bare ``find()`` parse, on the
  same 1 KiB frames, four per read as in the fanout benchmark;
- **dispatching a ready socket**: ``EventLoop.run_once()`` (backend translation, handle
  lookup, statistics) against ``epoll.poll()`` and a dict of callbacks, with N sockets ready.

Medians of rounds; each figure is microseconds per frame or per ready event.
"""

from __future__ import annotations

import select
import socket
import statistics
import time

from ..framing import FrameDecoder, encode_frame
from ..loop import EventLoop
from .runner import Scenario


def _frames(count: int = 4, size: int = 1024) -> bytes:
    return b"".join(
        encode_frame(3, (b"%d-%d " % (7, seq)).ljust(size - len(encode_frame(3, b"")), b"x"))
        for seq in range(count)
    )


def decoder_us_per_frame(reads: int = 20000) -> float:
    data, decoder = _frames(), FrameDecoder()
    t = time.perf_counter()
    for _ in range(reads):
        decoder.receive_data(data)
        for _event in decoder.events():
            pass
    return 1e6 * (time.perf_counter() - t) / (reads * 4)


def flat_parse_us_per_frame(reads: int = 20000) -> float:
    """baseline_epoll's parse: three find()s and two slices per frame, no rules."""
    data = _frames()
    t = time.perf_counter()
    for _ in range(reads):
        buf, pos = data, 0
        while True:
            start = buf.find(b"<RID:", pos)
            if start < 0:
                break
            gt = buf.find(b">", start)
            digits = buf[start + 5 : gt]
            close = b"</RID:" + digits + b">"
            end = buf.find(b"<", gt)
            if end >= 0 and not buf.startswith(close, end):
                end = buf.find(close, end + 1)
            if end < 0:
                break
            pos = end + len(close)
            if digits.isdigit():
                _room, _text = int(digits), buf[gt + 1 : end]
    return 1e6 * (time.perf_counter() - t) / (reads * 4)


def dispatch_us_per_event(ready: int = 100, passes: int = 2000) -> tuple[float, float]:
    """(chatlab's EventLoop on epoll, a flat epoll loop): us per ready socket dispatched."""
    pairs = [socket.socketpair() for _ in range(ready)]
    calls = [0]

    def callback() -> None:
        calls[0] += 1

    try:
        for _a, b in pairs:
            b.send(b"x")  # never read: level-triggered, the socket stays ready
        with EventLoop("epoll") as loop:
            for a, _b in pairs:
                loop.add_reader(a, callback)
            t = time.perf_counter()
            for _ in range(passes):
                loop.run_once(0)
            ours = time.perf_counter() - t
        ep, handlers = select.epoll(), {}
        for a, _b in pairs:
            ep.register(a.fileno(), select.EPOLLIN)
            handlers[a.fileno()] = callback
        t = time.perf_counter()
        for _ in range(passes):
            for fd, events in ep.poll(0):
                if events & select.EPOLLIN:
                    handlers[fd]()
        flat = time.perf_counter() - t
        ep.close()
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    return 1e6 * ours / (passes * ready), 1e6 * flat / (passes * ready)


def add_arguments(parser) -> None:
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument("--out", help="write the results as JSON here")


def run(rounds: int = 5) -> dict:
    samples: dict[str, list] = {
        "decoder": [],
        "flat_parse": [],
        "loop_dispatch": [],
        "flat_dispatch": [],
    }
    for _ in range(rounds):
        samples["decoder"].append(decoder_us_per_frame())
        samples["flat_parse"].append(flat_parse_us_per_frame())
        ours, flat = dispatch_us_per_event() if hasattr(select, "epoll") else (None, None)
        samples["loop_dispatch"].append(ours)
        samples["flat_dispatch"].append(flat)
    return {
        "scenario": "micro",
        "rounds": rounds,
        "results": {k: statistics.median(v) if None not in v else None for k, v in samples.items()},
    }


def format_report(report: dict) -> str:
    r = report["results"]
    lines = [
        f"micro: per-message costs, medians of {report['rounds']} rounds, us",
        f"decode one 1 KiB frame:      FrameDecoder {r['decoder']:.2f}"
        f"   flat find() parse {r['flat_parse']:.2f}",
    ]
    if r["loop_dispatch"] is not None:
        lines.append(
            f"dispatch one ready socket:   EventLoop    {r['loop_dispatch']:.2f}"
            f"   flat epoll loop   {r['flat_dispatch']:.2f}"
        )
    return "\n".join(lines)


SCENARIO = Scenario(
    name="micro",
    help="decoder and event-loop costs per frame and per event",
    add_arguments=add_arguments,
    run=lambda args: run(rounds=1 if args.quick else args.rounds),
    format=format_report,
)
