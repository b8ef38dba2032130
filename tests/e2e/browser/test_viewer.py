"""The viewer page in real headless Chromium, through the deployed ``viewer`` and ``ui`` actions.

A 20-slice CT (the synthetic phantom, 128 px) is staged as retrieve stages
a series, and the deployed lung-seg plugin runs on it (dispatch, as the Run
page does), writing a DICOM SEG and a TID 1500 SR. viewer.e2e.mjs opens the
series, scrolls, windows and zooms, reading the pixels dwv draws; then opens
the job: the SEG overlay must be drawn on a voxel the SEG marks and not on
one it does not, and the SR table must hold the SR's measurements. Each test
checks one step of that one browser run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def staged_ct(stack):
    from radcloud.samples import viewerdata
    from radcloud.storage import ObjectStore

    ct = viewerdata.ct_series(20, 128)
    viewerdata.stage(ObjectStore.from_settings(stack.settings), stack.redis, ct)
    return ct


def _api(site):
    base = site.ui.rsplit("/", 1)[0] + "/"
    token = requests.post(base + "login", json={"username": site.user, "password": site.password},
                          timeout=30).json()["token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return base, session


@pytest.fixture(scope="module")
def lung_seg_job(site, staged_ct):
    """lung-seg run on the staged CT through dispatch; its SEG and SR as written, and probe voxels."""
    base, http = _api(site)
    answer = http.post(base + "dispatch", json={"plugin": "lung-seg", "inputs": {
        "series": [str(staged_ct[0].SeriesInstanceUID)]}}, timeout=60)
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    deadline = time.monotonic() + 240
    job = {"state": "queued"}
    while job.get("state") not in ("succeeded", "failed", "partial", "cancelled") and time.monotonic() < deadline:
        job = http.get(f"{base}status/{job_id}", params={"wait": 10, "since": job.get("version", 0)}, timeout=60).json()
    assert job.get("state") == "succeeded", job
    outputs = http.get(f"{base}results/{job_id}", params={"urls": "true"}, timeout=30).json()["outputs"]
    fetch = {kind: pydicom.dcmread(io.BytesIO(requests.get(o["url"], timeout=30).content))
             for o in outputs for kind in ("seg", "sr") if f"/{kind}/" in "/" + o["name"]}
    seg, sr = fetch["seg"], fetch["sr"]
    # Where segment 1 is, on one source slice: the voxel nearest its centre of mass there, and a
    # voxel of that slice no segment marks (a corner: air outside the body).
    by_sop = {str(ds.SOPInstanceUID): ds for ds in staged_ct}
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    best = None
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ident = item.get("SegmentIdentificationSequence") or seg.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence
        sop = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if int(ident[0].ReferencedSegmentNumber) == 1 and (best is None or frames[i].sum() > frames[best[0]].sum()):
            best = (i, sop)
    i, sop = best
    rows, cols = np.nonzero(frames[i])
    centre = np.array([rows.mean(), cols.mean()])
    k = int(np.argmin(((np.stack([rows, cols], 1) - centre) ** 2).sum(1)))
    marked = [frames[j] for j, item in enumerate(seg.PerFrameFunctionalGroupsSequence)
              if str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID) == sop]
    assert not any(f[1, 1] for f in marked)
    from radcloud.viewer import sr_rows

    return {"job_id": job_id, "sop": sop, "inside": (int(rows[k]), int(cols[k])), "outside": (1, 1),
            "segment_label": str(seg.SegmentSequence[0].SegmentLabel), "sr_rows": sr_rows(sr),
            "segments": [str(s.SegmentLabel) for s in seg.SegmentSequence], "source": by_sop[sop]}


@pytest.fixture(scope="module")
def viewer_run(site, staged_ct, lung_seg_job, tmp_path_factory):
    xdg = tmp_path_factory.mktemp("xdg-viewer")
    env = {**os.environ, "RC_UI": site.ui,
           "RC_USER": site.user, "RC_PASSWORD": site.password, "RC_SERIES": str(staged_ct[0].SeriesInstanceUID),
           "RC_SHOTS": str(SHOTS), "XDG_CONFIG_HOME": str(xdg / "config"), "XDG_CACHE_HOME": str(xdg / "cache"),
           "HOME": str(xdg), "RC_JOB": lung_seg_job["job_id"], "RC_PROBE_SOP": lung_seg_job["sop"],
           "RC_INSIDE": "%d,%d" % lung_seg_job["inside"], "RC_OUTSIDE": "%d,%d" % lung_seg_job["outside"]}
    proc = subprocess.run(["node", "viewer.e2e.mjs"], cwd=HERE, env=env, capture_output=True, text=True, timeout=300)
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            steps[record["step"]] = record
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "viewer.json").write_text(json.dumps(steps, indent=1))
    assert "summary" in steps, f"the browser script died:\n{proc.stderr[-3000:]}"
    return steps


def _ok(run, name):
    record = run.get(name)
    assert record is not None, f"step {name} not reached"
    assert record["ok"], f"{name}: {record.get('error')} (console: {record.get('console')})"
    return record


def test_opening_a_staged_series_shows_every_slice_and_its_thumbnail(viewer_run):
    record = _ok(viewer_run, "open-series")
    assert record["slices"] == 20 and record["error"] is None
    assert "CT" in record["title"] and "20 images" in record["title"]
    assert record["thumbs"] == 1
    assert record["wl"] == {"center": 40, "width": 400}  # the window stored in the images


def test_the_viewer_names_whose_images_in_a_fixed_header(viewer_run, staged_ct, lung_seg_job):
    """#21 item 1 on the viewer page: patient, MRN, birth date, study and the series shown."""
    ct = staged_ct[0]
    for text in (_ok(viewer_run, "open-series")["identity"], _ok(viewer_run, "seg-overlay")["identity"]):
        assert str(ct.PatientID) in text and "Born" in text and "Series:" in text, text
        assert str(ct.PatientName).split("^")[0] in text, text
    assert str(ct.PatientID) in _ok(viewer_run, "open-series")["doc_title"]


def test_wheel_keys_and_slider_scroll(viewer_run):
    record = _ok(viewer_run, "scroll")
    assert record["afterWheel"] == record["start"] + 2
    assert record["afterKey"] == record["afterWheel"] + 1
    assert record["afterSlider"] == 7 and record["label"] == "Slice 8 / 20"


def test_dragging_and_presets_window_the_raw_pixels(viewer_run):
    record = _ok(viewer_run, "window-level")
    assert record["wlDrag"] != record["wlBefore"]
    assert record["wlLung"] == {"center": -600, "width": 1500} and record["wlBone"] == {"center": 400, "width": 1800}
    grey = [record[k]["image"][0] for k in ("before", "afterDrag", "afterLung", "afterBone")]
    assert len(set(grey)) == 4, f"the same voxel under four windows drew {grey}"
    assert record["pressed"] == "true"


def test_zoom_and_pan(viewer_run):
    record = _ok(viewer_run, "zoom-pan")
    assert record["zoomed"] > record["before"] and record["panned"]
    assert record["after_reset"] == record["before"]


def test_the_viewer_fetches_nothing_from_outside_and_logs_no_error(viewer_run):
    summary = viewer_run["summary"]
    assert summary["external_requests"] == []
    assert summary["console_errors"] == []


def test_every_view_is_in_the_audit_trail(viewer_run, stack, staged_ct):
    from radcloud import audit

    entries = [e for e in audit.page(stack.redis, limit=200, action="viewer:get")["entries"] ]
    series = str(staged_ct[0].SeriesInstanceUID)
    opened = [e for e in entries if series in (e["what"].get("series_uids") or [])]
    assert opened and opened[0]["who"] == "dr.jones"
    assert opened[0]["what"]["study_uids"] == [str(staged_ct[0].StudyInstanceUID)]


def test_the_seg_is_drawn_where_it_marks_and_nowhere_else(viewer_run, lung_seg_job):
    record = _ok(viewer_run, "seg-overlay")
    assert record["segments"] == [{"number": i + 1, "label": label} for i, label in enumerate(lung_seg_job["segments"])]
    assert record["inside"]["seg"][3] > 0, record["inside"]         # coloured over the segmented voxel
    assert record["outside"]["seg"][3] == 0, record["outside"]      # transparent outside every segment
    assert record["hidden"]["seg"][3] == 0                          # segment 1 unticked: gone
    assert record["opaque"]["seg"][3] > record["inside"]["seg"][3]  # opacity 100 %: stronger colour
    assert record["opacity"] == 1


def test_the_sr_table_lists_the_sr_measurements(viewer_run, lung_seg_job):
    record = _ok(viewer_run, "sr-table")
    expected = [[r["segment"], r["name"], f"{r['value']:.1f}", r["unit"]] for r in lung_seg_job["sr_rows"]]
    assert expected and record["rows"] == expected and record["visible"]
    assert {r[0] for r in record["rows"]} >= {lung_seg_job["segment_label"]}


def test_opening_a_job_is_audited_with_its_source_series(viewer_run, stack, lung_seg_job):
    from radcloud import audit

    entries = audit.page(stack.redis, limit=200, action="viewer:get")["entries"]
    job_views = [e for e in entries if e["what"].get("job_id") == [lung_seg_job["job_id"]]]
    assert job_views and job_views[0]["what"]["series_uids"] == [str(lung_seg_job["source"].SeriesInstanceUID)]
