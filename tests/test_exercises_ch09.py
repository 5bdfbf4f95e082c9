"""Chapter 09's checks: each fails on the stub and on a plausible wrong answer, with a message
that says what is wrong, and passes on a right one."""

from __future__ import annotations

import pytest

from chatlab.course import REQUIREMENTS
from chatlab.exercises import ch09

needs_redis = pytest.mark.skipif(
    not (REQUIREMENTS["redis-server"][0]() and REQUIREMENTS["hiredis"][0]()),
    reason="09.2 runs against a real redis-server, through hiredis",
)


def stub(*args): ...


# --- 09.1 ---------------------------------------------------------------------------------


def receive_right(last_seen, origin, seq):
    last = last_seen.get(origin)
    if last is not None and seq <= last:
        return "duplicate"
    last_seen[origin] = seq
    return 0 if last is None else seq - last - 1


def receive_gap_from_zero(last_seen, origin, seq):
    """Counts a newcomer's first number as a gap from 0."""
    last = last_seen.get(origin, 0)
    if seq <= last:
        return "duplicate"
    last_seen[origin] = seq
    return seq - last - 1


def receive_equal_only(last_seen, origin, seq):
    """Only an equal number is a duplicate: a late, older copy is delivered again."""
    last = last_seen.get(origin)
    if last == seq:
        return "duplicate"
    last_seen[origin] = seq
    return 0 if last is None else max(0, seq - last - 1)


def test_sequence_stub():
    verdict = ch09.check_sequence(stub)
    assert not verdict and "returned None" in str(verdict)


@pytest.mark.parametrize(
    "wrong, says",
    [(receive_gap_from_zero, "before we joined"), (receive_equal_only, "late copy")],
)
def test_sequence_wrong(wrong, says):
    verdict = ch09.check_sequence(wrong)
    assert not verdict and says in str(verdict), str(verdict)


def test_sequence_right():
    assert ch09.check_sequence(receive_right), str(ch09.check_sequence(receive_right))


# --- 09.2 ---------------------------------------------------------------------------------


def claim_right(redis, dead_id):
    return redis("SET", f"chatlab:notice:{dead_id}", "me", "NX", "EX", 60) == "OK"


def claim_always(redis, dead_id):
    redis("SET", f"chatlab:notice:{dead_id}", "me", "EX", 60)
    return True


def claim_get_then_set(redis, dead_id):
    if redis("GET", f"chatlab:notice:{dead_id}") is not None:
        return False
    redis("SET", f"chatlab:notice:{dead_id}", "me", "EX", 60)
    return True


def claim_forever(redis, dead_id):
    return redis("SET", f"chatlab:notice:{dead_id}", "me", "NX") == "OK"


def claim_one_key(redis, dead_id):
    return redis("SET", "chatlab:notice", "me", "NX", "EX", 60) == "OK"


@needs_redis
def test_claim_stub():
    verdict = ch09.check_claim(stub)
    assert not verdict and "returned None" in str(verdict)


@needs_redis
@pytest.mark.parametrize(
    "wrong, says",
    [
        (claim_always, "3 of them got True"),
        (claim_get_then_set, "one atomic command"),
        (claim_forever, "expiry"),
        (claim_one_key, "dead server's id in the key"),
    ],
)
def test_claim_wrong(wrong, says):
    verdict = ch09.check_claim(wrong)
    assert not verdict and says in str(verdict), str(verdict)


@needs_redis
def test_claim_right():
    verdict = ch09.check_claim(claim_right)
    assert verdict, str(verdict)


def test_claim_without_redis_says_why(monkeypatch):
    monkeypatch.setitem(ch09.REQUIREMENTS, "redis-server", (lambda: False, "not on PATH"))
    verdict = ch09.check_claim(claim_right)
    assert not verdict and "cannot be checked on this machine: redis-server" in str(verdict)


# --- 09.3 ---------------------------------------------------------------------------------


def test_stale_stub():
    verdict = ch09.check_stale(stub)
    assert not verdict and "returned None" in str(verdict)


@pytest.mark.parametrize(
    "wrong, says",
    [
        (lambda ttl: ttl / 3, "how often the key is renewed"),
        (lambda ttl: ttl + ttl / 3, "worst moment"),
        (lambda ttl: "ttl", "should be a number"),
    ],
)
def test_stale_wrong(wrong, says):
    verdict = ch09.check_stale(wrong)
    assert not verdict and says in str(verdict), str(verdict)


def test_stale_right():
    assert ch09.check_stale(lambda ttl: ttl)
