"""plugins/lung-seg: Dice on a phantom and on hand-outlined real CT (a head slice, a chest series), SEG/SR valid.

Every DICOM object the plugin writes goes through dicom3tools' ``dciodvfy``
(no errors allowed) and through highdicom's readers: the SEG references
exactly the source images, the SR references the SEG and carries the
measurements of lung-seg.json.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import chestct
from plugin_helpers import TEST_FILES, dciodvfy_errors, load_plugin_module, run_plugin, write_ct_series

segment = load_plugin_module("lung-seg", "segment.py")
# pydicom-data (dev extra): real CT slices nobody here wrote.
PYDICOM_DATA = Path(importlib.util.find_spec("data_store").submodule_search_locations[0]) / "data"

# Hand-placed outlines of the lungs on the chest CT's 33rd slice along z (z = -279 mm), drawn
# by eye on a 3x rendering (lung window) with a 16-pixel grid, lateral edges at the dark/grey
# transition of the pleura, the hilum left out: (column, row) vertices. Columns grow to the
# patient's left (Image Orientation 1\0\0\0\1\0), so the right lung is the low-column one.
CHEST_SLICE = 32
RIGHT_LUNG_OUTLINE = [
    (153, 180), (173, 177), (207, 175), (235, 176), (253, 180), (248, 192), (241, 208), (233, 224), (228, 240),
    (218, 256), (214, 270), (215, 288), (222, 298), (240, 310), (255, 318), (256, 330), (246, 340), (238, 345),
    (228, 352), (221, 360), (223, 362), (218, 380), (213, 390), (193, 398), (167, 399), (147, 390), (133, 373),
    (127, 352), (124, 330), (119, 300), (118, 270), (121, 245), (128, 224), (137, 208), (147, 192)]
LEFT_LUNG_OUTLINE = [
    (288, 180), (308, 178), (335, 182), (355, 188), (370, 201), (383, 218), (392, 237), (398, 260), (401, 287),
    (401, 313), (397, 337), (391, 358), (380, 377), (366, 390), (348, 398), (328, 399), (305, 397), (290, 390),
    (279, 381), (276, 370), (280, 360), (290, 347), (286, 330), (288, 317), (296, 317), (305, 307), (308, 287),
    (318, 273), (325, 260), (325, 237), (326, 217), (323, 200), (311, 190), (295, 185)]

# A hand-placed outline of the head on 693_UNCI.dcm (a real head CT slice,
# 512², 0.4785 mm pixels), drawn by eye on a rendering with a 32-pixel grid
# and checked against the image: (column, row) vertices.
HEAD_OUTLINE = [(256, 97), (330, 105), (352, 125), (372, 160), (392, 210), (404, 260), (410, 300),
                (405, 350), (390, 390), (365, 420), (330, 440), (285, 448), (240, 446), (200, 430),
                (172, 405), (150, 370), (137, 320), (133, 270), (138, 220), (150, 170), (175, 130),
                (210, 105)]


def read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (hd.seg.segread(path) if "/seg/" in str(path) else hd.sr.srread(path))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    base = tmp_path_factory.mktemp("lungseg-phantom")
    sources = write_ct_series(base / "ct", count=40, rows=256, thickness=5.0)
    proc = run_plugin("lung-seg", "lung_seg.py", base / "ct", base / "out")
    assert proc.returncode == 0, proc.stderr
    return base, sources, proc


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """CT_small (pydicom), the 693 head slice with a Frame of Reference added, an MR, a colour
    ultrasound, an enhanced CT and a text file."""
    base = tmp_path_factory.mktemp("lungseg-real")
    inp = base / "in"
    inp.mkdir()
    shutil.copy(TEST_FILES / "CT_small.dcm", inp / "CT_small.dcm")
    shutil.copy(TEST_FILES / "MR_small.dcm", inp / "MR_small.dcm")
    for name in ("US1_UNCR.dcm", "eCT_Supplemental.dcm", "SC_rgb.dcm"):
        shutil.copy(PYDICOM_DATA / name, inp / name)
    head = pydicom.dcmread(PYDICOM_DATA / "693_UNCI.dcm")
    head.FrameOfReferenceUID = generate_uid(entropy_srcs=["693_UNCI"])  # absent in the file; a SEG needs it
    head.save_as(inp / "head.dcm")
    shutil.copy(PYDICOM_DATA / "693_UNCR.dcm", inp / "no-frame-of-reference.dcm")
    (inp / "notes.txt").write_text("not DICOM")
    proc = run_plugin("lung-seg", "lung_seg.py", inp, base / "out")
    assert proc.returncode == 0, proc.stderr
    return base, proc


@pytest.fixture(scope="module")
def chest(tmp_path_factory, require):
    folder = chestct.folder()   # the real chest CT with a Frame of Reference (TCIA Lung_Dx-A0001)
    require(folder is not None, chestct.MISSING)
    base = tmp_path_factory.mktemp("lungseg-chest")
    proc = run_plugin("lung-seg", "lung_seg.py", folder, base / "out")
    assert proc.returncode == 0, proc.stderr
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir()),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    return base, sources, proc


def _outline(vertices):
    image = Image.new("1", (512, 512), 0)
    ImageDraw.Draw(image).polygon(vertices, fill=1)
    return np.array(image)


def test_real_chest_ct_lungs_match_hand_outlines_on_the_right_sides(chest):
    base, sources, _ = chest
    seg = read(base / "out" / "seg" / "series-001.dcm")
    assert {u[2] for u in seg.get_source_image_uids()} == {str(ds.SOPInstanceUID) for ds in sources}
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    uid = str(sources[CHEST_SLICE].SOPInstanceUID)

    def lung(number):
        return seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[number],
                                                 combine_segments=True)[0] > 0

    right, left = lung(2), lung(3)
    # Measured when written: right 0.944, left 0.914 (a hand outline is itself off by a pixel or two).
    assert segment.dice(right, _outline(RIGHT_LUNG_OUTLINE)) > 0.9
    assert segment.dice(left, _outline(LEFT_LUNG_OUTLINE)) > 0.9
    assert segment.dice(right, _outline(LEFT_LUNG_OUTLINE)) < 0.05


def test_real_chest_ct_measurements_are_those_of_a_chest_and_its_objects_are_valid(chest):
    base, sources, proc = chest
    report = json.loads((base / "out" / "lung-seg.json").read_text())
    (series,) = report["series"]
    assert series["slices"] == 64 and report["skipped"] == []
    for name in ("Right lung", "Left lung"):
        lung = series["segments"][name]
        assert 1000 < lung["volume_ml"] < 5000 and -900 < lung["hu_mean"] < -700, (name, lung)
    assert series["segments"]["Bone"]["hu_mean"] > 300 and -100 < series["segments"]["Soft tissue"]["hu_mean"] < 100
    for path in (base / "out").rglob("*.dcm"):
        assert dciodvfy_errors(path) == [], path.name
    assert "Lung_Dx" not in proc.stderr  # the (de-identified) patient name stays out of the log


def lung_reference(ds_list: list[pydicom.Dataset], side: float) -> np.ndarray:
    """The phantom's analytic lung (radcloud.ops.samples.phantom): its ellipse minus the heart and
    liver ellipses the phantom paints over it."""
    from radcloud.ops.samples import phantom as ph

    def ellipse(cx, cy, a, b):
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0 if a > 0 and b > 0 else np.zeros(x.shape, bool)

    masks = []
    for ds in ds_list:
        z = float(ds.ImagePositionPatient[2])
        x, y = ph._grid(int(ds.Rows), int(ds.Columns), float(ds.PixelSpacing[0]))
        x, y = np.broadcast_arrays(x, y)
        taper = 1.0 - 0.15 * (abs(z) / ph.Z_TORSO_TOP) ** 2
        lung, heart = ph._bump(z, ph.Z_LUNG_TOP, ph.Z_LUNG_BOTTOM), ph._bump(z, 140.0, 30.0)
        liver = ph._bump(z, ph.Z_LIVER_TOP, ph.Z_LIVER_BOTTOM)
        masks.append(ellipse(side * 72.0 * taper, -5.0, 55.0 * lung * taper, 80.0 * lung * taper)
                     & ~ellipse(20.0, -35.0, 55.0 * heart, 45.0 * heart)
                     & ~ellipse(-65.0, 0.0, 80.0 * liver, 70.0 * liver))
    return np.stack(masks)


def test_phantom_lungs_match_the_analytic_lungs_on_the_right_sides(phantom):
    base, sources, _ = phantom
    seg = read(base / "out" / "seg" / "series-001.dcm")
    src = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in sources),
                 key=lambda d: float(d.ImagePositionPatient[2]))
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=[d.SOPInstanceUID for d in src],
                                           segment_numbers=[2, 3])
    right, left = px[..., 0].astype(bool), px[..., 1].astype(bool)
    # Patient's right is -x in DICOM (LPS): the right lung is the phantom's side -1.
    assert segment.dice(right, lung_reference(src, -1.0)) > 0.9
    assert segment.dice(left, lung_reference(src, +1.0)) > 0.9
    assert segment.dice(right, lung_reference(src, +1.0)) < 0.05


def test_phantom_seg_references_every_source_image_and_has_coded_segments(phantom):
    base, sources, _ = phantom
    seg = read(base / "out" / "seg" / "series-001.dcm")
    src = [pydicom.dcmread(p, stop_before_pixels=True) for p in sources]
    assert {u[2] for u in seg.get_source_image_uids()} == {d.SOPInstanceUID for d in src}
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID and seg.SeriesInstanceUID != src[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID and seg.SegmentationType == "BINARY"
    types = {s.SegmentLabel: (s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
                              s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in seg.SegmentSequence}
    assert seg.SegmentsOverlap == "NO"  # a label map: the body is soft tissue + lungs + bone
    assert types == {"Soft tissue": ("SCT", "87784001"), "Right lung": ("SCT", "3341006"),
                     "Left lung": ("SCT", "44029006"), "Bone": ("SCT", "272673000")}


def test_phantom_sr_measures_every_segment_and_references_the_seg(phantom):
    base, _, _ = phantom
    seg = read(base / "out" / "seg" / "series-001.dcm")
    sr = read(base / "out" / "sr" / "series-001.dcm")
    report = json.loads((base / "out" / "lung-seg.json").read_text())["series"][0]
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["Soft tissue", "Right lung", "Left lung", "Bone"]
    for g in groups:
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        stats = report["segments"][str(g.tracking_identifier)]
        (volume,) = g.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(stats["volume_ml"]) and volume.unit.value == "mL"
        hu = {m.derivation.meaning: m.value for m in g.get_measurements(name=codes.DCM.AttenuationCoefficient)}
        assert hu == pytest.approx({"Mean": stats["hu_mean"], "Standard Deviation": stats["hu_sd"]})
    body = report["segments"]["Body"]  # the union of the segments
    assert body["voxels"] == sum(report["segments"][str(g.tracking_identifier)]["voxels"] for g in groups)
    lungs = report["segments"]["Right lung"], report["segments"]["Left lung"]
    assert all(s["hu_mean"] < -500 for s in lungs) and report["segments"]["Bone"]["hu_mean"] > 500
    # each segment also outlined on one slice (what OHIF draws), under the same tracking identifier and UID
    planar = {str(g.tracking_identifier): g for g in sr.content.get_planar_roi_measurement_groups()}
    assert {k: g.tracking_uid for k, g in planar.items()} == {str(g.tracking_identifier): g.tracking_uid for g in groups}
    for name in ("Right lung", "Left lung"):
        (mean,) = planar[name].get_measurements(name=codes.DCM.AttenuationCoefficient)
        (area,) = planar[name].get_measurements(name=codes.SCT.Area)
        assert mean.value < -500 and area.value > 0 and planar[name].roi.GraphicType == "POLYLINE"
        assert len(planar[name].roi.GraphicData) > 10     # a lung's outline, not a box (OHIF would re-measure a box)


def test_every_written_object_passes_dciodvfy(phantom, real):
    written = [*(phantom[0] / "out").rglob("*.dcm"), *(real[0] / "out").rglob("*.dcm")]
    assert len(written) == 6  # SEG + SR for the phantom, CT_small and the head
    for path in written:
        errors = dciodvfy_errors(path)
        assert errors == [], (path.name, errors)


def test_real_ct_head_body_matches_a_hand_outline(real):
    base, _ = real
    report = json.loads((base / "out" / "lung-seg.json").read_text())
    head = next(s for s in report["series"] if s["slices"] == 1 and s["voxel_mm"][1] < 0.5)
    seg = read(base / "out" / head["outputs"]["seg"])
    (uid,) = {u[2] for u in seg.get_source_image_uids()}
    assert uid == pydicom.dcmread(base / "in" / "head.dcm", stop_before_pixels=True).SOPInstanceUID
    body = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], combine_segments=True)[0] > 0
    outline = Image.new("1", (512, 512), 0)
    ImageDraw.Draw(outline).polygon(HEAD_OUTLINE, fill=1)
    assert segment.dice(body.astype(bool), np.array(outline)) > 0.95
    # A head: bone (the skull) but no lung.
    assert head["segments"]["Bone"]["volume_ml"] > 1 and head["segments"]["Right lung"]["voxels"] == 0
    assert not math.isnan(head["segments"]["Body"]["hu_mean"])


def test_real_files_it_cannot_use_are_listed_with_reasons(real):
    base, proc = real
    report = json.loads((base / "out" / "lung-seg.json").read_text())
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons["MR_small.dcm"].startswith("modality MR")
    assert reasons["US1_UNCR.dcm"].startswith("modality US")
    assert "enhanced/multi-frame" in reasons["eCT_Supplemental.dcm"]
    assert reasons["SC_rgb.dcm"].startswith("modality OT")
    assert "FrameOfReferenceUID" in reasons["no-frame-of-reference.dcm"]
    assert "not readable as DICOM" in reasons["notes.txt"]
    assert len(report["series"]) == 2 and report["skipped_series"] == []
    account = json.loads((base / "out" / "file-reasons.json").read_text())  # what the runner reads
    assert {r["file"]: r["reason"] for r in account["not_processed"]} == reasons
    assert account["inputs"] == 8 and account["processed"] == 2
    assert "CQ500" not in proc.stderr and "2 series segmented" in proc.stderr  # no patient names in logs
    assert {p.name for p in (base / "out" / "preview").iterdir()} == {"series-001.png", "series-002.png"}


def test_nothing_usable_still_succeeds_with_reasons(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(TEST_FILES / "MR_small.dcm", inp / "a.dcm")
    proc = run_plugin("lung-seg", "lung_seg.py", inp, tmp_path / "out")
    assert proc.returncode == 0 and "0 series segmented" in proc.stderr
    report = json.loads((tmp_path / "out" / "lung-seg.json").read_text())
    assert report["series"] == [] and report["skipped"][0]["reason"].startswith("modality MR")


@pytest.mark.parametrize("plugin,entry", [("lung-seg", "segment.py"), ("segment-stats", "segment_stats.py")])
def test_connectivity_structures_are_ndimages(plugin, entry):
    # Built with numpy so that a plugin started on a non-CT series need not import scipy.
    from scipy import ndimage

    module = load_plugin_module(plugin, entry)
    assert module.STRUCTURE.dtype == bool and (module.STRUCTURE == ndimage.generate_binary_structure(3, 1)).all()
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    assert module.IN_PLANE.dtype == bool and (module.IN_PLANE == in_plane).all()
