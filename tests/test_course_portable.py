"""The course on a platform without epoll: what a macOS or Windows learner's kernel has.

A sitecustomize.py on PYTHONPATH deletes select.epoll (and kqueue and devpoll) before any
notebook code runs; the kernel nbval starts inherits the environment. Each chapter must then
run top to bottom without an error: chapters not about one syscall use backend="auto",
and cells that only Linux can run are guarded with chatlab.course.needs("epoll"), which
prints why they are skipped. Outputs are not compared here (the backend names differ by
design); strict nbval on this machine compares them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))

NO_EPOLL = """\
import select
for name in ("epoll", "kqueue", "devpoll"):
    if hasattr(select, name):
        delattr(select, name)
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# The chapters need the notebooks' extra (a kernel, matplotlib): make test has it; make
# test-matrix installs the package's test extra only, and these tests say so there.
pytest.importorskip("ipykernel", reason="the notebooks' extra is not installed here")
pytest.importorskip("matplotlib", reason="the notebooks' extra is not installed here")


@pytest.fixture(scope="module")
def no_epoll_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("no-epoll")
    (site / "sitecustomize.py").write_text(NO_EPOLL)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_the_instrument_removes_epoll(no_epoll_env):
    """Without this, every chapter below would pass on epoll and prove nothing."""
    probe = "import chatlab; print(','.join(chatlab.available_backends()))"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=no_epoll_env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "poll,select"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_without_epoll(no_epoll_env, path, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--color=no",
            "--nbval-lax",  # errors fail; outputs are not compared
            "--nbval-current-env",
            "--nbval-cell-timeout=120",
            str(path),
        ],
        cwd=tmp_path,  # not the project root: no conftest or pyproject options of ours
        env=no_epoll_env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, f"{path.name} without epoll:\n{result.stdout[-6000:]}"
