"""plugins/segment-stats: exact volumes on a constructed CT, the phantom, and a real CT slice."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from plugin_helpers import copy_test_files, dciodvfy_errors, run_plugin, write_ct_series


def write_volume(dest: Path, hu: np.ndarray, spacing=(3.0, 2.0, 2.0)) -> None:
    """A CT series from an HU array (z, y, x): intercept -1024, head-first axial."""
    dest.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, plane in enumerate(hu):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "T^T", "T1", "CT", 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, -k * spacing[0]]   # stored out of order on purpose below
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[2]], spacing[0]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (plane + 1024).astype(np.int16).tobytes()
        ds.save_as(dest / f"{(k * 7) % len(hu):03d}.dcm", enforce_file_format=True)


def test_exact_volumes_on_a_constructed_ct(tmp_path):
    hu = np.full((10, 40, 40), -1000, np.int16)
    hu[:, 5:35, 5:35] = 40          # soft tissue block: 10 x 30 x 30
    hu[2:6, 10:20, 10:20] = 1000     # bone: 4 x 10 x 10 = 400 voxels
    hu[:, 22:30, 22:30] = -800       # lung: 10 x 8 x 8 = 640, enclosed in-plane, open at z ends
    hu[:, 8:10, 25:31] = -100        # fat: 10 x 2 x 6 = 120
    hu[0, 0, 0] = 40                 # a speck outside the body: not the largest component
    write_volume(tmp_path / "ct", hu)
    proc = run_plugin("segment-stats", "segment_stats.py", tmp_path / "ct", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    (m,) = json.loads((tmp_path / "out" / "measurements.json").read_text())["series"]
    voxel_ml = 3 * 2 * 2 / 1000
    assert m["voxel_mm"] == [3.0, 2.0, 2.0] and m["slices"] == 10
    assert m["body"]["voxels"] == 10 * 30 * 30
    c = m["classes"]
    assert c["bone"]["voxels"] == 400 and c["bone"]["volume_ml"] == round(400 * voxel_ml, 3)
    assert c["bone"]["components"] == 1 and c["bone"]["hu_mean"] == 1000
    assert c["air_lung"]["voxels"] == 640 and c["air_lung"]["components"] == 1
    assert c["fat"]["voxels"] == 120
    assert c["soft_tissue"]["voxels"] == 9000 - 400 - 640 - 120
    src = sorted((pydicom.dcmread(p) for p in (tmp_path / "ct").glob("*.dcm")),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    seg = hd.seg.segread(tmp_path / "out" / m["seg"])
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID and seg.SeriesInstanceUID != src[0].SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    arr = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in src], combine_segments=True)
    # each source slice's frame holds that slice's classes: the bone is in z index 2..5 (positions 0, -3, ...)
    assert arr.shape == (10, 40, 40) and int((arr == 4).sum()) == 400
    assert sorted(set(np.nonzero(arr == 4)[0])) == [4, 5, 6, 7]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Air/lung", "Fat", "Soft tissue", "Bone",
                                                              "Other body tissue"]
    sr = hd.sr.srread(tmp_path / "out" / m["sr"])
    volumes = {str(g.tracking_identifier): g.get_measurements(name=codes.SCT.Volume)[0].value
               for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert volumes["Bone"] == pytest.approx(c["bone"]["volume_ml"]) and volumes["Fat"] == pytest.approx(c["fat"]["volume_ml"])
    assert "Other body tissue" not in volumes  # empty here: no group for it
    assert all(dciodvfy_errors(tmp_path / "out" / m[k]) == [] for k in ("seg", "sr"))
    assert (tmp_path / "out" / m["overlay"]).is_file()
    assert "T1" not in proc.stderr


def test_phantom_ct_has_lungs_bone_and_fat(tmp_path):
    write_ct_series(tmp_path / "ct", count=12, rows=128)
    proc = run_plugin("segment-stats", "segment_stats.py", tmp_path / "ct", tmp_path / "out", "--noDicom")
    assert proc.returncode == 0, proc.stderr
    (m,) = json.loads((tmp_path / "out" / "measurements.json").read_text())["series"]
    c = m["classes"]
    assert c["air_lung"]["components"] >= 2 and c["air_lung"]["volume_ml"] > 100   # two lungs
    assert -900 < c["air_lung"]["hu_mean"] < -700
    assert c["bone"]["volume_ml"] > 5 and c["fat"]["volume_ml"] > 5
    assert 20 < c["soft_tissue"]["hu_mean"] < 80
    assert m["body"]["volume_ml"] > sum(v["volume_ml"] for v in c.values()) * 0.99
    assert "seg" not in m and not (tmp_path / "out" / "seg").exists() and not (tmp_path / "out" / "sr").exists()


def test_real_ct_slice_and_non_ct_skipped(tmp_path):
    inp = copy_test_files(tmp_path / "in", ["CT_small.dcm", "MR_small.dcm"])
    proc = run_plugin("segment-stats", "segment_stats.py", inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert result["skipped_files"] == 1 and len(result["series"]) == 1
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert reasons["not_processed"] == [{"file": "MR_small.dcm",
                                         "reason": "modality MR: segment-stats measures CT (Hounsfield units) only"}]
    m = result["series"][0]
    assert m["slices"] == 1 and m["shape"] == [1, 128, 128]
    assert m["body"]["volume_ml"] > 0 and m["classes"]["bone"]["voxels"] > 0
    assert {m["seg"], m["sr"]} == {"seg/series-001.dcm", "sr/series-001.dcm"}  # a real slice: its SEG and SR


def test_slices_without_geometry_keep_their_measurements_and_say_why_no_seg(tmp_path):
    hu = np.full((3, 20, 20), -1000, np.int16)
    hu[:, 4:16, 4:16] = 40
    write_volume(tmp_path / "ct", hu)
    for path in (tmp_path / "ct").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    proc = run_plugin("segment-stats", "segment_stats.py", tmp_path / "ct", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    (m,) = json.loads((tmp_path / "out" / "measurements.json").read_text())["series"]
    assert m["body"]["voxels"] == 3 * 12 * 12 and "seg" not in m
    assert "FrameOfReferenceUID" in m["dicom_not_written"] and "no SEG/SR" in proc.stderr


def test_non_ct_series_are_skipped_with_a_reason_not_a_failure(tmp_path):
    # an MR study (the demo's) gets a report saying why nothing was measured
    inp = copy_test_files(tmp_path / "in", ["MR_small.dcm"])
    proc = run_plugin("segment-stats", "segment_stats.py", inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert result["series"] == [] and result["ct_series"] == 0 and result["skipped_files"] == 1
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert "modality MR" in reasons["not_processed"][0]["reason"] and "CT" in reasons["not_processed"][0]["reason"]
    assert "no CT series in the input" in proc.stderr


def test_no_image_at_all_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    proc = run_plugin("segment-stats", "segment_stats.py", tmp_path / "in", tmp_path / "out")
    assert proc.returncode == 1 and "no CT series could be measured" in proc.stderr


def test_a_slice_that_does_not_fit_is_left_out_with_its_reason(tmp_path):
    hu = np.full((6, 32, 32), -1000.0, np.float32)
    hu[:, 8:24, 8:24] = 40.0
    write_volume(tmp_path / "ct", hu)
    odd = sorted((tmp_path / "ct").iterdir())[2]
    ds = pydicom.dcmread(odd)
    ds.Rows, ds.Columns = 16, 64  # same bytes, another matrix: a header that lies
    ds.save_as(odd)
    proc = run_plugin("segment-stats", "segment_stats.py", tmp_path / "ct", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert reasons["processed"] == 5
    assert reasons["not_processed"] == [{"file": odd.name, "reason": "matrix 16x64 differs from the series' 32x32"}]
    assert json.loads((tmp_path / "out" / "measurements.json").read_text())["series"][0]["slices"] == 5
