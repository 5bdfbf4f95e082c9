"""SO_REUSEPORT seen from one process: how Linux spreads connections over listeners that
share a port, and what happens to the connections waiting on a listener that is closed.

``--workers N`` (chatlab/server/workers.py) runs N processes, each with a listening socket
bound to the same port with ``SO_REUSEPORT``. Here the "workers" are listening sockets in one
process, so that a notebook cell can count what the kernel did:

- ``spread(listeners, n)``: n clients connect; every connection is accepted; how many each
  listener got. On Linux (3.9+) each listener gets a share (a hash of the client's address
  and port picks one). macOS and the BSDs let the sockets bind but do not spread (FreeBSD
  12+ does with ``SO_REUSEPORT_LB``); Windows has no SO_REUSEPORT at all.
- ``close_one(listeners, n)``: n clients connect, then the first listener is closed before
  accepting anything, as when a worker dies. Each listener has its own accept queue; the
  connections waiting in the closed one's are reset (Linux 5.14+ can hand them to another
  listener instead, with sysctl ``net.ipv4.tcp_migrate_req=1``; it is off by default).
"""

from __future__ import annotations

import select
import socket
import time

__all__ = ["close_one", "listeners", "migrate_req", "spread"]

HOST = "127.0.0.1"


def migrate_req() -> str:
    """Linux's net.ipv4.tcp_migrate_req here: "0" (queued connections of a closed listener
    are reset), "1" (handed to another listener), or why it cannot be read."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip()
    except OSError:
        return "not here (Linux 5.14+ only)"


def listeners(n: int = 2) -> list[socket.socket]:
    """n listening sockets on one free port of 127.0.0.1, each with SO_REUSEPORT."""
    first = socket.create_server((HOST, 0), reuse_port=True)
    port = first.getsockname()[1]
    return [first] + [socket.create_server((HOST, port), reuse_port=True) for _ in range(n - 1)]


def spread(socks: list[socket.socket], n: int = 40, timeout: float = 5.0) -> list[int]:
    """Connect n clients to the shared port; accept them all; the count per listener."""
    port = socks[0].getsockname()[1]
    clients = [socket.create_connection((HOST, port), timeout=timeout) for _ in range(n)]
    counts = [0] * len(socks)
    deadline = time.monotonic() + timeout
    try:
        while sum(counts) < n and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], deadline - time.monotonic())
            for sock in ready:
                conn, _ = sock.accept()
                conn.close()
                counts[socks.index(sock)] += 1
    finally:
        for client in clients:
            client.close()
    return counts


def close_one(socks: list[socket.socket], n: int = 40, timeout: float = 5.0) -> dict[str, int]:
    """Connect n clients, close the first listener without accepting, let the others accept
    and answer each connection with b"hi". What each client then got: "served" (the b"hi"),
    "reset" (ConnectionResetError), or "nothing" by the deadline."""
    port = socks[0].getsockname()[1]
    clients = [socket.create_connection((HOST, port), timeout=timeout) for _ in range(n)]
    socks[0].close()  # a worker dies with connections in its accept queue
    others, served = socks[1:], []
    outcome: dict[socket.socket, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(outcome) < n and time.monotonic() < deadline:
            waiting = [c for c in clients if c not in outcome]
            ready, _, _ = select.select(others + waiting, [], [], deadline - time.monotonic())
            for sock in ready:
                if sock in others:
                    conn, _ = sock.accept()
                    conn.sendall(b"hi")
                    served.append(conn)
                    continue
                try:
                    outcome[sock] = "served" if sock.recv(2) == b"hi" else "closed"
                except ConnectionResetError:
                    outcome[sock] = "reset"
    finally:
        for s in clients + served:
            s.close()
    counts = {"served": 0, "reset": 0, "closed": 0, "nothing": n - len(outcome)}
    for what in outcome.values():
        counts[what] += 1
    return counts
