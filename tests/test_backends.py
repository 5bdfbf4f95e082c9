"""Choosing a backend: the ranked probe and the errors for names that cannot be used."""

from __future__ import annotations

import sys

import pytest

import chatlab
from chatlab.backends import BACKENDS, get_backend


def test_available_backends_are_ranked_best_first():
    names = chatlab.available_backends()
    assert names, "select exists everywhere"
    assert set(names) <= {"epoll", "kqueue", "poll", "select"}
    ranking = list(BACKENDS)
    assert names == [n for n in ranking if n in names]
    assert names[-1] == "select"


def test_auto_picks_the_best_available():
    with chatlab.EventLoop("auto") as loop:
        assert loop.backend_name == chatlab.available_backends()[0]
    with chatlab.EventLoop() as loop:
        assert loop.backend_name == chatlab.available_backends()[0]


def test_unknown_backend_names_the_choices():
    with pytest.raises(chatlab.UnknownBackendError) as info:
        chatlab.EventLoop("epol")
    message = str(info.value)
    assert "'epol'" in message and "epoll" in message and sys.platform in message
    assert isinstance(info.value, ValueError)


def test_unavailable_backend_names_platform_and_alternatives():
    missing = [n for n in BACKENDS if n not in chatlab.available_backends()]
    if not missing:
        pytest.skip(f"every backend is available on {sys.platform}")
    with pytest.raises(chatlab.BackendUnavailableError) as info:
        get_backend(missing[0])
    message = str(info.value)
    assert missing[0] in message and sys.platform in message
    for name in chatlab.available_backends():
        assert name in message
