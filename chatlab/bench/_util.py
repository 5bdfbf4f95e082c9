"""Small helpers the benchmarks share."""

from __future__ import annotations

try:
    import resource
except ImportError:  # Windows
    resource = None


def raise_fd_limit(needed: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE towards ``needed``; return a sentence saying what we did."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    note = f"raised the open-file limit from {soft} to {target}"
    if target < needed:
        note += f" (the hard limit; {needed} wanted: sizes above it will fail)"
    return note
