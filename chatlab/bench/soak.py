"""The soak: every kind of client at once, honest and not, for N minutes; the server's
memory, fds and connections over time.

A benchmark of speed runs for seconds; a leak shows only over minutes, and only when
everything a server meets on the open internet happens together. So one server process
(epoll unless --backend says otherwise) serves, for N minutes:

- fanout: a few rooms of members chatting at a modest rate, each checking that it gets
  every message of the others, once, in order (this is not a throughput test). Room 1's
  messages are four times larger: it is the busy room, where a client that does not read
  falls 1 MiB behind in seconds (the kernel's buffers take the first few MiB);
- churn: clients that connect, join, say one thing and close (every fifth with a reset);
- slow readers: every few seconds, a client joins the busiest room and never reads: the
  server's output limit (the SendQ) must cut it off. A client that never reads never
  reads why either, so a watcher in that room reads the reason the room is told
  ("* 127.0.0.1:5000 left room 1 (...)");
- slow senders: every few seconds, a client sends half a frame and stops, or goes on
  dribbling a byte a second without ever finishing it: the frame timeout must cut it off
  and tell it why (with a server that has no frame timeout, they stay until the soak
  ends, and give up then);
- floods: episodes in which one client sends tiny messages as fast as it can, then goes
  away: with a reset, or with a FIN, which waits behind what the kernels still hold of the
  flood (megabytes, under flood control read at the allowed rate); a reader in its room
  counts what gets through. Every third flooder is alone in its room: nothing is ever
  written to it, so nothing hastens its end (a write to a closed peer draws a reset).

Meanwhile the server's resident memory (VmRSS), open fds and TCP connections are sampled
every second. Every load stops by itself when the time is up; then, once everything has
settled, the report compares: RSS at the end of warm-up and at the end (flat is healthy;
Python's allocator keeps some memory after a peak, so a step up during warm-up is not a
leak, a climb after it is), fds at the start and the end (equal), connections at the end
(none: the listener is not one), and what each load did and how the server ended every
abuser. A connection still held at the end is named by the load it belonged to.

python -m chatlab.bench soak --minutes N [--backend epoll] [--frame-timeout S]
"""

from __future__ import annotations

import contextlib
import random
import select
import selectors
import shlex
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
    open_fds,
    reason_kind,
    recv_or_eof,
    rss_of,
    run_load,
    tcp_connections,
)
from .runner import Scenario, pyplot

#: the rooms of each load: fanout uses 1..rooms (room 1 is the busy one the slow readers
#: join); the others have a room each, far above them
CHURN_ROOM, SLOW_SENDER_ROOM, FLOOD_ROOM, LONE_FLOOD_ROOM = 900, 901, 902, 903
#: how flood episodes end, in turn: (how the flooder closes, the room it floods)
FLOOD_ENDINGS = [("FIN", FLOOD_ROOM), ("reset", FLOOD_ROOM), ("FIN, alone", LONE_FLOOD_ROOM)]
#: the frame timeout a server without --frame-timeout is assumed to have (limits.py's)
DEFAULT_FRAME_TIMEOUT = 30.0
MB = 1e6


def add_arguments(parser) -> None:
    backends = available_backends()
    parser.add_argument("--minutes", type=float, default=10.0, help="of load (default 10)")
    parser.add_argument(
        "--backend",
        choices=backends,
        default="epoll" if "epoll" in backends else backends[0],
        help="the server's (default: %(default)s)",
    )
    parser.add_argument(
        "--frame-timeout",
        type=float,
        metavar="S",
        help="passed to the server (default: the server's own; --quick: 2)",
    )
    parser.add_argument(
        "--server-args", default="", metavar="ARGS", help='more server flags: "--keepalive 10"'
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, metavar="S", help="default: a tenth of the run, 10 s to 120 s"
    )
    parser.add_argument("--rooms", type=int, default=3, help="fanout rooms (default 3)")
    parser.add_argument("--clients", type=int, default=5, help="per fanout room (default 5)")
    parser.add_argument("--rate", type=float, default=10.0, help="messages/s per member")
    parser.add_argument("--size", type=int, default=4096, help="bytes per fanout message")
    parser.add_argument("--churn-rate", type=float, default=20.0, help="connections/s")
    parser.add_argument(
        "--abuse-every", type=float, default=5.0, help="seconds between new slow clients"
    )
    parser.add_argument("--flood-seconds", type=float, default=5.0, help="of each flood")
    parser.add_argument("--flood-pause", type=float, default=5.0, help="between floods")
    parser.add_argument("--quick", action="store_true", help="15 s of load, in about 30 s")
    parser.add_argument("--out", help="write the report as JSON here")
    parser.add_argument("--plot", help="write a PNG plot here")


def run_cli(args) -> dict:
    if args.quick:
        args.minutes, args.abuse_every = 0.25, 2.0
        args.flood_seconds = args.flood_pause = 2.0
        if args.frame_timeout is None:
            args.frame_timeout = 2.0
        if "--flood-timeout" not in args.server_args:  # a flooder cut off within the run
            args.server_args += " --flood-timeout 3"
    return run(**vars(args))


# ------------------------------------------------------------------------------ the run


def run(
    minutes=10.0,
    backend="epoll",
    frame_timeout=None,
    server_args="",
    interval=1.0,
    warmup=None,
    rooms=3,
    clients=5,
    rate=10.0,
    size=4096,
    churn_rate=20.0,
    abuse_every=5.0,
    flood_seconds=5.0,
    flood_pause=5.0,
    settle=15.0,
    **_,
) -> dict:
    """One soak: the server, the loads, the samples; a report for format_report and plot."""
    duration = 60.0 * minutes
    if warmup is None:
        warmup = min(120.0, max(10.0, duration / 10))
    rate_default = getattr(Limits(), "max_message_rate", None)  # None: a server without it
    timeout_flag = [] if frame_timeout is None else ["--frame-timeout", f"{frame_timeout:g}"]
    # The server as deployed, not as the throughput benchmarks run it (with no flood
    # control: _util.SERVERS): its own default rate, unless --server-args says otherwise.
    flags = [] if rate_default is None else ["--max-message-rate", f"{rate_default:g}"]
    flags += shlex.split(server_args)
    # A flooder is cut off flood_timeout seconds into its flood (limits.py): settle at least
    # that long after the load, or the last one is still held when we look.
    flood_timeout = getattr(Limits(), "flood_timeout", 0.0)
    if "--flood-timeout" in flags:
        flood_timeout = float(flags[flags.index("--flood-timeout") + 1])
    settle = max(settle, flood_timeout + 10.0)
    note = None
    try:
        server = ServerProcess("chatlab", backend, extra_args=[*flags, *timeout_flag])
        flags += timeout_flag
    except RuntimeError as exc:
        if not timeout_flag or flag_missing(exc) != "--frame-timeout":
            raise
        # The soak still means something without it: slow senders then stay until the
        # end, and the report says so.
        note = "needs --frame-timeout (not in this server): slow senders stayed to the end"
        frame_timeout = None
        server = ServerProcess("chatlab", backend, extra_args=flags)
    params = {
        "minutes": minutes,
        "backend": backend,
        "frame_timeout": frame_timeout,
        "warmup": warmup,
        "interval": interval,
        "rooms": rooms,
        "clients": clients,
        "rate": rate,
        "size": size,
        "churn_rate": churn_rate,
        "abuse_every": abuse_every,
        "flood_seconds": flood_seconds,
        "flood_pause": flood_pause,
    }
    load_params = {**params, "frame_timeout": frame_timeout or DEFAULT_FRAME_TIMEOUT}
    with server:
        assert server.proc is not None  # started, or ServerProcess raised
        proc = server.proc
        pid = proc.pid
        sampler = _Sampler(pid, interval)
        start = sampler.sample()  # before any client: "where they started"
        sampler.start()
        try:
            _, parts, server_cpu, _, _ = run_load(
                server,
                _worker,
                [(kind, server.address, duration, load_params) for kind in LOADS],
                duration + 30,  # each load drains for a few seconds after its time is up
            )
            load_end = time.monotonic()
            # Settle: lingering closes (2 s) and the kernel's last packets; until no client
            # is left, or `settle` seconds.
            while time.monotonic() < load_end + settle:
                fds, conns = sampler.last()[2:4]
                if conns == 0 and fds <= start[2] and time.monotonic() > load_end + 1:
                    break
                time.sleep(min(interval, 0.5))
            left = sampler.connections()
            end = sampler.sample()
        finally:
            sampler.stop()
        alive = proc.poll() is None  # still serving after it all
    loads = {p["kind"]: p for p in parts}
    t0 = min(p["started"] for p in parts)
    return _report(
        params, flags, note, sampler.samples, start, end, left, loads, t0, load_end,
        server_cpu, alive,
    )  # fmt: skip


class _Sampler(threading.Thread):
    """The server's (time, RSS, fds, TCP connections) every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int, int]] = []
        # socket inode -> the peer's port, as last seen: a socket reset by its peer leaves
        # the kernel's tables, and this still says whose it was
        self.ports: dict[str, int] = {}
        self._stop_event = threading.Event()

    def sample(self) -> tuple[float, int, int, int]:
        try:
            s = (time.monotonic(), rss_of(self.pid), open_fds(self.pid))
            row = (*s, len(self.connections()))
        except (FileNotFoundError, ProcessLookupError):  # the server died: keep the last
            row = (time.monotonic(), *self.last()[1:])
        self.samples.append(row)
        return row

    def connections(self) -> list[tuple[str, int]]:
        """(state, the peer's port) of each connection the server holds now."""
        found = []
        for state, port, inode in tcp_connections(self.pid):
            if port:
                self.ports[inode] = port
            found.append((state, port or self.ports.get(inode, 0)))
        return found

    def last(self) -> tuple[float, int, int, int]:
        return self.samples[-1] if self.samples else (time.monotonic(), 0, 0, 0)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _report(params, flags, note, samples, start, end, left, loads, t0, load_end, cpu, ok):
    ts = [round(s[0] - t0, 2) for s in samples]
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    conns = [s[3] for s in samples]
    warm, duration = params["warmup"], 60.0 * params["minutes"]
    after = [i for i, t in enumerate(ts) if warm <= t <= duration]  # warm-up end to load end
    at_warm = after[0] if after else len(samples) - 1
    rss_warm = rss[at_warm]
    slope = _slope([ts[i] for i in after], [rss[i] for i in after])
    ports = {}  # our clients' ports, to name a connection the server still holds at the end
    for load in loads.values():
        ports.update(load.pop("ports", {}))
    held = [
        {"state": state, "port": port, "load": ports.get(port, "?") if port else _RESET}
        for state, port in left
    ]
    abusers = {k: loads[k]["abusers"] for k in ("slow_readers", "slow_senders", "flood")}
    honest = {k: loads[k].get("honest_cut", 0) for k in loads}
    errors = {k: loads[k]["error"] for k in loads if loads[k].get("error")}
    report = {
        "scenario": "soak",
        "params": params,
        "server_flags": flags,
        "note": note,
        "load_seconds": round(load_end - t0, 1),
        "timeline": {"t": ts, "rss": rss, "fds": fds, "connections": conns},
        "memory": {
            "rss_start": start[1],
            "rss_warmup": rss_warm,
            "rss_end": end[1],
            "rss_max": max(rss),
            "rss_max_after_warmup": max((rss[i] for i in after), default=rss_warm),
            "slope_mb_per_minute": None if slope is None else slope * 60 / MB,
        },
        "fds": {"start": start[2], "end": end[2], "max": max(fds)},
        "connections": {"start": start[3], "end": end[3], "max": max(conns), "held": held},
        "server_cpu_share": cpu / max(load_end - t0, 1e-9),
        "server_alive": ok,
        "loads": loads,
        "abusers": abusers,
        "honest_cut": honest,
        "errors": errors,
    }
    report["checks"] = _checks(report)
    return report


_RESET = "a socket the kernel has closed (a reset), its fd still open: no port to name it by"


def _slope(xs: list[float], ys: list[int]) -> float | None:
    """Least-squares slope of ys over xs (bytes per second), or None for too few points."""
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


def _checks(r: dict) -> list[dict]:
    """What a healthy soak shows, each with its figure and its bound."""
    m, a, loads = r["memory"], r["abusers"], r["loads"]
    checks: list[dict] = []

    def check(name: str, value, bound: str, ok: bool) -> None:
        checks.append({"name": name, "value": value, "bound": bound, "ok": bool(ok)})

    # After warm-up the RSS may wander (slow readers' SendQs come and go) but not climb:
    # at the end, with every client gone, it must be back near where warm-up left it.
    rss_bound = m["rss_warmup"] * 1.10 + 8 * MB
    end_rss = m["rss_end"]
    check("RSS at the end, MB", end_rss / MB, f"<= {rss_bound / MB:.1f}", end_rss <= rss_bound)
    fds = r["fds"]
    check("open fds at the end", fds["end"], f"== {fds['start']}, as at the start",
          fds["end"] == fds["start"])  # fmt: skip
    conns = r["connections"]["end"]
    check("TCP connections at the end", conns, "== 0", conns == 0)
    honest = sum(r["honest_cut"].values())
    check("honest clients cut off", honest, "== 0", honest == 0)
    lost = loads["fanout"].get("lost")
    check("fanout messages lost", lost, "== 0", lost == 0)
    cut = a["slow_readers"]["cut_off"]
    check("slow readers cut off by the server", cut, ">= 1", cut >= 1)
    overdue = a["slow_senders"]["overdue"]
    check("slow senders past the frame timeout, not cut off", overdue, "== 0", overdue == 0)
    loose = sum(x["unaccounted"] for x in a.values())
    check("abusers neither cut off nor ended", loose, "== 0", loose == 0)
    check("loads that failed", len(r["errors"]), "== 0", not r["errors"])
    check("server still running", r["server_alive"], "True", r["server_alive"])
    return checks


# -------------------------------------------------------------------------------- loads


def _worker(kind, address, duration, params, ready, go, results) -> None:
    """One load in its own process: ready at once, then ``duration`` seconds of it."""
    ready.put(kind)
    if not go.wait(120):
        results.put({"kind": kind, "started": time.monotonic(), "error": "no go"})
        return
    started = time.monotonic()
    try:
        result = LOADS[kind](tuple(address), started + duration, params)
    except Exception as exc:  # the report says which load failed, and the soak goes on
        result = {"error": repr(exc), "abusers": _abuse(), "honest_cut": 0}
    results.put({"kind": kind, "started": started, **result})


def _connect(address, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connect(): the window it advertises is set from it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _await_reply(sock: socket.socket, decoder: FrameDecoder, kind: type[protocol.Reply]) -> None:
    """Read until a reply of ``kind`` comes (10 s at most: the socket's timeout); the frames
    after it stay in ``decoder``, for the reader to take."""
    while True:
        for event in decoder.events():
            if isinstance(event, Frame) and isinstance(protocol.parse_reply(event.text), kind):
                return
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed while waiting for {kind.__name__}")
        decoder.receive_data(data)


def _name(sock: socket.socket) -> str:
    """How the server shows this client: host:port (the server's view of its peer)."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST), as a client that crashes or is killed does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _abuse() -> dict:
    return {"started": 0, "cut_off": 0, "ended": 0, "unaccounted": 0, "overdue": 0, "reasons": {}}


def _fanout(address, until, p) -> dict:
    """Rooms 1..rooms of `clients` members, each sending `rate` messages/s of `size` bytes
    and checking every other member's messages arrive, once and in order."""
    sel = selectors.DefaultSelector()
    members: list[tuple[socket.socket, int, int, FrameDecoder]] = []  # (sock, room, id, decoder)
    for room in range(1, p["rooms"] + 1):
        for _ in range(p["clients"]):
            sock = _connect(address)
            sock.sendall(encode_frame(room, b""))
            members.append((sock, room, len(members), FrameDecoder()))
    # Every join done before anyone talks: a message the server handles before a member's
    # join (both in one batch of readiness events) would never reach it, and count as lost.
    for i, (sock, _, _, decoder) in enumerate(members):
        _await_reply(sock, decoder, protocol.YouEntered)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
    busy = 4  # room 1's messages are this many times larger
    pad = b"x" * (busy * p["size"])
    sent = [0] * len(members)
    last: dict[tuple[int, int], int] = {}  # (receiver, sender) -> last seq seen
    received = duplicates = reordered = cut = 0
    reasons: Counter = Counter()
    alive = set(range(len(members)))
    interval = 1.0 / p["rate"]
    next_send = [time.monotonic() + random.random() * interval for _ in members]
    drain_until = until + 5.0

    def expected() -> int:
        return sum(sent[i] * (p["clients"] - 1) for i in range(len(members)))

    while True:
        now = time.monotonic()
        if now >= until and (received >= expected() or now >= drain_until):
            break
        if now < until:
            for i in list(alive):
                if now >= next_send[i]:
                    sock, room, me, _ = members[i]
                    body = b"m%d-%d " % (me, sent[i])
                    size = p["size"] * (busy if room == 1 else 1) - len(body) - 16
                    sock.settimeout(5)  # one frame, a few a second: it never waits long
                    try:
                        sock.sendall(encode_frame(room, body + pad[:size]))
                    except OSError as exc:  # the server stopped taking an honest member's
                        reasons[f"send failed: {exc!r}"] += 1
                        cut += 1
                        alive.discard(i)
                        sel.unregister(sock)
                    sock.setblocking(False)
                    sent[i] += 1
                    next_send[i] += interval
        wake = min((next_send[i] for i in alive), default=now + 0.1) if now < until else now + 0.1
        for key, _ in sel.select(max(0.0, min(wake - now, 0.1))):
            i = key.data
            sock, room, me, decoder = members[i]
            data = recv_or_eof(sock, 262144)
            if data is None:
                continue
            decoder.receive_data(data)
            for event in decoder.events():
                if not isinstance(event, Frame):
                    continue
                if event.room == protocol.SERVER_ROOM:
                    reply = protocol.parse_reply(event.text)
                    if isinstance(reply, protocol.Disconnected):
                        reasons[reply.reason] += 1
                    continue
                reply = protocol.parse_reply(event.text)
                if not isinstance(reply, protocol.Message) or not reply.text.startswith("m"):
                    continue
                sender, seq = (int(x) for x in reply.text[1:].split(" ", 1)[0].split("-"))
                prev = last.get((me, sender), -1)
                if seq <= prev:
                    duplicates += 1
                    continue
                reordered += seq != prev + 1
                last[(me, sender)] = seq
                received += 1
            if not data:  # the server let an honest member go: a failure of the soak
                cut += 1
                alive.discard(i)
                sel.unregister(sock)
    ports = {sock.getsockname()[1]: "fanout" for sock, *_ in members}
    for sock, *_ in members:
        sock.close()
    return {
        "members": len(members),
        "sent": sum(sent),
        "received": received,
        "lost": expected() - received,
        "duplicates": duplicates,
        "reordered": reordered,
        "honest_cut": cut,
        "reasons": dict(reasons),
        "ports": ports,
    }


def _churn(address, until, p) -> dict:
    """Connect, join, say one thing, close; `churn_rate` times a second, every fifth with
    a reset."""
    done = resets = 0
    errors: Counter = Counter()
    interval = 1.0 / p["churn_rate"]
    next_at = time.monotonic()
    while time.monotonic() < until:
        sock = None
        try:
            sock = _connect(address)
            sock.settimeout(5)
            sock.sendall(encode_frame(CHURN_ROOM, b"hello from a short visit"))
            decoder = FrameDecoder()
            joined = False
            while not joined:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed before the join reply")
                decoder.receive_data(data)
                joined = any(
                    isinstance(e, Frame)
                    and isinstance(protocol.parse_reply(e.text), protocol.YouEntered)
                    for e in decoder.events()
                )
            if done % 5 == 4:
                _reset(sock)
                resets += 1
            else:
                sock.close()
            done += 1
        except OSError as exc:
            errors[type(exc).__name__] += 1
            if sock is not None:
                sock.close()
        next_at += interval
        time.sleep(max(0.0, min(next_at - time.monotonic(), until - time.monotonic())))
    return {
        "connections": done,
        "resets": resets,
        "errors": dict(errors),
        # a churner the server refused or dropped is an honest client cut off
        "honest_cut": sum(errors.values()),
    }


def _slow_readers(address, until, p) -> dict:
    """Every `abuse_every` seconds a client joins room 1 (the busy one) and never reads.

    A client that never reads cannot see its end: the server's FIN waits behind the
    megabytes its kernel still holds for it, and the reason behind them. So a watcher, an
    honest member of room 1, reads what the room is told when each one leaves ("* NAME
    left room 1 (REASON)."): that is the moment it was cut off, and why. Then it reads what
    is left (its own last word from the server, if that arrives in 2 s) and closes."""
    watcher = _connect(address)
    watcher.sendall(encode_frame(1, b""))
    watcher.setblocking(False)
    decoder = FrameDecoder()
    readers: dict[str, dict] = {}  # name (host:port) -> {sock, at}
    stats = _abuse()
    reasons: Counter = Counter()
    cut_after: list[float] = []
    honest_cut = 0
    ports = {watcher.getsockname()[1]: "slow-reader watcher"}
    # The last ones must have time to fall behind: none joins in the last 20 s (or half).
    stop_joining = until - min(20.0, (until - time.monotonic()) / 2)
    next_at = time.monotonic() + 0.5
    end = until
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_at and now < stop_joining:
            next_at += p["abuse_every"]
            sock = _connect(address, rcvbuf=4096)  # a small window: it fills at once
            sock.sendall(encode_frame(1, b""))
            readers[_name(sock)] = {"sock": sock, "at": now}
            ports[sock.getsockname()[1]] = "slow reader"
            stats["started"] += 1
        if now >= until and not readers:
            break
        if now >= until:  # the end: the watcher reads the last notices for a second
            end = min(end + 1.0, until + 1.0)
        ready, _, _ = select.select([watcher], [], [], 0.1)
        if not ready:
            continue
        data = recv_or_eof(watcher, 1 << 20)
        if data is None:
            continue
        if not data:
            honest_cut += 1
            break
        decoder.receive_data(data)
        for event in decoder.events():
            if not isinstance(event, Frame):
                continue
            reply = protocol.parse_reply(event.text)
            if isinstance(reply, protocol.Left) and reply.name in readers:
                r = readers.pop(reply.name)
                own = _drain_reason(r["sock"])
                r["sock"].close()
                stats["cut_off"] += 1
                cut_after.append(time.monotonic() - r["at"])
                why = own or reply.reason or None
                reasons[f"{reason_kind(why)}: {why}" if why else "none: no reason given"] += 1
    for r in readers.values():  # not cut off in the time there was: they give up
        r["sock"].close()
        stats["ended"] += 1
    watcher.close()
    stats["reasons"] = dict(reasons)
    stats["unaccounted"] = stats["started"] - stats["cut_off"] - stats["ended"]
    stats["cut_after_s"] = _spread(cut_after)
    return {"abusers": stats, "honest_cut": honest_cut, "ports": ports}


def _drain_reason(sock: socket.socket, limit: int = 16 << 20) -> str | None:
    """Read what is left on a socket the server closed (at most ``limit`` bytes, 2 s); the
    reason it gave, if it got as far as the end of what we had not read."""
    decoder, got = FrameDecoder(), 0
    sock.settimeout(0.5)
    deadline = time.monotonic() + 2.0
    reason = None
    while got < limit and time.monotonic() < deadline:
        try:
            data = sock.recv(262144)
        except OSError:
            break
        if not data:
            break
        got += len(data)
        decoder.receive_data(data)
        reason = disconnect_reason(decoder) or reason
    return reason


def _slow_senders(address, until, p) -> dict:
    """Every `abuse_every` seconds a client sends half a frame and stops; every other one
    then dribbles a byte a second, never finishing it. The frame timeout counts from the
    frame's first byte, so both must be cut off, and told why."""
    timeout = p["frame_timeout"]
    sel = selectors.DefaultSelector()
    stats = _abuse()
    cut_after: list[float] = []
    ports = {}
    # The last ones must have time to meet the timeout: none starts in its last stretch,
    # but one always starts (with no timeout in sight, it gives up at the end).
    next_at = time.monotonic() + 0.2
    stop_starting = max(next_at + 0.1, until - timeout - 5.0)
    senders: dict[int, dict] = {}
    last_dribble = time.monotonic()
    overdue = 0
    while time.monotonic() < until:
        now = time.monotonic()
        if now >= next_at and now < stop_starting:
            next_at += p["abuse_every"]
            sock = _connect(address)
            sock.sendall(b"<RID:%d>" % SLOW_SENDER_ROOM + b"s" * 1000)
            sock.setblocking(False)
            dribble = stats["started"] % 2 == 1
            s = {"sock": sock, "at": now, "dribble": dribble, "dec": FrameDecoder()}
            senders[sock.fileno()] = s
            ports[sock.getsockname()[1]] = "slow sender"
            sel.register(sock, selectors.EVENT_READ, s)
            stats["started"] += 1
        if now - last_dribble >= 1.0:
            last_dribble = now
            for s in senders.values():
                if s["dribble"]:
                    with contextlib.suppress(OSError):
                        s["sock"].send(b"s")
        for key, _ in sel.select(0.1):
            s = key.data
            data = recv_or_eof(s["sock"])
            if data is None:
                continue
            s["dec"].receive_data(data)
            s["reason"] = disconnect_reason(s["dec"]) or s.get("reason")
            if not data:
                sel.unregister(s["sock"])
                senders.pop(s["sock"].fileno())
                s["sock"].close()
                stats["cut_off"] += 1
                cut_after.append(time.monotonic() - s["at"])
                why = s.get("reason")
                key_ = f"{reason_kind(why)}: {why}" if why else "none: closed, no reason"
                stats["reasons"][key_] = stats["reasons"].get(key_, 0) + 1
    for s in senders.values():
        if time.monotonic() - s["at"] > timeout + 3.0:
            overdue += 1  # a frame timeout would have cut this one off by now
        s["sock"].close()
        stats["ended"] += 1
    stats["overdue"] = overdue
    stats["unaccounted"] = stats["started"] - stats["cut_off"] - stats["ended"]
    stats["cut_after_s"] = _spread(cut_after)
    return {"abusers": stats, "ports": ports}


def _flood(address, until, p) -> dict:
    """Flood episodes: a client sends tiny frames as fast as it can for `flood_seconds`,
    then leaves (FLOOD_ENDINGS in turn), and `flood_pause` seconds pass. A reader in
    FLOOD_ROOM, an honest one, counts the flood's frames that reach it."""
    reader = _connect(address)
    reader.sendall(encode_frame(FLOOD_ROOM, b""))
    reader.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(reader, selectors.EVENT_READ, "reader")
    frame_size = len(encode_frame(FLOOD_ROOM, b"f"))  # LONE_FLOOD_ROOM's are the same size
    batches = {room: memoryview(encode_frame(room, b"f") * 4096) for _, room in FLOOD_ENDINGS}
    marker = b"> f</RID:%d>" % FLOOD_ROOM  # the end of a flood frame, as the reader gets it
    tail = b""
    delivered = sent_bytes = 0
    stats = _abuse()
    stats["endings"] = dict.fromkeys((ending for ending, _ in FLOOD_ENDINGS), 0)
    honest_cut = 0
    ports = {reader.getsockname()[1]: "flood reader"}
    flooder: dict | None = None
    next_at = time.monotonic() + 0.5
    flood_time = 0.0
    while True:
        now = time.monotonic()
        if now >= until + 2.0:  # the reader takes the last of it for 2 s
            break
        if flooder is None and next_at <= now < until:
            ending, room = FLOOD_ENDINGS[stats["started"] % len(FLOOD_ENDINGS)]
            sock = _connect(address)
            sock.sendall(encode_frame(room, b""))
            sock.setblocking(False)
            flooder = {"sock": sock, "at": now, "off": 0, "dec": FrameDecoder()}
            flooder.update(ending=ending, batch=batches[room], watched=room == FLOOD_ROOM)
            ports[sock.getsockname()[1]] = f"flooder, ended with a {ending}"
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "flooder")
            stats["started"] += 1
        if flooder is not None and (now >= flooder["at"] + p["flood_seconds"] or now >= until):
            sel.unregister(flooder["sock"])
            if flooder["ending"] == "reset":
                _reset(flooder["sock"])
            else:
                flooder["sock"].close()
            stats["endings"][flooder["ending"]] += 1
            stats["ended"] += 1
            flood_time += (now - flooder["at"]) if flooder["watched"] else 0.0
            flooder = None
            next_at = now + p["flood_pause"]
        for key, events in sel.select(0.05):
            if key.data == "reader":
                data = recv_or_eof(reader, 1 << 20)
                if data is None:
                    continue
                if not data:
                    honest_cut += 1
                    sel.unregister(reader)
                    continue
                buf = tail + data
                delivered += buf.count(marker)
                tail = buf[-(len(marker) - 1) :]
                continue
            assert flooder is not None
            if events & selectors.EVENT_WRITE:
                try:  # as fast as it can: everything the kernel takes, again and again
                    for _ in range(64):
                        n = flooder["sock"].send(flooder["batch"][flooder["off"] :])
                        sent_bytes += n
                        flooder["off"] = (flooder["off"] + n) % frame_size
                except BlockingIOError:
                    pass
                except OSError:
                    events |= selectors.EVENT_READ
            if events & selectors.EVENT_READ:
                data = recv_or_eof(flooder["sock"])
                if data is None:
                    continue
                flooder["dec"].receive_data(data)
                why = disconnect_reason(flooder["dec"])
                if why or not data:  # the server cut it off
                    sel.unregister(flooder["sock"])
                    flooder["sock"].close()
                    key_ = f"{reason_kind(why)}: {why}" if why else "none: closed, no reason"
                    stats["reasons"][key_] = stats["reasons"].get(key_, 0) + 1
                    stats["cut_off"] += 1
                    flood_time += (now - flooder["at"]) if flooder["watched"] else 0.0
                    flooder = None
                    next_at = now + p["flood_pause"]
    reader.close()
    stats["sent"] = sent_bytes // frame_size
    stats["delivered"] = delivered
    stats["delivered_per_flood_second"] = delivered / flood_time if flood_time else None
    stats["unaccounted"] = stats["started"] - stats["cut_off"] - stats["ended"]
    return {"abusers": stats, "honest_cut": honest_cut, "ports": ports}


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


LOADS = {
    "fanout": _fanout,
    "churn": _churn,
    "slow_readers": _slow_readers,
    "slow_senders": _slow_senders,
    "flood": _flood,
}


# -------------------------------------------------------------------- report and plot


def format_report(report: dict) -> str:
    p, m = report["params"], report["memory"]
    lines = [
        f"soak: {p['minutes']:g} min of load on chatlab/{p['backend']}"
        f" ({' '.join(report['server_flags']) or 'its default limits'}), then settled;"
        f" samples every {p['interval']:g} s, warm-up {p['warmup']:g} s",
    ]
    if report["note"]:
        lines.append(f"  {report['note']}")
    slope = m["slope_mb_per_minute"]
    lines += [
        f"RSS MB: start {m['rss_start'] / MB:.1f}, warm-up end {m['rss_warmup'] / MB:.1f},"
        f" end {m['rss_end'] / MB:.1f}; max {m['rss_max'] / MB:.1f}"
        f" (after warm-up {m['rss_max_after_warmup'] / MB:.1f});"
        f" slope after warm-up {'-' if slope is None else f'{slope:+.2f}'} MB/min",
        f"fds: start {report['fds']['start']}, end {report['fds']['end']},"
        f" max {report['fds']['max']};  TCP connections: end {report['connections']['end']},"
        f" max {report['connections']['max']};  server CPU {report['server_cpu_share']:.0%}",
    ]
    for h in report["connections"]["held"]:
        lines.append(f"  still held at the end: {h['load']} (port {h['port']}, {h['state']})")
    loads = report["loads"]
    f, c = loads["fanout"], loads["churn"]
    lines += [
        "loads:",
        f"  fanout       {f.get('members', 0)} members sent {f.get('sent', 0)} messages,"
        f" {f.get('received', 0)} received; lost {f.get('lost')}, duplicates"
        f" {f.get('duplicates')}, reordered {f.get('reordered')}",
        f"  churn        {c.get('connections', 0)} connections ({c.get('resets', 0)} closed"
        f" with a reset); errors {c.get('errors') or 'none'}",
    ]
    a = report["abusers"]
    for kind in ("slow_readers", "slow_senders", "flood"):
        s = a[kind]
        spread = s.get("cut_after_s")
        after = f", after {spread['min']:.1f}-{spread['max']:.1f} s" if spread else ""
        extra = ""
        if kind == "flood":
            per = s.get("delivered_per_flood_second")
            endings = ", ".join(f"{n} {e}" for e, n in s.get("endings", {}).items())
            extra = (
                f" ({endings}); {s.get('sent', 0)} frames sent, {s.get('delivered', 0)}"
                f" delivered to the reader ({'-' if per is None else f'{per:.0f}'}/s of its"
                " room's flooding)"
            )
        lines.append(
            f"  {kind.replace('_', ' '):<12} {s['started']} started, {s['cut_off']} cut off by"
            f" the server{after}, {s['ended']} ended by themselves{extra}"
        )
        for why, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]):
            lines.append(f"      {n:>5} x {why}")
    for kind, err in report["errors"].items():
        lines.append(f"  {kind} failed: {err}")
    lines.append("checks:")
    for ch in report["checks"]:
        value = ch["value"]
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        lines.append(f"  {'PASS' if ch['ok'] else 'FAIL'}  {ch['name']}: {shown} ({ch['bound']})")
    return "\n".join(lines)


def plot(report: dict):
    plt = pyplot()
    tl = report["timeline"]
    minutes = [t / 60 for t in tl["t"]]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    series = [
        ([r / MB for r in tl["rss"]], "RSS (MB)", "tab:blue"),
        (tl["fds"], "open fds", "tab:orange"),
        (tl["connections"], "TCP connections", "tab:green"),
    ]
    for ax, (ys, label_, color) in zip(axes, series, strict=True):
        ax.plot(minutes, ys, color=color, linewidth=1)
        ax.set_ylabel(label_)
        ax.grid(True, alpha=0.3)
        ax.axvline(report["params"]["warmup"] / 60, color="grey", linestyle=":", linewidth=1)
        ax.axvline(report["params"]["minutes"], color="grey", linestyle="--", linewidth=1)
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes (dotted: end of warm-up; dashed: load stops)")
    p = report["params"]
    fig.suptitle(
        f"soak: {p['minutes']:g} min on chatlab/{p['backend']}: fanout, churn, slow readers,"
        " slow senders, floods"
    )
    fig.tight_layout()
    return fig


SCENARIO = Scenario(
    name="soak",
    help="everything at once for N minutes: RSS, fds and connections over time",
    add_arguments=add_arguments,
    run=run_cli,
    format=format_report,
    plot=plot,
)
