"""The SEG in Orthanc's own viewer: OHIF v3, served by the stack's Orthanc at /ohif/ (#19, "in Orthanc").

The stack's Orthanc (started by radcloud's stack code, with the OHIF build `make install` made in
deploy/ohif/build) holds a 20-slice CT, a highdicom SEG of a box on it and a TID 1500 SR of that
segment, as radcloud's push_to_pacs leaves them. ohif.e2e.mjs, in headless Chromium, logged in to
Orthanc with Orthanc's own account: the study list, the study in OHIF's viewer, and the same voxels
of one CT slice read from the canvas before and after OHIF loads the SEG.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

BOX = (5, 15, 30, 90, 30, 90)  # slices 5-14, rows and columns 30-89


@pytest.fixture(scope="module")
def ohif_study(stack):
    """The CT, its SEG and SR in Orthanc, and two voxels of one slice: one the SEG marks, and one of
    soft tissue (grey in the CT's stored window, 40/400) that it does not."""
    from radcloud.ops.samples import viewerdata
    from radcloud.pacs.orthanc import Orthanc

    ct = viewerdata.ct_series(20, 128, tag="OHIF")
    seg = viewerdata.seg_of(ct, viewerdata.Box(*BOX))
    sr, rows = _report(ct, seg)
    orthanc = Orthanc.from_settings(stack.settings)
    for ds in (*ct, seg, sr):
        orthanc.store_instance(viewerdata.ds_bytes(ds))
    probe = ct[10]
    hu = probe.pixel_array * float(probe.RescaleSlope) + float(probe.RescaleIntercept)
    return {"ct": ct, "seg": seg, "sr": sr, "rows": rows, "probe": probe, "inside": (60, 60),
            "outside": _soft_tissue_outside(hu)}


def _report(ct, seg):
    """The SR radcloud's plugins write (radcloud.results.segsr) of the SEG's one segment, and its rows."""
    from radcloud.results import segsr
    from radcloud.results.viewer import sr_rows

    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ct])
    labels = np.zeros(hu.shape, np.uint8)
    labels[BOX[0]:BOX[1], BOX[2]:BOX[3], BOX[4]:BOX[5]] = 1
    described = seg.SegmentSequence[0]
    lesion = segsr.Segment(1, str(described.SegmentLabel), segsr.codes.SCT.MorphologicallyAbnormalStructure,
                           segsr.codes.SCT.Neoplasm, (255, 0, 0))
    dy, dx = (float(v) for v in ct[0].PixelSpacing)
    voxel_ml = dy * dx * float(ct[0].SliceThickness) / 1000.0
    algorithm = segsr.Algorithm("radcloud ohif test", "1")
    sr = segsr.measurement_report(seg, ct, [lesion], segsr.label_stats(hu, labels, voxel_ml, [1]), algorithm,
                                  rois=segsr.slice_rois(hu, labels, [1]))
    return sr, sr_rows(sr)


def _soft_tissue_outside(hu):
    """A voxel 3+ voxels from the box whose 5x5 neighbourhood is soft tissue (-60 to 140 HU)."""
    for r in range(4, 124, 2):
        for c in range(4, 124, 2):
            near_box = BOX[2] - 3 <= r < BOX[3] + 3 and BOX[4] - 3 <= c < BOX[5] + 3
            patch = hu[r - 2:r + 3, c - 2:c + 3]
            if not near_box and ((patch > -60) & (patch < 140)).all():
                return r, c
    raise AssertionError("the phantom slice has no soft tissue outside the box")


@pytest.fixture(scope="module")
def ohif_run(stack, ohif_study, run_browser):
    user, password = stack.orthanc_auth
    ct = ohif_study["ct"][0]
    return run_browser("ohif.e2e.mjs", {
        "RC_ORTHANC": stack.orthanc_url, "RC_ORTHANC_USER": user, "RC_ORTHANC_PASSWORD": password,
        "RC_STUDY": str(ct.StudyInstanceUID), "RC_PATIENT": ", ".join(str(ct.PatientName).split("^")),  # OHIF's "Family, Given"
        "RC_PROBE_SOP": str(ohif_study["probe"].SOPInstanceUID),
        "RC_INSIDE": "%d,%d" % ohif_study["inside"], "RC_OUTSIDE": "%d,%d" % ohif_study["outside"],
        "RC_SERIES": "|".join(str(ds.SeriesDescription) for ds in (ct, ohif_study["seg"], ohif_study["sr"]))},
        record="ohif.json", timeout=300)


def test_orthanc_serves_ohif_behind_its_own_login_against_its_own_dicomweb(stack):
    base = stack.orthanc_url.rstrip("/")
    assert requests.get(f"{base}/ohif/viewer", timeout=10).status_code == 401   # Orthanc's login, as for its API
    page = requests.get(f"{base}/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"}, auth=stack.orthanc_auth, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'window.PUBLIC_URL="/ohif/"' in page.text and 'src="/ohif/app.bundle.' in page.text
    config = requests.get(f"{base}/ohif/app-config.js", auth=stack.orthanc_auth, timeout=10).text
    assert "wadoRoot: '/dicom-web'" in config and "routerBasename: '/ohif'" in config   # same origin
    assert stack.orthanc_auth[1] not in config


def test_ohif_lists_the_study_from_orthancs_dicomweb(ohif_run):
    record = ohif_run.ok("study-list")
    assert record["url"] == "/ohif/" and record["listed"] >= 1   # /ohif/index.html is the study list


def test_ohif_lists_the_ct_the_seg_and_the_sr_and_draws_with_webgl(ohif_run, ohif_study):
    record = ohif_run.ok("viewer")
    assert record["listed"] == [str(ds.SeriesDescription) for ds in (ohif_study["ct"][0], ohif_study["seg"], ohif_study["sr"])]
    assert record["webgl"], "no WebGL in this Chromium: OHIF draws with it"


def test_ohif_draws_the_seg_over_the_ct_where_it_marks_and_nowhere_else(ohif_run):
    before, after = ohif_run.ok("ct-only"), ohif_run.ok("seg-overlay")
    assert after["labels"] == ["Lesion"]                                  # read from the SEG
    assert before["index"] == before["shown"] == after["shown"] == after["index"]   # the same slice
    (r0, g0, b0, _), (r1, g1, b1, _) = before["px"][0], after["px"][0]
    assert r0 == g0 == b0 and r0 > 0, before                             # the CT alone: grey
    assert r1 - g1 > 20 and r1 - b1 > 20, after                          # the segment's colour over it
    outside_before, outside_after = before["px"][1], after["px"][1]
    assert outside_before[0] == outside_before[1] == outside_before[2] > 0, before   # soft tissue, grey
    assert outside_after == outside_before, after                        # no overlay where the SEG marks nothing


def test_ohif_fetches_nothing_from_outside_and_logs_no_error(ohif_run):
    assert ohif_run["summary"]["external_requests"] == []
    assert ohif_run["summary"]["console_errors"] == []


def _ohif_lines(sr):
    """The text OHIF 3.13.2 writes for a segment's measurements: each NUM of its groups (merged by
    tracking UID, in the report's order) as "<concept>: <value, 2 decimals> <UCUM code>"."""
    from decimal import ROUND_HALF_UP, Decimal

    import highdicom as hd

    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    lines = {}
    for group in [*report.content.get_volumetric_roi_measurement_groups(),
                  *report.content.get_planar_roi_measurement_groups()]:
        for m in group.get_measurements():
            value = Decimal(str(m.value)).quantize(Decimal("0.01"), ROUND_HALF_UP)   # JS toFixed(2)
            lines.setdefault(str(group.tracking_identifier), []).append(f"{m.name.meaning}: {value} {m.unit.value}")
    return lines


def test_ohif_opens_the_sr_and_draws_the_segments_outline_with_the_srs_figures(ohif_run, ohif_study):
    record = ohif_run.ok("sr")
    expected = _ohif_lines(ohif_study["sr"])
    assert list(expected) == ["Lesion"] and len(expected["Lesion"]) == 5   # volume, mean, SD; area, mean on the slice
    (measurement,) = record["measurements"]
    assert measurement["id"] == "Lesion" and measurement["loaded"] and measurement["graphic"] == "POLYLINE"
    assert measurement["labels"] == expected["Lesion"]          # the SR's values, as OHIF read them
    assert record["lines"] == [expected["Lesion"]]              # ... and drew them beside the outline
    # the SR's own figures: the box is 10 slices of 60 x 60 voxels
    dy, dx = (float(v) for v in ohif_study["ct"][0].PixelSpacing)
    rows = {r["name"]: r["value"] for r in ohif_study["rows"]}
    assert rows["Area (on one slice)"] == round(60 * 60 * dy * dx, 1)
    thickness = float(ohif_study["ct"][0].SliceThickness)
    assert rows["Volume"] == pytest.approx(10 * 60 * 60 * dy * dx * thickness / 1000, abs=0.01)
    # drawn on the first slice of the box (each box slice has the same area: the first is kept), shown there
    (drawn,) = record["drawn"]
    first = str(ohif_study["ct"][BOX[0]].SOPInstanceUID)
    assert drawn["image"] == record["shown"] == first
    corners = {tuple(p) for p in drawn["outline"]}
    assert corners == {(BOX[4], BOX[2]), (BOX[5], BOX[2]), (BOX[5], BOX[3]), (BOX[4], BOX[3])}, drawn
