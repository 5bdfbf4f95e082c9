"""pyproject.toml and environment.yml must describe the same environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib", reason="reading TOML needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_and_environment_name_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    from_pyproject = {
        _name(req)
        for group, reqs in extras.items()
        for req in reqs
        if not req.startswith("chatlab")
    } | {_name(req) for req in project["dependencies"]}

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [dep for dep in env["dependencies"] if isinstance(dep, str)]
    pip = [dep for dep in env["dependencies"] if isinstance(dep, dict)]
    from_env = {_name(dep) for dep in conda} - {"python", "pip"}

    assert from_env == from_pyproject
    assert pip == [{"pip": ["-e ."]}], "the package itself is installed with pip -e ."


def test_package_has_no_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == [], "chatlab itself is standard library only"
