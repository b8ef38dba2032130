"""The result cache over a real Redis: hits become cached jobs; stale entries are dropped."""

from __future__ import annotations

import pytest

from radcloud.work.cache import ResultCache
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec


@pytest.fixture
def jobs(redis_client):
    return JobStore(redis_client)


def finished_job(jobs, key):
    spec = JobSpec(plugin="p", plugin_version="1", owner="alice", params={}, cache_key=key,
                   shards=[ShardSpec(id="s0", instances_total=3)])
    job_id = jobs.create(spec)
    jobs.shard_started(job_id, "s0")
    jobs.shard_finished(job_id, "s0", state="succeeded")
    jobs.complete(job_id, "succeeded")
    return job_id, spec


def test_hit_creates_succeeded_cached_job_pointing_at_origin(jobs, redis_client):
    cache = ResultCache(redis_client, jobs)
    origin, spec = finished_job(jobs, "k1")
    assert cache.serve("k1", spec) is None  # nothing cached yet
    cache.put("k1", origin)
    hit = cache.serve("k1", spec)
    job = jobs.get(hit)
    assert job["state"] == "succeeded" and job["cached"] is True
    assert job["results_of"] == origin and job["output_prefix"] == f"results/{origin}/"
    assert job["instances_done"] == 3 and job["shards"] == []


def test_entry_pointing_at_vanished_or_unsucceeded_job_is_dropped(jobs, redis_client):
    cache = ResultCache(redis_client, jobs)
    cache.put("k2", "jgone")
    assert cache.lookup("k2") is None
    assert redis_client.get("radcloud:cache:k2") is None
