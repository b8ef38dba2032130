"""Result cache: key canonicalisation, hit/miss, invalidation, stale entries."""

from __future__ import annotations

import pytest

from radcloud.cache import ResultCache, cache_key
from radcloud.jobs import JobSpec, JobStore, ShardSpec


def test_key_ignores_param_and_input_order():
    a = cache_key("dcm2png", "1.0", {"x": 1, "y": "a"}, ["bb", "AA"])
    b = cache_key("dcm2png", "1.0", {"y": "a", "x": 1}, ["aa", "bb"])
    assert a == b and len(a) == 64


@pytest.mark.parametrize("change", [
    dict(plugin="dicom-tags"), dict(version="1.1"), dict(params={"x": 2}), dict(md5s=["aa", "cc"]),
])
def test_key_changes_with_plugin_version_params_or_inputs(change):
    base = dict(plugin="dcm2png", version="1.0", params={"x": 1}, md5s=["aa", "bb"])
    other = {**base, **change}
    assert cache_key(base["plugin"], base["version"], base["params"], base["md5s"]) != \
        cache_key(other["plugin"], other["version"], other["params"], other["md5s"])


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
