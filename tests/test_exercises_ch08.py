"""Notebook 08's checks: the stub and plausible wrong answers fail with a useful message,
a correct answer passes. No check depends on speed: each compares what the answer computes
with what the check measures or counts."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys

import pytest

from chatlab.backends.select_ import FD_SETSIZE
from chatlab.bench import scaling
from chatlab.exercises import ch08


def stub(*args):
    return None


# -- 08.1 ------------------------------------------------------------------------------


def free_below_fd_setsize():
    free = 0
    for fd in range(FD_SETSIZE):
        try:
            os.fstat(fd)
        except OSError:
            free += 1
    return free


def above_highest_open():  # forgets the holes below the highest open fd
    highest = max(fd for fd in range(FD_SETSIZE) if _is_open(fd))
    return FD_SETSIZE - 1 - highest


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.skipif(os.name == "nt", reason="fd numbers are POSIX's")
def test_select_room():
    assert ch08.check_select_room(free_below_fd_setsize)
    stubbed = ch08.check_select_room(stub)
    assert not stubbed and "is it written yet" in str(stubbed)
    for wrong in (lambda: FD_SETSIZE, lambda: FD_SETSIZE - 3, above_highest_open):
        verdict = ch08.check_select_room(wrong)
        assert not verdict
        assert "more sockets got an fd number below 1024" in str(verdict)
        assert "select() cannot watch fd" in str(verdict), "the refusal is quoted"
    assert not ch08.check_select_room(lambda: float(free_below_fd_setsize()))


def test_select_room_leaves_no_fd_open():
    before = free_below_fd_setsize()
    ch08.check_select_room(free_below_fd_setsize)
    ch08.check_select_room(lambda: 1 / 0)
    assert free_below_fd_setsize() == before


# -- 08.2 ------------------------------------------------------------------------------


def test_sends_per_pass():
    assert ch08.check_sends_per_pass(lambda m, n, c: (m - 1) if c else n * (m - 1))
    assert "is it written yet" in str(ch08.check_sends_per_pass(stub))
    counts_sender = ch08.check_sends_per_pass(lambda m, n, c: m if c else n * m)
    assert not counts_sender and "does not get its own" in str(counts_sender)
    never_coalesces = ch08.check_sends_per_pass(lambda m, n, c: n * (m - 1))
    assert not never_coalesces and "once per pass" in str(never_coalesces)


def test_count_writes_is_the_yardsticks_own():
    # the measured counts the check compares with, on the yardstick's code
    assert ch08.count_writes(10, 5, coalesce=False) == 45
    assert ch08.count_writes(10, 5, coalesce=True) == 9


# -- 08.3 ------------------------------------------------------------------------------


def per_repeat(values, references):
    r = [v / ref for v, ref in zip(values, references, strict=True)]
    return statistics.median(r), min(r), max(r)


def test_ratio_spread():
    assert ch08.check_ratio_spread(per_repeat)
    assert "is it written yet" in str(ch08.check_ratio_spread(stub))
    of_medians = ch08.check_ratio_spread(
        lambda v, r: (statistics.median(v) / statistics.median(r),) * 3
    )
    assert not of_medians and "one slow repeat" in str(of_medians)
    crossed = ch08.check_ratio_spread(lambda v, r: per_repeat(r, v))
    assert not crossed and "per-repeat ratios are" in str(crossed)


# -- 08.4 ------------------------------------------------------------------------------


def test_verdict():
    assert ch08.check_verdict(ch08.reference_verdict)
    assert "is it written yet" in str(ch08.check_verdict(stub))
    by_median = ch08.check_verdict(
        lambda a, b: "a cheaper" if statistics.median(a) < statistics.median(b) else "b cheaper"
    )
    assert not by_median and "overlapping" in str(by_median)
    not_a_choice = ch08.check_verdict(lambda a, b: True)
    assert not not_a_choice and "not one of" in str(not_a_choice)


def test_verdict_uses_the_committed_figures():
    whats = [what for what, _, _ in ch08._verdict_cases()]
    assert any("08-scaling.json" in what for what in whats)


# -- the report's own arithmetic ---------------------------------------------------------


def test_spread_ratios_and_noise():
    assert scaling.spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert scaling.ratios([1.0, 2.0, None], [2.0, 0.0, 1.0]) == [0.5, None, None]
    a, b = scaling.spread([1.0, 1.2]), scaling.spread([1.1, 2.0])
    assert not scaling.beyond_noise(a, b)
    assert scaling.beyond_noise(a, scaling.spread([1.3, 2.0]))
    assert scaling.compare(a, b, "x", "y").startswith("within noise")


def test_the_committed_report_has_what_the_notebook_reads():
    report = scaling.load_report()
    meta = report["metadata"]
    assert meta["command"].startswith("python -m chatlab.bench.scaling")
    for key in ("date", "machine", "load_average_before", "load_average_after", "durations"):
        assert meta[key]
    assert meta["repeats"] >= 3
    for server in ("chatlab/epoll", "asyncio", "asyncio-coalesce", "chatd"):
        row = report["fanout"]["results"][server]
        assert row["lost"] == row["duplicates"] == 0
        assert len(row["samples_cpu_us"]) == meta["repeats"]
    assert report["idle"]["results"]["chatlab/select"]["5000"]["refused"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmarks read /proc")
def test_the_one_command_writes_a_complete_report(tmp_path):
    """What notebook 08 reads, from the command in its metadata (a quick version)."""
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    args = [sys.executable, "-m", "chatlab.bench.scaling", "--quick", "--out", str(out)]
    args += ["--fanout-servers", "chatlab/epoll,asyncio,asyncio-coalesce"]
    plots = importlib.util.find_spec("matplotlib") is not None  # not in make test-matrix
    if plots:
        args += ["--plot", str(png)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert png.stat().st_size > 0 if plots else not png.exists()
    meta = report["metadata"]
    assert meta["command"] == "python -m chatlab.bench.scaling " + " ".join(args[3:])
    assert meta["repeats"] == 2 and len(meta["load_average_each_repeat"]) == 2
    loop = report["loop"]["results"]
    assert loop["epoll"]["0"]["x_at_0"]["median"] == 1.0
    assert len(loop["poll"]["1000"]["samples_us"]) == 2
    fan = report["fanout"]["results"]
    assert fan["asyncio"]["x_asyncio"]["median"] == 1.0
    assert all(r["lost"] == r["duplicates"] == 0 for r in fan.values())
    assert set(report["fanout"]["references"]) == {"asyncio", "asyncio-coalesce"}
    assert "chatlab/select" in report["idle"]["results"]
