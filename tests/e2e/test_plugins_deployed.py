"""Every shipped plugin through the deployed path, and memory faults told apart.

The demo's sample study (patient RC100002, MR brain, 2 series x 30 slices,
what ``make demo`` seeds) goes into Orthanc, is retrieved into S3, and each
of the shipped plugins runs on it as ``plugin-<name>`` actions in
localwhisk: the manifest's limits (memorySize from the descriptor, see
radcloud/run/resources.py), each container in its own memory cgroup, bubblewrap
as deployed. Each job must succeed with outputs. Then two broken fixture
plugins: memhog allocates past its action's memory and must be reported as
``oom``; sigkill dies of a SIGKILL that is not for memory and must not be.

The containers' memory peaks (each activation logs its plugin's) are written
to artifacts/plugin-memory.json.

lung-seg also runs on a CT study (a 32-slice 512² chest phantom: body, lungs
and bone to find) with ``push_to_pacs``: its SEG and SR must land in Orthanc
in the source study, readable by highdicom and referencing Orthanc's own
CT instances; its container peak goes to artifacts/lung-seg-deployed.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from radcloud.ops import deploy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SHIPPED = [p.name for p in deploy.plugin_dirs(deploy.ROOT / "plugins")]
DEMO_PATIENT = "RC100002"  # radcloud.ops.cli.demo: the study `make demo` runs its job on
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def world(job_world):
    assert job_world.env["RADCLOUD_DEID_SECRET"]  # deidentify needs it: deployed with it (jobflow.E2E_WORLD_ENV)
    return job_world


@pytest.fixture(scope="module")
def demo_retrieve(world, sample_encoder):
    from radcloud.ops.samples.seed import seed_orthanc
    from radcloud.ops.samples.spec import DEFAULT_SPEC

    spec = tuple(p for p in DEFAULT_SPEC if p.patient_id == DEMO_PATIENT)
    seeded = seed_orthanc(world.endpoints.settings(), spec=spec, include_pydicom_files=False,
                          encode=sample_encoder)
    assert seeded["failed"] == 0 and seeded["series"] == 2, seeded
    orthanc = world.endpoints.orthanc
    found = requests.post(orthanc.url + "/tools/find", auth=orthanc.auth, timeout=30,
                          json={"Level": "Study", "Expand": True, "Query": {"PatientID": DEMO_PATIENT}})
    found.raise_for_status()
    (study,) = [s["MainDicomTags"]["StudyInstanceUID"] for s in found.json()]
    return world.stage(study, timeout_s=120)


@pytest.fixture(scope="module")
def ct_study(world):
    """A chest CT study (no scout: one series, one shard) in Orthanc and staged: (study UID, retrieve id)."""
    from radcloud.ops.samples.seed import seed_orthanc
    from radcloud.ops.samples.spec import PatientSpec, SeriesSpec, StudySpec

    spec = (PatientSpec("LUNG^SEG", "RCL000001", "19700101", "F", (
        StudySpec("CT", "CT CHEST", "20250101", "090000", "RCL0000001", "CHEST", (
            SeriesSpec("AXIAL 5mm", "ct_axial", 32, slice_thickness=5.0, z_start=220.0),)),)),)
    seeded = seed_orthanc(world.endpoints.settings(), spec=spec, include_pydicom_files=False)
    assert seeded["failed"] == 0 and seeded["series"] == 1, seeded
    orthanc = world.endpoints.orthanc
    found = requests.post(orthanc.url + "/tools/find", auth=orthanc.auth, timeout=30,
                          json={"Level": "Study", "Expand": True, "Query": {"PatientID": "RCL000001"}})
    found.raise_for_status()
    (study,) = [s["MainDicomTags"]["StudyInstanceUID"] for s in found.json()]
    return study, world.stage(study, timeout_s=120)


def _memory_peaks(world, job) -> list[float]:
    """Each shard's container peak, from its activation's result (the runner's summary)."""
    peaks = []
    for shard in job["shards"]:
        deadline = time.monotonic() + 30
        # the shard records its outcome before its action returns: the record comes just after
        status, record = world.whisk.activation(shard["activation_id"])
        while status == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, record = world.whisk.activation(shard["activation_id"])
        assert status == 200, record
        peaks.append(record["response"]["result"]["memory_peak_mib"])
    return peaks


def test_each_shipped_plugin_succeeds_through_localwhisk_as_deployed(world, demo_retrieve):
    manifest = deploy.manifest_actions(deploy.load_manifest())
    jobs = {}
    for plugin in SHIPPED:  # all dispatched first: they run side by side, as users' jobs do
        status, deployed = world.whisk.client.request("GET", f"/api/v1/namespaces/_/actions/radcloud/plugin-{plugin}")
        assert status == 200 and deployed["limits"]["memory"] == manifest[f"plugin-{plugin}"]["limits"]["memorySize"]
        answer = world.call("dispatch", {"plugin": plugin, "inputs": {"retrieve": demo_retrieve},
                                         "options": {"force": True}})
        assert answer.get("job_id"), (plugin, answer)
        jobs[plugin] = answer["job_id"]
    peaks = {}
    for plugin, job_id in jobs.items():
        job = world.wait_final(job_id, timeout_s=300)
        reasons = [(s["state"], s.get("reason"), s.get("stderr_tail", "")[-300:]) for s in job["shards"]]
        assert job["state"] == "succeeded", (plugin, reasons)
        outputs = world.call("results", {"job_id": job_id})["outputs"]
        assert {o["shard"] for o in outputs} == {s["id"] for s in job["shards"]}, (plugin, outputs)
        assert all(o["size"] > 0 for o in outputs)
        confined = {s.get("sandbox") or "" for s in job["shards"]}  # never unconfined, whichever executor
        descriptor = json.loads((deploy.ROOT / "plugins" / plugin / "descriptor.json").read_text())
        if (descriptor.get("radcloud") or {}).get("network"):
            assert all(c.startswith(("bubblewrap", "Landlock")) for c in confined), (plugin, confined)
        else:  # no way out: a network namespace of its own, or Landlock (TCP) and seccomp (any internet socket)
            assert all(c.startswith("bubblewrap") or (c.startswith("Landlock") and "no internet sockets" in c)
                       for c in confined), (plugin, confined)
        if job["options"].get("executor") == "slurm":  # bigger than an action: routed to the world's Slurm
            assert all(s["executor"] == "slurm" and s["activation_id"].isdigit() for s in job["shards"]), job
            continue
        found = _memory_peaks(world, job)
        assert all(isinstance(p, float) and p > 0 for p in found), (plugin, found)  # the cgroup was readable
        peaks[plugin] = {"peak_mib": max(found), "memorySize_mb": manifest[f"plugin-{plugin}"]["limits"]["memorySize"],
                         "shards": len(found), "sandbox": sorted(confined)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "plugin-memory.json").write_text(json.dumps(peaks, indent=2))


def test_a_plugin_past_its_action_memory_is_reported_as_oom(world, demo_retrieve):
    answer = world.call("dispatch", {"plugin": "memhog", "inputs": {"retrieve": demo_retrieve},
                                     "options": {"force": True}})
    job = world.wait_final(answer["job_id"], timeout_s=120)
    assert job["state"] == "failed", job
    for shard in job["shards"]:
        assert shard["reason"].startswith("oom"), shard
        assert "OOM killer" in shard["reason"] and "200 MiB limit" in shard["reason"], shard


def test_a_sigkill_not_for_memory_is_a_crash_that_says_so(world, demo_retrieve):
    answer = world.call("dispatch", {"plugin": "sigkill", "inputs": {"retrieve": demo_retrieve},
                                     "options": {"force": True}})
    job = world.wait_final(answer["job_id"], timeout_s=120)
    assert job["state"] == "failed", job
    for shard in job["shards"]:
        assert shard["reason"].startswith("crash"), shard
        assert "SIGKILL" in shard["reason"] and "no OOM kill was counted" in shard["reason"], shard
        assert "about to be killed" in shard["stderr_tail"]


def test_lung_seg_on_ct_as_deployed_pushes_a_seg_and_sr_onto_orthancs_own_images(world, ct_study):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    study_uid, rid = ct_study
    answer = world.call("dispatch", {"plugin": "lung-seg", "inputs": {"retrieve": rid},
                                     "options": {"force": True, "push_to_pacs": True}})
    started = time.monotonic()
    job = world.wait_final(answer["job_id"], timeout_s=300)
    seconds = time.monotonic() - started
    assert job["state"] == "succeeded", [(s["state"], s.get("reason"), s.get("stderr_tail", "")[-300:])
                                         for s in job["shards"]]
    assert int(job.get("pacs_instances") or 0) == 3, job  # SEG, SR and the preview as Secondary Capture
    (peak,) = _memory_peaks(world, job)
    limit = deploy.manifest_actions(deploy.load_manifest())["plugin-lung-seg"]["limits"]["memorySize"]
    assert 0 < peak < limit
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "lung-seg-deployed.json").write_text(json.dumps(
        {"slices": 32, "matrix": 512, "peak_mib": peak, "memorySize_mb": limit, "job_seconds": round(seconds, 1)}))

    orthanc = world.endpoints.orthanc

    def get(route: str, **kw):
        r = requests.get(orthanc.url + route, auth=orthanc.auth, timeout=60, **kw)
        r.raise_for_status()
        return r

    (study,) = requests.post(orthanc.url + "/tools/find", auth=orthanc.auth, timeout=30, json={
        "Level": "Study", "Query": {"StudyInstanceUID": study_uid}}).json()
    series = {s["MainDicomTags"]["Modality"]: s for s in get(f"/studies/{study}/series").json()}
    assert set(series) == {"CT", "SEG", "SR", "OT"}, set(series)
    ct_uids = {i["MainDicomTags"]["SOPInstanceUID"] for i in get(f"/series/{series['CT']['ID']}/instances").json()}

    def fetch(modality: str, path):
        (inst,) = series[modality]["Instances"]
        path.write_bytes(get(f"/instances/{inst}/file").content)
        return path

    out = ARTIFACTS / "lung-seg-deployed"
    out.mkdir(exist_ok=True)
    seg = hd.seg.segread(fetch("SEG", out / "seg.dcm"))
    assert {u[2] for u in seg.get_source_image_uids()} == ct_uids  # every frame on one of Orthanc's CT images
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert labels == {1: "Soft tissue", 2: "Right lung", 3: "Left lung", 4: "Bone"}
    lungs = seg.get_pixels_by_source_instance(sorted(ct_uids), segment_numbers=[2, 3])
    assert lungs[..., 0].sum() > 1000 and lungs[..., 1].sum() > 1000  # both lungs found
    sr = hd.sr.srread(fetch("SR", out / "sr.dcm"))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert {g.referenced_segment.referenced_sop_instance_uid for g in groups} == {seg.SOPInstanceUID}
    volumes = {str(g.tracking_identifier): g.get_measurements(name=codes.SCT.Volume)[0].value for g in groups}
    assert volumes["Right lung"] > 50 and volumes["Left lung"] > 50, volumes
