"""Synthetic DICOM studies: UIDs, determinism, counts, geometry, HU, round trip (dcm2niix: tests/integration/local)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_rescale
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from radcloud.ops.samples import synthetic
from radcloud.ops.samples.spec import archive_bench_spec, retrieve_bench_spec


@pytest.fixture(scope="module")
def plans():
    return synthetic.plan()


def _series(plans, description):
    return next(p for p in plans if p.series.description == description)


def _floats(value):
    return np.array([float(v) for v in value])


def test_default_spec_has_at_least_3_patients_5_series_300_instances(plans):
    assert len({p.patient.patient_id for p in plans}) >= 3
    assert len(plans) >= 5
    assert sum(p.count for p in plans) >= 300
    assert {p.study.modality for p in plans} == {"CT", "MR"}
    assert any(p.series.rows == 512 and p.series.kind == "ct_axial" and p.count >= 100 for p in plans)


def test_uids_are_valid_at_most_64_chars_and_unique(plans):
    series_uids = [p.series_uid for p in plans]
    sop_uids = [p.sop_uid(n) for p in plans for n in range(1, p.count + 1)]
    for uid in [*series_uids, *sop_uids, *(p.study_uid for p in plans), *(p.frame_uid for p in plans)]:
        assert len(uid) <= 64 and UID(uid).is_valid, uid
    assert len(set(series_uids)) == len(series_uids)
    assert len(set(sop_uids)) == len(sop_uids)


def test_uids_and_bytes_are_the_same_on_every_run(plans):
    again = synthetic.plan()
    assert [(p.study_uid, p.series_uid, p.sop_uid(1)) for p in plans] == \
           [(p.study_uid, p.series_uid, p.sop_uid(1)) for p in again]
    ct = _series(plans, "AXIAL 5mm")
    ct_again = _series(again, "AXIAL 5mm")
    assert synthetic.dataset_bytes(ct.instance(7)) == synthetic.dataset_bytes(ct_again.instance(7))


def test_instances_carry_the_attributes_a_pacs_needs(plans):
    for p in plans:
        ds = p.instance(1)
        assert ds.SOPClassUID == (CTImageStorage if p.study.modality == "CT" else MRImageStorage)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                        "StudyTime", "SeriesDate", "AccessionNumber", "StudyDescription",
                        "SeriesDescription", "BodyPartExamined", "Modality", "InstanceNumber",
                        "WindowCenter", "WindowWidth", "PixelSpacing", "ImagePositionPatient"):
            assert ds.get(keyword) not in (None, ""), (p.series.description, keyword)
        if p.study.modality == "CT":
            assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1


@pytest.mark.parametrize("description", ["AXIAL 5mm", "AXIAL BONE", "AX T1 SE", "AXIAL 2.5mm LUNG"])
def test_slice_positions_step_along_the_normal_by_the_spacing(plans, description):
    p = _series(plans, description)
    first, second, last = p.instance(1), p.instance(2), p.instance(p.count)
    orientation = _floats(first.ImageOrientationPatient)
    normal = np.cross(orientation[:3], orientation[3:])
    step = float(first.SpacingBetweenSlices)
    positions = [np.dot(_floats(ds.ImagePositionPatient), normal) for ds in (first, second, last)]
    assert abs(abs(positions[1] - positions[0]) - step) < 1e-6
    assert abs(abs(positions[2] - positions[0]) - step * (p.count - 1)) < 1e-6
    assert float(first.SliceThickness) == p.series.slice_thickness
    assert list(_floats(first.ImageOrientationPatient)) == list(_floats(last.ImageOrientationPatient))
    assert float(first.SliceLocation) == positions[0]


def test_ct_pixels_rescale_to_tissue_hu(plans):
    p = _series(plans, "AXIAL 5mm")
    ds = p.instance(21)                      # z = 150 mm: lungs, ribs, spine
    assert float(ds.ImagePositionPatient[2]) == 150.0
    hu = apply_rescale(ds.pixel_array, ds)
    x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    dy, dx = (float(v) for v in ds.PixelSpacing)

    def at(x, y):
        row, col = round((y - y0) / dy), round((x - x0) / dx)
        return float(np.median(hu[row - 2:row + 3, col - 2:col + 3]))

    assert -1024 <= at(-190, -190) <= -950     # air
    assert -900 <= at(-69, -5) <= -700         # lung
    assert -150 <= at(153, 0) <= -50           # fat
    assert 0 <= at(0, -60) <= 80               # soft tissue
    assert 600 <= at(0, 72) <= 1300            # spine


def test_datasets_round_trip_through_dcmwrite_and_dcmread(plans):
    for p in plans:
        ds = p.instance(p.count)
        back = pydicom.dcmread(io.BytesIO(synthetic.dataset_bytes(ds)))
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert back.PatientName == ds.PatientName
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(back.pixel_array, ds.pixel_array)
        assert back.pixel_array.shape == (p.series.rows, p.series.cols)


def test_write_studies_writes_one_file_per_instance(tmp_path):
    spec = archive_bench_spec(3, instances_per_series=2, matrix=32)
    paths = synthetic.write_studies(tmp_path, spec)
    assert len(paths) == 6 and all(path.is_file() for path in paths)
    assert {pydicom.dcmread(path).SOPInstanceUID for path in paths} == \
           {p.sop_uid(n) for p in synthetic.plan(spec) for n in (1, 2)}


def test_pydicom_test_files_are_shipped_readable_and_distinct():
    files = synthetic.pydicom_test_files()
    assert len(files) == len(synthetic.PYDICOM_TEST_FILES) >= 5
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    assert len({ds.SOPInstanceUID for ds in headers}) == len(headers)
    assert all(ds.get("PatientID") and ds.get("StudyInstanceUID") and ds.get("SeriesInstanceUID")
               for ds in headers)
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in headers}
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"} <= syntaxes
    assert any(s.startswith("1.2.840.10008.1.2.4.9") for s in syntaxes)   # JPEG 2000


def test_retrieve_bench_spec_is_one_500_instance_512_ct_study():
    plans = synthetic.plan(retrieve_bench_spec())
    assert len({p.study_uid for p in plans}) == 1 and len(plans) == 5
    assert sum(p.count for p in plans) == 500
    assert all(p.series.rows == p.series.cols == 512 for p in plans)


def test_many_studies_are_small_distinct_and_cheap():
    datasets = list(synthetic.generate_many_studies(40, instances_per_series=2))
    assert len(datasets) == 80
    assert len({ds.StudyInstanceUID for ds in datasets}) == 40
    assert len({ds.AccessionNumber for ds in datasets}) == 40
    assert {ds.Modality for ds in datasets} == {"CT", "MR"}
    assert all(ds.Rows == ds.Columns == 64 for ds in datasets)
    assert len({ds.StudyDate[:4] for ds in datasets}) > 5
    plans = synthetic.plan(archive_bench_spec(1000))
    assert len({p.study_uid for p in plans}) == 1000
