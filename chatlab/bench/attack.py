"""The attacks of issue 14 ("A server for the open internet"), measured: each criterion of
its done-when, with the figure measured beside the bound, PASS or FAIL.

a. Slow senders: thousands of clients each send most of one frame (60 KB), then nothing.
   With ``--frame-timeout 5`` every one must be closed within about 12 s of the attack's
   start, each told why (``! disconnected: frame not completed within 5 s``), while the
   server's resident memory stays under 320 MB (6,000 x 60 KB is 360 MB: the memory limit
   must cut some off before the timeout does) and a pair chatting meanwhile loses nothing.
b. A flood against ``--max-message-rate 100``: one client sends tiny messages as fast as it
   can. A reader in its room must get about 100 a second (the rest wait in the kernel:
   TCP's window pushes back on the flooder), the server must hold no backlog (RSS under
   100 MB), and a pair in another room must keep its p99 within max(5 ms, 5 x the p99 it
   had before the flood, measured first on the same server).
c. The same flood against ``--max-message-rate 0`` (no limit): fairness alone (a bounded
   number of frames per readiness callback) must keep the pair's p99 within that bound.

Every client is in a process of its own (spawn), on a core other than the server's where
there are two, so the pair's latency is the server's, not its neighbours'. The pair is two
clients in one process, each sending the other a message every few milliseconds; a
message's latency is from its send to its receipt (one clock). A server without the flag
a part needs exits with a usage error; that part then says what it needs instead of
measuring.

python -m chatlab.bench attack [--only a|b|c] [--senders 6000] [--frame-timeout 5] ...
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import socket
import struct
import threading
import time
from collections import Counter

from .. import protocol
from ..backends import available_backends
from ..framing import Frame, FrameDecoder, encode_frame
from ..server.limits import Limits
from ._util import (
    ServerProcess,
    disconnect_reason,
    flag_missing,
    ms,
    percentile,
    raise_fd_limit,
    reason_kind,
    recv_or_eof,
    rss_of,
    run_load,
)
from .runner import Scenario, placement, pyplot

PAIR_ROOM, ATTACK_ROOM = 1, 2
MB = 1e6
#: connections being opened at once: well under the server's listen backlog (1024), so no
#: SYN is dropped and retried a second later
CONNECTING = 256


def add_arguments(parser) -> None:
    backends = available_backends()
    parser.add_argument("--only", choices=["a", "b", "c"], help="run one part")
    parser.add_argument(
        "--backend", choices=backends, default="epoll" if "epoll" in backends else backends[0]
    )
    a = parser.add_argument_group("a: slow senders")
    a.add_argument("--senders", type=int, default=6000, help="default 6000")
    a.add_argument("--sender-bytes", type=int, default=60_000, help="of one frame, each")
    a.add_argument("--frame-timeout", type=float, default=5.0, help="the server's (S)")
    a.add_argument("--close-within", type=float, default=12.0, help="the bound (S)")
    a.add_argument("--rss-limit", type=float, default=320.0, help="the bound (MB)")
    bc = parser.add_argument_group("b, c: a flood")
    bc.add_argument("--rate", type=float, default=100.0, help="b's --max-message-rate")
    bc.add_argument("--quiet", type=float, default=10.0, help="seconds of the pair alone")
    bc.add_argument("--flood", type=float, default=10.0, help="seconds of flood")
    bc.add_argument("--flood-rss-limit", type=float, default=100.0, help="b's bound (MB)")
    parser.add_argument(
        "--pair-interval",
        type=float,
        default=0.02,
        help="seconds between a pair's messages (each of the two sends one): 50/s each, half"
        " the server's default --max-message-rate",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, in about 30 s")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--plot", help="write a PNG plot here")


def run_cli(args) -> dict:
    if args.quick:
        args.senders, args.frame_timeout, args.close_within = 300, 2.0, 6.0
        args.quiet, args.flood = 2.0, 3.0
    return run(**vars(args))


def run(
    only=None,
    backend="epoll",
    senders=6000,
    sender_bytes=60_000,
    frame_timeout=5.0,
    close_within=12.0,
    rss_limit=320.0,
    rate=100.0,
    quiet=10.0,
    flood=10.0,
    flood_rss_limit=100.0,
    pair_interval=0.02,
    **_,
) -> dict:
    """The parts asked for (all by default); a report for format_report and plot."""
    params = {k: v for k, v in locals().items() if k != "_"}
    parts = {}
    if only in (None, "a"):
        parts["a"] = slow_senders(
            backend, senders, sender_bytes, frame_timeout, close_within, rss_limit, pair_interval
        )
    if only in (None, "b"):
        parts["b"] = flood_trial(backend, rate, quiet, flood, flood_rss_limit, pair_interval)
    if only in (None, "c"):
        parts["c"] = flood_trial(backend, 0.0, quiet, flood, None, pair_interval)
    return {"scenario": "attack", "params": params, "parts": parts}


def _criterion(name: str, value, unit: str, bound: str, ok: bool) -> dict:
    return {"name": name, "value": value, "unit": unit, "bound": bound, "ok": bool(ok)}


def _start_server(backend: str, flags: list[str], cpu: int | None):
    """(the server, None), or (None, the flag it does not have)."""
    try:
        return ServerProcess("chatlab", backend, cpu=cpu, extra_args=flags), None
    except RuntimeError as exc:
        missing = flag_missing(exc)
        if missing is None:
            raise
        return None, missing


class _RssSampler(threading.Thread):
    """The server's RSS every 50 ms: its peak, and a timeline for the plot."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), rss_of(self.pid)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def peak(self, since: float = 0.0) -> int:
        return max((r for t, r in self.samples if t >= since), default=0)


# ------------------------------------------------------------------ a: slow senders


def slow_senders(backend, senders, sender_bytes, frame_timeout, close_within, rss_limit, interval):
    """Part a: ``senders`` clients each send ``sender_bytes`` of one frame, then nothing."""
    title = (
        f"a. {senders} slow senders ({sender_bytes} B of one frame each, then silence)"
        f" against --frame-timeout {frame_timeout:g}"
    )
    fd_note = raise_fd_limit(senders + 512)  # ours; the server inherits it
    server_cpu, load_cpu = placement()
    # The server as deployed: its own flood control (the throughput benchmarks turn it off)
    rate = getattr(Limits(), "max_message_rate", None)
    flags = [] if rate is None else ["--max-message-rate", f"{rate:g}"]
    flags += ["--frame-timeout", f"{frame_timeout:g}"]
    server, missing = _start_server(backend, flags, server_cpu)
    if server is None:
        return {"title": title, "needs": missing, "criteria": []}
    give_up = close_within + max(5.0, close_within / 2)  # bounded, whatever the server does
    with server:
        assert server.proc is not None
        sampler = _RssSampler(server.proc.pid)
        sampler.start()
        stop = multiprocessing.get_context("spawn").Event()
        try:
            _, parts, server_cpu_s, _, _ = run_load(
                server,
                _role,
                [
                    ("pair", server.address, load_cpu, (give_up + 5, interval, stop)),
                    ("senders", server.address, load_cpu, (senders, sender_bytes, give_up, stop)),
                ],
                give_up + 10,
            )
        finally:
            sampler.stop()
    by = {p["role"]: p for p in parts}
    s, pair = by["senders"], by["pair"]
    t0 = s["started"]
    closes = s["closed_at"]
    last = max(closes) if closes else None
    all_closed = len(closes) == senders
    peak = sampler.peak(since=t0)
    kinds = s["reasons"]
    told = sum(n for k, n in kinds.items() if k != "none")
    timeouts = kinds.get("FrameTimedOut", 0)
    figures = {
        "senders": senders,
        "connected": s["connected"],
        "connect_errors": s["connect_errors"],
        "sent_whole": s["sent_whole"],
        "sent_whole_by_s": s["sent_whole_by"],
        "closed_by_server": len(closes),
        "last_close_s": last,
        "close_after_first_byte_s": {
            "p50": percentile(s["close_after_first_byte"], 50),
            "max": max(s["close_after_first_byte"], default=None),
        },
        "reasons": kinds,
        "reason_examples": s["examples"],
        "told_why": told,
        "frame_timeout_reasons": timeouts,
        "still_open_at_give_up": s["still_open"],
        "server_peak_rss_mb": peak / MB,
        "server_cpu_s": server_cpu_s,
        "pair": _pair_figures(pair),
        "fd_limit_note": fd_note,
    }
    closed_value = round(last, 2) if all_closed and last is not None else None
    criteria = [
        _criterion(
            "every slow sender closed by the server, within",
            closed_value if all_closed else f"{len(closes)} of {senders} closed",
            "s after the start",
            f"<= {close_within:g}",
            all_closed and last is not None and last <= close_within,
        ),
        _criterion(
            "each told why (! disconnected: ...)",
            told,
            f"of {senders} ({timeouts} 'frame not completed')",
            f"== {senders}",
            told == senders,
        ),
        _criterion(
            "server peak RSS", round(peak / MB, 1), "MB", f"< {rss_limit:g}", peak / MB < rss_limit
        ),
        _criterion(
            "the pair's messages lost meanwhile",
            pair["lost"],
            f"of {pair['sent']}",
            "== 0",
            pair["lost"] == 0 and pair["sent"] > 0,
        ),
    ]
    timeline = [(round(t - t0, 3), r) for t, r in sampler.samples if t >= t0 - 0.5]
    return {
        "title": title,
        "needs": None,
        "figures": figures,
        "criteria": criteria,
        "rss_timeline": timeline,
        "closed_at": sorted(closes),
    }


def _senders(address, params, begin) -> dict:
    """Open ``n`` connections, send each ``nbytes`` of one frame, then read until the server
    closes each; give up ``give_up`` s after the start. One process, one selector."""
    n, nbytes, give_up, stop = params
    started = begin()  # nothing to set up: the connections are the attack
    head = b"<RID:%d>" % ATTACK_ROOM
    payload = memoryview(head + b"a" * (nbytes - len(head)))  # never a closing tag
    sel = selectors.DefaultSelector()
    opened = connecting = connected = sent_whole = 0
    sent_whole_by = None
    first_byte: dict[int, float] = {}
    offset: dict[int, int] = {}
    decoders: dict[int, FrameDecoder] = {}
    socks: dict[int, socket.socket] = {}
    closed_at: list[float] = []
    after_first: list[float] = []
    reasons: Counter = Counter()
    examples: dict[str, str] = {}
    connect_errors: Counter = Counter()
    deadline = started + give_up

    def finish(i: int, now: float) -> None:
        sock = socks.pop(i)
        sel.unregister(sock)
        sock.close()
        why = disconnect_reason(decoders.pop(i))
        kind = reason_kind(why)
        reasons[kind] += 1
        if why is not None:
            examples.setdefault(kind, why)
        if i in first_byte:
            closed_at.append(now - started)
            after_first.append(now - first_byte[i])

    while time.monotonic() < deadline and (opened < n or socks):
        while opened < n and connecting < CONNECTING:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(address)
            if err not in (0, 115):  # 115: EINPROGRESS
                connect_errors[os.strerror(err)] += 1
                sock.close()
                opened += 1
                continue
            socks[opened], offset[opened], decoders[opened] = sock, 0, FrameDecoder()
            sel.register(sock, selectors.EVENT_WRITE, opened)
            opened += 1
            connecting += 1
        for key, events in sel.select(0.05):
            i, now = key.data, time.monotonic()
            client = socks[i]
            if events & selectors.EVENT_WRITE:
                if i not in first_byte:
                    connecting -= 1
                    err = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        connect_errors[os.strerror(err)] += 1
                        socks.pop(i)
                        sel.unregister(client)
                        client.close()
                        continue
                    connected += 1
                    first_byte[i] = now
                try:
                    offset[i] += client.send(payload[offset[i] :])
                except BlockingIOError:
                    continue
                except OSError:  # cut off while sending: read its reason, if any
                    sel.modify(client, selectors.EVENT_READ, i)
                    continue
                if offset[i] == len(payload):
                    sent_whole += 1
                    sent_whole_by = now - started
                    sel.modify(client, selectors.EVENT_READ, i)  # silence from now on
            elif events & selectors.EVENT_READ:
                data = recv_or_eof(client)
                if data is None:
                    continue
                if data:
                    decoders[i].receive_data(data)
                else:
                    finish(i, now)
    still_open = len(socks)
    for sock in socks.values():
        sock.close()
    stop.set()  # the pair stops too
    return {
        "connected": connected,
        "sent_whole": sent_whole,
        "sent_whole_by": sent_whole_by,
        "closed_at": closed_at,
        "close_after_first_byte": after_first,
        "reasons": dict(reasons),
        "examples": examples,
        "still_open": still_open,
        "connect_errors": dict(connect_errors),
    }


# --------------------------------------------------------------------- b, c: a flood


def flood_trial(backend, rate, quiet, flood, rss_limit, interval) -> dict:
    """Parts b and c: the pair alone for ``quiet`` s, then with a flooder (and a reader of
    the flood) in another room for ``flood`` s, on one server with --max-message-rate."""
    part = "b" if rate else "c"
    title = (
        f"{part}. one flooder against --max-message-rate {rate:g}"
        f"{' (no limit)' if not rate else ''}; a pair in another room"
    )
    server_cpu, load_cpu = placement()
    server, missing = _start_server(backend, ["--max-message-rate", f"{rate:g}"], server_cpu)
    note = None
    if server is None and not rate and missing == "--max-message-rate":
        # A server from before the flag has no flood control at all: c measures it as is.
        note = f"this server has no {missing}: it has no flood control to turn off"
        server, missing = _start_server(backend, [], server_cpu)
    if server is None:
        return {"title": title, "needs": missing, "criteria": []}
    with server:
        assert server.proc is not None
        sampler = _RssSampler(server.proc.pid)
        sampler.start()
        try:
            (_, (quiet_pair,), _, _, _) = run_load(
                server, _role, [("pair", server.address, load_cpu, (quiet, interval, None))], quiet
            )
            flood_start = time.monotonic()
            _, parts, server_cpu_s, _, _ = run_load(
                server,
                _role,
                [
                    ("pair", server.address, load_cpu, (flood, interval, None)),
                    ("flooder", server.address, load_cpu, (flood,)),
                    ("reader", server.address, load_cpu, (flood,)),
                ],
                flood,
            )
        finally:
            sampler.stop()
    by = {p["role"]: p for p in parts}
    quiet_fig, flood_fig = _pair_figures(quiet_pair), _pair_figures(by["pair"])
    reader, flooder = by["reader"], by["flooder"]
    # The reader's rate once the burst is spent: from its second second (or third) on.
    skip = 2 if flood >= 4 else 1
    steady = reader["per_second"][skip : int(flood)]
    reader_rate = sum(steady) / len(steady) if steady else None
    peak = sampler.peak(since=flood_start)
    bound_ms = max(5.0, 5 * quiet_fig["p99_ms"]) if quiet_fig["p99_ms"] is not None else None
    figures = {
        "pair_quiet": quiet_fig,
        "pair_flood": flood_fig,
        "flooder_sent": flooder["sent"],
        "flooder_sent_per_s": flooder["sent"] / flood,
        "flooder_cut": flooder["reason"],
        "reader_received": reader["received"],
        "reader_per_second": reader["per_second"],
        "reader_steady_per_s": reader_rate,
        "reader_cut": reader["reason"],
        "server_peak_rss_mb": peak / MB,
        "server_cpu_share": server_cpu_s / flood,
        "p99_bound_ms": bound_ms,
    }
    criteria = []
    if rate:
        low, high = 0.8 * rate, 1.25 * rate
        criteria.append(
            _criterion(
                "flood messages a reader in its room gets",
                None if reader_rate is None else round(reader_rate, 1),
                "/s",
                f"in [{low:g}, {high:g}]",
                reader_rate is not None and low <= reader_rate <= high,
            )
        )
    if rss_limit is not None:
        criteria.append(
            _criterion(
                "server peak RSS during the flood",
                round(peak / MB, 1),
                "MB",
                f"< {rss_limit:g}",
                peak / MB < rss_limit,
            )
        )
    p99 = flood_fig["p99_ms"]
    criteria += [
        _criterion(
            "the pair's p99 during the flood",
            None if p99 is None else round(p99, 2),
            f"ms (quiet: p50 {_f(quiet_fig['p50_ms'])}, p99 {_f(quiet_fig['p99_ms'])})",
            "<= max(5, 5 x quiet p99) = " + ("-" if bound_ms is None else f"{bound_ms:.2f}"),
            p99 is not None and bound_ms is not None and p99 <= bound_ms,
        ),
        _criterion(
            "the pair's messages lost during the flood",
            by["pair"]["lost"],
            f"of {by['pair']['sent']}",
            "== 0",
            by["pair"]["lost"] == 0 and by["pair"]["sent"] > 0,
        ),
    ]
    return {"title": title, "needs": None, "note": note, "figures": figures, "criteria": criteria}


def _flooder(address, params, begin) -> dict:
    """Tiny frames as fast as the kernel takes them, for ``seconds``; a reset at the end
    (what it sent and the server has not read goes with it)."""
    (seconds,) = params
    sock = _joined(address, ATTACK_ROOM)
    started = begin()
    sock.setblocking(False)
    frame = encode_frame(ATTACK_ROOM, b"f")
    batch = memoryview(frame * 4096)
    sent = off = 0
    decoder = FrameDecoder()
    reason = None
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    end = started + seconds
    cut = False
    while not cut and time.monotonic() < end:
        for _, events in sel.select(max(0.0, min(0.05, end - time.monotonic()))):
            if events & selectors.EVENT_WRITE:
                try:
                    for _ in range(64):
                        n = sock.send(batch[off:])
                        sent += n
                        off = (off + n) % len(frame)
                except BlockingIOError:
                    pass
                except OSError:
                    cut = True
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                decoder.receive_data(data)
                reason = disconnect_reason(decoder) or reason
                cut = cut or not data
    _reset(sock)
    return {"sent": sent // len(frame), "reason": reason if cut else None}


def _reader(address, params, begin) -> dict:
    """A member of the flooder's room: how many of its frames arrive, second by second."""
    (seconds,) = params
    sock = _joined(address, ATTACK_ROOM)
    started = begin()
    sock.settimeout(0.1)
    marker = b"> f</RID:%d>" % ATTACK_ROOM  # how a flood frame ends, as a member gets it
    per_second = [0] * (int(seconds) + 1)
    tail = b""
    decoder = FrameDecoder()  # only for the server's last word, if it cuts us off
    reason = None
    end = started + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        if not data:
            reason = disconnect_reason(decoder) or "closed"
            break
        buf = tail + data
        per_second[min(int(now - started), len(per_second) - 1)] += buf.count(marker)
        tail = buf[-(len(marker) - 1) :]
        if b"<RID:0>" in buf:  # the server's own room: its last word to us
            decoder.receive_data(buf[buf.index(b"<RID:0>") :])
            reason = disconnect_reason(decoder) or reason
    sock.close()
    return {"received": sum(per_second), "per_second": per_second, "reason": reason}


# ------------------------------------------------------------------------- the pair


def _pair(address, params, begin) -> dict:
    """Two members of PAIR_ROOM, each sending the other a message every ``interval`` s,
    for ``seconds`` (or until ``stop`` is set); then 2 s for the last ones to arrive."""
    seconds, interval, stop = params
    a, b = _joined(address, PAIR_ROOM), _joined(address, PAIR_ROOM)
    _read_notice(a, protocol.Entered)  # b's join: a's stream is quiet from here
    started = begin()
    sel = selectors.DefaultSelector()
    for sock, name in ((a, "a"), (b, "b")):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, name)
    decoders = {"a": FrameDecoder(), "b": FrameDecoder()}
    sent_at: dict[str, float] = {}  # "a17": when a sent its 17th
    latencies: list[float] = []
    lost_reason = None
    seq = 0
    end = started + seconds
    next_at = started
    drain_until = None  # set when sending stops: 2 s for the last messages to arrive
    while not lost_reason:
        now = time.monotonic()
        sending = now < end and not (stop is not None and stop.is_set())
        if not sending:
            drain_until = drain_until or now + 2.0
            if not sent_at or now > drain_until:
                break
        if sending and now >= next_at:
            for sock, name in ((a, "a"), (b, "b")):
                sent_at[f"{name}{seq}"] = time.perf_counter()
                with contextlib.suppress(BlockingIOError):  # a few bytes: always fits
                    sock.send(encode_frame(PAIR_ROOM, f"{name}{seq}".encode()))
            seq += 1
            next_at += interval
        timeout = max(0.0, next_at - time.monotonic()) if sending else 0.1
        for key, _ in sel.select(min(timeout, 0.1)):
            member = a if key.data == "a" else b
            data = recv_or_eof(member)
            if data is None:
                continue
            t = time.perf_counter()
            decoder = decoders[key.data]
            decoder.receive_data(data)
            if not data:
                lost_reason = disconnect_reason(decoder) or "closed"
                break
            for event in decoder.events():
                if isinstance(event, Frame):
                    reply = protocol.parse_reply(event.text)
                    if isinstance(reply, protocol.Message) and reply.text in sent_at:
                        latencies.append(t - sent_at.pop(reply.text))
    a.close()
    b.close()
    return {
        "sent": 2 * seq,
        "received": len(latencies),
        "lost": len(sent_at),
        "latencies": latencies,
        "cut": lost_reason,
    }


def _pair_figures(pair: dict) -> dict:
    lat = pair["latencies"]
    return {
        "sent": pair["sent"],
        "lost": pair["lost"],
        "p50_ms": ms(percentile(lat, 50)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(max(lat)) if lat else None,
        "cut": pair["cut"],
    }


# ------------------------------------------------------------------ client plumbing


ROLES = {"pair": _pair, "senders": _senders, "flooder": _flooder, "reader": _reader}


def _role(role, address, cpu, params, ready, go, results) -> None:
    """One client process (run_load's protocol): set up, ready, go, one result.

    A role sets itself up (connects, joins), then calls ``begin()``: that says it is ready,
    waits for every other process to be, and returns the moment they all started."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # off the server's core
    started = []

    def begin() -> float:
        ready.put(role)
        if not go.wait(120):
            raise SystemExit(f"{role}: no go in 120 s")
        started.append(time.monotonic())
        return started[0]

    result = ROLES[role](tuple(address), params, begin)
    results.put({"role": role, "started": started[0], **result})


def _joined(address, room: int) -> socket.socket:
    """A client that has joined ``room`` (its join reply read; nothing else is waiting)."""
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_frame(room, b""))
    _read_notice(sock, protocol.YouEntered)
    return sock


def _read_notice(sock: socket.socket, kind: type[protocol.Reply]) -> None:
    """Read frames until one is a reply of ``kind`` (at most 10 s: the socket's timeout)."""
    decoder = FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed while waiting for {kind.__name__}")
        decoder.receive_data(data)
        for event in decoder.events():
            if isinstance(event, Frame) and isinstance(protocol.parse_reply(event.text), kind):
                return


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ------------------------------------------------------------------- report and plot


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(report: dict) -> str:
    lines = []
    for part in report["parts"].values():
        lines.append(part["title"])
        if part["needs"]:
            lines.append(f"   needs {part['needs']} (not in this server): not measured")
            continue
        if part.get("note"):
            lines.append(f"   ({part['note']})")
        f = part["figures"]
        if "senders" in f:
            after = f["close_after_first_byte_s"]
            lines += [
                f"   {f['connected']} connected, {f['sent_whole']} sent all their bytes"
                f" (by {_f(f['sent_whole_by_s'], 2)} s); {f['closed_by_server']} closed by the"
                f" server, the last {_f(f['last_close_s'], 1)} s after the start (each"
                f" {_f(after['p50'], 1)} s after its first byte, median; at most"
                f" {_f(after['max'], 1)}); {f['still_open_at_give_up']} still open at the end"
                + (f"; connect errors: {f['connect_errors']}" if f["connect_errors"] else ""),
                "   reasons: " + _reasons_line(f["reasons"], f["reason_examples"]),
                f"   server peak RSS {f['server_peak_rss_mb']:.1f} MB;"
                f" pair: {_pair_line(f['pair'])}",
            ]
        else:
            lines += [
                f"   pair alone: {_pair_line(f['pair_quiet'])}",
                f"   pair during the flood: {_pair_line(f['pair_flood'])}",
                f"   flooder: {f['flooder_sent_per_s']:.0f} messages/s taken by its kernel;"
                f" reader: {f['reader_received']} received,"
                f" {_f(f['reader_steady_per_s'], 1)}/s once the burst was spent"
                + (f"; reader cut off: {f['reader_cut']}" if f["reader_cut"] else "")
                + (f"; flooder cut off: {f['flooder_cut']}" if f["flooder_cut"] else ""),
                f"   server: peak RSS {f['server_peak_rss_mb']:.1f} MB,"
                f" CPU {f['server_cpu_share']:.0%} of a core during the flood",
            ]
        for c in part["criteria"]:
            lines.append(
                f"   {'PASS' if c['ok'] else 'FAIL'}  {c['name']}: {c['value']} {c['unit']}"
                f"  (bound {c['bound']})"
            )
    return "\n".join(lines)


def _reasons_line(counts: dict, examples: dict) -> str:
    """ "5990 FrameTimedOut (frame not completed within 5 s), 10 BuffersFull (...)"."""
    return ", ".join(
        f"{n} {kind}" + (f" ({examples[kind]})" if kind in examples else "")
        for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def _pair_line(p: dict) -> str:
    cut = f", cut off: {p['cut']}" if p["cut"] else ""
    return (
        f"{p['sent']} sent, {p['lost']} lost, latency p50 {_f(p['p50_ms'])} ms,"
        f" p99 {_f(p['p99_ms'])} ms, max {_f(p['max_ms'])} ms{cut}"
    )


def plot(report: dict):
    plt = pyplot()
    parts = {k: v for k, v in report["parts"].items() if not v["needs"]}
    fig, axes = plt.subplots(1, max(1, len(parts)), figsize=(5 * max(1, len(parts)), 4))
    axes = [axes] if not hasattr(axes, "__len__") else list(axes)
    for ax, (name, part) in zip(axes, parts.items(), strict=False):
        f = part["figures"]
        if name == "a":
            ts = [t for t, _ in part["rss_timeline"]]
            ax.plot(ts, [r / MB for _, r in part["rss_timeline"]], color="tab:blue")
            ax.set_ylabel("server RSS (MB)", color="tab:blue")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("seconds since the attack started (dotted: the bounds)")
            ax.axvline(report["params"]["close_within"], color="grey", linestyle=":")
            ax.axhline(report["params"]["rss_limit"], color="grey", linestyle=":")
            closes = part["closed_at"]
            twin = ax.twinx()
            twin.step(closes, range(1, len(closes) + 1), where="post", color="tab:red")
            twin.set_ylabel("slow senders closed", color="tab:red")
            ax.set_title(f"a. {f['senders']} slow senders")
        else:
            q, fl = f["pair_quiet"], f["pair_flood"]
            xs = range(2)
            ax.bar([x - 0.2 for x in xs], [q["p50_ms"] or 0, fl["p50_ms"] or 0], 0.4, label="p50")
            ax.bar([x + 0.2 for x in xs], [q["p99_ms"] or 0, fl["p99_ms"] or 0], 0.4, label="p99")
            ax.set_xticks(list(xs), ["alone", "during the flood"])
            if f.get("p99_bound_ms"):
                ax.axhline(f["p99_bound_ms"], color="grey", linestyle=":", label="p99 bound")
            ax.set_ylabel("the pair's latency (ms)")
            ax.legend()
            rate = report["params"]["rate"] if name == "b" else 0
            ax.set_title(
                f"{name}. --max-message-rate {rate:g}: reader got"
                f" {_f(f['reader_steady_per_s'], 0)}/s"
            )
    fig.tight_layout()
    return fig


SCENARIO = Scenario(
    name="attack",
    help="issue 14's attacks: slow senders, a rate-limited flood, an unlimited one",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=plot,
)
