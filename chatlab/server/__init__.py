"""The chat server: rooms, broadcast, nicknames and commands on chatlab's event loop.

Each job has its file (read them in this order):

- ``limits.py``: every limit, a named default with its reason beside it.
- ``rooms.py``: who is in which room, and who goes by which nick. No I/O.
- ``connections.py``: a client's I/O: accept, read frames, deliver broadcasts (the hot
  path), and the one way out. Writing itself is chatlab/stream.py's.
- ``commands.py``: the commands, one row each in one table.
- ``core.py``: ``ChatServer``, the glue: what a frame means, who is told what; the bus.
- ``cli.py`` (``python -m chatlab.server``) and ``workers.py`` (``--workers N``).

The public API: ``ChatServer``, ``serve()``, ``Limits``, ``ServerStats``, ``ConnectionInfo``
(what ``server.connections()`` lists), ``main()`` (the CLI).
"""

from .cli import DEFAULT_PORT, main
from .connections import ConnectionInfo
from .core import ChatServer, ServerStats, serve
from .limits import Limits

__all__ = ["DEFAULT_PORT", "ChatServer", "ConnectionInfo", "Limits", "ServerStats", "main", "serve"]
