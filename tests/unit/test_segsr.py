"""radcloud.results.segsr in process: statistics of a label map, inputs refused with a reason, no warning leaks.

The round trip on a real CT (highdicom reads back, dciodvfy, Orthanc) is
tests/integration/test_segsr.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radcloud.results import segsr

ALGORITHM = segsr.Algorithm("radcloud unit", "0")


def test_label_stats_match_numpy_per_segment_and_for_the_union():
    rng = np.random.default_rng(1)
    hu = rng.normal(0, 300, (17, 9, 11)).astype(np.int16)
    labels = rng.integers(0, 4, hu.shape).astype(np.uint8)
    stats = segsr.label_stats(hu, labels, 0.5, [1, 2, 3, 4])
    for k in (1, 2, 3):
        v = hu[labels == k].astype(float)
        assert stats[k] == {"voxels": v.size, "volume_ml": round(v.size * 0.5, 3),
                            "hu_mean": round(v.mean(), 2), "hu_sd": pytest.approx(round(v.std(), 2), abs=0.011)}
    assert stats[4] == {"voxels": 0, "volume_ml": 0.0, "hu_mean": None, "hu_sd": None}
    assert stats["all"]["voxels"] == int((labels > 0).sum())
    assert stats["all"]["hu_mean"] == round(hu[labels > 0].astype(float).mean(), 2)


def test_every_catalogue_segment_is_coded_in_a_standard_scheme():
    for name in segsr.CATALOGUE:
        s = segsr.segment(3, name)
        assert s.category.scheme_designator == s.property_type.scheme_designator == "SCT", name
    assert segsr.segment(1, "bone", "Skull").label == "Skull"


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)


def test_label_map_of_another_shape_or_type_is_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"does not match 1 source slice"):
        segsr.segmentation([_ct()], np.zeros((2, 128, 128), np.uint8), [segsr.segment(1, "body")], ALGORITHM,
                           series_number=1, content_label="X", description="x")
    with pytest.raises(ValueError, match="must hold integers"):
        segsr.segmentation([_ct()], np.zeros((1, 128, 128), np.float32), [segsr.segment(1, "body")], ALGORITHM,
                           series_number=1, content_label="X", description="x")


def test_seg_and_sr_are_built_without_a_warning_quoting_the_patient():
    ct = _ct()
    ct.PatientName = "Secret"  # one component: highdicom warns, quoting it
    labels = np.zeros((1, 128, 128), np.uint8)
    labels[0, 10:20, 10:30] = 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        seg = segsr.segmentation([ct], labels, [segsr.segment(1, "body")], ALGORITHM, series_number=1,
                                 content_label="X", description="x")
        sr = segsr.measurement_report(seg, [ct], [segsr.segment(1, "body")],
                                      {1: {"voxels": 200, "volume_ml": 1.0, "hu_mean": 3.0, "hu_sd": 1.0}},
                                      ALGORITHM, series_number=2)
    assert not [w for w in seen if "Secret" in str(w.message)]
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == ct.StudyInstanceUID


def test_a_source_without_type2_patient_attributes_gets_them_empty_and_is_not_modified():
    ct = _ct()
    del ct.PatientBirthDate, ct.StudyID
    labels = np.zeros((1, 128, 128), np.uint8)
    labels[0, :5, :5] = 1
    seg = segsr.segmentation([ct], labels, [segsr.segment(1, "body")], ALGORITHM, series_number=1,
                             content_label="X", description="x")
    assert seg.PatientBirthDate == "" and seg.StudyID == "" and seg.PatientID == ct.PatientID
    assert "PatientBirthDate" not in ct and "StudyID" not in ct


def test_seg_and_sr_are_numbered_and_described_after_their_source_series():
    ct = _ct()
    ct.SeriesNumber, ct.SeriesDescription = 3, "CT chest"
    labels = np.zeros((1, 128, 128), np.uint8)
    labels[0, :5, :5] = 1
    seg = segsr.segmentation([ct], labels, [segsr.segment(1, "body")], ALGORITHM, content_label="X", description="x")
    sr = segsr.measurement_report(seg, [ct], [segsr.segment(1, "body")],
                                  {1: {"voxels": 25, "volume_ml": 1.0, "hu_mean": 3.0, "hu_sd": 1.0}}, ALGORITHM)
    assert (seg.SeriesNumber, sr.SeriesNumber) == (302, 303)
    assert seg.SeriesDescription == "radcloud unit segmentation of #3 CT chest"
    assert sr.SeriesDescription == "radcloud unit measurements of #3 CT chest"
    assert seg.Manufacturer == sr.Manufacturer == "radcloud"
    assert seg.SeriesInstanceUID == segsr.segmentation([ct], labels, [segsr.segment(1, "body")], ALGORITHM,
                                                       content_label="X", description="x").SeriesInstanceUID


def test_an_incomplete_referenced_study_copied_from_the_source_is_left_out():
    """TCIA's de-identification keeps a Referenced Study item without its class UID (Type 1 there)."""
    from pydicom.dataset import Dataset

    ct = _ct()
    incomplete = Dataset()
    incomplete.ReferencedSOPInstanceUID = "1.2.3.4"
    ct.ReferencedStudySequence = [incomplete]
    labels = np.zeros((1, 128, 128), np.uint8)
    labels[0, :5, :5] = 1
    seg = segsr.segmentation([ct], labels, [segsr.segment(1, "body")], ALGORITHM, series_number=1,
                             content_label="X", description="x")
    sr = segsr.measurement_report(seg, [ct], [segsr.segment(1, "body")],
                                  {1: {"voxels": 25, "volume_ml": 1.0, "hu_mean": 3.0, "hu_sd": 1.0}},
                                  ALGORITHM, series_number=2)
    assert "ReferencedStudySequence" not in seg and "ReferencedStudySequence" not in sr
    incomplete.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # complete: carried over as highdicom does
    seg = segsr.segmentation([ct], labels, [segsr.segment(1, "body")], ALGORITHM, series_number=1,
                             content_label="X", description="x")
    assert seg.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
