"""The walk a radiologist takes, in real headless Chromium through the deployed actions.

A 20-slice CT (the synthetic phantom, 128 px, with a frame of reference)
is stored in the test PACS (Orthanc). viewer.e2e.mjs, phase *walk*:
search it by MRN, pull it, open it in the viewer from the Pull page
(scroll, window, zoom, read the pixels dwv draws), run the deployed
lung-seg on the pull with "Send results back to the PACS". The test then
reads the job's SEG and SR, and the copies Orthanc now holds in the CT's
study. Phase *results*: open the job (the SEG overlay must be drawn on a
voxel the SEG marks and not on one it does not, the SR table must hold the
SR's measurements), then pull the study again from the PACS and open the
pushed SEG from the Pull page: the same overlay and table, from the PACS
copy. Each test checks one step of those two browser runs.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests

SEG_CLASS, SR_3D_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def pacs_ct(stack):
    """The phantom CT, stored in Orthanc as a modality would send it."""
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.ops.samples import viewerdata

    ct = viewerdata.ct_series(20, 128, tag="WALK")
    orthanc = Orthanc.from_settings(stack.settings)
    for ds in ct:
        orthanc.store_instance(viewerdata.ds_bytes(ds))
    return ct


def _api(site):
    base = site.ui.rsplit("/", 1)[0] + "/"
    token = requests.post(base + "login", json={"username": site.user, "password": site.password},
                          timeout=30).json()["token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return base, session


@pytest.fixture(scope="module")
def walk(site, pacs_ct, run_browser):
    """Phase walk: search, pull, open, tour, lung-seg with push to the PACS."""
    return run_browser("viewer.e2e.mjs", {"RC_UI": site.ui, "RC_USER": site.user, "RC_PASSWORD": site.password,
                                          "RC_PHASE": "walk", "RC_MRN": str(pacs_ct[0].PatientID)},
                       record="viewer-walk.json", timeout=400)


@pytest.fixture(scope="module")
def lung_seg_job(site, pacs_ct, walk):
    """The walk's lung-seg job: its SEG and SR as written, and probe voxels."""
    record = walk.ok("lung-seg-with-push")
    assert record["state"] == "succeeded", record
    base, http = _api(site)
    job_id = record["job"]
    outputs = http.get(f"{base}results/{job_id}", params={"urls": "true"}, timeout=30).json()["outputs"]
    fetch = {kind: pydicom.dcmread(io.BytesIO(requests.get(o["url"], timeout=30).content))
             for o in outputs for kind in ("seg", "sr") if f"/{kind}/" in "/" + o["name"]}
    seg, sr = fetch["seg"], fetch["sr"]
    # Where segment 1 is, on one source slice: the voxel nearest its centre of mass there, and a
    # voxel of that slice no segment marks (a corner: air outside the body).
    by_sop = {str(ds.SOPInstanceUID): ds for ds in pacs_ct}
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
    from radcloud.results.viewer import sr_rows

    return {"job_id": job_id, "sop": sop, "inside": (int(rows[k]), int(cols[k])), "outside": (1, 1),
            "segment_label": str(seg.SegmentSequence[0].SegmentLabel), "sr_rows": sr_rows(sr),
            "segments": [str(s.SegmentLabel) for s in seg.SegmentSequence], "source": by_sop[sop],
            "seg": seg, "sr": sr}


@pytest.fixture(scope="module")
def in_pacs(stack, pacs_ct, lung_seg_job):
    """What Orthanc holds in the CT's study after the job: every series' instances, by modality."""
    from radcloud.pacs.orthanc import Orthanc

    orthanc = Orthanc.from_settings(stack.settings)
    held = {}
    for series in orthanc.find("Series", {"StudyInstanceUID": str(pacs_ct[0].StudyInstanceUID)}, expand=True):
        modality = series["MainDicomTags"].get("Modality")
        held.setdefault(modality, []).extend(
            pydicom.dcmread(io.BytesIO(b"".join(orthanc.iter_instance(i["ID"])))) for i in orthanc.series_instances(series["ID"]))
    return held


@pytest.fixture(scope="module")
def split_seg(stack, pacs_ct, in_pacs):
    """A SEG series of two files in the CT's study, a box each (some tools write a file per segment);
    stored after in_pacs has read the job's SEG, so the results phase pulls it with the study."""
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.ops.samples import viewerdata

    first = viewerdata.seg_of(pacs_ct, viewerdata.Box(2, 5, 20, 40, 20, 40))
    second = viewerdata.seg_of(pacs_ct, viewerdata.Box(12, 15, 80, 100, 80, 100))
    second.SeriesInstanceUID, second.InstanceNumber = first.SeriesInstanceUID, 2
    orthanc = Orthanc.from_settings(stack.settings)
    for ds in (first, second):
        orthanc.store_instance(viewerdata.ds_bytes(ds))
    probes = [(pacs_ct[3], 30, 30), (pacs_ct[13], 90, 90), (pacs_ct[13], 30, 30)]  # box 1, box 2, neither
    return {"series": str(first.SeriesInstanceUID),
            "probes": ";".join(f"{ds.SOPInstanceUID},{r},{c}" for ds, r, c in probes)}


@pytest.fixture(scope="module")
def results_run(site, pacs_ct, lung_seg_job, in_pacs, split_seg, run_browser):
    """Phase results: the job in the viewer, then the SEG pulled back from the PACS."""
    return run_browser("viewer.e2e.mjs", {
        "RC_UI": site.ui, "RC_USER": site.user, "RC_PASSWORD": site.password, "RC_PHASE": "results",
        "RC_MRN": str(pacs_ct[0].PatientID), "RC_JOB": lung_seg_job["job_id"],
        "RC_SEG_SERIES": str(in_pacs["SEG"][0].SeriesInstanceUID), "RC_PROBE_SOP": lung_seg_job["sop"],
        "RC_INSIDE": "%d,%d" % lung_seg_job["inside"], "RC_OUTSIDE": "%d,%d" % lung_seg_job["outside"],
        "RC_SPLIT_SEG": split_seg["series"], "RC_SPLIT_PROBES": split_seg["probes"]},
        record="viewer-results.json", timeout=400)


def test_opening_a_staged_series_shows_every_slice_and_its_thumbnail(walk):
    record = walk.ok("open-series")
    assert record["slices"] == 20 and record["error"] is None
    assert "CT" in record["title"] and "20 images" in record["title"]
    assert record["thumbs"] == 1
    assert record["wl"] == {"center": 40, "width": 400}  # the window stored in the images


def test_wheel_keys_and_slider_scroll(walk):
    record = walk.ok("scroll")
    assert record["afterWheel"] == record["start"] + 2
    assert record["afterKey"] == record["afterWheel"] + 1
    assert record["afterSlider"] == 7 and record["label"] == "Slice 8 / 20"


def test_dragging_and_presets_window_the_raw_pixels(walk):
    record = walk.ok("window-level")
    assert record["wlDrag"] != record["wlBefore"]
    assert record["wlLung"] == {"center": -600, "width": 1500} and record["wlBone"] == {"center": 400, "width": 1800}
    grey = [record[k]["image"][0] for k in ("before", "afterDrag", "afterLung", "afterBone")]
    assert len(set(grey)) == 4, f"the same voxel under four windows drew {grey}"
    assert record["pressed"] == "true"


def test_zoom_and_pan(walk):
    record = walk.ok("zoom-pan")
    assert record["zoomed"] > record["before"] and record["panned"]
    assert record["after_reset"] == record["before"]


def test_a_draw_from_an_empty_canvas_is_skipped_and_counted_not_a_page_error(walk):
    record = walk.ok("empty-draw")
    assert record["threw"] is None and record["counted"] == 1, record
    assert record["drawn"] == [255, 0, 0, 255], record   # a canvas with pixels is drawn as before
    assert "empty-draw" not in record["where"] and record["where"], record   # where it came from: a stack


def test_a_resize_while_the_viewer_has_no_width_is_not_a_page_error(walk):
    record = walk.ok("fit-without-width")
    assert record["hidden"]["box"] == 0 and record["hidden"]["canvas"] > 0, record  # left as it was, not resized to 0
    assert record["shown"]["box"] > 0 and record["shown"]["canvas"] > 0, record     # fitted again once shown
    # and no page error: test_the_browser_fetches_nothing_from_outside_and_logs_no_error
    assert not [e for e in walk["summary"]["console_errors"] if "Cannot resize canvas" in e], walk["summary"]["console_errors"]


def test_the_walk_searches_pulls_and_runs_lung_seg_with_push_from_the_ui(walk, pacs_ct):
    assert walk.ok("search-and-pull")["series"] == [str(pacs_ct[0].SeriesInstanceUID)]
    assert walk.ok("open-series")["series"] == str(pacs_ct[0].SeriesInstanceUID)  # opened from the Pull page
    record = walk.ok("lung-seg-with-push")
    assert record["state"] == "succeeded" and record["options"]["push_to_pacs"] is True
    assert record["pacs"].startswith("Sent to the PACS: 3 object(s)")  # SEG, SR and the preview (Secondary Capture)


def test_a_result_series_opens_from_the_results_page(walk):
    """A job that writes DICOM images (deidentify's copies): Results -> Open in the viewer shows them."""
    record = walk.ok("result-series")
    assert record["url"] == f"/viewer?job={record['job']}"
    assert record["slices"] == 20 and record["title"].startswith("Results of job") and "20 images" in record["title"]


def test_the_browser_fetches_nothing_from_outside_and_logs_no_error(walk, results_run):
    for run in (walk, results_run):
        assert run["summary"]["external_requests"] == []
        assert run["summary"]["console_errors"] == []


def test_every_view_is_in_the_audit_trail(walk, stack, pacs_ct):
    from radcloud.access import audit

    entries = audit.page(stack.redis, limit=200, action="viewer:get")["entries"]
    series = str(pacs_ct[0].SeriesInstanceUID)
    opened = [e for e in entries if series in (e["what"].get("series_uids") or [])]
    assert opened and opened[-1]["who"] == "dr.jones"
    assert opened[-1]["what"]["study_uids"] == [str(pacs_ct[0].StudyInstanceUID)]


def _overlay_drawn_where_the_seg_marks(record, job):
    assert record["segments"] == [{"number": i + 1, "label": label} for i, label in enumerate(job["segments"])]
    assert record["inside"]["seg"][3] > 0, record["inside"]         # coloured over the segmented voxel
    assert record["outside"]["seg"][3] == 0, record["outside"]      # transparent outside every segment
    assert record["hidden"]["seg"][3] == 0                          # segment 1 unticked: gone
    assert record["opaque"]["seg"][3] > record["inside"]["seg"][3]  # opacity 100 %: stronger colour
    assert record["opacity"] == 1


def _table_is_the_sr(record, job):
    expected = [[r["segment"], r["name"], f"{r['value']:.1f}", r["unit"]] for r in job["sr_rows"]]
    assert expected and record["rows"] == expected and record["visible"]
    assert {r[0] for r in record["rows"]} >= {job["segment_label"]}


def test_the_seg_is_drawn_where_it_marks_and_nowhere_else(results_run, lung_seg_job):
    _overlay_drawn_where_the_seg_marks(results_run.ok("seg-overlay"), lung_seg_job)


def test_the_sr_table_lists_the_sr_measurements(results_run, lung_seg_job):
    _table_is_the_sr(results_run.ok("sr-table"), lung_seg_job)


def test_the_job_pushed_its_seg_and_sr_into_the_ct_study_in_orthanc(in_pacs, lung_seg_job, pacs_ct):
    import highdicom as hd

    (seg,), (sr,) = in_pacs["SEG"], in_pacs["SR"]
    assert (seg.SOPClassUID, sr.SOPClassUID) == (SEG_CLASS, SR_3D_CLASS)
    assert seg.SOPInstanceUID == lung_seg_job["seg"].SOPInstanceUID and sr.SOPInstanceUID == lung_seg_job["sr"].SOPInstanceUID
    source = str(pacs_ct[0].SeriesInstanceUID)
    assert [str(r.SeriesInstanceUID) for r in seg.ReferencedSeriesSequence] == [source]
    read = hd.seg.Segmentation.from_dataset(seg)
    assert {str(uid) for _, _, uid in read.get_source_image_uids()} == {str(ds.SOPInstanceUID) for ds in pacs_ct}
    assert str(seg.FrameOfReferenceUID) == str(pacs_ct[0].FrameOfReferenceUID)
    from radcloud.results.viewer import _evidence, sr_rows

    assert str(seg.SOPInstanceUID) in _evidence(sr) and sr_rows(sr) == lung_seg_job["sr_rows"]
    assert len(in_pacs["CT"]) == 20 and "OT" in in_pacs  # the preview, a picture: Secondary Capture
    # #21 item 2: numbered and described after the source series, the picture naming its source.
    n = int(pacs_ct[0].SeriesNumber)
    assert (int(in_pacs["OT"][0].SeriesNumber), int(seg.SeriesNumber), int(sr.SeriesNumber)) == (100 * n + 1, 100 * n + 2,
                                                                                                100 * n + 3)
    assert seg.SeriesDescription.startswith(f"radcloud lung-seg segmentation of #{n}")
    assert in_pacs["OT"][0].ReferencedSeriesSequence[0].SeriesInstanceUID == source


def test_the_viewer_names_whose_images_in_a_fixed_header(walk, results_run, pacs_ct):
    """#21 item 1 on the viewer page: patient, MRN, birth date, study and the series shown."""
    ct = pacs_ct[0]
    for record in (walk.ok("open-series"), results_run.ok("seg-overlay"), results_run.ok("pacs-seg-overlay")):
        text = record["identity"]
        assert str(ct.PatientID) in text and "Born" in text and "Series:" in text, text
        assert str(ct.PatientName).split("^")[0] in text, text
    assert str(ct.PatientID) in walk.ok("open-series")["doc_title"]


def test_the_seg_pulled_back_from_the_pacs_is_drawn_over_its_source_with_its_sr(results_run, lung_seg_job, in_pacs):
    assert str(in_pacs["SEG"][0].SeriesInstanceUID) in results_run.ok("pull-from-pacs")["series"]
    record = results_run.ok("pacs-seg-overlay")
    assert record["url"].startswith("/viewer?series=") and "segmentation" in record["title"]
    # The study's strip: the CT, the preview, the SEG (opens as this overlay), the SR (no image: not a link).
    tiles = {t["caption"].split(" · ")[0]: t["disabled"] for t in record["thumbs"]}
    assert tiles == {"CT": False, "OT": False, "SEG": False, "SR": True}, record["thumbs"]
    _overlay_drawn_where_the_seg_marks(record, lung_seg_job)
    _table_is_the_sr(results_run.ok("pacs-sr-table"), lung_seg_job)


def test_opening_a_job_or_a_pacs_seg_is_audited_with_its_source_series(results_run, stack, lung_seg_job, in_pacs):
    from radcloud.access import audit

    entries = audit.page(stack.redis, limit=200, action="viewer:get")["entries"]
    source = str(lung_seg_job["source"].SeriesInstanceUID)
    job_views = [e for e in entries if e["what"].get("job_id") == [lung_seg_job["job_id"]]]
    assert job_views and job_views[0]["what"]["series_uids"] == [source]
    seg_series = str(in_pacs["SEG"][0].SeriesInstanceUID)
    seg_views = [e["what"]["series_uids"] for e in entries if seg_series in (e["what"].get("series_uids") or [])]
    assert [source, seg_series] in seg_views  # the overlay: the SEG and the images it was drawn on


def test_a_seg_series_of_several_files_is_drawn_from_every_file(results_run):
    """#19: the viewer overlaid only the first file of a SEG series; each file's box must be coloured."""
    record = results_run.ok("split-seg-overlay")
    assert record["files"] == 2 and len(record["segments"]) == 2, record
    assert record["labels"] == ["Lesion (file 1)", "Lesion (file 2)"], record["labels"]   # told apart
    first, second, neither = record["boxes"]
    assert first["seg"][3] > 0, first      # the first file's box, on its slice
    assert second["seg"][3] > 0, second    # the second file's box: missing before the fix
    assert neither["seg"][3] == 0, neither
    assert first["index"] != second["index"]
