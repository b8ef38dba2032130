"""Result manifests: built from shard outcomes, stored twice, cached jobs follow their origin."""

from __future__ import annotations

import pytest
from jobs_fakes import MemStore

from radcloud.core.errors import BadRequest, NotFound
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec
from radcloud.work.jobresults import Results, build_manifest


def finished(jobs, outputs):
    job_id = jobs.create(JobSpec("p", "1", "a", {}, [ShardSpec("s0", series_uid="1.2")]))
    jobs.shard_started(job_id, "s0")
    jobs.shard_finished(job_id, "s0", state="succeeded", outputs=outputs(job_id))
    jobs.complete(job_id, "succeeded")
    return job_id


def test_manifest_lists_outputs_with_names_relative_to_prefix(redis_client):
    jobs = JobStore(redis_client)
    job_id = finished(jobs, lambda j: [
        {"key": f"results/{j}/s0/b.json", "size": 3, "md5": "m1", "content_type": "application/json"},
        {"key": f"results/{j}/s0/a.png", "size": 5, "md5": "m2", "content_type": "image/png"}])
    m = build_manifest(jobs.get(job_id))
    assert [o["name"] for o in m["outputs"]] == ["s0/a.png", "s0/b.json"]
    assert m["outputs"][0]["image"] is True and m["outputs"][1]["image"] is False
    assert m["bytes"] == 8 and m["outputs"][0]["series_uid"] == "1.2"


def test_saved_manifest_is_read_from_redis_then_from_s3(redis_client):
    jobs, store = JobStore(redis_client), MemStore()
    results = Results(store, redis_client, jobs)
    job_id = finished(jobs, lambda j: [{"key": f"results/{j}/s0/x.txt", "size": 1, "md5": "m",
                                        "content_type": "text/plain"}])
    results.save_manifest(jobs.get(job_id))
    assert f"results/{job_id}/manifest.json" in store.objects
    assert results.manifest(job_id)["count"] == 1
    redis_client.delete(jobs.key(job_id, "manifest"))
    assert results.manifest(job_id)["count"] == 1  # from the S3 copy
    with pytest.raises(BadRequest):
        results.thumbnail(results.manifest(job_id), "s0/x.txt", 60)
    with pytest.raises(NotFound):
        results.output(results.manifest(job_id), "nope")
