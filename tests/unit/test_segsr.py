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


def _shoelace(xy: np.ndarray) -> float:
    return 0.5 * float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]))


def test_slice_roi_outlines_the_largest_piece_on_the_largest_slice_along_pixel_edges():
    labels = np.zeros((3, 12, 14), np.uint8)
    labels[1, 2:9, 3:11] = 1                      # slice 1: a 7 x 8 ring with a 3 x 2 hole...
    labels[1, 4:7, 6:8] = 0
    labels[1, 10:12, 0:2] = 1                     # ...and a 2 x 2 piece apart
    labels[1, 9, 11] = 1                          # touching the ring at a corner only: its own piece
    labels[0, 0:3, 0:3] = 1                       # slice 0: fewer pixels
    labels[2, 5, 5] = 2
    hu = np.arange(labels.size, dtype=np.int16).reshape(labels.shape)
    rois = segsr.slice_rois(hu, labels, [1, 2, 3])
    assert set(rois) == {1, 2}                    # 3 is empty
    ring = rois[1]
    assert ring.index == 1
    assert ring.outline[0].tolist() == ring.outline[-1].tolist()          # closed
    assert sorted(map(tuple, ring.outline[:-1].tolist())) == [(3, 2), (3, 9), (11, 2), (11, 9)]   # corners
    assert _shoelace(ring.outline) == 7 * 8                               # the hole is inside the outline...
    assert ring.pixels == 7 * 8 - 3 * 2                                  # ...and not counted
    within = np.zeros((12, 14), bool)
    within[2:9, 3:11] = True
    within[4:7, 6:8] = False
    assert ring.hu_mean == round(float(hu[1][within].mean()), 2)
    assert rois[2].index == 2 and rois[2].pixels == 1 and _shoelace(rois[2].outline) == 1


def test_slice_roi_walks_round_a_corner_two_pixels_of_one_piece_share():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, 1:3, 1:3] = 1
    labels[0, 3:5, 3:5] = 1                       # diagonal to the first block: two 4-connected pieces
    labels[0, 3, 2] = 1                           # joined by a pixel: one piece, a corner inside the walk
    roi = segsr.slice_rois(np.zeros(labels.shape, np.int16), labels, [1])[1]
    assert roi.pixels == 9 and _shoelace(roi.outline) == 9


def test_sr_has_a_planar_group_per_roi_under_the_segments_tracking_identifier():
    import highdicom as hd

    ct = _ct()
    labels = np.zeros((1, 128, 128), np.uint8)
    labels[0, 10:20, 10:30] = 1
    segments = [segsr.segment(1, "body")]
    seg = segsr.segmentation([ct], labels, segments, ALGORITHM, series_number=1, content_label="X", description="x")
    hu = np.arange(128 * 128, dtype=np.int16).reshape(1, 128, 128) % 1000
    stats = segsr.label_stats(hu, labels, 0.5, [1])
    rois = segsr.slice_rois(hu, labels, [1])
    sr = hd.sr.Comprehensive3DSR.from_dataset(segsr.measurement_report(seg, [ct], segments, stats, ALGORITHM,
                                                                       rois=rois, series_number=2))
    (volumetric,) = sr.content.get_volumetric_roi_measurement_groups()
    (planar,) = sr.content.get_planar_roi_measurement_groups()
    assert planar.tracking_identifier == volumetric.tracking_identifier == "Body"
    assert planar.tracking_uid == volumetric.tracking_uid
    region = planar.roi
    assert region.GraphicType == "POLYLINE" and region.ContentSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == ct.SOPInstanceUID
    dy, dx = (float(v) for v in ct.PixelSpacing)
    (area,) = planar.get_measurements(name=segsr.codes.SCT.Area)
    assert area.value == pytest.approx(200 * dy * dx, abs=0.01) and area.unit.value == "mm2"
    (mean,) = planar.get_measurements(name=segsr.codes.DCM.AttenuationCoefficient)
    assert mean.value == pytest.approx(float(hu[0, 10:20, 10:30].mean()), abs=0.01)
