"""The idle and churn benchmarks: one ping-pong pair measured while something else goes on.

- idle: C connections that never say a word sit on the server. select() and poll() pay for
  every one of them on every loop iteration; epoll does not. The pair's round trips show it,
  and so does the server's CPU time per round trip.
- churn: N clients at a time connect, join, send one message and close, over and over,
  while the pair keeps chatting: connections per second, and what it does to the pair.

Each load runs in its own process and reports its own CPU use.
"""

from __future__ import annotations

import resource
import socket
import threading
import time

from ..framing import encode_frame
from ._util import percentile, run_load

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


def _pair(address):
    a, b = _client(address), _client(address)
    for sock in (a, b):
        sock.sendall(encode_frame(ROOM, ""))
        _read_until(sock, b"you entered room %d;" % ROOM)
    _read_until(a, b"entered room %d.</RID" % ROOM)  # b's join notice
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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
        "p50_us": 1e6 * percentile(rtts, 50),
        "p99_us": 1e6 * percentile(rtts, 99),
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
                _read_until(sock, b"you entered room %d;" % CHURN_ROOM)
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
        "pair_p99_us": 1e6 * percentile(part["rtts"], 99),
        "server_cpu_us_per_connection": 1e6 * server_cpu / max(part["connections"], 1),
        "generator_cpu_share": part["cpu"] / part["wall"],
        "errors": part["errors"],
    }
