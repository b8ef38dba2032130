"""plugins/dcm2niix: NIfTI + BIDS sidecar from a phantom CT and pydicom's real files."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pydicom

from plugin_helpers import copy_test_files, load_plugin_module, run_plugin

plugin = load_plugin_module("dcm2niix", "dcm2niix_plugin.py")


def _nifti_data(path) -> np.ndarray:
    raw = (gzip.open if path.name.endswith(".gz") else open)(path, "rb").read()
    dim = struct.unpack("<8h", raw[40:56])
    offset = int(struct.unpack("<f", raw[108:112])[0])
    assert struct.unpack("<h", raw[70:72])[0] == 4  # int16
    n = dim[1] * dim[2] * dim[3]
    return np.frombuffer(raw, "<i2", n, offset).reshape(dim[3], dim[2], dim[1])


def test_phantom_series_becomes_one_volume_with_sidecar(ct_series, tmp_path):
    out = tmp_path / "out"
    proc = run_plugin("dcm2niix", "dcm2niix_plugin.py", ct_series, out)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "dcm2niix.json").read_text())
    (vol,) = index["volumes"]
    assert vol["dim"] == [128, 128, 20] and vol["voxel_mm"] == [3.125, 3.125, 5.0]
    assert vol["nifti"].endswith(".nii.gz") and vol["modality"] == "CT"
    sidecar = json.loads((out / vol["sidecar"]).read_text())
    assert sidecar["SliceThickness"] == 5 and "PatientName" not in sidecar and "PatientID" not in sidecar
    # same voxels as the DICOM (stored values; dcm2niix flips rows to NIfTI's orientation)
    data = _nifti_data(out / vol["nifti"])
    slices = sorted(ct_series.glob("*.dcm"))
    ds = pydicom.dcmread(slices[0])
    match = [np.array_equal(data[z][::-1], ds.pixel_array) for z in range(data.shape[0])]
    assert sum(match) == 1, "exactly one NIfTI slice equals the first DICOM slice"


def test_compressed_real_file_matches_uncompressed(tmp_path):
    for name in ("MR_small.dcm", "MR_small_jp2klossless.dcm"):
        inp = copy_test_files(tmp_path / name / "in", [name])
        proc = run_plugin("dcm2niix", "dcm2niix_plugin.py", inp, tmp_path / name / "out", "--noCompress")
        assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((tmp_path / n / "out" / "dcm2niix.json").read_text())["volumes"][0]
            for n in ("MR_small.dcm", "MR_small_jp2klossless.dcm"))
    assert a["dim"][:2] == [64, 64] and a["nifti"].endswith(".nii")
    assert np.array_equal(_nifti_data(tmp_path / "MR_small.dcm" / "out" / a["nifti"]),
                          _nifti_data(tmp_path / "MR_small_jp2klossless.dcm" / "out" / b["nifti"]))


def test_patient_tokens_in_file_names_are_refused(tmp_path):
    proc = run_plugin("dcm2niix", "dcm2niix_plugin.py", tmp_path, tmp_path / "out", "--filename", "%n_%s")
    assert proc.returncode == 2 and "%n" in proc.stderr


def test_no_dicom_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("hello")
    proc = run_plugin("dcm2niix", "dcm2niix_plugin.py", tmp_path / "in", tmp_path / "out")
    assert proc.returncode != 0


def test_binary_is_found():
    assert plugin.find_binary().endswith("dcm2niix")


def test_files_dcm2niix_cannot_decode_itself_are_decoded_first_and_the_rest_named(tmp_path):
    """Big endian and JPEG extended are decoded by pydicom before dcm2niix sees them; a file the
    decoder refuses (JPEG-lossy.dcm: a misplaced marker) and one without pixels get their reasons."""
    inp = copy_test_files(tmp_path / "in", ["MR_small_bigendian.dcm", "JPGExtended.dcm", "JPEG-lossy.dcm", "rtplan.dcm"])
    proc = run_plugin("dcm2niix", "dcm2niix_plugin.py", inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert reasons["processed"] == 2
    why = {r["file"]: r["reason"] for r in reasons["not_processed"]}
    assert set(why) == {"JPEG-lossy.dcm", "rtplan.dcm"}
    assert "misplaced marker segment" in why["JPEG-lossy.dcm"] and why["rtplan.dcm"].startswith("no pixel data")
    assert len(json.loads((tmp_path / "out" / "dcm2niix.json").read_text())["volumes"]) == 2
