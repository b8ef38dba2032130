"""radcloud.results.segsr round trip on a real CT: highdicom reads back, UIDs match, dciodvfy clean, Orthanc stores.

The source is a real head CT slice (pydicom-data's 693_UNCI.dcm, CQ500,
512²; the corpus holds no multi-slice real CT series). It carries no Frame
of Reference UID, which a SEG requires: one is added, as a PACS's own copy
would have it.
A threshold label map (soft tissue, bone) stands in for a plugin's mask.

Checked: the SEG's pixels are the label map, it references exactly the
source instances, study and frame of reference; the SR's TID 1500 groups
reference the SEG's segments and the source series and carry the numbers of
:func:`radcloud.results.segsr.label_stats`; dicom3tools' ``dciodvfy`` reports no
error for the SEG, the SR and the Secondary Capture that
:mod:`radcloud.results.derived` makes of a picture (with its source references);
``derived.push`` (the path of ``push_to_pacs``) stores all three in the real
Orthanc, in the source study, numbered and described after the source
series; pushing again stores nothing new; search marks them derived and a
pulled study leaves them out.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.sr.codedict import codes

from radcloud.pacs import derivedseries, search
from radcloud.work import retrieve
from radcloud.pacs import query as q
from radcloud.results import derived, segsr
from radcloud.pacs.orthanc import Orthanc
from radcloud.store.storage import ObjectStore

from plugin_helpers import dciodvfy_errors

pytestmark = pytest.mark.integration

PYDICOM_DATA = Path(importlib.util.find_spec("data_store").submodule_search_locations[0]) / "data"
ALGORITHM = segsr.Algorithm("radcloud segsr test", "1.0")
SEGMENTS = [segsr.segment(1, "soft_tissue"), segsr.segment(2, "bone")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("segsr")
    sources, hu = [], []
    for name in ("693_UNCI.dcm",):
        ds = pydicom.dcmread(PYDICOM_DATA / name)
        ds.FrameOfReferenceUID = pydicom.uid.generate_uid(entropy_srcs=["693 frame of reference"])
        ds.save_as(base / name)
        hu.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
        sources.append(ds)
    order = np.argsort([float(d.ImagePositionPatient[2]) for d in sources])
    sources, hu = [sources[i] for i in order], np.stack([hu[i] for i in order])
    labelmap = np.zeros(hu.shape, np.uint8)
    labelmap[hu > -500] = 1
    labelmap[hu > 300] = 2
    dy, dx = (float(v) for v in sources[0].PixelSpacing)
    stats = segsr.label_stats(hu, labelmap, dy * dx * float(sources[0].SliceThickness) / 1000.0, [1, 2])
    # What a plugin passes: headers read without the pixels (highdicom needs only the attributes).
    headers = [pydicom.dcmread(base / Path(str(d.filename)).name, stop_before_pixels=True) for d in sources]
    seg = segsr.segmentation(headers, labelmap, SEGMENTS, ALGORITHM, content_label="TEST",
                             description="soft tissue and bone by threshold")
    seg.save_as(base / "seg.dcm", enforce_file_format=True)
    rois = segsr.slice_rois(hu, labelmap, [1, 2])
    sr = segsr.measurement_report(seg, headers, SEGMENTS, stats, ALGORITHM, rois=rois)
    sr.save_as(base / "sr.dcm", enforce_file_format=True)
    preview = Image.fromarray(np.clip((hu[0] + 1000) / 8, 0, 255).astype(np.uint8))
    preview.save(base / "preview.png")
    return {"base": base, "sources": sources, "labelmap": labelmap, "stats": stats, "rois": rois, "hu": hu}


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hd.seg.segread(path) if path.name.startswith("seg") else hd.sr.srread(path)


def test_seg_reads_back_as_the_label_map_referencing_exactly_the_source(written):
    seg = _read(written["base"] / "seg.dcm")
    src = written["sources"]
    uids = [str(d.SOPInstanceUID) for d in src]
    assert [u[2] for u in seg.get_source_image_uids()] == uids or \
        sorted(u[2] for u in seg.get_source_image_uids()) == sorted(uids)
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != src[0].SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    assert seg.SegmentationType == "BINARY" and seg.SegmentsOverlap == "NO"
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert np.array_equal(back, written["labelmap"])
    described = {int(s.SegmentNumber): (s.SegmentLabel, s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                                        s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
                                        s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
                 for s in seg.SegmentSequence}
    assert described == {1: ("Soft tissue", "85756007", "SCT", "87784001"),
                         2: ("Bone", "85756007", "SCT", "272673000")}


def test_rerun_gives_the_same_uids(written):
    seg = _read(written["base"] / "seg.dcm")
    again = segsr.segmentation(written["sources"], written["labelmap"], SEGMENTS, ALGORITHM,
                               content_label="TEST", description="again")
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (seg.SOPInstanceUID, seg.SeriesInstanceUID)


def test_sr_reads_back_with_the_measurements_referencing_the_seg_and_the_source(written):
    seg = _read(written["base"] / "seg.dcm")
    sr = _read(written["base"] / "sr.dcm")
    src = written["sources"]
    assert sr.StudyInstanceUID == src[0].StudyInstanceUID and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["Soft tissue", "Bone"]
    for number, g in enumerate(groups, start=1):
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID and ref.referenced_segment_numbers == [number]
        assert ref.source_series_for_segmentation.value == src[0].SeriesInstanceUID
        stats = written["stats"][number]
        (volume,) = g.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(stats["volume_ml"]) and volume.unit.value == "mL"
        hu = {m.derivation.meaning: m.value for m in g.get_measurements(name=codes.DCM.AttenuationCoefficient)}
        assert hu == pytest.approx({"Mean": stats["hu_mean"], "Standard Deviation": stats["hu_sd"]})
    evidence = {str(i.ReferencedSOPInstanceUID) for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert evidence == {seg.SOPInstanceUID, *(str(d.SOPInstanceUID) for d in src)}
    assert written["stats"][2]["hu_mean"] > 300 and 0 < written["stats"][1]["hu_mean"] < 300


def test_sr_reads_back_with_each_segments_outline_on_its_largest_slice(written):
    """The planar groups OHIF draws: same tracking identifier and UID as the volumetric group, a closed
    POLYLINE on the source image, area and mean HU of the segment's pixels it encloses."""
    sr = _read(written["base"] / "sr.dcm")
    src = written["sources"]
    volumetric = {str(g.tracking_identifier): g.tracking_uid for g in sr.content.get_volumetric_roi_measurement_groups()}
    planar = sr.content.get_planar_roi_measurement_groups()
    assert {str(g.tracking_identifier): g.tracking_uid for g in planar} == volumetric
    for number, g in enumerate(planar, start=1):
        roi = written["rois"][number]
        region = g.roi
        assert region.GraphicType == "POLYLINE" and region.ContentSequence[0].ReferencedSOPSequence[0] \
            .ReferencedSOPInstanceUID == src[roi.index].SOPInstanceUID
        xy = np.asarray(region.value).reshape(-1, 2)
        assert xy[0].tolist() == xy[-1].tolist() and xy.min() >= 0
        assert xy[:, 0].max() <= src[0].Columns and xy[:, 1].max() <= src[0].Rows
        dy, dx = (float(v) for v in src[roi.index].PixelSpacing)
        (area,) = g.get_measurements(name=codes.SCT.Area)
        assert area.value == pytest.approx(roi.pixels * dy * dx, abs=0.01) and area.unit.value == "mm2"
        (mean,) = g.get_measurements(name=codes.DCM.AttenuationCoefficient)
        inside = written["labelmap"][roi.index] == number
        assert roi.pixels <= inside.sum() and mean.value == pytest.approx(roi.hu_mean)
    # soft tissue: the largest piece of a one-slice CT's body; its mean is the body's soft tissue, not air
    assert -100 < written["rois"][1].hu_mean < 300


def test_every_object_written_passes_dciodvfy(written, tmp_path):
    base = written["base"]
    study = {k: str(written["sources"][0].get(k, "")) for k in ("StudyInstanceUID", "PatientID", "StudyDate")}
    src = written["sources"][0]
    refs = derivedseries.source_references(str(src.SeriesInstanceUID), [(str(src.SOPClassUID), str(src.SOPInstanceUID))])
    for mode in ("L", "RGB"):  # what derived makes of a grey and of a colour picture
        with Image.open(base / "preview.png") as img:
            sc = derived.secondary_capture(img.convert(mode), study=study, series_uid=pydicom.uid.generate_uid(),
                                           plugin="segsr-test", number=1, series_number=301, references=refs,
                                           series_description=derivedseries.description("segsr-test", "pictures", 3))
        sc.save_as(tmp_path / f"sc-{mode}.dcm", enforce_file_format=True)
    for path in (base / "seg.dcm", base / "sr.dcm", tmp_path / "sc-L.dcm", tmp_path / "sc-RGB.dcm"):
        assert dciodvfy_errors(path) == [], path.name


def test_push_stores_seg_sr_and_picture_in_the_source_study(written, stack):
    orthanc = Orthanc.from_settings(stack.settings)
    store = ObjectStore.from_settings(stack.settings)
    src = written["sources"]
    for d in src:
        orthanc.store_instance((written["base"] / Path(str(d.filename)).name).read_bytes())
    study_uid, prefix = str(src[0].StudyInstanceUID), "results/segsr-test/"
    outputs = []
    for name, content_type in (("seg/series-001.dcm", "application/dicom"), ("sr/series-001.dcm", "application/dicom"),
                               ("preview/series-001.png", "image/png")):
        local = written["base"] / {"seg": "seg.dcm", "sr": "sr.dcm", "preview": "preview.png"}[name.split("/")[0]]
        info = store.put_file(prefix + name, local, content_type=content_type)
        outputs.append({"key": info.key, "name": name, "image": content_type == "image/png",
                        "study_uid": study_uid, "series_uid": str(src[0].SeriesInstanceUID)})
    job = {"id": "segsr-test", "plugin": "segsr-test", "plugin_version": "1", "options": {}}
    pushed = derived.push(job, {"outputs": outputs}, store=store, pacs=derived.OrthancPacs(orthanc))
    assert pushed["instances"] == 3
    (study,) = orthanc.find("Study", {"StudyInstanceUID": study_uid}, expand=True)
    modalities = {orthanc.resource("Series", s)["MainDicomTags"].get("Modality") for s in study["Series"]}
    assert modalities == {"CT", "SEG", "SR", "OT"}
    again = derived.push({**job, "id": "rerun"}, {"outputs": outputs}, store=store, pacs=derived.OrthancPacs(orthanc))
    assert again["series_uid"] == pushed["series_uid"]
    (study,) = orthanc.find("Study", {"StudyInstanceUID": study_uid}, expand=True)
    assert len(study["Series"]) == 4  # a rerun replaces, never piles up
    series = search.run(q.parse({"level": "series", "StudyInstanceUID": study_uid}), orthanc)["items"]
    number = src[0].SeriesNumber
    assert {(i["Modality"], i["SeriesNumber"], i["derived"]) for i in series} == {
        ("CT", number, False), ("OT", number * 100 + 1, True), ("SEG", number * 100 + 2, True),
        ("SR", number * 100 + 3, True)}
    (picture,) = [i for i in series if i["Modality"] == "OT"]
    assert picture["SeriesDescription"].startswith(f"radcloud segsr-test pictures of #{number}")
    (sc,) = orthanc.children("Series", picture["orthanc"]["series"], "Instance")
    sc = pydicom.dcmread(io.BytesIO(b"".join(orthanc.iter_instance(sc["ID"]))))
    assert [str(i.ReferencedSOPInstanceUID) for i in sc.SourceImageSequence] == [str(src[0].SOPInstanceUID)]
    assert sc.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    plan = retrieve.plan(retrieve.parse_request({"StudyInstanceUID": study_uid}), orthanc)
    assert [s["SeriesInstanceUID"] for s in plan] == [str(src[0].SeriesInstanceUID)] and plan.skipped_derived == 3
    seg = _read(written["base"] / "seg.dcm")
    (found,) = orthanc.lookup(seg.SOPInstanceUID)
    stored = pydicom.dcmread(io.BytesIO(b"".join(orthanc.iter_instance(found["ID"]))))
    assert stored.SOPClassUID == seg.SOPClassUID and stored.StudyInstanceUID == study_uid


def test_a_rerun_replaces_its_series_in_orthanc_and_a_new_version_takes_the_slot(written, stack, tmp_path):
    """#21: Orthanc keeps the first copy of an instance it holds, so a re-run with other pixels under the
    same UIDs would leave the old ones; the push deletes radcloud's series of the slot first."""
    orthanc = Orthanc.from_settings(stack.settings)
    store = ObjectStore.from_settings(stack.settings)
    src = written["sources"][0]
    orthanc.store_instance((written["base"] / Path(str(src.filename)).name).read_bytes())
    study_uid, number = str(src.StudyInstanceUID), int(src.SeriesNumber)

    def push(shade, version):
        local = tmp_path / f"p{shade}.png"
        Image.new("L", (32, 24), shade).save(local)
        info = store.put_file(f"results/rerun-{shade}/preview/series-001.png", local, content_type="image/png")
        out = {"key": info.key, "name": "preview/series-001.png", "image": True, "study_uid": study_uid,
               "series_uid": str(src.SeriesInstanceUID)}
        job = {"id": f"rerun-{shade}", "plugin": "rerun-test", "plugin_version": version, "options": {}}
        return derived.push(job, {"outputs": [out]}, store=store, pacs=derived.OrthancPacs(orthanc))

    def pictures():
        found = orthanc.find("Series", {"StudyInstanceUID": study_uid}, expand=True)
        mine = [s for s in found if s["MainDicomTags"].get("SeriesDescription", "").startswith("radcloud rerun-test")]
        return [(s["MainDicomTags"]["SeriesInstanceUID"], s["MainDicomTags"]["SeriesNumber"],
                 [int(pydicom.dcmread(io.BytesIO(b"".join(orthanc.iter_instance(i)))).pixel_array.max())
                  for i in s["Instances"]]) for s in mine]

    scanner = {s["ID"] for s in orthanc.find("Series", {"StudyInstanceUID": study_uid}, expand=True)
               if not derivedseries.is_derived(s["MainDicomTags"])}
    first = push(40, "1")
    assert pictures() == [(first["series_uid"], str(number * 100 + 1), [40])]
    again = push(200, "1")   # same version, other pixels: same UIDs, the new pixels
    assert again["series_uid"] == first["series_uid"] and again["replaced"] == 1
    assert pictures() == [(first["series_uid"], str(number * 100 + 1), [200])]
    newer = push(90, "2")    # a new version: a new series in the same slot, the old one gone
    assert newer["series_uid"] != first["series_uid"] and newer["replaced"] == 1
    assert pictures() == [(newer["series_uid"], str(number * 100 + 1), [90])]
    still = {s["ID"] for s in orthanc.find("Series", {"StudyInstanceUID": study_uid}, expand=True)}
    assert scanner <= still   # the scanner's series are never touched
