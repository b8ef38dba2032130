"""plugins/deidentify: PS3.15 Basic Profile on a phantom series and pydicom's real files.

Every output file is checked with ``find_phi`` and, stronger, for the bytes
of every original identifying value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from plugin_helpers import REPO, TEST_FILES, copy_test_files, write_ct_series

import sys
sys.path.insert(0, str(REPO / "plugins" / "deidentify"))
import deid_profile  # noqa: E402
from deid_profile import Deidentifier, find_phi  # noqa: E402

import subprocess

SECRET = "hospital-secret-0123456789"


def deidentify(inp: Path, out: Path, *opts: str, secret: str | None = SECRET) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RADCLOUD_DEID_SECRET"}
    if secret is not None:
        env["RADCLOUD_DEID_SECRET"] = secret
    return subprocess.run([sys.executable, str(REPO / "plugins/deidentify/deidentify.py"), *opts, str(inp), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)


def _identifiers(paths) -> set[str]:
    """Every identifying value of the originals (≥ 4 characters), as text."""
    values = set()
    for p in paths:
        ds = pydicom.dcmread(p)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                   "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                   "FrameOfReferenceUID", "StudyDate", "StudyID", "OperatorsName"):
            v = str(ds.get(kw, "") or "")
            # '000000000' matches anything; MR_small's institution is its manufacturer's prefix
            if len(v) >= 4 and len(set(v)) > 1 and v not in str(ds.get("Manufacturer", "")):
                values.add(v)
    return values


def test_phantom_series(tmp_path):
    paths = write_ct_series(tmp_path / "ct", count=8)
    proc = deidentify(tmp_path / "ct", tmp_path / "out", "--mapDir", str(tmp_path / "hospital"))
    assert proc.returncode == 0, proc.stderr
    outs = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(outs) == 8
    secrets = _identifiers(paths)
    assert {"DOE^JANE", "MRN0001", "ACC0001", "19600101", "20250102"} <= secrets
    studies, series, shifts = set(), set(), set()
    for out in outs:
        ds = pydicom.dcmread(out)
        assert find_phi(ds) == [], out.name
        raw = out.read_bytes()
        leaked = [v for v in secrets if v.encode() in raw]
        assert leaked == [], leaked
        assert ds.PatientName == ds.PatientID and ds.PatientID.startswith("RC-")
        assert ds.SOPInstanceUID.startswith("2.25.") and len(ds.SOPInstanceUID) <= 64
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert out.name == f"{ds.SOPInstanceUID}.dcm"
        studies.add(ds.StudyInstanceUID)
        series.add(ds.SeriesInstanceUID)
        shifts.add(ds.StudyDate)
        assert "PixelData" in ds and ds.pixel_array.shape == (128, 128)
    assert len(studies) == len(series) == len(shifts) == 1
    # the map is hospital-side only
    (mapfile,) = (tmp_path / "hospital").glob("reid-*.json")
    reid = json.loads(mapfile.read_text())
    assert reid["patients"][0]["patient_id"] == "MRN0001"
    assert oct(mapfile.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in (tmp_path / "out").rglob("*") if b"MRN0001" in p.read_bytes()]
    assert "MRN0001" not in proc.stderr and "DOE" not in proc.stderr


def test_same_secret_same_pseudonyms_other_secret_not(tmp_path):
    write_ct_series(tmp_path / "ct", count=2)
    names = {}
    for label, secret in (("a", SECRET), ("b", SECRET), ("c", "another-secret-0123456789")):
        assert deidentify(tmp_path / "ct", tmp_path / label, secret=secret).returncode == 0
        names[label] = sorted(p.name for p in (tmp_path / label).glob("*.dcm"))
    assert names["a"] == names["b"] and names["a"] != names["c"]


def test_map_inside_output_and_missing_secret_are_refused(tmp_path):
    write_ct_series(tmp_path / "ct", count=1)
    proc = deidentify(tmp_path / "ct", tmp_path / "out", "--mapDir", str(tmp_path / "out" / "map"))
    assert proc.returncode == 2 and "mapDir" in proc.stderr
    assert not (tmp_path / "out" / "map").exists()
    proc = deidentify(tmp_path / "ct", tmp_path / "out", secret=None)
    assert proc.returncode == 2 and "RADCLOUD_DEID_SECRET" in proc.stderr


REAL = ["CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm", "rtplan.dcm", "test-SR.dcm",
        "examples_overlay.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "nested_priv_SQ.dcm"]


def test_real_files_pass_the_checker_and_lose_private_and_overlays(tmp_path):
    inp = copy_test_files(tmp_path / "in", REAL)
    proc = deidentify(inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "deidentify.json").read_text())
    # nested_priv_SQ.dcm has no SOP Instance UID: not a storable instance; JPEG2000.dcm and
    # SC_rgb_rle.dcm are secondary captures without BurnedInAnnotation: they may carry text
    assert summary["not_instance"] == 1 and summary["refused_burned_in"] == 2
    assert summary["written"] == len(REAL) - 3
    assert summary["failed_check"] == 0
    secrets = _identifiers(inp / n for n in REAL)
    for out in (tmp_path / "out").glob("*.dcm"):
        ds = pydicom.dcmread(out)
        assert find_phi(ds) == [], (out.name, find_phi(ds))
        assert not any(e.tag.is_private for e in ds.iterall())
        assert not any(0x6000 <= e.tag.group <= 0x60FF and e.tag.element == 0x3000 for e in ds)
        raw = out.read_bytes()
        assert [v for v in secrets if v.encode() in raw] == []


def test_checker_flags_the_originals():
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    found = find_phi(ds)
    assert "(0010,0010)" in found and "(0008,0018)" in found and "(0012,0062)" in found


def test_references_inside_sequences_follow_the_remapped_uids():
    deid = Deidentifier(SECRET.encode())
    a, b = Dataset(), Dataset()
    a.PatientID = b.PatientID = "P1"
    a.SOPInstanceUID, b.SOPInstanceUID = "1.2.3.1", "1.2.3.2"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.1"
    b.ReferencedImageSequence = Sequence([ref])
    b.StudyDate, a.StudyDate = "20240229", "20240301"
    deid.apply(a)
    deid.apply(b)
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert find_phi(a) == [] and find_phi(b) == []
    from datetime import date
    da, db = (date(int(x.StudyDate[:4]), int(x.StudyDate[4:6]), int(x.StudyDate[6:])) for x in (a, b))
    assert (da - db).days == 1  # intervals survive the per-patient shift


@pytest.mark.parametrize("value, vr, days, expected", [
    ("20240301", "DA", -1, "20240229"),
    ("20240101-20240131", "DA", -10, "20231222-20240121"),
    ("20240301120000.5", "DT", 1, "20240302120000.5"),
    ("garbage", "DA", 1, ""),
])
def test_shift_value(value, vr, days, expected):
    assert deid_profile.shift_value(value, vr, days) == expected


def test_burned_in_annotation_is_refused(tmp_path):
    paths = write_ct_series(tmp_path / "ct", count=1)
    ds = pydicom.dcmread(paths[0])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(paths[0])
    proc = deidentify(tmp_path / "ct", tmp_path / "out")
    assert proc.returncode == 1 and not list((tmp_path / "out").glob("*.dcm"))


@pytest.mark.parametrize("sop_class, flag, written", [
    ("1.2.840.10008.5.1.4.1.1.2", None, True),            # CT: text is not usually burned in
    ("1.2.840.10008.5.1.4.1.1.6.1", None, False),         # ultrasound: it usually is
    ("1.2.840.10008.5.1.4.1.1.7", None, False),           # secondary capture (screenshots)
    ("1.2.840.10008.5.1.4.1.1.77.1.4", None, False),      # VL photograph
    ("1.2.840.10008.5.1.4.1.1.6.1", "NO", True),          # the modality vouches for clean pixels
    ("1.2.840.10008.5.1.4.1.1.2", "YES", False),
])
def test_images_that_may_carry_burned_in_text_are_refused(tmp_path, sop_class, flag, written):
    paths = write_ct_series(tmp_path / "ct", count=1)
    ds = pydicom.dcmread(paths[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    if flag is not None:
        ds.BurnedInAnnotation = flag
    ds.save_as(paths[0])
    proc = deidentify(tmp_path / "ct", tmp_path / "out")
    assert bool(list((tmp_path / "out").glob("*.dcm"))) is written, proc.stderr
    assert proc.returncode == (0 if written else 1)


def test_each_refused_file_is_named_with_its_rule_and_an_admin_allow_list_lets_it_through(tmp_path):
    paths = write_ct_series(tmp_path / "ct", count=3)
    ds = pydicom.dcmread(paths[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    ds.save_as(paths[0])
    proc = deidentify(tmp_path / "ct", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr  # two written: success, with one warning
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert reasons["processed"] == 2 and [r["file"] for r in reasons["not_processed"]] == [paths[0].name]
    assert "Secondary Capture Image Storage without BurnedInAnnotation" in reasons["not_processed"][0]["reason"]
    assert f"skipped {paths[0].name}: refused: " in proc.stderr
    allowed = deidentify(tmp_path / "ct", tmp_path / "out2", "--allowBurnedIn", "Secondary Capture Image Storage")
    assert allowed.returncode == 0 and len(list((tmp_path / "out2").glob("*.dcm"))) == 3


def test_de_identified_copies_pass_dciodvfy_as_their_originals_do(tmp_path):
    """Issue 19: every DICOM object the project writes is valid; de-identification must not break an IOD."""
    from plugin_helpers import dciodvfy_errors

    inp = copy_test_files(tmp_path / "in", ["CT_small.dcm", "MR_small.dcm"])
    write_ct_series(inp / "phantom", count=3)  # radcloud's own sample CT and MR (and so its writer) too
    from radcloud.ops.samples.spec import PatientSpec, SeriesSpec, StudySpec
    from radcloud.ops.samples.synthetic import dataset_bytes, plan

    mr = (PatientSpec("DOE^JANE", "MRN0002", "19600101", "F", (StudySpec(
        "MR", "MR HEAD", "20250102", "090000", "ACC0002", "HEAD",
        (SeriesSpec("AX T2", "mr_axial", 2, 64, 64, 3.0, 5.0, z_start=0.0, weighting="T2"),)),)),)
    for i, ds in enumerate(plan(mr)[0].datasets()):
        (inp / f"mr{i}.dcm").write_bytes(dataset_bytes(ds))
    originals = [p for p in inp.rglob("*.dcm")]
    assert {p.name: dciodvfy_errors(p) for p in originals} == {p.name: [] for p in originals}
    proc = deidentify(inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    written = list((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == len(originals)
    assert {p.name: dciodvfy_errors(p) for p in written} == {p.name: [] for p in written}
