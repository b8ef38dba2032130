"""RedisShardReporter: the shard runner's protocol mapped onto the job model."""

from __future__ import annotations

import pytest

from radcloud.work.jobs import JobSpec, JobStore, ShardSpec
from radcloud.work.reporter import Finaliser, RedisShardReporter
from jobs_fakes import FakeInvoker
from radcloud.work.executors import as_executor
from radcloud.work.reconcile import reconcile_job


class FakeResults:
    def __init__(self):
        self.saved = []

    def save_manifest(self, job):
        self.saved.append(job["id"])
        return {"outputs": [o for s in job["shards"] for o in s.get("outputs", [])]}


class FakeCache:
    def __init__(self):
        self.entries = {}

    def put(self, key, job_id):
        self.entries[key] = job_id


@pytest.fixture
def jobs(redis_client):
    return JobStore(redis_client)


def make_job(jobs, n=2, **options):
    return jobs.create(JobSpec(plugin="p", plugin_version="1", owner="a", params={}, cache_key="ck",
                               options=options,
                               shards=[ShardSpec(id=f"s{i}", instances_total=4) for i in range(n)]))


def outcome(sid, status="finishedSuccessfully", reason="ok", **kw):
    return {"shard_id": sid, "status": status, "reason": reason, "message": kw.pop("message", ""),
            "exit_code": 0, "duration_s": 0.5, "stderr_tail": "", "outputs": kw.pop("outputs", []), **kw}


def drive(reporter, sid, out):
    for i in range(1, 5):
        reporter.progress(sid, i, 4)
    reporter.started(sid, {"argv": ["prog"], "n_inputs": 4, "version": "1"})
    reporter.log(sid, "hello")
    reporter.progress(sid, 1, 1)
    reporter.finished(sid, out)


def test_protocol_drives_job_to_succeeded_with_one_finalisation(jobs):
    results, cache = FakeResults(), FakeCache()
    job_id = make_job(jobs)
    fin = Finaliser(jobs, results=results, cache=cache)
    rep = RedisShardReporter(jobs, job_id, finaliser=fin)
    drive(rep, "s0", outcome("s0", outputs=[{"key": "k/a.png", "size": 1, "md5": "x", "content_type": "image/png"}]))
    assert jobs.get(job_id)["state"] == "running"
    assert jobs.get(job_id)["instances_done"] == 4
    drive(rep, "s1", outcome("s1"))
    job = jobs.get(job_id)
    assert job["state"] == "succeeded" and job["instances_done"] == 8
    assert results.saved == [job_id] and cache.entries == {"ck": job_id}
    types = [e["type"] for e in jobs.events(job_id)]
    assert "log" in types and "upload" in types and "plugin_started" in types


def test_crash_gives_partial_with_reason_and_no_cache_entry(jobs):
    cache = FakeCache()
    job_id = make_job(jobs)
    rep = RedisShardReporter(jobs, job_id, finaliser=Finaliser(jobs, results=FakeResults(), cache=cache))
    drive(rep, "s0", outcome("s0"))
    drive(rep, "s1", outcome("s1", status="finishedWithError", reason="crash", message="exit code 3"))
    job = jobs.get(job_id)
    assert job["state"] == "partial" and "crash: exit code 3" in job["reason"]
    assert cache.entries == {}


def test_cancel_flag_reaches_runner_and_ends_job_cancelled(jobs):
    job_id = make_job(jobs, n=1)
    rep = RedisShardReporter(jobs, job_id, finaliser=Finaliser(jobs))
    rep.progress("s0", 1, 4)
    assert rep.cancelled() is False
    jobs.cancel(job_id)
    rep._cancel_checked = 0.0
    assert rep.cancelled() is True
    rep.finished("s0", outcome("s0", status="cancelled", reason="cancelled"))
    assert jobs.get(job_id)["state"] == "cancelled"


def test_late_outcome_after_never_stuck_is_ignored(jobs):
    job_id = make_job(jobs, n=1)
    jobs.shard_invoked(job_id, "s0", "a0")
    inv = FakeInvoker()
    inv.records["a0"] = {"response": {"status": "whisk internal error"}}
    reconcile_job(jobs, job_id, as_executor(inv))
    rep = RedisShardReporter(jobs, job_id, finaliser=Finaliser(jobs))
    rep.finished("s0", outcome("s0"))  # must not raise, must not flip the shard
    assert jobs.shard(job_id, "s0")["state"] == "failed"


def test_failing_pacs_push_keeps_success_and_names_error(jobs):
    job_id = make_job(jobs, n=1, push_to_pacs=True)

    def push(job, manifest):
        raise ConnectionError("orthanc down")

    rep = RedisShardReporter(jobs, job_id, finaliser=Finaliser(jobs, results=FakeResults(), push=push))
    drive(rep, "s0", outcome("s0"))
    job = jobs.get(job_id)
    assert job["state"] == "succeeded" and "orthanc down" in job["pacs_error"]


def test_running_comes_first_and_the_shard_starts_once_with_its_phase_in_words(jobs):
    """The runner's first report (before its downloads) starts the shard; the plugin's start later is
    no second start; the phase reads "fetching 4 inputs", then "running the plugin"."""
    from radcloud.work.jobview import public

    job_id = make_job(jobs, n=1)
    rep = RedisShardReporter(jobs, job_id, activation_id="a1")
    rep.running("s0", {"job_id": job_id, "plugin": "p", "n_inputs": 4})
    shard = public(jobs.get(job_id))["shards"][0]
    assert (shard["state"], shard["n_inputs"], shard["phase_plain"]) == ("running", 4, "fetching 4 inputs")
    assert jobs.get(job_id)["state"] == "running"
    # A second reporter (the next call of a Slurm job), as the shard_report action makes one per call.
    again = RedisShardReporter(jobs, job_id, activation_id="a1")
    again.resume("s0", running=True, plugin_started=False)
    again.progress("s0", 4, 4)
    again.started("s0", {"argv": ["prog"], "n_inputs": 4, "version": "1"})
    assert public(jobs.get(job_id))["shards"][0]["phase_plain"] == "running the plugin"
    again.finished("s0", outcome("s0"))
    assert [e["type"] for e in jobs.events(job_id)].count("started") == 1
    assert public(jobs.get(job_id))["shards"][0]["phase_plain"] == ""  # ended: no phase


def test_running_after_cancel_starts_nothing_and_the_runner_learns_it(jobs):
    job_id = make_job(jobs, n=1)
    jobs.cancel(job_id)
    rep = RedisShardReporter(jobs, job_id)
    rep.running("s0", {"n_inputs": 4})  # refused (the shard was cancelled before it started): logged only
    assert jobs.shard(job_id, "s0")["state"] == "cancelled" and rep.cancelled()
