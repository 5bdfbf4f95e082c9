"""Native (C) benchmark tools, built with the system C compiler on first use.

The Python load generator fills its own core at about 100,000 deliveries/s, before any
server it measures does: every figure it produced was the generator's, not the server's.
So the load generator (``loadgen.c``) and the machine's yardstick (``chatd.c``, the chat
server's design in C) are small C programs. They are built the first time a benchmark needs
them, into a cache outside the source tree (``$CHATLAB_CACHE``, else
``$XDG_CACHE_HOME/chatlab``, else ``~/.cache/chatlab``), keyed by a hash of the source and
the compiler, so an edited source is rebuilt and an unchanged one never is.

``build("loadgen")`` returns the executable's path; ``missing()`` says why none can be built
here (no C compiler), in which case the benchmarks fall back to the Python generator and
mark every figure it produces generator-bound. ``make bench`` builds both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).parent
TOOLS = ("loadgen", "chatd")
CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra"]


class BuildError(RuntimeError):
    """The C compiler refused a native tool: its own error output is in the message."""


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang on PATH; None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def missing() -> str | None:
    """Why the native tools cannot be built here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return f"the native tools use epoll (Linux); this is {sys.platform}"
    if compiler() is None:
        return "no C compiler (cc, gcc or clang) on PATH; Debian: apt-get install gcc"
    return None


def cache_dir() -> Path:
    if os.environ.get("CHATLAB_CACHE"):
        return Path(os.environ["CHATLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chatlab"


def build(name: str) -> Path:
    """The path of native tool ``name`` ("loadgen" or "chatd"), compiled if need be."""
    if name not in TOOLS:
        raise ValueError(f"unknown native tool {name!r}; there are {', '.join(TOOLS)}")
    why = missing()
    cc = compiler()
    if why or cc is None:
        raise BuildError(why or "no C compiler")
    source = SOURCES / f"{name}.c"
    key = hashlib.sha256(source.read_bytes() + cc.encode() + " ".join(CFLAGS).encode())
    target = cache_dir() / "native" / f"{name}-{key.hexdigest()[:16]}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename: two processes building at once both succeed,
    # and nobody ever runs a half-written executable.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *CFLAGS, "-o", tmp, str(source), "-lm"], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BuildError(f"{cc} could not build {source.name}:\n{done.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main() -> int:
    """python -m chatlab.bench.native: build every native tool and print where it is."""
    for name in TOOLS:
        try:
            print(f"{name}: {build(name)}")
        except BuildError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
    return 0
