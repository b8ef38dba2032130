"""One Redis client per (URL, options): warm actions reuse their pools, uses keep their timeouts."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from radcloud.core import redisclient
from radcloud.access.auth import redis_client
from radcloud.work.jobservices import jobs_redis
from radcloud.work.retrieves import Progress
from radcloud.core.settings import Settings


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


class RestartableRedis:
    """A private redis-server on a unix socket that a test can stop and start again."""

    def __init__(self, tmp, listening):
        self.dir, self.sock, self.proc, self.listening = tmp, tmp / "redis.sock", None, listening

    def start(self):
        import subprocess

        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700",
             "--dir", str(self.dir), "--save", "", "--appendonly", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30  # bounded, by what a loaded machine needs
        while time.monotonic() < deadline:
            if self.listening(self.sock):
                return
            time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.sock.unlink(missing_ok=True)

    def restart_later(self, after_s):
        self.kill()
        thread = threading.Thread(target=lambda: (time.sleep(after_s), self.start()))
        thread.start()
        return thread


@pytest.fixture
def restartable(tmp_path, require, unix_listening):
    require(shutil.which("redis-server") is not None, "redis-server is not installed: make system-deps")
    server = RestartableRedis(tmp_path, unix_listening)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.kill()


def test_a_shard_rides_out_a_two_second_redis_restart_while_it_starts(restartable):
    """Finding 4: ``started`` met a restarting Redis and failed the shard; every
    write goes through the one client policy, so it now waits for Redis."""
    from radcloud.work.jobs import JobSpec, JobStore, ShardSpec
    from radcloud.work.reporter import Finaliser, RedisShardReporter

    s = Settings.load(environ={"RADCLOUD_REDIS_URL": f"unix://{restartable.sock}"})
    jobs = JobStore(jobs_redis(s))
    job_id = jobs.create(JobSpec(plugin="p", plugin_version="1", owner="a", params={},
                                 shards=[ShardSpec(id="s0", instances_total=1)]))
    reporter = RedisShardReporter(jobs, job_id, finaliser=Finaliser(jobs))
    restarted = restartable.restart_later(2.0)
    try:
        reporter.started("s0", {"argv": ["prog"], "n_inputs": 1, "version": "1"})  # waits for Redis
    finally:
        restarted.join()
    restartable.restart_later(2.0)
    reporter.finished("s0", {"status": "finishedSuccessfully", "reason": "ok", "exit_code": 0, "outputs": []})
    job = jobs.get(job_id)
    assert job["state"] == "succeeded" and job["shards"][0]["state"] == "succeeded", job


def test_every_use_rides_out_a_restart_and_the_wait_is_bounded():
    s = settings(3)
    for client in (jobs_redis(s), redis_client(s), Progress.from_settings(s).redis):
        assert 5 <= redisclient.retry_budget_s(client) <= 30  # a restart fits; a dead Redis fails in bounded time


def test_a_refused_password_fails_at_once_not_after_the_budget(tmp_path, require, unix_listening):
    """redis-py calls a refused password a ConnectionError; no restart fixes it."""
    import subprocess

    import redis

    require(shutil.which("redis-server") is not None, "redis-server is not installed: make system-deps")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--dir", str(tmp_path), "--save", "", "--requirepass", "right"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(sock), password="wrong", **redisclient.restart_policy(30))
        attempts = []
        client.connection_pool.connection_kwargs["retry"]._backoff.compute = lambda n: attempts.append(n) or 0.05
        # Bounded. A connect before Redis listens is refused (and rightly retried by the client).
        deadline = time.monotonic() + 10
        while not unix_listening(sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert unix_listening(sock), "redis-server did not start"
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.set("k", "v")
        assert attempts == []  # not one retry
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_dead_redis_fails_by_the_budget_not_never(tmp_path):
    import redis

    client = redis.Redis(unix_socket_path=str(tmp_path / "nobody.sock"), **redisclient.restart_policy(0.5))
    t0 = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.set("k", "v")
    assert time.monotonic() - t0 < 30  # the 0.5 s budget, not forever (generous: a loaded box is slow)
