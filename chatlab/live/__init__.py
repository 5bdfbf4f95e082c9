"""Live in JupyterLab: chat from a notebook and watch the server's event loop react.

- ``ClientHub``, ``LiveClient``, ``EchoBot`` (clients.py): clients that read in the
  background, on one event loop of their own, so a cell never blocks.
- ``Monitor``, ``Snapshot`` (monitor.py): the server's last loop iterations, connections,
  buffers and rooms, read from any thread without waking the loop.
- ``Situations`` (situations.py): a slow reader, a flood, a reset mid-broadcast, a half
  frame, injected on demand.
- ``ChatWidget``, ``LiveView`` (widgets.py, needs ipywidgets: the notebooks extra): the same
  in JupyterLab, refreshed a few times a second. Import them from ``chatlab.live.widgets``.

Notebook 11 (notebooks/11-live.ipynb) uses them all.
"""

from .clients import ClientHub, EchoBot, LiveClient
from .monitor import Monitor, Snapshot
from .situations import Situations

__all__ = ["ClientHub", "EchoBot", "LiveClient", "Monitor", "Situations", "Snapshot"]
