"""A job end to end through localwhisk with real Orthanc, Redis and S3.

Multi-series study → retrieve → dcm2png fanned out per series → succeeded,
results listed and downloadable, derived series visible in Orthanc; the
identical re-run is a cache hit; a crashing shard → partial with the reason;
cancel mid-run; the runner killed mid-job and restarted → the job still
reaches a final state.
"""

from __future__ import annotations

import time

import pytest
import requests


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def world(job_world):
    return job_world  # one stack for the e2e job tests (tests/e2e/conftest.py)


@pytest.fixture(scope="module")
def staged(world):
    study, series = world.seed_study([3, 3, 2])
    return study, series, world.stage(study)


def test_dcm2png_fans_out_per_series_results_downloadable_and_pushed(world, staged):
    study, series, rid = staged
    answer = world.call("dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": rid},
                                     "options": {"push_to_pacs": True}})
    assert answer.get("cached") is False and answer["shards"] == 3, answer
    job = world.wait_final(answer["job_id"])
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"shards_done": 3, "shards_total": 3, "instances_done": 8, "instances_total": 8}
    assert all(s["activation_id"] for s in job["shards"])
    manifest = world.call("results", {"job_id": answer["job_id"], "urls": True})
    pngs = [o for o in manifest["outputs"] if o["content_type"] == "image/png"]
    assert len(pngs) >= 8 and {o["shard"] for o in pngs} == {"s000", "s001", "s002"}
    got = requests.get(pngs[0]["url"], timeout=10)
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(got.content) == pngs[0]["size"]
    thumb = world.call("results", {"job_id": answer["job_id"], "op": "thumbnail", "name": pngs[0]["name"]})
    assert requests.get(thumb["url"], timeout=10).content[:4] == b"\x89PNG"
    derived = [s for s in world.orthanc_series(study)
               if s["MainDicomTags"].get("SeriesDescription", "").startswith("radcloud dcm2png pictures of #")]
    assert derived and sum(len(s["Instances"]) for s in derived) >= 8
    for s in derived:  # numbered after their source series (radcloud.pacs.derivedseries): series 2's pictures are 201
        tags = s["MainDicomTags"]
        assert tags["SeriesDescription"].startswith(f"radcloud dcm2png pictures of #{int(tags['SeriesNumber']) // 100} ")
    assert job.get("pacs_instances") and int(job["pacs_instances"]) >= 8

    # identical re-run: a cache hit, final at once (results answers 409 for an unfinished job),
    # same outputs, nothing copied
    again = world.call("dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": rid}})
    assert again["cached"] is True and again["results_of"] == answer["job_id"]
    cached = world.call("results", {"job_id": again["job_id"]})
    assert [o["key"] for o in cached["outputs"]] == [o["key"] for o in manifest["outputs"]]


def test_crashing_shard_gives_partial_with_reason(world, staged):
    _study, _series, rid = staged
    answer = world.call("dispatch", {"plugin": "flaky", "inputs": {"retrieve": rid}})
    job = world.wait_final(answer["job_id"])
    assert job["state"] == "partial", job
    failed = [s for s in job["shards"] if s["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["exit_code"] == 3 and "crash" in failed[0]["reason"]
    assert "refusing a 2-instance series" in failed[0]["stderr_tail"]
    assert "crash" in job["reason"]


def test_cancel_mid_run(world, staged):
    _study, _series, rid = staged
    answer = world.call("dispatch", {"plugin": "copy", "params": {"sleep": 120}, "inputs": {"retrieve": rid},
                                     "options": {"force": True}})
    assert world.wait_record(answer["job_id"], ("running",), timeout_s=30) == "running"
    t0 = time.monotonic()
    world.call("status", {"job_id": answer["job_id"], "op": "cancel"})
    job = world.wait_final(answer["job_id"], timeout_s=60)
    assert job["state"] == "cancelled", job
    assert time.monotonic() - t0 < 60  # the plugins were stopped, not waited out (120 s): a margin load can't eat


def test_runner_restarted_mid_job_still_reaches_final_state(world, staged):
    _study, _series, rid = staged
    answer = world.call("dispatch", {"plugin": "copy", "params": {"sleep": 8}, "inputs": {"retrieve": rid},
                                     "options": {"force": True}})
    job = world.wait_state(answer["job_id"], ("running",), timeout_s=30)
    world.whisk.kill()   # SIGKILL the runner and its containers: no shard can report
    world.whisk.start()
    job = world.wait_final(answer["job_id"], timeout_s=90)
    assert job["state"] in ("failed", "partial", "succeeded"), job
    unfinished = [s for s in job["shards"] if s["state"] not in ("succeeded", "failed", "cancelled")]
    assert unfinished == []
    reasons = {s["reason"] for s in job["shards"] if s["state"] == "failed"}
    # the killed activations are recorded as ended; status fails their shards with the reason
    assert reasons and all("without an outcome" in r for r in reasons), reasons


def test_pull_and_run_sequence_query_retrieve_dispatch(world):
    study, _ = world.seed_study([2, 2])
    status, body = world.whisk.invoke("radcloud/pull-and-run", {
        "level": "study", "StudyInstanceUID": study,
        "run": {"plugin": "noop", "options": {"force": True}}}, timeout_ms=60000)
    assert status == 200 and body.get("job_id"), (status, body)
    job = world.wait_final(body["job_id"])
    assert job["state"] == "succeeded" and job["shards_total"] == 2, job
    assert job["progress"]["instances_done"] == 4


@pytest.mark.parametrize("run, status, words", [
    ({"plugin": "no-such-plugin"}, 404, "no-such-plugin"),
    ({"plugin": "noop", "options": {"shard_size": 0}}, 400, "shard_size"),
    ({"plugin": "noop", "params": {"not_a_parameter": 1}}, 400, "not_a_parameter"),
    ("noop", 400, "run"),
])
def test_pull_and_run_refuses_a_run_dispatch_would_refuse_before_pulling_anything(world, run, status, words):
    """The sequence's first step checks ``run`` as dispatch would: a refused run pulls no study
    (before, the whole study was staged, then dispatch said no)."""
    study, _ = world.seed_study([2])
    before = set(world.redis.scan_iter("radcloud:retrieve:*"))
    got, body = world.whisk.invoke("radcloud/pull-and-run", {"level": "study", "StudyInstanceUID": study,
                                                             "run": run}, timeout_ms=60000)
    # invoked as an action (not a web request): OpenWhisk's application error carries the web answer
    assert got == 502 and body["error"].get("statusCode") == status, (got, body)
    assert words in str(body["error"]["body"]["error"]), body
    created = [k for k in set(world.redis.scan_iter("radcloud:retrieve:*")) - before]
    assert created == [], created  # no retrieve record: nothing was pulled
