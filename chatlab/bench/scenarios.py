"""Old names of the scenario functions, kept while notebooks 08 and 09 import them.

Each scenario is now one module (fanout.py, idle.py, churn.py, bus.py) with ``run``,
``format_report`` and ``plot``; the runner they share is runner.py. Delete this file once
the notebooks import from those modules.
"""

from __future__ import annotations

from . import bus, churn, fanout, idle
from .runner import save

run_fanout, format_fanout = fanout.run, fanout.format_report
run_idle, format_idle = idle.run, idle.format_report
run_churn, format_churn = churn.run, churn.format_report
run_bus, format_bus = bus.run, bus.format_report

__all__ = [
    "format_bus",
    "format_churn",
    "format_fanout",
    "format_idle",
    "run_bus",
    "run_churn",
    "run_fanout",
    "run_idle",
    "save",
]
