"""Derived DICOM series for the PACS: the rules (UIDs, numbers, descriptions, marker, references),
Secondary Capture wrapping and what gets pushed."""

from __future__ import annotations

import io

import pydicom
from jobs_fakes import MemStore
from PIL import Image

from radcloud.pacs import derivedseries
from radcloud.results import derived

STUDY = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1", "PatientID": "P1", "PatientName": "Doe^J",
         "StudyDate": "20240101"}


def png(mode="L", size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 200 if mode == "L" else (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_secondary_capture_is_valid_dicom_in_same_study():
    with Image.open(io.BytesIO(png("RGB"))) as img:
        ds = derived.secondary_capture(img, study=STUDY, series_uid="1.2.3.4", plugin="dcm2png",
                                       number=1, series_number=9000)
    back = pydicom.dcmread(io.BytesIO(derived.to_bytes(ds)))
    assert back.SOPClassUID == derived.SC_IMAGE_STORAGE
    assert back.StudyInstanceUID == STUDY["StudyInstanceUID"] and back.SeriesInstanceUID == "1.2.3.4"
    assert back.SeriesDescription == "radcloud dcm2png" and back.PatientID == "P1"
    assert back.pixel_array.shape == (30, 40, 3) and back.pixel_array[0, 0, 2] == 30


SOURCE = "9.9"
CT = "1.2.840.10008.5.1.4.1.1.2"


class FakePacs:
    def __init__(self):
        self.stored, self.replaced = [], []

    def study_tags(self, uid):
        return dict(STUDY)

    def series(self, uid):
        assert uid == SOURCE
        return {"SeriesNumber": "3", "SeriesDescription": "CT chest",
                "instances": [(CT, "9.9.1"), (CT, "9.9.2")]}

    def store(self, data):
        self.stored.append(pydicom.dcmread(io.BytesIO(data)))
        return {"Status": "Success"}

    def replace(self, study_uid, series_uid, number, text):
        assert not any(d.SeriesInstanceUID == series_uid for d in self.stored), "cleared after storing"
        self.replaced.append((study_uid, series_uid, number, str(text)))
        return 0


def manifest_with(store, names, study=STUDY["StudyInstanceUID"]):
    outputs = []
    for name in names:
        key = f"results/j1/s000/{name}"
        store.put_bytes(key, png(), content_type="image/png")
        outputs.append({"key": key, "name": f"s000/{name}", "image": True, "content_type": "image/png",
                        "study_uid": study, "series_uid": SOURCE})
    return {"outputs": outputs}


def test_push_wraps_images_skips_previews_and_numbers_instances():
    store, pacs = MemStore(), FakePacs()
    manifest = manifest_with(store, ["a.png", "b.png", "thumb-a.png", "montage.png"])
    out = derived.push({"id": "j1", "plugin": "dcm2png", "options": {}}, manifest, store=store, pacs=pacs)
    assert out["instances"] == 2 and len(pacs.stored) == 2
    assert {d.SeriesInstanceUID for d in pacs.stored} == {out["series_uid"]}
    assert sorted(int(d.InstanceNumber) for d in pacs.stored) == [1, 2]


def test_deidentified_run_is_never_pushed():
    store, pacs = MemStore(), FakePacs()
    out = derived.push({"id": "j1", "plugin": "p", "options": {"deidentify": True}},
                       manifest_with(store, ["a.png"]), store=store, pacs=pacs)
    assert out["instances"] == 0 and pacs.stored == []


def test_seg_and_sr_outputs_are_stored_as_they_are():
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    store, pacs, outputs, written = MemStore(), FakePacs(), [], {}
    for name, sop_class in (("seg.dcm", "1.2.840.10008.5.1.4.1.1.66.4"), ("sr.dcm", "1.2.840.10008.5.1.4.1.1.88.34"),
                            ("rt.dcm", "1.2.840.10008.5.1.4.1.1.481.2")):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = f"1.2.3.{len(written) + 1}"
        ds.StudyInstanceUID = STUDY["StudyInstanceUID"]
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        written[name] = buf.getvalue()
        store.put_bytes(f"results/j1/{name}", written[name], content_type="application/dicom")
        outputs.append({"key": f"results/j1/{name}", "name": name, "study_uid": STUDY["StudyInstanceUID"],
                        "series_uid": "9.9", "content_type": "application/dicom"})
    out = derived.push({"id": "j1", "plugin": "lung-seg", "options": {}}, {"outputs": outputs},
                       store=store, pacs=pacs)
    assert out["instances"] == 2  # SEG and SR; an RT dose is not a derived result we push
    assert sorted(str(d.SOPClassUID) for d in pacs.stored) == ["1.2.840.10008.5.1.4.1.1.66.4",
                                                              "1.2.840.10008.5.1.4.1.1.88.34"]
    assert [derived.to_bytes(d) for d in pacs.stored] == [written["seg.dcm"], written["sr.dcm"]]


def test_push_twice_writes_the_same_series_numbered_and_referencing_its_source():
    store = MemStore()
    manifest = manifest_with(store, ["9.9.2.png", "overlay.png"])
    job = {"id": "j1", "plugin": "dcm2png", "plugin_version": "1.0.0", "options": {}}
    first, second = FakePacs(), FakePacs()
    a = derived.push(job, manifest, store=store, pacs=first)
    b = derived.push({**job, "id": "j2"}, manifest, store=store, pacs=second)
    assert a["series_uid"] == b["series_uid"]  # a rerun replaces, never piles up
    assert [d.SOPInstanceUID for d in first.stored] == [d.SOPInstanceUID for d in second.stored]
    newer = FakePacs()
    c = derived.push({**job, "plugin_version": "1.1.0"}, manifest, store=store, pacs=newer)
    assert c["series_uid"] != a["series_uid"]  # a new version is a new series...
    # ...in the same slot: each push first clears it, once per series, before its first instance
    assert first.replaced == newer.replaced[:0] + [(STUDY["StudyInstanceUID"], a["series_uid"], 301,
                                                    "radcloud dcm2png pictures of #3 CT chest")]
    assert [r[2:] for r in newer.replaced] == [r[2:] for r in first.replaced]
    named, overlay = first.stored  # sorted by output name: "s000/9.9.2.png" < "s000/overlay.png"
    for ds in first.stored:
        assert ds.SeriesNumber == 301 and ds.Manufacturer == "radcloud"
        assert ds.SeriesDescription == "radcloud dcm2png pictures of #3 CT chest"
        assert derivedseries.is_derived(ds)
        (ref,) = ds.ReferencedSeriesSequence
        assert ref.SeriesInstanceUID == SOURCE
        assert [i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence] == ["9.9.1", "9.9.2"]
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in named.SourceImageSequence] == \
        [(CT, "9.9.2")]  # the picture of one instance names that instance
    assert [i.ReferencedSOPInstanceUID for i in overlay.SourceImageSequence] == ["9.9.1", "9.9.2"]
