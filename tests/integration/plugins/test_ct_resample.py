"""plugins/ct-resample: isotropic resampling, body mask, NIfTI and DICOM outputs, on a phantom CT series.

Kept cheap (a 40-slice 128² series at 2 mm); the 300-slice 512² run is
bench/slurm_bench.py's. Every DICOM slice written goes through dicom3tools'
``dciodvfy``.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from plugin_helpers import TEST_FILES, run_plugin, write_ct_series

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def resampled(tmp_path_factory):
    base = tmp_path_factory.mktemp("ct-resample")
    sources = write_ct_series(base / "ct", count=40, rows=128, thickness=3.0)
    (base / "ct" / "mr.dcm").write_bytes((TEST_FILES / "MR_small.dcm").read_bytes())  # not CT: skipped
    proc = run_plugin("ct-resample", "ct_resample.py", base / "ct", base / "out", "--spacing", "2", "--sigma", "1")
    assert proc.returncode == 0, proc.stderr
    return base, sources, json.loads((base / "out" / "ct-resample.json").read_text())


def test_the_volume_is_resampled_to_isotropic_voxels_over_the_same_extent(resampled):
    base, sources, report = resampled
    (series,) = report["series"]
    assert series["slices_in"] == 40 and series["spacing_in_mm"] == [3.125, 3.125, 3.0]
    image = sitk.ReadImage(str(base / "out" / "nifti" / "series-001.nii.gz"))
    assert image.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    assert list(image.GetSize()) == series["size_out"] == [200, 200, 60]  # 400 mm x 400 mm x 120 mm
    first = pydicom.dcmread(sources[0], stop_before_pixels=True)
    assert image.GetOrigin()[2] == pytest.approx(min(float(pydicom.dcmread(p, stop_before_pixels=True)
                                                           .ImagePositionPatient[2]) for p in sources))
    assert image.GetOrigin()[:2] == pytest.approx([float(v) for v in first.ImagePositionPatient[:2]])
    # HU are kept: soft tissue stays soft tissue after smoothing and interpolation.
    hu = sitk.GetArrayFromImage(image)
    assert -1100 < hu.min() and hu.max() < 3100
    assert report["skipped"] == [{"path": "mr.dcm", "reason": "modality MR: ct-resample works on CT only"}]


def test_the_body_mask_matches_the_body_of_the_source_slices(resampled):
    base, sources, report = resampled
    mask = sitk.ReadImage(str(base / "out" / "nifti" / "series-001-body.nii.gz"))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    # The source's own body volume: voxels above -500 HU, holes filled per slice, in mL.
    from scipy import ndimage
    body_ml = 0.0
    for path in sources:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        body = ndimage.binary_fill_holes(hu > -500)
        body_ml += body.sum() * float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]) * 3.0 / 1000.0
    assert report["series"][0]["body_ml"] == pytest.approx(body_ml, rel=0.06)
    assert int(sitk.GetArrayViewFromImage(mask).sum()) * 8 / 1000 == pytest.approx(report["series"][0]["body_ml"], abs=0.1)


def test_dicom_output_is_a_valid_derived_ct_series_in_the_source_study(resampled):
    base, sources, report = resampled
    files = sorted((base / "out" / "dicom" / "series-001").glob("*.dcm"))
    assert len(files) == report["series"][0]["dicom_slices_out"] == 60
    source = pydicom.dcmread(sources[0], stop_before_pixels=True)
    datasets = [pydicom.dcmread(p) for p in files]
    assert {d.StudyInstanceUID for d in datasets} == {source.StudyInstanceUID}
    assert {d.PatientID for d in datasets} == {source.PatientID}
    assert len({d.SeriesInstanceUID for d in datasets}) == 1 and datasets[0].SeriesInstanceUID != source.SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in datasets}) == 60
    assert [float(d.PixelSpacing[0]) for d in datasets[:1]] == [2.0] and float(datasets[0].SliceThickness) == 2.0
    zs = [float(d.ImagePositionPatient[2]) for d in datasets]
    assert np.allclose(np.diff(zs), 2.0)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "out" / "nifti" / "series-001.nii.gz")))
    assert np.array_equal(datasets[30].pixel_array.astype(np.int16), volume[30])
    for path in (files[0], files[30]):
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors
