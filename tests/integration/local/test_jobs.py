"""The job model against a real Redis: states, shards, long-poll, races, cancel, retry, never stuck."""

from __future__ import annotations

import threading

import pytest
import redis as redis_lib

from radcloud.core.errors import Conflict, NotFound
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec, final_state
from jobs_fakes import FakeInvoker
from radcloud.work.executors import as_executor
from radcloud.work.reconcile import reconcile_job


def spec(n: int = 2, owner: str = "alice") -> JobSpec:
    return JobSpec(plugin="dcm2png", plugin_version="1.0.0", owner=owner, params={"b": 1, "a": 2},
                   shards=[ShardSpec(id=f"s{i}", inputs=[f"staged/x/{i}/"], instances_total=10,
                                     series_uid=f"1.2.{i}") for i in range(n)])


@pytest.fixture
def store(redis_client):
    return JobStore(redis_client)


def run_shard(store, job_id, sid, state="succeeded", **kw):
    store.shard_invoked(job_id, sid, f"act-{sid}")
    store.shard_started(job_id, sid)
    store.shard_progress(job_id, sid, 10)
    return store.shard_finished(job_id, sid, state=state, **kw)


def test_create_then_get_shows_job_and_pending_shards(store):
    job_id = store.create(spec(3))
    job = store.get(job_id)
    assert job["state"] == "created"
    assert job["shards_total"] == 3 and job["instances_total"] == 30
    assert [s["state"] for s in job["shards"]] == ["pending"] * 3
    assert job["params"] == {"a": 2, "b": 1}
    assert job["version"] == 1


def test_missing_job_is_not_found(store):
    with pytest.raises(NotFound):
        store.get("nope")


def test_full_lifecycle_exactly_one_finaliser_and_progress(store):
    job_id = store.create(spec(2))
    store.transition(job_id, "staging", allowed=("created",))
    assert run_shard(store, job_id, "s0", outputs=[{"key": "a.png"}]) is False
    job = store.get(job_id)
    assert job["state"] == "running" and job["shards_done"] == 1 and job["instances_done"] == 10
    assert run_shard(store, job_id, "s1") is True
    job = store.get(job_id)
    assert job["state"] == "finishing"
    state, reason = final_state(job)
    assert (state, reason) == ("succeeded", "")
    store.complete(job_id, state)
    job = store.get(job_id)
    assert job["state"] == "succeeded" and job["finished_at"] is not None
    assert job["shards"][0]["outputs"] == [{"key": "a.png"}]
    assert job["shards"][1]["outputs"] == []
    types = [e["type"] for e in store.events(job_id)]
    assert types[0] == "created" and types[-1] == "state"
    assert types.count("finished") == 2
    versions = [e["v"] for e in store.events(job_id)]
    assert versions == sorted(versions) and versions[-1] == job["version"]


def test_second_outcome_for_same_shard_is_refused(store):
    job_id = store.create(spec(1))
    assert run_shard(store, job_id, "s0") is True
    with pytest.raises(Conflict):
        store.shard_finished(job_id, "s0", state="failed", reason="late")
    assert store.get(job_id)["shards"][0]["state"] == "succeeded"


def test_finaliser_race_many_threads_exactly_one_wins(redis_server):
    clients = [redis_lib.Redis.from_url(redis_server, decode_responses=True) for _ in range(8)]
    clients[0].flushdb()
    stores = [JobStore(c) for c in clients]
    n = 16
    job_id = stores[0].create(spec(n))
    for i in range(n):
        stores[0].shard_started(job_id, f"s{i}")
    wins: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(k, n, 8):
            won = stores[k].shard_finished(job_id, f"s{i}", state="succeeded")
            with lock:
                wins.append(won)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(wins) == n and wins.count(True) == 1
    assert stores[0].get(job_id)["state"] == "finishing"


def test_partial_and_failed_final_states_name_reason(store):
    job_id = store.create(spec(2))
    run_shard(store, job_id, "s0")
    run_shard(store, job_id, "s1", state="failed", reason="crash", exit_code=3, stderr_tail="x" * 9000)
    job = store.get(job_id)
    state, reason = final_state(job)
    assert state == "partial" and "crash" in reason
    assert len(job["shards"][1]["stderr_tail"]) == 4000
    job2 = store.create(spec(1))
    run_shard(store, job2, "s0", state="failed", reason="timeout")
    assert final_state(store.get(job2)) == ("failed", "timeout")


class FakeMonotonic:
    """An injected monotonic clock: time moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1024.0  # and waits of binary fractions: exact in floating point

    def __call__(self) -> float:
        return self.now


class WatchedRedis:
    """The real client, with its blocking reads recorded (and optionally not made).

    ``XREAD BLOCK`` is the only call of ``JobStore.wait`` that waits; recording
    its ``block`` argument and what it returned tells *why* a wait ended —
    without timing it. ``fake_block=True`` answers "nothing arrived" at once
    and advances the injected clock by the block time instead of sleeping.
    """

    def __init__(self, client, clock: FakeMonotonic, *, fake_block: bool = False) -> None:
        self._client, self._clock, self._fake = client, clock, fake_block
        self.reads: list[tuple[int, bool]] = []  # (block ms, woke with an entry)
        self.blocking = threading.Event()

    def __getattr__(self, name):
        return getattr(self._client, name)

    def xread(self, streams, count=None, block=None):
        if self._fake:
            self._clock.now += block / 1000
            self.reads.append((block, False))
            return []
        self.blocking.set()
        got = self._client.xread(streams, count=count, block=block)
        if not got:
            self._clock.now += block / 1000  # it blocked that long: the wait may end
        self.reads.append((block, bool(got)))
        return got


def watched_store(redis_client, *, fake_block: bool = False) -> tuple[JobStore, WatchedRedis, FakeMonotonic]:
    clock = FakeMonotonic()
    watched = WatchedRedis(redis_client, clock, fake_block=fake_block)
    return JobStore(watched, monotonic=clock), watched, clock


def test_long_poll_returns_at_once_when_version_is_newer(redis_client):
    store, watched, _clock = watched_store(redis_client)
    job_id = store.create(spec(1))
    job = store.wait(job_id, 0, 5)
    assert job["version"] == 1 and watched.reads == []  # never blocked


def test_long_poll_wakes_on_the_event_not_the_timeout(redis_client, redis_server):
    store, watched, _clock = watched_store(redis_client)
    job_id = store.create(spec(1))
    other = JobStore(redis_lib.Redis.from_url(redis_server, decode_responses=True))

    def later() -> None:
        assert watched.blocking.wait(30), "the waiter never blocked"
        other.shard_started(job_id, "s0")

    thread = threading.Thread(target=later)
    thread.start()
    job = store.wait(job_id, 1, 30)  # the clock moves only if a read times out
    thread.join(30)
    assert job["version"] == 2 and job["state"] == "running"
    assert watched.reads == [(30000, True)]  # one blocking read, woken by the event


def test_long_poll_times_out_with_unchanged_job_and_caps_the_wait(redis_client):
    store, watched, clock = watched_store(redis_client, fake_block=True)
    job_id = store.create(spec(1))
    start = clock.now
    job = store.wait(job_id, 1, 0.25)
    assert job["version"] == 1 and watched.reads == [(250, False)] and clock.now == start + 0.25
    watched.reads.clear()
    store.wait(job_id, 1, 3600)  # an hour asked: at most a minute blocked
    assert watched.reads == [(60000, False)]


def test_cancel_cancels_pending_and_flags_running(store):
    job_id = store.create(spec(3))
    store.transition(job_id, "staging")
    store.shard_started(job_id, "s0")
    assert store.cancel(job_id) is False  # s0 still running
    assert store.is_cancelled(job_id)
    job = store.get(job_id)
    assert [s["state"] for s in job["shards"]] == ["running", "cancelled", "cancelled"]
    # the running shard sees the flag and reports: it finalises
    assert store.shard_finished(job_id, "s0", state="cancelled", reason="cancel flag seen") is True
    assert final_state(store.get(job_id))[0] == "cancelled"


def test_cancel_of_all_pending_shards_finalises_immediately(store):
    job_id = store.create(spec(2))
    assert store.cancel(job_id) is True
    with pytest.raises(Conflict):
        store.shard_started(job_id, "s0")  # a late runner is told it was cancelled


@pytest.mark.parametrize("op", ["cancel", "reopen_failed"])
def test_cancel_or_retry_of_a_succeeded_job_is_conflict(store, op):
    job_id = store.create(spec(1))
    run_shard(store, job_id, "s0")
    store.complete(job_id, "succeeded")
    with pytest.raises(Conflict):
        getattr(store, op)(job_id)


def test_retry_reopens_failed_shards_only(store):
    job_id = store.create(spec(3))
    run_shard(store, job_id, "s0")
    run_shard(store, job_id, "s1", state="failed", reason="crash")
    assert run_shard(store, job_id, "s2", state="failed", reason="oom") is True
    with pytest.raises(Conflict):
        store.reopen_failed(job_id)  # still finishing
    state, reason = final_state(store.get(job_id))
    store.complete(job_id, state, reason=reason)
    assert sorted(store.reopen_failed(job_id)) == ["s1", "s2"]
    job = store.get(job_id)
    assert job["state"] == "staging" and job["shards_done"] == 1 and job["instances_done"] == 10
    assert [s["state"] for s in job["shards"]] == ["succeeded", "pending", "pending"]
    assert job["shards"][1]["attempt"] == 2
    run_shard(store, job_id, "s1")
    assert run_shard(store, job_id, "s2") is True
    assert final_state(store.get(job_id))[0] == "succeeded"


def test_retry_of_a_shard_that_failed_before_any_progress(store):
    # instances_done 0 once made the retry script send HINCRBY '-0', which
    # Redis refuses as "not an integer": retry then failed with a 500.
    job_id = store.create(spec(2))
    run_shard(store, job_id, "s0")
    store.shard_invoked(job_id, "s1", "act-s1")
    store.shard_started(job_id, "s1")
    assert store.shard_finished(job_id, "s1", state="failed", reason="S3 unreachable") is True
    state, reason = final_state(store.get(job_id))
    store.complete(job_id, state, reason=reason)
    assert store.reopen_failed(job_id) == ["s1"]
    job = store.get(job_id)
    assert job["state"] == "staging" and job["instances_done"] == 10
    assert job["shards"][1]["state"] == "pending" and job["shards"][1]["attempt"] == 2


def test_reconcile_fails_shards_whose_activation_ended(store):
    job_id = store.create(spec(2))
    store.shard_invoked(job_id, "s0", "a0")
    store.shard_invoked(job_id, "s1", "a1")
    inv = FakeInvoker()
    inv.records = {"a0": {"response": {"status": "action developer error"}}, "a1": None}
    done = []
    assert reconcile_job(store, job_id, as_executor(inv), finaliser=done.append).failed == 1
    assert done == []  # s1 may still report
    job = store.get(job_id)
    assert job["shards"][0]["state"] == "failed"
    assert "ended (action developer error) without an outcome" in job["shards"][0]["reason"]
    assert job["shards"][1]["state"] == "invoked"


def test_reconcile_fails_shards_past_deadline(redis_client):
    now = [1000.0]
    store = JobStore(redis_client, clock=lambda: now[0])
    job_id = store.create(spec(1), shard_timeout_s=60)
    store.shard_started(job_id, "s0")
    done = []
    reconcile_job(store, job_id, finaliser=done.append)
    assert done == []
    now[0] += 61
    reconcile_job(store, job_id, finaliser=done.append)
    assert done == [job_id]
    assert store.get(job_id)["shards"][0]["reason"] == "deadline passed without an outcome"


def test_open_jobs_are_indexed_until_final(store):
    job_id = store.create(spec(1))
    cached = store.create(spec(1), state="succeeded")
    assert job_id in store.open_jobs() and cached not in store.open_jobs()
    run_shard(store, job_id, "s0")
    store.complete(job_id, "succeeded")
    assert job_id not in store.open_jobs()
    failed = store.create(spec(1))
    assert store.shard_finished(failed, "s0", state="failed", reason="oom") is True
    store.complete(failed, "failed")
    assert failed not in store.open_jobs()
    store.reopen_failed(failed)
    assert failed in store.open_jobs()  # a retried job is open again


def test_stale_finaliser_can_be_claimed_once(redis_client):
    now = [1000.0]
    store = JobStore(redis_client, clock=lambda: now[0])
    job_id = store.create(spec(1))
    run_shard(store, job_id, "s0")
    assert store.claim_finaliser(job_id) is False  # fresh
    now[0] += 200
    assert store.claim_finaliser(job_id) is True
    assert store.claim_finaliser(job_id) is False  # refreshed by the first claim


def test_list_by_owner_state_and_recent(store):
    a = store.create(spec(1, owner="alice"))
    b = store.create(spec(1, owner="bob"))
    run_shard(store, b, "s0")
    store.complete(b, "succeeded")
    assert [j["id"] for j in store.list()] == [b, a]
    assert [j["id"] for j in store.list(owner="alice")] == [a]
    assert [j["id"] for j in store.list(state="succeeded")] == [b]
    assert store.list(owner="carol") == []


def test_events_after_cursor(store):
    job_id = store.create(spec(1))
    first = store.events(job_id)[0]["id"]
    store.shard_started(job_id, "s0")
    later = store.events(job_id, after=first)
    assert [e["type"] for e in later] == ["started"]


def test_succeeded_with_warnings_says_how_many_files_were_not_processed(store):
    job_id = store.create(spec(2))
    run_shard(store, job_id, "s0")
    store.shard_started(job_id, "s1")
    store.shard_finished(job_id, "s1", state="succeeded", reason="warnings: ok; 2 input file(s) not processed",
                         warnings=2, file_reasons=[{"file": "a.dcm", "reason": "no pixel data"}] * 2)
    job = store.get(job_id)
    state, reason = final_state(job)
    assert state == "succeeded" and reason.startswith("succeeded with warnings: 2 input file(s) in 1 shard(s)")
    s1 = next(s for s in job["shards"] if s["id"] == "s1")
    assert s1["warnings"] == 2 and s1["file_reasons"][0] == {"file": "a.dcm", "reason": "no pixel data"}


@pytest.mark.parametrize("started", ["staging", "running"])
def test_cancel_of_a_job_with_no_open_shard_still_ends_it(store, started):
    """Finding 5: a job with 0 shards stayed ``staging`` after a cancel that answered 200."""
    job_id = store.create(spec(0))
    store.transition(job_id, "staging")
    if started == "running":
        store.transition(job_id, "running")
    assert store.cancel(job_id) is True  # the caller finalises: nothing else ever would
    assert store.get(job_id)["state"] == "finishing"
    assert final_state(store.get(job_id))[0] == "cancelled"


def test_owner_of_a_job_and_of_none(store):
    job_id = store.create(spec(1, owner="bob"))
    assert store.owner(job_id) == "bob" and store.owner("j-nope") is None


def test_a_started_shard_no_longer_shows_why_it_waited(store):
    # Seen in a browser run: "Slurm job 4 / queued: waiting to be scheduled" under a running shard,
    # until the next reconcile tick noticed it had started.
    job_id = store.create(spec(1))
    store.shard_invoked(job_id, "s0", "4", executor="slurm")
    store.update_shard(job_id, "s0", {"queue_reason": "queued: waiting to be scheduled"},
                       allowed=("invoked",), event="queue")
    assert store.get(job_id)["shards"][0]["queue_reason"] == "queued: waiting to be scheduled"
    store.shard_started(job_id, "s0")
    shard = store.get(job_id)["shards"][0]
    assert (shard["state"], shard["queue_reason"]) == ("running", "")
