"""The Python load generator: fanout, idle and churn, from Python processes.

It runs where no C compiler can build the native one (native/loadgen.c, driven by
native_load.py), with the same rules and the same result keys. It fills its own core near
100-350k deliveries/s, so a server faster than that is measured at the generator's speed;
every figure it sets says so (generator-bound).

Each load runs in its own process(es) (``_util.run_load``), measures its own CPU, and says
so when it, rather than the server, is the bottleneck.

- fanout: R rooms of K clients, each with W messages in flight; every receiver checks
  exactly-once, in-order delivery (fanout.py says why the load is shaped so).
- idle, churn: one ping-pong pair measured while something else goes on: C idle
  connections, or N clients at a time that connect, join, send and close (idle.py, churn.py).
"""

from __future__ import annotations

import re
import resource
import selectors
import socket
import threading
import time

from .. import protocol
from ..framing import Frame, FrameDecoder, encode_frame
from ._util import ms, percentile, run_load, us


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------- fanout

# A message from the server: "<RID:r><sender> ID-SEQ xxx...</RID:r>"; anything else (notices)
# matches the second branch and is skipped. Bodies of the load contain no "<".
_FRAME = re.compile(rb"<RID:\d+>(?:<[^>]*> (\d+)-(\d+) x*|[^<]*)</RID:\d+>")


def fanout_worker(
    address, rooms, first_id, k, window, size, duration, drain, ready, go, results
) -> None:
    """One load-generator process: the clients of ``rooms`` (k each), until duration ends."""
    sel = selectors.DefaultSelector()
    clients: list[tuple[socket.socket, int, int]] = []  # (sock, room, id)
    for room in rooms:
        for _ in range(k):
            sock = socket.create_connection(address, timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            clients.append((sock, room, first_id + len(clients)))
    members = {room: [c[2] for c in clients if c[1] == room] for room in rooms}
    for sock, room, _ in clients:
        sock.sendall(encode_frame(room, ""))
    # Wait for every join notice to arrive, so that the measurement starts on a quiet line.
    for idx, (sock, _room, _) in enumerate(clients):
        _wait_for_reply(sock, protocol.YouEntered)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, idx)

    # The message body: "ID-SEQ " padded with x so the client's frame is `size` bytes.
    def body(cid: int, seq: int) -> bytes:
        head = b"%d-%d " % (cid, seq)
        pad = size - len(head) - len(encode_frame(room_of[cid], b""))
        return head + b"x" * max(0, pad)

    room_of = {cid: room for _, room, cid in clients}
    sock_of = {cid: sock for sock, _, cid in clients}
    sent_at: dict[int, list[float]] = {cid: [] for cid in room_of}  # per sender: send times
    pending: dict[int, dict[int, int]] = {cid: {} for cid in room_of}  # seq -> receipts due
    acked = dict.fromkeys(room_of, 0)  # per sender: all seqs below this are delivered
    last: dict[tuple[int, int], int] = {}  # (receiver, sender) -> last seq, for the order
    latencies = []
    receipts = duplicates = out_of_order = 0
    sending = True

    def send(cid: int) -> None:
        seq = len(sent_at[cid])
        pending[cid][seq] = len(members[room_of[cid]]) - 1
        sent_at[cid].append(time.perf_counter())
        sock = sock_of[cid]
        sock.setblocking(True)  # W frames of `size` bytes never fill a socket buffer
        sock.sendall(encode_frame(room_of[cid], body(cid, seq)))
        sock.setblocking(False)

    ready.put(len(clients))
    go.wait()
    cpu0, t0 = _cpu(), time.perf_counter()
    end = t0 + duration
    for cid in room_of:
        for _ in range(window):
            send(cid)
    buffers = [b""] * len(clients)
    t_last = t0
    drain_until = end + drain  # after sending stops, wait this long at most for stragglers
    while True:
        now = time.perf_counter()
        if sending and now >= end:
            sending = False
        if not sending and (now > drain_until or all(not p for p in pending.values())):
            break
        for key, _ in sel.select(0.5):
            idx = key.data
            sock, room, me = clients[idx]
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError(f"the server closed client {me}")
            buf = buffers[idx] + data
            stop = 0
            now = time.perf_counter()
            for m in _FRAME.finditer(buf):
                stop = m.end()
                if m.group(1) is None:
                    continue  # a notice
                sender, seq = int(m.group(1)), int(m.group(2))
                prev = last.get((me, sender), -1)
                if seq <= prev:
                    duplicates += 1
                    continue
                if seq != prev + 1:
                    out_of_order += 1
                last[(me, sender)] = seq
                receipts += 1
                latencies.append(now - sent_at[sender][seq])
                left = pending[sender][seq] - 1
                if left:
                    pending[sender][seq] = left
                    continue
                del pending[sender][seq]
                while acked[sender] not in pending[sender] and acked[sender] < len(sent_at[sender]):
                    acked[sender] += 1
                if sending and len(sent_at[sender]) - acked[sender] < window:
                    send(sender)
            buffers[idx] = buf[stop:]
            t_last = now
    cpu = _cpu() - cpu0
    wall = t_last - t0
    messages = sum(len(s) for s in sent_at.values())
    expected = sum(len(sent_at[c]) * (len(members[room_of[c]]) - 1) for c in room_of)
    results.put(
        {
            "clients": len(clients),
            "messages": messages,
            "receipts": receipts,
            "lost": expected - receipts,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "wall": wall,
            "cpu": cpu,
            "latencies": latencies[:: max(1, len(latencies) // 20000)],  # a sample suffices
        }
    )
    for sock, _, _ in clients:
        sock.close()


def run_once(
    server, rooms=10, k=10, window=4, size=1024, duration=3.0, workers=1, drain=10.0
) -> dict:
    """One fanout measurement against a running ServerProcess."""
    room_ids = list(range(1, rooms + 1))
    args_list, first = [], 0
    for share in (room_ids[i::workers] for i in range(workers)):
        args_list.append((server.address, share, first, k, window, size, duration, drain))
        first += len(share) * k
    _, parts, server_cpu, _, redis_cpu = run_load(
        server, fanout_worker, args_list, duration + drain
    )
    wall = max(p["wall"] for p in parts)
    receipts = sum(p["receipts"] for p in parts)
    latencies = [x for p in parts for x in p["latencies"]]
    gen_util = max(p["cpu"] / p["wall"] for p in parts if p["wall"] > 0)
    return {
        "deliveries_per_s": receipts / wall,
        "messages_per_s": sum(p["messages"] for p in parts) / wall,
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "lost": sum(p["lost"] for p in parts),
        "duplicates": sum(p["duplicates"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "server_cpu_us_per_delivery": 1e6 * server_cpu / max(receipts, 1),
        "server_cpu_share": server_cpu / wall,
        # the bus's Redis, for the servers that have one (0 for the others)
        "redis_cpu_us_per_delivery": 1e6 * redis_cpu / max(receipts, 1),
        "redis_cpu_share": redis_cpu / wall,
        "generator_cpu_share": gen_util,
        # A generator process that used >= 90% of a core was likely the one setting the pace.
        "generator_bound": gen_util >= 0.9,
    }


# ------------------------------------------------------------- idle and churn: the pair

ROOM = 1
CHURN_ROOM = 2


def _client(address) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {marker!r}; got {data[-200:]!r}")
        data += chunk
    return data[data.index(marker) + len(marker) :]


def _wait_for_reply(sock: socket.socket, kind: type[protocol.Reply]) -> protocol.Reply:
    """Read frames until one is a reply of ``kind`` (YouEntered...); what follows it in the
    same read is dropped (nothing is in flight to these sockets yet)."""
    decoder, seen = FrameDecoder(), []
    while True:
        for event in decoder.events():
            if isinstance(event, Frame):
                reply = protocol.parse_reply(event.text)
                if isinstance(reply, kind):
                    return reply
                seen.append(event.text)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {kind.__name__}; got {seen[-3:]!r}")
        decoder.receive_data(chunk)


def _pair(address):
    a, b = _client(address), _client(address)
    a.sendall(encode_frame(ROOM, ""))
    _wait_for_reply(a, protocol.YouEntered)
    b.sendall(encode_frame(ROOM, ""))
    _wait_for_reply(b, protocol.YouEntered)
    _wait_for_reply(a, protocol.Entered)  # b's join notice: a's stream is quiet from here
    return a, b


def _ping_pong(a, b, until: float, rtts: list) -> None:
    """Round trips a -> b -> a until the deadline; each RTT appended to rtts."""
    i = 0
    rest_a = rest_b = b""
    while time.perf_counter() < until:
        t = time.perf_counter()
        a.sendall(encode_frame(ROOM, b"ping%d" % i))
        rest_b = _read_until(b, b"ping%d</RID" % i, rest_b)
        b.sendall(encode_frame(ROOM, b"pong%d" % i))
        rest_a = _read_until(a, b"pong%d</RID" % i, rest_a)
        rtts.append(time.perf_counter() - t)
        i += 1


# --------------------------------------------------------------------------------- idle


def idle_worker(address, idle, duration, ready, go, results) -> None:
    socks = []
    try:
        for _ in range(idle):
            socks.append(socket.create_connection(address, timeout=10))
        # Connected last, the pair has the server's highest fds: on select() past
        # FD_SETSIZE, the server tells it why and closes it, and _pair() raises.
        a, b = _pair(address)
        rtts: list[float] = []
        _ping_pong(a, b, time.perf_counter() + 0.3, [])  # warm up
        ready.put(False)
        go.wait()
        cpu0, t0 = _cpu(), time.perf_counter()
        _ping_pong(a, b, t0 + duration, rtts)
        wall = time.perf_counter() - t0
        results.put({"rtts": rtts, "wall": wall, "cpu": _cpu() - cpu0})
        a.close()
        b.close()
    except (ConnectionError, OSError) as exc:
        # select(): the server told a connection past FD_SETSIZE why, and closed it.
        ready.put(f"refused: {exc}")
        results.put({"refused": True})
    finally:
        for sock in socks:
            sock.close()


def run_idle(server, idle: int, duration: float = 2.0) -> dict:
    (state,), (part,), server_cpu, rss, _ = run_load(
        server, idle_worker, [(server.address, idle, duration)], duration
    )
    if part.get("refused") or isinstance(state, str):
        return {"idle": idle, "refused": True}
    rtts = part["rtts"]
    return {
        "idle": idle,
        "refused": False,
        "round_trips_per_s": len(rtts) / part["wall"],
        "p50_us": us(percentile(rtts, 50)),
        "p99_us": us(percentile(rtts, 99)),
        "server_cpu_us_per_round_trip": 1e6 * server_cpu / max(len(rtts), 1),
        "server_rss_bytes": rss,
        "generator_cpu_share": part["cpu"] / part["wall"],
    }


# -------------------------------------------------------------------------------- churn


def churn_worker(address, concurrency, duration, ready, go, results) -> None:
    a, b = _pair(address)
    counts = [0] * concurrency
    errors: list[str] = []

    def churner(k: int, until: float) -> None:
        while time.perf_counter() < until:
            try:
                sock = _client(address)
                sock.sendall(encode_frame(CHURN_ROOM, b"hello from a short visit"))
                _wait_for_reply(sock, protocol.YouEntered)
                sock.close()
                counts[k] += 1
            except OSError as exc:
                errors.append(repr(exc))
                return

    ready.put(True)
    go.wait()
    cpu0, t0 = _cpu(), time.perf_counter()
    until = t0 + duration
    threads = [threading.Thread(target=churner, args=(k, until)) for k in range(concurrency)]
    for t in threads:
        t.start()
    rtts: list[float] = []
    _ping_pong(a, b, until, rtts)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    results.put(
        {
            "connections": sum(counts),
            "rtts": rtts,
            "wall": wall,
            "cpu": _cpu() - cpu0,
            "errors": errors[:3],
        }
    )
    a.close()
    b.close()


def run_churn(server, concurrency: int = 8, duration: float = 2.0) -> dict:
    _, (part,), server_cpu, _, _ = run_load(
        server, churn_worker, [(server.address, concurrency, duration)], duration
    )
    return {
        "concurrency": concurrency,
        "connections_per_s": part["connections"] / part["wall"],
        "pair_p99_us": us(percentile(part["rtts"], 99)),
        "server_cpu_us_per_connection": 1e6 * server_cpu / max(part["connections"], 1),
        "generator_cpu_share": part["cpu"] / part["wall"],
        "errors": part["errors"],
    }
