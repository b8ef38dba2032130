"""Pipeline benchmark: a study stored in Orthanc -> its routing rule's pipeline, deployed, no click.

Not a test: prints one JSON object. Starts Orthanc + Redis + S3 (radcloud.ops.stack,
ephemeral ports, Orthanc ``StableAge`` 1 s), a localwhisk with deploy/manifest.yaml deployed
as ``radcloud deploy --local`` does, one routing rule matching every study (its pipeline:
``--steps``, dicom-tags by default; each step after the first runs on the previous step's DICOM
outputs) and the arrivals watcher (``arrivals_stable_age_s`` 1 s) in-process. Measures, per
study stored one at a time (after one that warms the containers):

- ``stored_to_pipeline_s``: the last instance stored -> the pipeline job created (Redis
  ``created_at``): p50/p95, against the issue's target StableAge + 1 s;
- ``stored_to_done_s``: -> the pipeline succeeded (every step's job finished): the zero-click latency;
- ``handover_ms``: pipeline created -> its first step's job created, and the last step's job
  finished -> the pipeline finished: what tracking the steps as a pipeline adds;

and for ``--burst`` studies stored back to back: seconds from the last store until every
pipeline exists and until every one has succeeded.

    unshare --net bash -c 'ip link set lo up && exec .venv/bin/python bench/pipeline_bench.py'
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

from localwhisk.testing import percentile as pct
from trigger_bench import studies  # unique one-instance studies (bench/ is this script's path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--steps", default="dicom-tags", help="the rule's plugins, comma-separated")
    args = parser.parse_args()

    os.environ["RADCLOUD_ORTHANC_STABLE_AGE"] = "1"
    from localwhisk.testing import Server
    from radcloud.arrivals.rules import RuleStore
    from radcloud.arrivals.watch import Watcher, trigger_fire
    from radcloud.core import redisclient
    from radcloud.core.openwhisk import OpenWhisk
    from radcloud.ops import deploy
    from radcloud.ops.stack import Ports, Stack
    from radcloud.ops.stack.install import find
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore
    from radcloud.work.pipelines import steps_view

    tmp = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    stack = Stack(tmp / "stack", Ports.ephemeral(), binaries=find(), timeout_s=60)
    endpoints = stack.up(("orthanc", "redis", "s3"), install_missing=False)
    settings = endpoints.settings()
    env = {**endpoints.env(), "RADCLOUD_TOKEN_SECRET": secrets.token_urlsafe(40)}
    env.update(deploy.local_image_env(env))
    images = tmp / "images.json"
    images.write_text(json.dumps(deploy.local_images(env)))
    # The stack's namespace limit on trigger fires (OpenWhisk's default 60/min would cap the burst).
    server = Server(tmp / "whisk", extra_args=["--images-file", str(images), "--fires-per-minute", "600"], env=env)
    stop = threading.Event()
    try:
        api_host, auth = server.start()
        deploy.deploy(api_host, auth, env)
        redis = redisclient.client(settings, redisclient.JOBS)
        rules, jobs = RuleStore(redis, Registry()), JobStore(redis)
        rules.save({"name": "bench", "pipeline": [{"plugin": p} for p in args.steps.split(",")]})
        orthanc = Orthanc.from_settings(settings)
        watcher = Watcher(orthanc, redisclient.client(settings, redisclient.PROGRESS),
                          trigger_fire(OpenWhisk(api_host, auth)), stable_age_s=1)
        watcher.cursor()
        threading.Thread(target=watcher.run, args=(stop,), kwargs={"poll_s": 0.1}, daemon=True).start()

        def pipelines_of(uids: set[str], timeout_s: float = 300) -> dict[str, dict]:
            deadline, found = time.monotonic() + timeout_s, {}
            while time.monotonic() < deadline:
                found = {r["study_uid"]: r for r in rules.runs(limit=1000) if r["study_uid"] in uids}
                if set(found) == uids:
                    return found
                time.sleep(0.02)
            raise SystemExit(f"gave up: {len(uids - set(found))} of {len(uids)} studies never routed")

        def finished(pids: list[str], timeout_s: float = 300) -> dict[str, dict]:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                got = {p: jobs.get(p) for p in pids}
                if all(j["state"] in ("succeeded", "failed", "partial", "cancelled") for j in got.values()):
                    bad = {p: j["reason"] for p, j in got.items() if j["state"] != "succeeded"}
                    if bad:
                        raise SystemExit(f"pipelines did not succeed: {bad}")
                    return got
                time.sleep(0.05)
            raise SystemExit("gave up waiting for the pipelines to finish")

        created, done, first_step, last_step = [], [], [], []
        for i, (uid, data) in enumerate(studies(args.studies + 1)):
            orthanc.store_instance(data)
            stored = time.time()
            run = pipelines_of({uid})[uid]
            [job] = finished([run["pipeline"]]).values()
            if i == 0:
                continue  # the first one warms the containers
            created.append(job["created_at"] - stored)
            done.append(job["finished_at"] - stored)
            step_jobs = [jobs.get(s["job"]) for s in steps_view(job)]
            first_step.append((step_jobs[0]["created_at"] - job["created_at"]) * 1000)
            last_step.append((job["finished_at"] - step_jobs[-1]["finished_at"]) * 1000)

        burst = studies(args.burst)
        for _uid, data in burst:
            orthanc.store_instance(data)
        stored = time.time()
        runs = pipelines_of({u for u, _ in burst})
        refused = {r.get("reason") for r in runs.values() if r["state"] != "started"}
        if refused:
            raise SystemExit(f"{sum(r['state'] != 'started' for r in runs.values())} of {args.burst} pipelines "
                             f"not started: {sorted(refused)[:3]}")
        all_created = max(jobs.get(r["pipeline"])["created_at"] for r in runs.values()) - stored
        ended = finished([r["pipeline"] for r in runs.values()])
        all_done = max(j["finished_at"] for j in ended.values()) - stored
    finally:
        stop.set()
        server.stop()
        stack.down()

    def summary(values: list[float], digits: int = 3) -> dict:
        return {"p50": round(statistics.median(values), digits), "p95": round(pct(values, 95), digits)}

    print(json.dumps({
        "steps": args.steps.split(","), "stable_age_s": 1, "studies": len(created),
        "stored_to_pipeline_s": {**summary(created), "target_p50_s": "<= StableAge + 1 = 2"},
        "stored_to_done_s": summary(done),
        "handover_ms": {"pipeline_to_first_step_job": summary(first_step, 1),
                        "last_step_job_to_pipeline_done": summary(last_step, 1)},
        "burst": {"studies": args.burst, "all_pipelines_created_after_last_store_s": round(all_created, 3),
                  "all_succeeded_after_last_store_s": round(all_done, 3)},
    }, indent=2))


if __name__ == "__main__":
    main()
