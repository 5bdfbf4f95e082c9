"""Root conftest: settings that apply to the tests and to the notebooks under nbval."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    # pytest-timeout cannot interrupt a notebook's kernel (it only kills this process's
    # thread, and the next cells cascade into failures). nbval's own --nbval-cell-timeout
    # governs notebook cells instead; see ../shared/NOTEBOOKS.md.
    for item in items:
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
            item.add_marker(pytest.mark.timeout(0))
