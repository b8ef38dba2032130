"""plugins/dicom-tags: consistency checks on phantom series and pydicom's real files."""

from __future__ import annotations

import csv
import json

import pydicom

from plugin_helpers import copy_test_files, run_plugin, write_ct_series


def _run(inp, out, *opts):
    proc = run_plugin("dicom-tags", "dicom_tags.py", inp, out, *opts)
    assert proc.returncode == 0, proc.stderr
    assert "DOE" not in proc.stdout + proc.stderr and "MRN0001" not in proc.stdout + proc.stderr
    return json.loads((out / "tags.json").read_text()), proc


def test_complete_series_has_no_issues(ct_series, tmp_path):
    rep, proc = _run(ct_series, tmp_path / "out")
    (s,) = rep["series"]
    assert s["instances"] == 20 and s["issues"] == []
    assert s["geometry"]["spacing_mm"] == 5.0 and s["geometry"]["extent_mm"] == 95.0
    assert s["constant"]["Modality"] == "CT" and "PatientName" not in s["constant"]
    assert "PatientID" not in (tmp_path / "out" / "tags.json").read_text()
    rows = list(csv.DictReader(open(tmp_path / "out" / "series.csv")))
    assert rows[0]["instances"] == "20" and rows[0]["spacing_mm"] == "5.0" and rows[0]["issues"] == ""
    assert len(list(csv.DictReader(open(tmp_path / "out" / "instances.csv")))) == 20
    assert "1 series, 20 instances, 0 issue(s)" in proc.stderr


def test_missing_slices_gaps_and_orientation(tmp_path):
    paths = write_ct_series(tmp_path / "ct", count=20)
    for p in paths[6:9]:            # instances 7-9 lost in transfer
        p.unlink()
    tilted = pydicom.dcmread(paths[15])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0.9848, -0.1736]
    tilted.save_as(paths[15])
    rep, _ = _run(tmp_path / "ct", tmp_path / "out")
    issues = {i["check"]: i for i in rep["series"][0]["issues"]}
    assert issues["missing_instance_numbers"]["numbers"] == [7, 8, 9]
    assert issues["spacing_gaps"]["missing_slices"] == 3
    assert issues["spacing_gaps"]["gaps"][0]["step_mm"] == 20.0
    assert issues["mixed_orientations"]["count"] == 2


def test_phi_only_on_request(ct_series, tmp_path):
    rep, _ = _run(ct_series, tmp_path / "out", "--includePHI")
    assert rep["series"][0]["constant"]["PatientID"] == "MRN0001"


def test_real_files_grouped_and_duplicates_found(tmp_path):
    inp = copy_test_files(tmp_path / "in", ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                            "CT_small.dcm", "rtplan.dcm"])
    (inp / "junk.bin").write_bytes(b"\x00" * 300)
    rep, _ = _run(inp, tmp_path / "out")
    assert rep["skipped_files"] == 1
    mr = [s for s in rep["series"] if s["constant"].get("Modality") == "MR"][0]
    checks = {i["check"] for i in mr["issues"]}
    # the same MR instance in three transfer syntaxes: duplicates, mixed syntaxes
    assert {"duplicate_instance_numbers", "mixed_transfer_syntaxes"} <= checks


def test_a_bad_header_value_is_named_and_the_series_still_reported(tmp_path):
    """pydicom's badVR.dcm has NumberOfFrames '1A': it used to kill the whole report (ValueError)."""
    inp = copy_test_files(tmp_path / "in", ["badVR.dcm", "CT_small.dcm"])
    (inp / "notes.txt").write_text("not dicom")
    proc = run_plugin("dicom-tags", "dicom_tags.py", inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "out" / "tags.json").read_text())
    assert sum(s["instances"] for s in rep["series"]) == 2
    malformed = [i for s in rep["series"] for i in s["issues"] if i["check"] == "malformed_values"]
    assert malformed[0]["values"][0]["attribute"] == "NumberOfFrames" and malformed[0]["values"][0]["value"] == "1A"
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert reasons["processed"] == 2 and reasons["not_processed"][0]["file"] == "notes.txt"
    assert "skipped notes.txt: not DICOM" in proc.stderr
