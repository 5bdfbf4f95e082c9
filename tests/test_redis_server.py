"""chatlab.redis_server: a RedisServer answers only for its own process."""

from __future__ import annotations

import pytest

from chatlab.errors import RedisServerError
from chatlab.redis_server import RedisServer, redis_server_path

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server")


def test_a_port_taken_by_another_redis_is_not_taken_for_ours():
    """The free port we chose can be bound by someone else first: another redis-server then
    answers PING there, but it is not ours, and sharing it would mix two runs' rooms."""
    with RedisServer() as first:
        second = RedisServer(port=first.port)
        with pytest.raises(RedisServerError, match="did not start"):
            second.start(timeout=3)
        assert first.running and not second.running


def test_kill_and_start_again_on_the_same_port():
    with RedisServer() as redis:
        port, pid = redis.port, redis.proc.pid
        redis.kill()
        assert not redis.running
        redis.start()
        assert redis.running and redis.port == port and redis.proc.pid != pid
