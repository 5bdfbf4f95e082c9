"""The native load generator's own correctness: what it counts must be true.

Real server processes where there is one for the fault (chatlab, the "faulty" baseline);
a small fake relay on a thread for the faults no server has: misrouting, and frames cut
into pieces at every possible place.
"""

from __future__ import annotations

import itertools
import selectors
import socket
import sys
import threading

import pytest

from chatlab.bench import native
from chatlab.bench._util import ServerProcess
from chatlab.bench.native_load import (
    NativeLoad,
    SinkProcess,
    generator_capacity,
    run_churn_native,
    run_idle_native,
    run_once_native,
)
from chatlab.framing import FRAME_RE, encode_frame

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="the benchmarks read /proc (Linux)"
    ),
    pytest.mark.skipif(native.missing() is not None, reason=str(native.missing())),
]

SMALL = dict(rooms=2, k=4, window=2, size=200, duration=0.5)


def assert_exactly_once(r):
    assert r["lost"] == 0 and r["duplicates"] == 0, r
    assert r["out_of_order"] == 0 and r["misrouted"] == 0, r
    assert r["deliveries_per_s"] > 0
    # Every message reaches the k - 1 = 3 other members of its room, no more, no less.
    assert r["deliveries_per_s"] == pytest.approx(3 * r["messages_per_s"], rel=1e-9)


class FakeRelay:
    """A chat relay on a thread, with faults no real server has.

    misroute_every=n: every n-th message goes to the members of another room. dribble:
    every frame goes out in pieces of 1 to 7 bytes, notices and CRLFs mixed in, so the
    generator's frames are cut everywhere a read can cut them.
    """

    label = "fake relay"

    def __init__(self, misroute_every: int = 0, dribble: bool = False) -> None:
        self.misroute_every, self.dribble = misroute_every, dribble
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def cpu_seconds(self) -> float:
        return 0.0  # a thread of the test process: not measured

    def redis_cpu_seconds(self) -> float:
        return 0.0

    def _send(self, sock: socket.socket, data: bytes) -> None:
        if not self.dribble:
            sock.sendall(data)
            return
        sizes = itertools.cycle([1, 5, 2, 7, 3])
        i = 0
        while i < len(data):
            n = next(sizes)
            sock.sendall(data[i : i + n])
            i += n

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        rooms: dict[int, list[socket.socket]] = {}
        buffers: dict[socket.socket, bytes] = {}
        count = 0
        while not self._stopping.is_set():
            for key, _ in sel.select(0.05):
                if key.fileobj is self._listener:
                    conn, _ = self._listener.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buffers[conn] = b""
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    conn.close()
                    for members in rooms.values():
                        if conn in members:
                            members.remove(conn)
                    continue
                buf, end = buffers[conn] + data, 0
                for match in FRAME_RE.finditer(buf):
                    end = match.end()
                    room, body = int(match.group(1)), match.group(2)
                    if not body:  # a join
                        rooms.setdefault(room, []).append(conn)
                        self._send(conn, encode_frame(room, f"* you entered room {room}; here: "))
                        continue
                    count += 1
                    target = room
                    if self.misroute_every and count % self.misroute_every == 0:
                        target = next((r for r in rooms if r != room), room)
                    frame = match.group(0)
                    if self.dribble:  # a notice, a name, a telnet line end
                        frame = encode_frame(room, "* x entered room.") + b"\r\n"
                        frame += encode_frame(room, b"<127.0.0.1:9> " + body)
                    for member in rooms[target]:
                        if member is not conn:
                            try:
                                self._send(member, frame)
                            except OSError:
                                pass  # it left; it is dropped when its EOF is read
                buffers[conn] = buf[end:]
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def __enter__(self) -> FakeRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join(5)


# ------------------------------------------------------------------------------ fanout


def test_fanout_counts_every_delivery_exactly_once_on_chatlab():
    with ServerProcess("chatlab", "epoll") as server:
        r = run_once_native(server, **SMALL)
    assert_exactly_once(r)
    assert r["server_cpu_us_per_delivery"] > 0
    assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert r["generator"] == "native"


def test_fanout_detects_lost_and_duplicated_messages():
    # drops every 97th copy and sends every 89th twice: both must show
    with ServerProcess("faulty") as server:
        r = run_once_native(server, **SMALL, drain=1.0)
    assert r["lost"] > 0, "a dropped copy is never received: counted as lost"
    assert r["duplicates"] > 0, "a copy received twice is counted as a duplicate"


def test_fanout_detects_misrouted_messages():
    with FakeRelay(misroute_every=50) as relay:
        r = run_once_native(relay, **SMALL, drain=0.5)
    assert r["misrouted"] > 0, "a message in another room's stream is misrouted"
    assert r["lost"] > 0, "and its own room never got it"
    assert r["duplicates"] == 0


def test_fanout_parses_frames_cut_anywhere_among_notices():
    with FakeRelay(dribble=True) as relay:
        r = run_once_native(relay, rooms=2, k=4, window=2, size=100, duration=0.3)
    assert_exactly_once(r)


def test_the_sink_relays_exactly_once():
    with SinkProcess() as sink:
        r = run_once_native(sink, **SMALL)
    assert_exactly_once(r)


def test_generator_capacity():
    r = generator_capacity(duration=0.5, rooms=2, k=4)
    assert r["lost"] == 0 and r["duplicates"] == 0 and r["misrouted"] == 0
    assert r["capacity_deliveries_per_s"] > 0
    assert r["generator_cpu_us_per_delivery"] > 0
    # The kernel's part is measured (getrusage's stime), not assumed: a share of the whole.
    assert 0 < r["generator_kernel_share"] <= 1


# ------------------------------------------------------------------------ idle, churn


def test_churn_counts_connections():
    with ServerProcess("chatlab", "epoll") as server:
        r = run_churn_native(server, concurrency=2, duration=0.5)
    assert r["connections_per_s"] > 0 and not r["errors"], r
    assert r["pair_p99_us"] > 0


def test_idle_pair_round_trips_and_select_refusal():
    with ServerProcess("chatlab", "epoll") as server:
        r = run_idle_native(server, idle=50, duration=0.3)
    assert not r["refused"] and r["round_trips_per_s"] > 0 and r["p99_us"] >= r["p50_us"]
    assert r["server_rss_bytes"] > 0
    with ServerProcess("chatlab", "select") as server:
        r = run_idle_native(server, idle=1100, duration=0.3)
    assert r["refused"], "select cannot hold 1,100 connections; the benchmark reports it"


# ----------------------------------------------------------------------- the harness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_error_carries_the_generators_message():
    with pytest.raises(RuntimeError, match="client 0: connect to 127.0.0.1:"):
        with NativeLoad("fanout", ("127.0.0.1", _free_port()), dict(rooms=1, clients=2)) as gen:
            gen.wait_ready(timeout=20)


def test_eof_before_go_ends_the_generator_quietly():
    with SinkProcess() as sink:
        with NativeLoad("fanout", sink.address, dict(rooms=1, clients=3)) as gen:
            assert gen.wait_ready(timeout=20) == 3
            gen.close()
            assert gen.proc.returncode == 0 and gen.stderr_text() == ""


def test_a_server_that_goes_away_mid_run_is_named():
    with SinkProcess() as sink:
        with NativeLoad("fanout", sink.address, dict(rooms=1, clients=3, duration=5)) as gen:
            gen.wait_ready(timeout=20)
            gen.go()
            sink.stop()
            with pytest.raises(
                RuntimeError, match=r"client \d+: the server (closed|reset) the connection"
            ):
                gen.result(timeout=20)
