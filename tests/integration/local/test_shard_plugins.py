"""The five real plugins run through the shard runner, sandboxed, with their descriptor limits.

Inputs are staged from an in-memory store exactly as a shard gets them, so
this proves the descriptors, argv building, limits (no network; memory is
the action container's, proven through localwhisk in
tests/e2e/test_plugins_deployed.py) and output upload work for real code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radcloud.run import sandbox
from radcloud.run.registry import Registry
from radcloud.core.settings import Secret
from radcloud.run.shard import run_shard
from shard_fakes import FakeStore, RecordingReporter

from plugin_helpers import TEST_FILES, write_ct_series  # tests/unit/plugins/, on pytest's pythonpath

REGISTRY = Registry(Path(__file__).resolve().parents[3] / "plugins")
USE_BWRAP = sandbox.bwrap_works()
# Sandboxed as deployed: without bubblewrap these fail in CI and skip elsewhere.
pytestmark = pytest.mark.usefixtures("needs_bwrap")


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> FakeStore:
    root = tmp_path_factory.mktemp("staged")
    paths = write_ct_series(root / "ct", count=10, rows=128)
    objects = {f"staged/j/ct/{p.name}": p.read_bytes() for p in paths}
    for name in ("CT_small.dcm", "MR_small_jp2klossless.dcm"):
        objects[f"staged/j/real/{name}"] = (TEST_FILES / name).read_bytes()
    return FakeStore(objects)


def shard(store: FakeStore, plugin: str, prefix: str, params=None, env=None, deid_secret=None, ok=True):
    rep = RecordingReporter()
    inputs = sorted(k for k in store.objects if k.startswith(prefix))
    summary = run_shard({"job_id": "j", "shard_id": f"j-{plugin}", "plugin": plugin, "params": params or {},
                         "inputs": inputs, "input_prefix": prefix, "output_prefix": f"results/j/{plugin}/",
                         "env": env or {}}, store=store, reporter=rep, registry=REGISTRY, use_bwrap=USE_BWRAP,
                        deid_secret=deid_secret)
    out = rep.outcome
    if not ok:
        return summary, out, rep
    assert out["reason"] == "ok", (out["message"], out["stderr_tail"])
    logs = "\n".join(rep.lines) + out["stderr_tail"] + json.dumps(rep.events)
    assert "DOE" not in logs and "MRN0001" not in logs and "19600101" not in logs  # no PHI in logs
    return summary, out, {o["key"].split(f"results/j/{plugin}/", 1)[1]: o for o in out["outputs"]}


def test_registry_lists_the_shipped_plugins():
    assert REGISTRY.names() == ["ct-resample", "dcm2niix", "dcm2png", "deidentify", "dicom-tags", "lung-seg", "segment-stats"]


def test_dcm2png(staged):
    summary, out, files = shard(staged, "dcm2png", "staged/j/ct/")
    assert summary["n_outputs"] == len(files) == 10 + 10 + 1 + 2  # png, thumbnails, montage, index, file-reasons
    assert files["IM00001.png"]["content_type"] == "image/png"


def test_dicom_tags(staged):
    _, _, files = shard(staged, "dicom-tags", "staged/j/ct/")
    assert set(files) == {"tags.json", "series.csv", "instances.csv", "file-reasons.json"}
    report = json.loads(staged.objects["results/j/dicom-tags/tags.json"])
    assert report["series"][0]["instances"] == 10 and report["series"][0]["issues"] == []


def test_dcm2niix(staged):
    _, _, files = shard(staged, "dcm2niix", "staged/j/ct/")
    nii = [k for k in files if k.endswith(".nii.gz")]
    assert len(nii) == 1 and files[nii[0]]["content_type"] == "application/gzip"


def test_deidentify_with_the_deid_secret_setting_maps_hospital_side(staged):
    # The caller tries to steer the key variable and the map into the outputs: both are overridden.
    _, out, files = shard(staged, "deidentify", "staged/j/ct/", deid_secret=Secret("s" * 24),
                          params={"secretEnv": "RADCLOUD_JOB_ID", "mapDir": "../outgoing/map"})
    dicoms = [k for k in files if k.endswith(".dcm")]
    assert len(dicoms) == 10 and all(k.startswith("2.25.") for k in dicoms)
    assert not any(b"MRN0001" in staged.objects[f"results/j/deidentify/{k}"] for k in dicoms)
    reid = json.loads(staged.objects["deid-maps/j/j-deidentify.json"])
    assert reid["patients"][0]["patient_id"] == "MRN0001" and len(reid["uids"]) >= 10
    assert set(files) == {*dicoms, "deidentify.json", "file-reasons.json"}  # the map is no output
    assert not any(b"MRN0001" in staged.objects[o["key"]] for o in out["outputs"])


def test_deidentify_without_the_setting_fails_before_running(staged):
    # A secret in the payload's env is not the setting: the shard refuses without starting the plugin.
    summary, out, rep = shard(staged, "deidentify", "staged/j/real/", env={"RADCLOUD_DEID_SECRET": "s" * 24},
                              ok=False)
    assert summary["status"] == "finishedWithError" and "deid_secret" in out["message"]
    assert out["outputs"] == [] and not [e for kind, e in rep.events if kind == "started"]


def test_segment_stats(staged):
    _, _, files = shard(staged, "segment-stats", "staged/j/ct/")
    assert {"measurements.json", "overlay/series-001.png", "seg/series-001.dcm", "sr/series-001.dcm"} <= set(files)
    assert files["seg/series-001.dcm"]["content_type"] == "application/dicom"


def test_lung_seg_writes_seg_sr_and_lists_what_it_skipped(staged):
    _, _, files = shard(staged, "lung-seg", "staged/j/ct/")
    assert {"lung-seg.json", "seg/series-001.dcm", "sr/series-001.dcm", "preview/series-001.png"} <= set(files)
    _, _, files = shard(staged, "lung-seg", "staged/j/real/")  # non-CT among them: reasons, not a crash
    report = json.loads(staged.objects["results/j/lung-seg/lung-seg.json"])
    assert report["skipped"] and all(s["reason"] for s in report["skipped"])


def test_real_compressed_files_through_dcm2png(staged):
    _, _, files = shard(staged, "dcm2png", "staged/j/real/", {"thumbnailSize": 0})
    assert {"CT_small.png", "MR_small_jp2klossless.png", "dcm2png.json", "file-reasons.json"} == set(files)


def test_one_bad_file_is_a_warning_with_its_reason_not_a_crashed_shard(staged):
    """pydicom's badVR.dcm (NumberOfFrames '1A') beside a good file: the shard succeeds
    with one warning naming the file and the real reason, in its outcome and its log."""
    bad = FakeStore({**staged.objects, "staged/j/mixed/badVR.dcm": (TEST_FILES / "badVR.dcm").read_bytes(),
                     "staged/j/mixed/CT_small.dcm": (TEST_FILES / "CT_small.dcm").read_bytes()})
    summary, out, _files = shard(bad, "dcm2png", "staged/j/mixed/", {"thumbnailSize": 0})
    assert summary["status"] == "finishedSuccessfully" and out["warnings"] == 1
    assert out["file_reasons"] == [{"file": "badVR.dcm", "reason": out["file_reasons"][0]["reason"]}]
    assert "NumberOfFrames '1A'" in out["file_reasons"][0]["reason"]
    assert out["message"].startswith("ok; 1 input file(s) not processed, first: badVR.dcm: ")
    assert "skipped badVR.dcm: " in out["stderr_tail"]


def test_deidentify_names_each_refused_file_and_only_the_descriptor_can_allow_it(staged):
    sc = FakeStore({**staged.objects, "staged/j/sc/SC_rgb_rle.dcm": (TEST_FILES / "SC_rgb_rle.dcm").read_bytes(),
                    "staged/j/sc/CT_small.dcm": (TEST_FILES / "CT_small.dcm").read_bytes()})
    # a caller's allow-list is overridden by the deployed descriptor's (empty) one
    summary, out, _files = shard(sc, "deidentify", "staged/j/sc/", deid_secret=Secret("s" * 24),
                                 params={"allowBurnedIn": "Secondary Capture Image Storage"})
    assert summary["status"] == "finishedSuccessfully" and out["warnings"] == 1
    (reason,) = out["file_reasons"]
    assert reason["file"] == "SC_rgb_rle.dcm"
    assert reason["reason"].startswith("refused: Secondary Capture Image Storage without BurnedInAnnotation")


def test_a_plugin_that_names_every_file_as_unusable_is_unprocessed_not_a_crash(staged):
    junk = FakeStore({**staged.objects, "staged/j/junk/notes.dcm": b"not DICOM"})
    summary, out, _rep = shard(junk, "segment-stats", "staged/j/junk/", ok=False)
    assert summary["status"] == "finishedWithError" and out["reason"] == "unprocessed", out
    assert out["message"] == ("plugin exited with code 1: none of its 1 input file(s) could be processed, first: "
                              "notes.dcm: not DICOM (no DICM preamble or file meta)")


def test_a_study_with_no_ct_succeeds_with_warnings_in_segment_stats(staged):
    # The demo's MR study: nothing to measure is not a failure; every file says why.
    mr = FakeStore({**staged.objects, "staged/j/mr/MR_small.dcm": (TEST_FILES / "MR_small.dcm").read_bytes()})
    summary, out, _rep = shard(mr, "segment-stats", "staged/j/mr/")
    assert summary["status"] == "finishedSuccessfully" and out["warnings"] == 1, out
    assert out["file_reasons"] == [{"file": "MR_small.dcm",
                                    "reason": "modality MR: segment-stats measures CT (Hounsfield units) only"}]
