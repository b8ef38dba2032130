"""The viewer page in real headless Chromium, through the deployed ``viewer`` and ``ui`` actions.

A 20-slice CT (the synthetic phantom, 128 px) is staged as retrieve stages
a series; viewer.e2e.mjs opens it, scrolls, windows and zooms, reading the
pixels dwv draws. Each test checks one step of that one browser run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def viewer_run(site, staged_ct, tmp_path_factory):
    xdg = tmp_path_factory.mktemp("xdg-viewer")
    env = {**os.environ, "RC_UI": site.ui,
           "RC_USER": site.user, "RC_PASSWORD": site.password, "RC_SERIES": str(staged_ct[0].SeriesInstanceUID),
           "RC_SHOTS": str(SHOTS), "XDG_CONFIG_HOME": str(xdg / "config"), "XDG_CACHE_HOME": str(xdg / "cache"),
           "HOME": str(xdg)}
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
