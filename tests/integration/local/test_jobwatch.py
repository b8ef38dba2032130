"""radcloud.work.jobwatch: long-poll leases, the adaptive poll interval, and watch() on a real Redis."""

from __future__ import annotations

import threading
import time

from radcloud.work.jobs import JobSpec, JobStore, ShardSpec
from radcloud.work.jobservices import JobServices
from radcloud.work.jobwatch import POLL_BUSY_S, POLL_MAX_S, POLL_MIN_S, WAITING_POLL_S, WatchBudget, watch


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_leases_are_limited_released_and_expire_by_themselves(redis_client):
    clock = Clock()
    budget = WatchBudget(redis_client, slots=2, hold_s=20, clock=clock)
    a, b = budget.lease(), budget.lease()
    assert a and b and budget.lease() is None
    budget.release(a)
    c = budget.lease()
    assert c and budget.lease() is None
    clock.t += 31  # hold + margin: a lease whose activation was killed frees itself
    assert budget.lease() and budget.lease() and budget.lease() is None


def _never_block(services):
    def blocked(*_a, **_k):
        raise AssertionError("a status call blocked")

    services.jobs.wait = blocked


def test_no_slots_means_no_long_polls(redis_client):
    assert WatchBudget(redis_client, slots=0).lease() is None


def test_by_default_nobody_long_polls_and_a_lone_watcher_polls_every_poll_min(redis_client):
    services = JobServices(jobs=JobStore(redis_client), cache=None)  # as deployed: status has one container
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    services.jobs.shard_started(job_id, "s0")
    _never_block(services)
    job = watch(services, services.watch_budget(), job_id, since=2, wait_s=10)
    assert job["version"] == 2 and job["poll_after_ms"] == POLL_MIN_S * 1000


def test_a_crowd_gets_no_long_poll_and_answers_at_once(redis_client):
    services = JobServices(jobs=JobStore(redis_client), cache=None, watch_slots=1)
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    services.jobs.shard_started(job_id, "s0")
    budget = services.watch_budget()
    for _ in range(15):  # other watchers are asking this second (3 polling every 0.2 s)
        budget.poll_after_s()
    _never_block(services)
    job = watch(services, budget, job_id, since=2, wait_s=10)
    assert job["version"] == 2 and job["poll_after_ms"] >= POLL_MIN_S * 1000


def test_a_lone_watchers_long_poll_gives_way_when_another_watcher_comes(redis_client):
    services = JobServices(jobs=JobStore(redis_client), cache=None, watch_slots=1)
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    budget = services.watch_budget()
    seen: list[float] = []
    real_wait = services.jobs.wait
    others: list[threading.Timer] = []

    def wait(*args, **kwargs):  # each slice of the long-poll; another watcher arrives during the first
        seen.append(args[2])
        if len(seen) == 1:
            others.append(threading.Timer(0.1, services.watch_budget().poll_after_s))  # its own status call
            others[0].start()
        return real_wait(*args, **kwargs)

    services.jobs.wait = wait
    job = watch(services, budget, job_id, since=1, wait_s=20)  # nothing changes
    for other in others:
        other.join()
    assert job["version"] == 1
    assert len(seen) <= 2  # it gave the lease up within a slice or two (1 s each), not after the 20 s it could
    assert budget.lease() is not None  # and gave it back


def test_poll_interval_follows_the_number_of_watchers(redis_client):
    clock = Clock()
    budget = WatchBudget(redis_client, rate=20, clock=clock)
    assert budget.poll_after_s() == POLL_MIN_S  # quiet: every 0.5 s
    for second in range(3):  # 50 watchers, each asking as often as it was told
        clock.t += 1
        told = budget.poll_after_s()
        for _ in range(int(50 / told) - 1):
            budget.poll_after_s()
    assert 2.0 <= budget.poll_after_s() <= 3.0  # 50 watchers / 20 calls per s ≈ every 2.5 s
    clock.t += 1000  # they all left
    clock.t += 1
    budget.poll_after_s()
    clock.t += 1
    assert budget.poll_after_s() == POLL_MIN_S


def test_the_interval_is_capped(redis_client):
    clock = Clock()
    budget = WatchBudget(redis_client, rate=1, clock=clock)
    for _ in range(500):
        budget.poll_after_s()
    clock.t += 1
    assert budget.poll_after_s() == POLL_MAX_S


def _services(redis_client, slots=2):
    return JobServices(jobs=JobStore(redis_client), cache=None, watch_slots=slots)


def test_watch_with_a_lease_wakes_on_change(redis_client):
    services = _services(redis_client)
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    writer = threading.Timer(0.2, lambda: services.jobs.shard_started(job_id, "s0"))
    writer.start()
    t0 = time.monotonic()
    job = watch(services, services.watch_budget(), job_id, since=1, wait_s=60)
    writer.join()  # its Redis reply may still be on the way: the teardown closes that client
    # woken by the change (0.2 s), not by the end of the 60 s wait; half of it is the bound
    # (a tighter one failed on a loaded shared box, where a thread start can take a second)
    assert job["version"] > 1 and time.monotonic() - t0 < 30
    assert job["poll_after_ms"] == 0  # a lone watcher: come back at once, and long-poll again


def test_watch_without_a_free_lease_answers_at_once(redis_client):
    services = _services(redis_client, slots=1)
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    budget = services.watch_budget()
    held = budget.lease()  # another watcher holds the only slot
    t0 = time.monotonic()
    job = watch(services, budget, job_id, since=1, wait_s=60)
    assert time.monotonic() - t0 < 30 and job["version"] == 1  # not the 60 s wait
    budget.release(held)


def test_a_crowd_asks_less_often_about_a_job_whose_shards_wait_to_start(redis_client):
    services = _services(redis_client, slots=0)
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    budget = services.watch_budget()
    # a lone watcher: its shard waits to start, and it still asks again in 0.5 s
    assert watch(services, budget, job_id, since=None, wait_s=0)["poll_after_ms"] == POLL_MIN_S * 1000
    for _ in range(15):  # other watchers arrive in the same second
        budget.poll_after_s()
    assert watch(services, budget, job_id, since=None, wait_s=0)["poll_after_ms"] == WAITING_POLL_S * 1000
    services.jobs.shard_started(job_id, "s0")  # nothing waits to start any more
    assert watch(services, budget, job_id, since=None, wait_s=0)["poll_after_ms"] < WAITING_POLL_S * 1000


def test_watch_releases_its_lease_when_done(redis_client):
    services = _services(redis_client, slots=1)
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    budget = services.watch_budget()
    watch(services, budget, job_id, since=1, wait_s=0.3)  # times out holding the lease...
    assert budget.lease() is not None  # ...and gives it back


def test_while_shards_wait_for_slots_watchers_get_no_lease_and_come_back_later(redis_client):
    clock = Clock()
    budget = WatchBudget(redis_client, slots=2, clock=clock)
    budget.mark_busy(429)  # an invoke of a shard was refused
    assert budget.lease() is None and budget.poll_after_s() == POLL_BUSY_S
    redis_client.delete("radcloud:watch:busy")  # BUSY_S later
    assert budget.lease() is not None and budget.poll_after_s() == POLL_MIN_S
