"""chatlab.live without a browser: live clients chat through a real server, the monitor sees
a slow reader's queue grow, every situation does what its sentence says, and everything
stops (no thread left, every socket closed)."""

from __future__ import annotations

import threading

import pytest
from helpers import running, wait_for

from chatlab.live import ClientHub, EchoBot, Monitor, Situations
from chatlab.server import Limits

SMALL = Limits(
    max_output_buffer=64 * 1024,
    kernel_send_buffer=4096,
    max_message_rate=50,
    message_burst=100,
    frame_timeout=10,
)


def chatlab_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("chatlab-live"))


@pytest.fixture
def hub():
    with ClientHub() as hub:
        yield hub
    assert not hub.running and hub.loop.is_closed()


def test_live_clients_chat_through_a_server(backend, hub):
    with running(backend) as (server, _):
        alice = hub.connect(server.address, "alice", room=1)
        bob = hub.connect(server.address, "bob", room=1)
        EchoBot(hub, server.address, room=1)
        assert server.rooms() == {1: ["alice", "bob", "echo"]}
        alice.say("hello bob")
        assert bob.expect("<alice> hello bob").sender == "alice"
        bob.say("echo: hi")
        assert bob.expect("<echo>").body == "<echo> bob said: hi"
        alice.expect("<echo>")
        # alice hears bob and the bot, never her own line (the server does not echo)
        assert alice.messages(1) == ["<bob> echo: hi", "<echo> bob said: hi"]
        alice.close()
        assert bob.expect("alice left room 1").room == 1


def test_a_listener_runs_on_the_hubs_thread(hub):
    with running("auto") as (server, _):
        seen: list[tuple[str, str]] = []
        hub.connect(
            server.address,
            "bob",
            room=1,
            on_line=lambda c, line: seen.append((threading.current_thread().name, line.body)),
        )
        alice = hub.connect(server.address, "alice", room=1)
        alice.say("hi")
        wait_for(lambda: ("chatlab-live-hub", "<alice> hi") in seen, "bob's listener")


def test_the_monitor_sees_a_slow_readers_queue_grow(hub):
    with running("auto", limits=SMALL) as (server, _):
        monitor = Monitor(server)
        situations = Situations(server, hub, room=1)
        try:
            text = situations.slow_reader(16)
            assert "slow-reader1 joined room 1 and stopped reading" in text
            first = monitor.snapshot().connection("slow-reader1")
            assert first is not None and 0 < first.output_queued < SMALL.max_output_buffer
            situations.talk(16)
            second = monitor.snapshot().connection("slow-reader1")
            assert second is not None and second.output_queued > first.output_queued
            # The trace ring saw the talker's frames arrive: its fd was ready to read.
            snap = monitor.snapshot()
            assert any(snap.fd_name(fd) == "talker2" for t in snap.recent for fd, _ in t.ready)
            assert "slow-reader1" in snap.text() and "blocked" in snap.text()
            situations.talk(64)  # past the limit: cut off
            gone = situations.wait_gone("slow-reader1")
            assert "output buffer over 65536 bytes (1)" in gone
        finally:
            situations.stop()
            monitor.close()
        assert server.loop._trace is None  # the hook is gone


def test_each_situation_says_what_the_server_did(hub):
    with running("auto", limits=SMALL) as (server, _):
        situations = Situations(server, hub, room=1)
        try:
            flood = situations.flood(200)
            assert "flooder2 sent 200 messages at once" in flood
            assert "reached talker1 while the flood was still being read" in flood
            reset = situations.reset_mid_broadcast(8)
            assert "room 1 heard: * resetter" in reset and "(connection reset)" in reset
            assert server.statistics().disconnects.get("connection reset") == 1
            half = situations.half_frame()
            assert "sent 17 bytes of a frame" in half and "holds 17 bytes" in half
        finally:
            situations.stop()
        assert situations.clients == []


def test_everything_stops(backend):
    with running(backend) as (server, _):
        hub = ClientHub(backend)
        clients = [hub.connect(server.address, f"n{i}", room=1) for i in range(3)]
        socks = [c.sock for c in clients]
        assert chatlab_threads() == ["chatlab-live-hub"]
        hub.close()
        hub.close()  # twice is fine
        assert chatlab_threads() == []
        assert all(s.fileno() == -1 for s in socks)
        wait_for(lambda: not server.connections(), "the server to see them go")


def test_widgets_have_fixed_text_and_stop():
    widgets = pytest.importorskip("chatlab.live.widgets", reason="ipywidgets is not installed")
    with running("auto", limits=SMALL) as (server, _), ClientHub() as hub:
        alice = widgets.ChatWidget(hub, server.address, "alice", room=1)
        bob = widgets.ChatWidget(hub, server.address, "bob", room=1)
        view = widgets.LiveView(server, hub, room=1)
        assert repr(alice) == "ChatWidget(alice in room 1)"
        assert repr(view) == f"LiveView(server {server.name}, room 1)"
        assert view.summary().endswith("2 connections; rooms 1: alice, bob")
        alice.say("typed")
        bob.client.expect("<alice> typed")
        wait_for(lambda: "&lt;alice&gt; typed" in bob._log.value, "bob's widget to show it")
        assert "&lt;alice&gt; typed" in alice._log.value  # her own line, drawn locally
        view.inject("slow_reader")
        view.wait_idle()
        assert "slow-reader1 joined room 1" in view.status.value
        view.refresh()
        assert 'data-name="slow-reader1"' in view._conns.value
        view.stop()
        alice.close_client()
        bob.close_client()
        assert "chatlab-live-view" not in chatlab_threads()


def test_redis_killed_and_restarted_under_a_bus_server(hub):
    from chatlab.course import needs

    if not (needs("redis-server") and needs("hiredis")):
        pytest.skip("needs redis-server and hiredis")
    from chatlab.redis_server import RedisServer

    with RedisServer() as redis, running("auto", bus=redis.url) as (server, _):
        situations = Situations(server, hub, room=1, redis=redis)
        try:
            killed = situations.toggle_redis()
            assert "Redis was killed (SIGKILL); everyone here heard: * network degraded (" in killed
            assert "still reached talker1, on this server" in killed
            back = situations.toggle_redis()
            assert back == (
                "Redis is back; everyone here heard: "
                "* network restored: rooms reach every server again"
            )
        finally:
            situations.stop()
