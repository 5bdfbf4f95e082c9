"""Old names of the plots, kept while notebooks 08 and 09 import them.

Each scenario's plot is now in its own module (``loop.plot``, ``fanout.plot``, ...), beside
the run whose report it draws. Delete this file once the notebooks import from those modules.
"""

from __future__ import annotations

from . import bus, churn, fanout, idle, loop
from .runner import save_figure as save

plot_loop, plot_fanout, plot_idle = loop.plot, fanout.plot, idle.plot
plot_churn, plot_bus = churn.plot, bus.plot

__all__ = ["plot_bus", "plot_churn", "plot_fanout", "plot_idle", "plot_loop", "save"]
