"""The benchmarks' own correctness (not their speed): what they count must be true."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from chatlab.bench import attack, bus, native, python_load, soak
from chatlab.bench.__main__ import SCENARIOS
from chatlab.bench._util import NATIVE_KINDS, SERVERS, ServerProcess, _cpu_of, uvloop_available

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the benchmarks read /proc (Linux)"
)


def test_fanout_counts_every_delivery_exactly_once_on_chatlab():
    with ServerProcess("chatlab", "epoll") as server:
        r = python_load.run_once(server, rooms=2, k=4, window=2, size=200, duration=0.5)
    assert r["lost"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0
    assert r["deliveries_per_s"] > 0
    # Every message reaches the k - 1 other members of its room: 3 deliveries per message.
    assert r["deliveries_per_s"] == pytest.approx(3 * r["messages_per_s"], rel=0.05)
    assert r["server_cpu_us_per_delivery"] > 0


def test_fanout_detects_lost_and_duplicated_messages():
    # A server that drops every 97th copy and sends every 89th twice: the benchmark must say so.
    with ServerProcess("faulty") as server:
        r = python_load.run_once(server, rooms=2, k=4, window=2, size=200, duration=0.5, drain=1.0)
    assert r["lost"] > 0, "a dropped copy is never received: counted as lost"
    assert r["duplicates"] > 0, "a copy received twice is counted as a duplicate"


def test_idle_pair_round_trips_and_select_refusal():
    with ServerProcess("chatlab", "epoll") as server:
        r = python_load.run_idle(server, idle=50, duration=0.3)
    assert not r["refused"] and r["round_trips_per_s"] > 0 and r["p99_us"] >= r["p50_us"]
    with ServerProcess("chatlab", "select") as server:
        r = python_load.run_idle(server, idle=1100, duration=0.3)
    assert r["refused"], "select cannot hold 1,100 connections; the benchmark reports it"


def test_churn_counts_connections():
    with ServerProcess("chatlab", "epoll") as server:
        r = python_load.run_churn(server, concurrency=2, duration=0.5)
    assert r["connections_per_s"] > 0 and not r["errors"]


NO_BUS = shutil.which("redis-server") is None or not importlib.util.find_spec("hiredis")


def test_every_scenario_is_registered_once_in_the_cli_order():
    # One table: the subcommands, their order in --help, and the module that owns each.
    assert list(SCENARIOS) == ["loop", "micro", "fanout", "idle", "churn", "bus", "soak", "attack"]
    for name, scenario in SCENARIOS.items():
        assert scenario.name == name
        assert scenario.run.__module__ == f"chatlab.bench.{name}", "a scenario is one module"


NEEDS = {"bus": pytest.mark.skipif(NO_BUS, reason="the bus needs redis-server and hiredis")}


@pytest.mark.parametrize(
    "scenario", [pytest.param(name, marks=NEEDS.get(name, ())) for name in SCENARIOS]
)
def test_cli_quick_runs_and_writes_json(scenario, tmp_path):
    out = tmp_path / f"{scenario}.json"
    args = [sys.executable, "-m", "chatlab.bench", scenario, "--quick", "--out", str(out)]
    if scenario == "fanout":
        args += ["--servers", "chatlab/epoll,asyncio"]
    if scenario in ("idle",):
        args += ["--servers", "chatlab/epoll"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["scenario"] == scenario
    assert "Traceback" not in done.stderr


def test_bus_scenario_delivers_exactly_once_across_workers_and_counts_cpu():
    # Two workers split each room's members (SO_REUSEPORT), so deliveries cross Redis: the
    # generator's exactly-once check must hold there too, and the CPU of every process count.
    pytest.importorskip("hiredis", reason="the bus needs hiredis: pip install 'chatlab[redis]'")
    if shutil.which("redis-server") is None:
        pytest.skip("the bus needs redis-server (Debian: apt-get install redis-server)")
    report = bus.run(rounds=1, duration=0.5, rooms=2, clients=4, window=2, size=200)
    results = report["results"]
    assert list(results) == ["chatlab/epoll", "chatlab-bus", "workers2"]
    for name, r in results.items():
        assert r["lost"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0, name
        assert r["deliveries_per_s"] > 0, name
        assert r["server_cpu_us_per_delivery"] > 0, name
        assert r["total_cpu_us_per_delivery"] >= r["server_cpu_us_per_delivery"], name
    for name in ("chatlab-bus", "workers2"):
        assert results[name]["redis_cpu_us_per_delivery"] > 0, f"{name}: Redis CPU not counted"
    assert results["chatlab/epoll"]["redis_cpu_us_per_delivery"] == 0


def test_workers2_counts_the_cpu_of_both_workers():
    pytest.importorskip("hiredis", reason="the bus needs hiredis: pip install 'chatlab[redis]'")
    if shutil.which("redis-server") is None:
        pytest.skip("the bus needs redis-server (Debian: apt-get install redis-server)")
    with ServerProcess("workers2", "epoll") as server:
        supervisor, *workers = server.pids
        assert len(workers) == 2, "the supervisor's two children are the servers measured"
        before = [_cpu_of(pid) for pid in workers]
        # 16 clients: the chance that the kernel's hash puts them all on one worker is 2^-15
        r = python_load.run_once(server, rooms=4, k=4, window=2, size=200, duration=0.5)
        after = [_cpu_of(pid) for pid in workers]
        redis = server.redis
    assert r["lost"] == 0 and r["duplicates"] == 0
    assert all(a > b for a, b in zip(after, before, strict=True)), "both workers served"
    assert not redis.running, "stop() stops the bus's Redis too"
    assert all(_cpu_of(pid, missing=None) is None for pid in server.pids), "no process left"


NO_CHATD = native.missing()


@pytest.mark.skipif(NO_CHATD is not None, reason=f"chatd cannot be built here: {NO_CHATD}")
def test_chatd_delivers_exactly_once_and_stops_cleanly():
    with ServerProcess("chatd") as server:
        r = python_load.run_once(server, rooms=2, k=4, window=2, size=200, duration=0.5)
    assert server.label == "chatd"
    assert r["lost"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0
    assert r["deliveries_per_s"] == pytest.approx(3 * r["messages_per_s"], rel=0.05)
    assert r["server_cpu_us_per_delivery"] > 0
    assert server.proc.returncode == 0, "SIGTERM stops chatd cleanly"


@pytest.mark.parametrize(
    "kind",
    [
        "asyncio-coalesce",
        pytest.param(
            "uvloop-coalesce",
            marks=pytest.mark.skipif(not uvloop_available(), reason="uvloop is not installed"),
        ),
    ],
)
def test_asyncio_coalescing_delivers_exactly_once(kind):
    # Frames queued per member and written once per loop pass must still all arrive, once,
    # in order.
    with ServerProcess(kind) as server:
        r = python_load.run_once(server, rooms=2, k=4, window=2, size=200, duration=0.5)
    assert r["lost"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0
    assert r["deliveries_per_s"] == pytest.approx(3 * r["messages_per_s"], rel=0.05)
    assert server.proc.returncode == 0, "SIGTERM stops the asyncio baseline cleanly"


@pytest.mark.skipif(NO_CHATD is not None, reason=f"chatd cannot be built here: {NO_CHATD}")
def test_fanout_detects_chatd_faults(monkeypatch):
    # chatd's fault flags, like the "faulty" Python server's: the generator must see both.
    faulty = ["--port", "0", "--drop-every", "97", "--duplicate-every", "89"]
    monkeypatch.setitem(SERVERS, "chatd-faulty", faulty)
    monkeypatch.setitem(NATIVE_KINDS, "chatd-faulty", "chatd")
    with ServerProcess("chatd-faulty") as server:
        r = python_load.run_once(server, rooms=2, k=4, window=2, size=200, duration=0.5, drain=1.0)
    assert r["lost"] > 0, "a dropped copy is never received: counted as lost"
    assert r["duplicates"] > 0, "a copy received twice is counted as a duplicate"


@pytest.mark.skipif(bool(native.missing()), reason=str(native.missing()))
def test_native_generator_sees_chatd_send_a_message_to_the_wrong_room(monkeypatch):
    # --misroute-every: every 83rd copy carries another room's id. The native generator
    # checks each frame's room against the receiver's and the sender's: misrouted, and lost.
    from chatlab.bench.native_load import run_once_native

    monkeypatch.setitem(SERVERS, "chatd-misroute", ["--port", "0", "--misroute-every", "83"])
    monkeypatch.setitem(NATIVE_KINDS, "chatd-misroute", "chatd")
    with ServerProcess("chatd-misroute") as server:
        r = run_once_native(server, rooms=2, k=4, window=2, size=200, duration=0.5, drain=1.0)
    assert r["misrouted"] > 0, "a copy framed for another room is counted as misrouted"
    assert r["lost"] > 0, "and the receiver never got it in its own room"


@pytest.mark.skipif(bool(native.missing()), reason=str(native.missing()))
def test_fanout_cli_runs_the_native_generator_and_measures_its_capacity(tmp_path):
    out = tmp_path / "fanout.json"
    args = [sys.executable, "-m", "chatlab.bench", "fanout", "--quick", "--out", str(out)]
    args += ["--servers", "chatlab/epoll,epoll-flat"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["generator"] == "native" and report["generator_note"] is None
    assert "native generator" in done.stdout
    for name, row in report["results"].items():
        assert row["lost"] == row["duplicates"] == row["misrouted"] == 0, name
        assert row["ratio_to_epoll-flat"] > 0, name
    assert report["results"]["epoll-flat"]["ratio_to_epoll-flat"] == 1.0
    cap = report["generator_capacity"]
    assert cap["capacity_deliveries_per_s"] > 0 and cap["lost"] == cap["duplicates"] == 0
    assert cap["ratio_to_fastest_python"] > 0
    assert "us of CPU per delivery against its sink" in done.stdout


def test_fanout_cli_with_the_python_generator_says_whose_figures_they_are(tmp_path):
    out = tmp_path / "fanout.json"
    args = [sys.executable, "-m", "chatlab.bench", "fanout", "--quick", "--out", str(out)]
    args += ["--servers", "chatlab/epoll", "--generator", "python"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["generator"] == "python" and "generator_capacity" not in report
    assert "the Python load generator ran" in done.stdout


def test_fanout_cli_without_a_c_compiler_falls_back_to_the_python_generator(tmp_path):
    # No compiler on PATH (and no $CC): the benchmark still runs, on the Python generator,
    # and says why; it never runs a binary it could not have built.
    out = tmp_path / "fanout.json"
    env = {**os.environ, "PATH": str(tmp_path), "CC": "", "CHATLAB_CACHE": str(tmp_path)}
    args = [sys.executable, "-m", "chatlab.bench", "fanout", "--quick", "--out", str(out)]
    args += ["--servers", "chatlab/epoll,chatd"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["generator"] == "python"
    assert "no C compiler" in report["generator_note"]
    assert list(report["results"]) == ["chatlab/epoll"], "chatd needs a compiler: skipped"
    assert "skipping chatd: no C compiler" in done.stderr
    assert "the Python load generator ran (no C compiler" in done.stdout


# ------------------------------------------------------------------ soak and attack


def test_soak_ends_with_every_fd_and_connection_released_and_every_abuser_gone():
    # Half a minute of everything at once (the README's run is 30 minutes): what a leak
    # would break is asserted on the figures themselves, not only on the report's verdicts.
    # A flooder goes on past --flood-timeout (3 s here) and is cut off for it: its kernel
    # backlog would otherwise keep its fd for as long as reading it at the rate takes.
    r = soak.run(minutes=0.5, frame_timeout=2.0, abuse_every=2.0, flood_seconds=2.0,
                 flood_pause=2.0, warmup=10.0, server_args="--flood-timeout 3")  # fmt: skip
    m, a = r["memory"], r["abusers"]
    assert r["server_alive"] and not r["errors"], r["errors"]
    held = r["connections"]["held"]
    assert held == [], f"connections still held: {held}"
    assert r["connections"]["end"] == 0
    assert r["fds"]["end"] == r["fds"]["start"], "a fd the server never closed"
    assert r["fds"]["max"] > r["fds"]["start"] + 20, "the load was there: clients held fds"
    assert m["rss_end"] <= m["rss_warmup"] * 1.10 + 8e6, "RSS climbed after warm-up"
    assert sum(r["honest_cut"].values()) == 0, r["honest_cut"]
    fanout = r["loads"]["fanout"]
    assert fanout["sent"] > 0 and fanout["lost"] == fanout["duplicates"] == 0
    assert r["loads"]["churn"]["connections"] > 100 and not r["loads"]["churn"]["errors"]
    for kind, abuse in a.items():
        assert abuse["started"] > 0, kind
        assert abuse["cut_off"] + abuse["ended"] == abuse["started"], kind
    # The SendQ cuts off a slow reader and tells the room why; the frame timeout cuts off
    # every slow sender (the dribbling ones too) and tells it why.
    readers = a["slow_readers"]
    assert readers["cut_off"] >= 1
    assert all(why.startswith("NotReading") for why in readers["reasons"]), readers["reasons"]
    senders = a["slow_senders"]
    if r["params"]["frame_timeout"] is not None:  # the server has --frame-timeout
        assert senders["cut_off"] == senders["started"] and senders["overdue"] == 0
        assert list(senders["reasons"]) == ["FrameTimedOut: frame not completed within 2 s"]
        assert 1.5 <= senders["cut_after_s"]["min"] <= senders["cut_after_s"]["max"] <= 4.0
    flood = a["flood"]
    assert flood["sent"] > flood["delivered"] > 0, "the flood reached its room's reader"
    failed = {c["name"] for c in r["checks"] if not c["ok"]}
    assert failed == set(), [c for c in r["checks"] if not c["ok"]]
    # And the checks bite: one fd or one connection left over is a FAIL.
    leaky = {**r, "fds": {**r["fds"], "end": r["fds"]["start"] + 1},
             "connections": {**r["connections"], "end": 1}}  # fmt: skip
    failed = {c["name"] for c in soak._checks(leaky) if not c["ok"]}
    assert failed == {"open fds at the end", "TCP connections at the end"}
    text = soak.format_report(r)
    assert "slow senders" in text and "FAIL" not in text


def test_attack_measures_every_part_with_real_numbers():
    # A reduced attack: the structure of the report and figures that are measurements
    # (not the PASS verdicts: those are the server's, once issue 14's flags have landed).
    r = attack.run(senders=100, sender_bytes=20_000, frame_timeout=1.0, close_within=4.0,
                   quiet=1.5, flood=2.5)  # fmt: skip
    assert list(r["parts"]) == ["a", "b", "c"]
    for name, part in r["parts"].items():
        if part["needs"]:  # a server without the flag: said, not measured
            assert part["needs"].startswith("--") and part["criteria"] == []
            continue
        assert part["criteria"], name
        for c in part["criteria"]:
            assert set(c) == {"name", "value", "unit", "bound", "ok"}, name
            assert isinstance(c["ok"], bool)
        f = part["figures"]
        assert 0 < f["server_peak_rss_mb"] < 10_000, name
        pairs = [f["pair"]] if name == "a" else [f["pair_quiet"], f["pair_flood"]]
        for pair in pairs:
            assert pair["sent"] > 0 and 0 < pair["p50_ms"] <= pair["p99_ms"] <= pair["max_ms"]
    a = r["parts"]["a"]
    if not a["needs"]:
        f = a["figures"]
        assert f["connected"] == f["sent_whole"] == 100
        assert f["closed_by_server"] + f["still_open_at_give_up"] == 100
        assert sum(f["reasons"].values()) == f["closed_by_server"]
    for name in ("b", "c"):
        part = r["parts"][name]
        if not part["needs"]:
            f = part["figures"]
            assert f["flooder_sent"] > 0 and f["reader_received"] > 0, name
            assert f["reader_steady_per_s"] > 0, name
    text = attack.format_report(r)
    assert text.count("PASS") + text.count("FAIL") == sum(
        len(p["criteria"]) for p in r["parts"].values()
    )


def test_attack_says_what_a_server_without_the_flag_needs():
    server, missing = attack._start_server("epoll", ["--no-such-limit", "5"], None)
    assert server is None and missing == "--no-such-limit"
    part = {"title": "a. slow senders", "needs": missing, "criteria": []}
    text = attack.format_report({"parts": {"a": part}})
    assert "needs --no-such-limit (not in this server)" in text
