"""One Redis client per (URL, options): warm actions reuse their pools, uses keep their timeouts."""

from __future__ import annotations

from radcloud import redisclient
from radcloud.auth import redis_client
from radcloud.jobservices import jobs_redis
from radcloud.progress import Progress
from radcloud.settings import Settings


def settings(port: int) -> Settings:
    return Settings.load(environ={"RADCLOUD_REDIS_URL": f"redis://127.0.0.1:{port}/0"})


def test_each_use_gets_one_client_per_url_with_its_own_options():
    a, b = settings(1), settings(2)
    assert jobs_redis(a) is jobs_redis(a) and redis_client(a) is redis_client(a)
    assert Progress.from_settings(a).redis is Progress.from_settings(a).redis
    assert jobs_redis(a) is not jobs_redis(b)
    assert len({id(jobs_redis(a)), id(redis_client(a)), id(Progress.from_settings(a).redis)}) == 3
    jobs_kwargs = jobs_redis(a).connection_pool.connection_kwargs
    assert jobs_kwargs["socket_timeout"] == 75 and jobs_kwargs["decode_responses"] is True
    assert not redis_client(a).connection_pool.connection_kwargs.get("decode_responses")
    assert redisclient.client(a, dict(redisclient.JOBS)) is jobs_redis(a)  # keyed by value, not identity
