"""Several chat servers joined by the Redis bus (chatlab/bus.py), on every backend.

Every test runs a real ``redis-server`` (Debian's package) on a free loopback port, started
here and stopped after, and real chatlab servers: in-process (``serve(bus=...)``) where the
test needs to look inside, as processes where it kills one with SIGKILL or runs the CLI.
Each test has its own Redis namespace, so tests sharing one Redis never hear each other.

What these tests hold the bus to (issue 8): a room spans servers, exactly once and in each
sender's order while the bus is up; notices and /who cross servers; Redis killed and
restarted mid-traffic stops nothing local, every loss is counted, and the network heals; a
server killed with SIGKILL leaves /who elsewhere within its ttl.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from helpers import REPO, ServerProcess, child_env, free_port, read_until, run_cli, wait_for

from chatlab import ScriptedClient, protocol, serve
from chatlab.bench._util import _children
from chatlab.redis_server import RedisServer, redis_server_path

pytest.importorskip("hiredis", reason="the bus needs hiredis: pip install 'chatlab[redis]'")
if redis_server_path() is None:
    pytest.skip(
        "redis-server is not installed (Debian: apt-get install redis-server)",
        allow_module_level=True,
    )

from chatlab.bus import BusConfig  # noqa: E402  (after the skip: it needs nothing, but reads so)

TIMEOUT = 10.0


# ---- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis():
    """One redis-server for the tests that do not kill it (each uses its own namespace)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def network(backend):
    """network(url, namespace, names="ABC", ttl=5) -> servers A, B, C... on one bus.

    Each runs on a background thread with the test's backend; all are on the bus when this
    returns. Request it before ``clients``: clients are closed first, so the servers' stop
    does not wait out the linger of connections nobody closes."""
    with contextlib.ExitStack() as stack:

        def start(url: str, namespace: str, names="ABC", ttl: float = 5.0):
            servers = [
                stack.enter_context(
                    serve(backend=backend, bus=BusConfig(url, name, namespace, ttl=ttl))
                )
                for name in names
            ]
            wait_for(lambda: all(s.bus.up for s in servers), "every server to be on the bus")
            return servers

        yield start


@pytest.fixture
def clients():
    """clients(server, nick) -> a ScriptedClient; all closed afterwards."""
    made: list[ScriptedClient] = []

    def make(server, nick: str) -> ScriptedClient:
        c = ScriptedClient(server.address, nick=nick, timeout=TIMEOUT)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def who(c: ScriptedClient, room: int) -> set[str]:
    return set(c.who(room))


def wait_messages(c: ScriptedClient, room: int, count: int, timeout: float = 30.0) -> list[str]:
    """Read until c holds ``count`` chat messages of room; fail with how many came."""
    deadline = time.monotonic() + timeout
    while len(c.messages(room)) < count and time.monotonic() < deadline:
        c.drain(0.05)
    got = c.messages(room)
    assert len(got) >= count, f"{c.name} got {len(got)} of {count} messages in room {room}"
    return got


def by_sender(lines: list[str]) -> dict[str, list[int]]:
    """'<s1> m 17' lines -> {'s1': [17, ...]} in arrival order."""
    out: dict[str, list[int]] = {}
    for line in lines:
        match = re.fullmatch(r"<(\S+)> m (\d+)", line)
        assert match, f"unexpected line {line!r}"
        out.setdefault(match.group(1), []).append(int(match.group(2)))
    return out


def no_losses(*servers) -> None:
    for s in servers:
        stats = s.bus.statistics()
        assert (stats.gaps, stats.duplicates, stats.dropped, stats.malformed) == (0, 0, 0, 0), (
            f"{s.name}: {stats}"
        )


# ---- a room across servers ---------------------------------------------------------------


def test_three_servers_five_senders_exactly_once_in_order(redis, namespace, network, clients):
    senders_n, count, room = 5, 200, 7
    servers = network(redis.url, namespace)
    # Senders s0..s4 spread over A, B, C, A, B; one listener more on each server.
    senders = [clients(servers[i % 3], f"s{i}") for i in range(senders_n)]
    listeners = [clients(s, f"l{s.name}") for s in servers]
    everyone = senders + listeners
    for c in everyone:
        c.join(room)
    names = {c.name for c in everyone}
    wait_for(lambda: who(listeners[0], room) == names, "all 8 members in /who on A")

    for n in range(count):  # interleaved, as five people typing at once
        for c in senders:
            c.say(room, f"m {n}")

    expected = {c.name: list(range(count)) for c in senders}
    for c in listeners:
        got = by_sender(wait_messages(c, room, senders_n * count))
        assert got == expected, f"{c.name} did not get every message once, in order"
    for c in senders:
        got = by_sender(wait_messages(c, room, (senders_n - 1) * count))
        assert got == {name: seq for name, seq in expected.items() if name != c.name}
    for c in everyone:  # and nothing more: a round trip flushes anything still coming
        c.who(room)
        assert len(c.messages(room)) == count * (senders_n - (c in senders))
    no_losses(*servers)
    # Each server published its own senders' messages once and heard the others'.
    assert sum(s.bus.statistics().published for s in servers) >= senders_n * count


def test_notices_and_who_cross_servers(redis, namespace, network, clients):
    a, b, c = network(redis.url, namespace)
    alice, bob, carol = clients(a, "alice"), clients(b, "bob"), clients(c, "carol")
    alice.join(3)
    bob.join(3)
    alice.expect("bob entered room 3.", room=3, kind="notice")
    carol.join(3)
    # The joiner is told who is already there, on every server.
    line = next(x for x in carol.transcript if x.text.startswith("you entered room 3;"))
    assert line.text.endswith("here: alice, bob") or line.text.endswith("here: bob, alice")
    alice.expect("carol entered room 3.", room=3)
    bob.expect("carol entered room 3.", room=3)
    for x in (alice, bob, carol):
        assert who(x, 3) == {"alice", "bob", "carol"}
    alice.command(3, "/who 3", reply="(3 members on 3 servers)")

    bob.command(3, "/rooms", reply="rooms (members): 3 (3, you)")
    line = carol.command(3, "/servers", reply="3 servers: C (this one, 1 member)")
    assert "A (1 member)" in line.text and "B (1 member)" in line.text

    bob.nick("robert")
    alice.expect("bob is now known as robert.", room=3)
    carol.expect("bob is now known as robert.", room=3)
    assert who(alice, 3) == {"alice", "robert", "carol"}

    carol.command(3, "/me waves", reply=None)
    alice.expect("* carol waves", room=3)
    carol.leave(3)
    alice.expect("carol left room 3.", room=3)
    bob.expect("carol left room 3.", room=3)
    assert who(alice, 3) == {"alice", "robert"}

    bob.close()
    alice.expect("robert left room 3 (closed the connection).", room=3)
    assert who(alice, 3) == {"alice"}
    no_losses(a, b, c)


def test_a_server_shutting_down_tells_the_network(backend, redis, namespace, network, clients):
    (a,) = network(redis.url, namespace, "A")
    alice = clients(a, "alice")
    alice.join(4)
    with serve(backend=backend, bus=BusConfig(redis.url, "B", namespace)) as b:
        wait_for(lambda: b.bus.up, "B on the bus")
        with ScriptedClient(b.address, "bob", timeout=TIMEOUT) as bob:
            bob.join(4)
            alice.expect("bob entered room 4.", room=4)
            b.loop.call_soon_threadsafe(b.shutdown)
            bob.expect("bye (server shutting down).", room=protocol.SERVER_ROOM)
            bob.wait_closed()
    # B said goodbye: a leave notice at once, and its keys are gone, not left to expire.
    alice.expect("bob left room 4 (server shutting down).", room=4)
    assert who(alice, 4) == {"alice"}
    alice.command(4, "/servers", reply="1 server: A (this one, 1 member)")


def test_a_client_that_sends_eof_still_gets_its_network_replies(redis, namespace, network):
    """`printf '/who\n' | python -m chatlab.client`: the command and EOF arrive together,
    and the reply comes later, from Redis. The server must wait for it before closing."""
    a, b = network(redis.url, namespace, "AB")
    with ScriptedClient(b.address, "bob", timeout=TIMEOUT) as bob:
        bob.join(9)
        with socket.create_connection(a.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"<RID:9>hi</RID:9><RID:9>/who</RID:9><RID:9>/servers</RID:9>")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):  # until the server closes: it does, by itself
                data += chunk
        bob.expect("left room 9 (closed the connection).", room=9)
    text = data.decode()
    assert re.search(r"\* room 9: 127\.0\.0\.1:\d+, bob \(2 members on 2 servers\)", text), text
    assert "* 2 servers: A (this one, 1 member), B (1 member)" in text, text


def test_replayed_and_foreign_messages_are_dropped_and_counted(redis, namespace, network, clients):
    """Exactly once is the receiver's job too: a copy seen twice is dropped by its seq."""
    a, b = network(redis.url, namespace, "AB")
    alice, bob = clients(a, "alice"), clients(b, "bob")
    alice.join(5)
    bob.join(5)
    alice.expect("bob entered room 5.")
    channel = f"{namespace}:room:5".encode()
    with socket.create_connection(("127.0.0.1", redis.port), timeout=TIMEOUT) as spy:
        spy.sendall(b"SUBSCRIBE " + channel + b"\r\n")
        read_until(spy, b"subscribe")
        bob.say(5, "once")
        alice.expect("<bob> once", room=5)
        payload = read_until(spy, b"once").rsplit(b"\r\n", 2)[-2]
        assert payload.endswith(b"\n<bob> once")
    # Replay B's message as is, then publish something no chatlab server wrote.
    with socket.create_connection(("127.0.0.1", redis.port), timeout=TIMEOUT) as rogue:
        for data in (payload, b"not a chatlab message"):
            rogue.sendall(_command(b"PUBLISH", channel, data))
            read_until(rogue, b"\r\n")
    wait_for(lambda: a.bus.statistics().duplicates == 1, "A to drop the replayed copy")
    wait_for(lambda: a.bus.statistics().malformed == 1, "A to ignore the foreign message")
    bob.say(5, "twice?")
    alice.expect("<bob> twice?", room=5)
    assert alice.messages(5) == ["<bob> once", "<bob> twice?"]


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


# ---- faults ------------------------------------------------------------------------------


def test_redis_killed_and_restarted_mid_traffic(namespace, network, clients):
    with RedisServer() as redis:
        a, b = network(redis.url, namespace, "AB")
        alice, amy, bob = clients(a, "alice"), clients(a, "amy"), clients(b, "bob")
        for c in (alice, amy, bob):
            c.join(1)
        wait_for(lambda: who(bob, 1) == {"alice", "amy", "bob"}, "all three in /who")

        sent = []
        stop = threading.Event()

        def talk():  # alice talks all along, at most 5,000 lines or 30 s
            deadline = time.monotonic() + 30
            for n in range(5000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                alice.say(1, f"m {n}")
                sent.append(n)
                time.sleep(0.002)

        talker = threading.Thread(target=talk, name="alice-talks")
        talker.start()
        try:
            wait_for(lambda: len(sent) > 50, "alice to be talking")
            redis.kill()
            for c in (amy, bob):
                c.expect("network degraded", room=protocol.SERVER_ROOM, timeout=TIMEOUT)
            mark = len(sent)
            wait_for(lambda: len(sent) > mark + 50, "alice to talk on while Redis is down")
            redis.start()
            for c in (amy, bob):
                c.expect("network restored", room=protocol.SERVER_ROOM, timeout=TIMEOUT)
            mark = len(sent)
            wait_for(lambda: len(sent) > mark + 50, "alice to talk on after the restart")
        finally:
            stop.set()
            talker.join(10)

        # Local delivery never stopped: amy, on alice's server, has every line in order.
        assert by_sender(wait_messages(amy, 1, len(sent))) == {"alice": sent}

        # Bob missed the outage, but what he got came once and in order, the lines after the
        # restart included, and the bus counted every line he missed.
        def bob_has_the_last_line():
            bob.drain(0.05)
            return bob.messages(1)[-1:] == [f"<alice> m {sent[-1]}"]

        wait_for(bob_has_the_last_line, "bob to get alice's last line")
        got = by_sender(bob.messages(1))["alice"]
        assert got == sorted(set(got)), "duplicates or disorder across the outage"
        assert len(got) < len(sent)
        assert b.bus.statistics().gaps == len(sent) - len(got)
        assert a.bus.statistics().dropped > 0
        # The network healed: membership was written again, and messages cross both ways.
        assert who(alice, 1) == {"alice", "amy", "bob"}
        bob.say(1, "back")
        alice.expect("<bob> back", room=1)
        amy.expect("<bob> back", room=1)


def test_a_hung_redis_is_noticed_and_survived(namespace, network, clients):
    """A stopped Redis (or a partition that drops packets) resets nothing: only silence.

    The heartbeat's PINGs notice it within about a ttl and a beat; the servers degrade as
    for a crash, and the network heals once Redis answers again."""
    ttl = 1.5
    with RedisServer() as redis:
        a, b = network(redis.url, namespace, "AB", ttl=ttl)
        alice, amy, bob = clients(a, "alice"), clients(a, "amy"), clients(b, "bob")
        for c in (alice, amy, bob):
            c.join(3)
        wait_for(lambda: who(alice, 3) == {"alice", "amy", "bob"}, "all three in /who")
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            for c in (alice, bob):
                c.expect("network degraded (Redis did not answer", timeout=3 * ttl)
            assert time.monotonic() - start < 2 * ttl, "noticed late"
            amy.say(3, "still here")
            alice.expect("<amy> still here", room=3)  # local delivery goes on
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        for c in (alice, bob):
            c.expect("network restored", room=protocol.SERVER_ROOM, timeout=TIMEOUT)
        bob.say(3, "across again")
        alice.expect("<bob> across again", room=3)
        assert who(bob, 3) == {"alice", "amy", "bob"}
        assert "<amy> still here" not in bob.messages(3)  # made while down: not queued


def test_a_server_starts_while_redis_is_down_and_joins_later(backend, namespace, clients):
    redis = RedisServer()
    redis.port = free_port()  # nothing listens there yet
    try:
        with serve(backend=backend, bus=BusConfig(redis.url, "A", namespace, ttl=3.0)) as a:
            alice, amy = clients(a, "alice"), clients(a, "amy")
            alice.join(2)
            amy.join(2)
            alice.expect("amy entered room 2.")
            amy.say(2, "local works")
            alice.expect("<amy> local works", room=2)
            alice.command(2, "/who", reply="(network degraded: other servers not shown)")

            redis.start()
            wait_for(lambda: a.bus.up, "A to reach Redis once it is up")
            with serve(backend=backend, bus=BusConfig(redis.url, "B", namespace)) as b:
                wait_for(lambda: b.bus.up, "B on the bus")
                bob = clients(b, "bob")
                bob.join(2)
                alice.expect("bob entered room 2.")
                assert who(bob, 2) == {"alice", "amy", "bob"}
                bob.close()  # before its server stops: no linger to wait out
            alice.close()
            amy.close()
    finally:
        redis.stop()


def test_a_killed_server_vanishes_from_who_within_its_ttl(backend, redis, namespace, network):
    ttl = 1.5
    c_server = ServerProcess(
        "--port", "0", "--backend", backend, "--bus", redis.url, "--bus-name", "C",
        "--bus-namespace", namespace, "--bus-ttl", str(ttl),
    )  # fmt: skip
    with contextlib.closing(c_server):
        (a,) = network(redis.url, namespace, "A")
        c_server.wait_started()
        assert "bus" in c_server.stderr and "as C" in c_server.stderr  # on the bus, not down
        c_address = c_server.address
        with (
            ScriptedClient(a.address, "alice", timeout=TIMEOUT) as alice,
            ScriptedClient(c_address, "carol", timeout=TIMEOUT) as carol,
        ):
            alice.join(6)
            carol.join(6)
            alice.expect("carol entered room 6.", room=6)
            assert who(alice, 6) == {"alice", "carol"}
            c_server.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(
                lambda: who(alice, 6) == {"alice"}, "carol to vanish from /who", timeout=ttl + 5
            )
            took = time.monotonic() - killed_at
            # Within the ttl of C's last heartbeat (plus the time of one /who round trip).
            assert took <= ttl + 1.0, f"carol stayed in /who {took:.2f} s after the kill"
            alice.command(6, "/servers", reply="1 server: A (this one, 1 member)")


# ---- the command line ----------------------------------------------------------------


@pytest.fixture
def workers(backend, redis, namespace):
    """A started ``python -m chatlab.server --workers 2 --bus ...``: (process, address).

    Stopped afterwards with SIGINT, which must end it and its workers with exit code 0."""
    proc = ServerProcess(
        "--port", "0", "--workers", "2", "--backend", backend, "--bus", redis.url,
        "--bus-namespace", namespace, "--log-level", "warning",
    )  # fmt: skip
    try:
        match = proc.wait_for_line(r"chatlab: 2 workers on (\S+):(\d+) \(bus ", TIMEOUT)
        yield proc, (match.group(1), int(match.group(2)))
        pids = _children(proc.proc.pid)
        proc.proc.send_signal(signal.SIGINT)
        assert proc.wait_exit() == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not any(os.path.exists(f"/proc/{pid}") for pid in pids), "a worker outlived us"
    finally:
        for pid in _children(proc.proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()


def _spread(address, n: int = 20) -> tuple[list[ScriptedClient], dict[str, str]]:
    """n clients on the workers' port, and which worker each landed on (from /servers).

    The kernel spreads connections over the two listeners by a hash of the client's port:
    20 clients all on one worker has a chance of 2 in a million."""
    made, on = [], {}
    for i in range(n):
        c = ScriptedClient(address, f"u{i}", timeout=TIMEOUT)
        made.append(c)
        line = c.command(0, "/servers", reply=protocol.Servers)
        on[c.name] = line.reply.name  # the server that answered: "this one"
    return made, on


def test_workers_share_one_port_and_one_network(workers):
    _, address = workers
    made, on = _spread(address)
    try:
        assert set(on.values()) == {f"{address[0]}:{address[1]}/{i}" for i in (1, 2)}
        for c in made:
            c.join(8)
        made[0].say(8, "to both workers")
        for c in made[1:]:
            c.expect("<u0> to both workers", room=8)
        assert len(made[-1].who(8)) == 20
    finally:
        for c in made:
            c.close()


def test_a_worker_that_dies_is_started_again(workers):
    proc, address = workers
    before = _children(proc.proc.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    proc.wait_for_line(r"chatlab: worker [12] exited \(-9\); restarting it", TIMEOUT)
    wait_for(lambda: len(set(_children(proc.proc.pid)) - set(before)) == 1, "a new worker")

    # The port has two listeners again: new clients land on both, and chat across them.
    def both_serve():
        made, on = _spread(address, 12)
        for c in made:
            c.close()
        return len(set(on.values())) == 2

    wait_for(both_serve, "clients on both workers again")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "2"], "--workers N needs --bus URL"),
        (["--bus", "http://127.0.0.1:1/0"], "bus URL must start with redis://"),
        (["--bus", "redis://127.0.0.1:1/zero"], "the path of a bus URL is a db number"),
    ],
)
def test_cli_refuses_a_bad_bus_clearly(args, message):
    result = run_cli("--port", "0", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_without_hiredis_the_bus_says_what_to_install():
    code = (
        "import sys; sys.modules['hiredis'] = None\n"  # as if it were not installed
        "from chatlab.server import main\n"
        "sys.exit(main(['--port', '0', '--bus', 'redis://127.0.0.1:1/0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=child_env(),
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "the Redis bus needs hiredis: pip install 'chatlab[redis]'" in result.stderr
