"""Dispatch, shards and results against the real stack's Redis and S3 (OpenWhisk replaced by threads).

What this adds over the unit tests: real S3 (SeaweedFS) for staged inputs,
outputs, the manifest and presigned URLs; real Redis over TCP with shards
finishing concurrently on their own threads and connections.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from radcloud.work.cache import ResultCache
from radcloud.work.dispatch import Dispatcher
from radcloud.work.jobs import JobStore
from radcloud.run.registry import Registry
from radcloud.work.reporter import Finaliser, RedisShardReporter
from radcloud.work.jobresults import Results
from radcloud.run.shard import run_shard
from radcloud.work.staging import ManifestStaging
from radcloud.store.storage import ObjectStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from jobs_fakes import FIXTURE_PLUGINS, FakeInvoker  # noqa: E402

pytestmark = pytest.mark.integration


def stage(store: ObjectStore, study: str, series: str, n: int) -> None:
    prefix = f"studies/{study}/{series}/"
    instances = []
    for i in range(n):
        data = f"{series}/{i}".encode() * 100
        info = store.put_bytes(f"{prefix}{i}.dcm", data)
        instances.append({"key": info.key, "size": info.size, "md5": hashlib.md5(data).hexdigest()})
    store.put_json(f"manifests/{study}/{series}.json", {"prefix": prefix, "StudyInstanceUID": study,
                                                        "SeriesInstanceUID": series, "expected": n,
                                                        "instances": instances, "complete": True})


def test_eight_concurrent_shards_one_finaliser_results_downloadable(stack):
    settings = stack.settings
    store = ObjectStore.from_settings(settings)
    url = settings.redis_url.reveal()
    jobs = JobStore(redis_lib.Redis.from_url(url, decode_responses=True))
    cache = ResultCache(jobs.r, jobs)
    registry = Registry(FIXTURE_PLUGINS)
    finalised = []

    def runner(params, aid):
        # Each shard gets its own connection, as separate activations would.
        own = JobStore(redis_lib.Redis.from_url(url, decode_responses=True))
        results = Results(store, own.r, own)
        fin = Finaliser(own, results=results, cache=ResultCache(own.r, own))

        def finalise(job_id):
            finalised.append(job_id)
            return fin(job_id)

        rep = RedisShardReporter(own, params["job_id"], finaliser=finalise, activation_id=aid)
        return run_shard(params, store=store, reporter=rep, registry=registry)

    series = [f"1.2.3.{i}" for i in range(8)]
    for uid in series:
        stage(store, "1.2.3", uid, 3)
    invoker = FakeInvoker(runner, threaded=True)
    d = Dispatcher(jobs, cache, registry, ManifestStaging(store, jobs.r), invoker)
    answer = d.dispatch({"plugin": "copy", "inputs": {"series": series}, "options": {"force": True}}, "alice")
    invoker.join(120)
    job = jobs.get(answer["job_id"])
    assert job["state"] == "succeeded", job
    assert finalised == [answer["job_id"]]
    manifest = Results(store, jobs.r, jobs).manifest(answer["job_id"])
    dcm = [o for o in manifest["outputs"] if o["name"].endswith(".dcm")]
    assert len(dcm) == 24
    stored = store.get_json(f"results/{answer['job_id']}/manifest.json")
    assert stored["count"] == manifest["count"]
    with_urls = Results(store, jobs.r, jobs).with_urls(manifest, 60, [dcm[0]["name"]])
    got = requests.get([o for o in with_urls["outputs"] if "url" in o][0]["url"], timeout=10)
    assert got.status_code == 200 and hashlib.md5(got.content).hexdigest() == dcm[0]["md5"]
