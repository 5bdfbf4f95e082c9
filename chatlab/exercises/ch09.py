"""Checks for chapter 09 (rooms shared across servers through Redis).

09.1 ``check_sequence``: the receiver's half of design note 3, numbers in, a verdict out.
09.2 ``check_claim``: one leave notice for a dead server, however many servers notice it
     (``SET ... NX``, against a real redis-server: skipped, with the reason, where there is
     none).
09.3 ``check_stale``: how long a SIGKILLed server's members stay listed, at most.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from ..course import REQUIREMENTS
from . import Check, Verdict

__all__ = ["RedisCommands", "check_claim", "check_sequence", "check_stale"]

# --- 09.1 ---------------------------------------------------------------------------------

# (origin, seq) as received, and what the receiver must make of each: the number of
# messages it missed from that origin just before this one (0: in order), or "duplicate".
SEQUENCE_CASES: list[tuple[str, list[tuple[str, int]], list[int | str]]] = [
    ("in order", [("A#1", 1), ("A#1", 2), ("A#1", 3)], [0, 0, 0]),
    ("a jump of 3 after 2: two missed", [("A#1", 1), ("A#1", 2), ("A#1", 5)], [0, 0, 2]),
    ("the same number twice", [("A#1", 1), ("A#1", 2), ("A#1", 2)], [0, 0, "duplicate"]),
    ("an older number (a late copy)", [("A#1", 4), ("A#1", 5), ("A#1", 3)], [0, 0, "duplicate"]),
    (
        "the first message of a server that was talking before we joined",
        [("A#1", 7), ("A#1", 8)],
        [0, 0],
    ),
    (
        "two origins count apart",
        [("A#1", 1), ("B#2", 1), ("A#1", 2), ("B#2", 3)],
        [0, 0, 0, 1],
    ),
    (
        "a restarted server is a new origin, starting again at 1",
        [("A#1", 9), ("A#2", 1), ("A#2", 2)],
        [0, 0, 0],
    ),
]


def check_sequence(receive: Callable[[dict, str, int], Any]) -> Verdict:
    """09.1: ``receive(last_seen, origin, seq)`` returns how many messages from ``origin``
    were missed just before this one (0 when in order), or "duplicate"; it updates
    ``last_seen`` (origin -> last number delivered), as ``RedisBus._on_published`` does."""
    check = Check("09.1", "gaps and duplicates")
    for title, messages, expected in SEQUENCE_CASES:
        last_seen: dict[str, int] = {}
        got: list[Any] = []
        for origin, seq in messages:
            ok, value = check.call(receive, last_seen, origin, seq)
            if not ok:
                return check.verdict()
            got.append(value)
        if got != expected:
            shown = ", ".join(f"{o} {s}" for o, s in messages)
            check.expect(False, f"{title} ({shown}): expected {expected}, got {got}")
    return check.verdict("a gap is counted, a duplicate dropped, a newcomer trusted: never silent")


# --- 09.2 ---------------------------------------------------------------------------------


class RedisCommands:
    """A blocking Redis connection for exercises: ``redis(*args)`` sends one command and
    returns its reply (hiredis parses it); every command sent is kept in ``sent``."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        import hiredis

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = hiredis.Reader(encoding="utf-8")
        self.sent: list[tuple[str, ...]] = []

    def __call__(self, *args: Any) -> Any:
        words = [str(a).encode() for a in args]
        self.sent.append(tuple(str(a) for a in args))
        frame = b"*%d\r\n" % len(words)
        frame += b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        self.sock.sendall(frame)
        while (reply := self.reader.gets()) is False:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self.reader.feed(data)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        self.sock.close()


def _missing(*names: str) -> list[str]:
    return [f"{n}: {REQUIREMENTS[n][1]}" for n in names if not REQUIREMENTS[n][0]()]


def check_claim(claim: Callable[[RedisCommands, str], Any], servers: int = 3) -> Verdict:
    """09.2: ``claim(redis, dead_id)`` returns True for exactly one of the servers that
    notice ``dead_id`` is gone, at the same moment; the claim expires by itself."""
    check = Check("09.2", "one leave notice for the dead")
    missing = _missing("redis-server", "hiredis")
    if missing:
        check.expect(False, "cannot be checked on this machine: " + "; ".join(missing))
        return check.verdict()
    from ..redis_server import RedisServer

    with RedisServer() as redis:
        conns = [RedisCommands(redis.host, int(redis.port or 0)) for _ in range(servers)]
        try:
            _claim_race(check, claim, conns)
        finally:
            for conn in conns:
                conn.close()
    return check.verdict("SET NX EX: one atomic command decides, and the decision expires")


def _claim_race(check: Check, claim: Callable, conns: list[RedisCommands]) -> None:
    results: list[tuple[bool, Any]] = [(False, None)] * len(conns)
    start = threading.Barrier(len(conns))

    def one(i: int) -> None:
        start.wait(5)
        results[i] = check.call(claim, conns[i], "C#dead01")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    check.problems[:] = list(dict.fromkeys(check.problems))  # one line, not one per server
    if not all(ok for ok, _ in results):
        return
    winners = [i for i, (_, won) in enumerate(results) if won is True]
    check.expect(
        len(winners) == 1,
        f"{len(conns)} servers noticed C#dead01 at once and {len(winners)} of them got True "
        "(exactly one should send the leave notices)",
    )
    others = [won for _, won in results if won is not True]
    check.expect(all(won is False for won in others), f"the others should get False, got {others}")
    sent = [cmd for conn in conns for cmd in conn.sent]
    sets = [cmd for cmd in sent if cmd[0].upper() == "SET"]
    words = {w.upper() for cmd in sets for w in cmd}
    check.expect(
        sets and "NX" in words,
        "claim with one atomic command, SET key value NX: a GET and then a SET lets two "
        "servers both see nothing and both claim",
    )
    check.expect(
        sets and ({"EX", "PX"} & words),
        "give the claim an expiry (SET ... NX EX seconds): else the key stays in Redis forever",
    )
    # Another dead server is another claim: the key must name the server.
    conn = conns[0]
    ok, value = check.call(claim, conn, "D#dead02")
    if ok:
        check.expect(
            value is True,
            "a second dead server (D#dead02) could not be claimed after C#dead01: "
            "put the dead server's id in the key",
        )


# --- 09.3 ---------------------------------------------------------------------------------


def check_stale(listed_for_at_most: Callable[[float], Any]) -> Verdict:
    """09.3: ``listed_for_at_most(ttl)``: the longest a SIGKILLed server's members can stay
    in /who, in seconds, given the bus's ttl (the heartbeat runs every ttl/3)."""
    check = Check("09.3", "how long the dead stay listed")
    for ttl in (2.0, 5.0, 0.5):
        ok, value = check.call(listed_for_at_most, ttl)
        if not ok:
            return check.verdict()
        if not isinstance(value, (int, float)):
            check.expect(False, f"listed_for_at_most({ttl}) should be a number, got {value!r}")
            break
        if abs(value - ttl / 3) < 1e-6:
            check.expect(
                False,
                f"listed_for_at_most({ttl}) = {value}: ttl/3 is how often the key is "
                "renewed, not how long it lives after the last renewal",
            )
            break
        if not check.expect(
            abs(value - ttl) < 1e-6,
            f"listed_for_at_most({ttl}) = {value}: each beat sets the alive key to expire "
            "`ttl` seconds later; when is the worst moment to die?",
        ):
            break
    return check.verdict("dying just after a beat leaves a key that lives a whole ttl")
