"""radcloud.results.viewer and the viewer action: which staged objects the web viewer may open, as URLs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from action_loader import load_action
from jobs_fakes import MemStore, stage_series

from radcloud.access import audit
from radcloud.api.action import Request
from radcloud.access.auth import Principal
from radcloud.core.errors import BadRequest, Forbidden, NotFound
from radcloud.store.staged import InputAccess
from radcloud.work.staging import ManifestStaging
from radcloud.pacs.derivedseries import uid
from radcloud.results.viewer import Viewer
from radcloud.work import subject

STUDY = "1.2.840.1"


class _Redis(dict):
    """The staged-series index (radcloud.progress.Progress.staged writes it)."""

    def set(self, key, value):
        self[key] = value


def _staged(store, series, n, number):
    """A series in retrieve's own layout (staged/{study}/{series}/manifest.json, with tags), indexed."""
    prefix = f"staged/{STUDY}/{series}/"
    instances = []
    for i in range(n):
        key = f"{prefix}{series}.{i}.dcm"
        info = store.put_bytes(key, b"DICM" + bytes([i]))
        instances.append({"key": key, "md5": info.md5, "size": info.size})
    store.put_json(f"{prefix}manifest.json", {
        "prefix": prefix, "StudyInstanceUID": STUDY, "SeriesInstanceUID": series, "expected": n, "complete": True,
        "tags": {"Modality": "CT", "SeriesNumber": str(number),
                 "SeriesDescription": f"AX {number}" if number < 100 else f"radcloud p pictures of #{number // 100}",
                 "PatientName": "DOE^JANE", "PatientID": "MRN7"},
        "instances": instances})
    store.index.set(f"radcloud:staged:series:{series}", f"{prefix}manifest.json")


@pytest.fixture
def store():
    store = MemStore()
    store.index = _Redis()
    _staged(store, "1.2.840.1.2", 5, 2)
    _staged(store, "1.2.840.1.1", 3, 1)
    return store


def _viewer(store):
    return Viewer(store, ManifestStaging(store, store.index), 60, subject_of=subject.from_series)


def test_a_series_is_its_instances_as_presigned_urls_never_pixels(store):
    answer = _viewer(store).series("1.2.840.1.2")
    assert answer["StudyInstanceUID"] == STUDY and answer["count"] == 5 and answer["complete"]
    assert [i["url"] for i in answer["instances"]] == [
        f"http://s3.invalid/staged/{STUDY}/1.2.840.1.2/1.2.840.1.2.{i}.dcm?ttl=60" for i in range(5)]
    assert answer["tags"] == {"Modality": "CT", "SeriesNumber": "2", "SeriesDescription": "AX 2"}  # no patient tags
    assert answer["next_offset"] is None and answer["url_ttl_s"] == 60
    # whose images: the identity header's subject, as a job's (radcloud.work.subject)
    assert answer["subject"]["patients"] == [{"PatientName": "DOE^JANE", "PatientID": "MRN7"}]
    assert answer["subject"]["series"] == [{"SeriesInstanceUID": "1.2.840.1.2", "SeriesNumber": "2",
                                            "SeriesDescription": "AX 2", "Modality": "CT"}]


def test_a_long_series_comes_in_pages(store):
    first = _viewer(store).series("1.2.840.1.2", limit=2)
    assert len(first["instances"]) == 2 and first["next_offset"] == 2
    last = _viewer(store).series("1.2.840.1.2", offset=4, limit=2)
    assert len(last["instances"]) == 1 and last["next_offset"] is None


def test_a_page_is_cut_by_the_size_of_its_urls_so_the_answer_stays_under_the_result_cap(store):
    """Presigned URLs with temporary credentials (X-Amz-Security-Token) are ~1.5 kB: 1000 would pass 1 MB."""
    class LongUrls(MemStore):
        def presign_get(self, key, ttl_s):
            return super().presign_get(key, ttl_s) + "&X-Amz-Security-Token=" + "t" * 1400

    long_store = LongUrls()
    long_store.index = _Redis()
    uids = [f"1.2.840.1.9.{i}" for i in range(700)]
    prefix = f"staged/{STUDY}/1.2.840.1.9/"
    long_store.put_json(f"{prefix}manifest.json", {
        "prefix": prefix, "StudyInstanceUID": STUDY, "SeriesInstanceUID": "1.2.840.1.9", "expected": 700,
        "complete": True, "instances": [{"key": f"{prefix}{u}.dcm", "size": 1} for u in uids]})
    long_store.index.set("radcloud:staged:series:1.2.840.1.9", f"{prefix}manifest.json")
    viewer = _viewer(long_store)
    pages = [viewer.series("1.2.840.1.9")]
    while pages[-1]["next_offset"] is not None:
        pages.append(viewer.series("1.2.840.1.9", offset=pages[-1]["next_offset"]))
    assert len(pages) == 2 and all(len(json.dumps(p)) < 2**20 for p in pages)
    assert [i["url"].split("?")[0] for p in pages for i in p["instances"]] == [
        f"http://s3.invalid/{prefix}{u}.dcm" for u in uids]


def test_a_series_not_staged_or_not_a_uid_is_refused(store):
    with pytest.raises(NotFound, match="retrieve it first"):
        _viewer(store).series("1.2.3.4")
    with pytest.raises(BadRequest):
        _viewer(store).series("../deid-maps")


def test_a_study_lists_its_staged_series_in_series_order_with_a_thumbnail(store):
    made = uid("1.2.840.1.2", "p", "1", "pictures-series")
    _staged(store, made, 1, 201)  # radcloud's pictures of series 2, pulled on purpose
    answer = _viewer(store).study(STUDY)
    assert [s["SeriesInstanceUID"] for s in answer["series"]] == ["1.2.840.1.1", "1.2.840.1.2", made]
    assert [s["derived"] for s in answer["series"]] == [False, False, True]
    assert answer["series"][1]["thumbnail_url"].endswith("1.2.840.1.2.2.dcm?ttl=60")  # the middle one
    with pytest.raises(NotFound, match="Pull page"):
        _viewer(store).study("1.2.9")


def test_manifests_pointing_past_the_staged_area_are_refused(store):
    stage_series(store, "1.2", "1.2.9", 1)
    manifest = json.loads(store.objects["manifests/1.2/1.2.9.json"])
    manifest["instances"][0]["key"] = "deid-maps/j/s000.json"
    store.objects["manifests/1.2/1.2.9.json"] = json.dumps(manifest).encode()
    with pytest.raises(Forbidden):
        _viewer(store).series("1.2.9")


@dataclasses.dataclass
class _Services:
    store: object
    staging: object
    jobs: object
    presign_ttl_s: int = 60


class _Jobs:
    def owner(self, job_id):
        return None


def _request(path, **params):
    return Request(method="get", path=path, headers={}, params=params, web=True)


def test_the_action_routes_series_and_study_and_names_what_to_send(store):
    action = load_action("viewer")
    services = _Services(store, ManifestStaging(store, store.index), _Jobs())
    who = Principal("dr.jones", "clinician")
    series = action.handle(_request("/series/1.2.840.1.2", limit="2"), None, who, services)
    assert len(series["instances"]) == 2
    assert action.handle(_request("/study/1.2.840.1"), None, who, services)["series"]
    with pytest.raises(BadRequest, match="series/"):
        action.handle(_request("/"), None, who, services)
    with pytest.raises(BadRequest):
        action.handle(_request("/patients/1.2"), None, who, services)


def test_a_view_is_audited_with_the_study_and_series_it_opened(store):
    answer = _viewer(store).series("1.2.840.1.2")
    targets = audit.targets_of("viewer", {}, "series/1.2.840.1.2", answer)
    assert targets == {"study_uids": [STUDY], "series_uids": ["1.2.840.1.2"]}
    study = _viewer(store).study(STUDY)
    assert audit.targets_of("viewer", {}, "study/x", study)["series_uids"] == ["1.2.840.1.1", "1.2.840.1.2"]
    assert "viewer" in audit.AUDITED


def _seg_sr_outputs(store):
    """A job's outputs as the result manifest lists them: a SEG, an SR, a PNG, on series 1.2.840.1.2."""
    from radcloud.ops.samples import viewerdata

    ct = viewerdata.ct_series(4, 16, tag="UNIT")
    seg = viewerdata.seg_of(ct, viewerdata.Box(1, 3, 4, 8, 4, 8))
    sr = viewerdata.sr_of(ct, seg, 1.5, -20.25)
    outputs = []
    for name, data in (("s000/seg/series-001.dcm", viewerdata.ds_bytes(seg)),
                       ("s000/sr/series-001.dcm", viewerdata.ds_bytes(sr)), ("s000/preview.png", b"\x89PNG")):
        info = store.put_bytes(f"results/j1/{name}", data)
        outputs.append({"key": info.key, "name": name, "size": info.size, "series_uid": "1.2.840.1.2",
                        "study_uid": STUDY, "content_type": "image/png" if name.endswith(".png") else ""})
    return {"job_id": "j1", "outputs": outputs}


def test_a_job_answers_its_seg_as_a_url_and_its_sr_as_rows(store):
    answer = _viewer(store).job(_seg_sr_outputs(store))
    assert answer["source"] == {"SeriesInstanceUID": "1.2.840.1.2", "StudyInstanceUID": STUDY}
    assert answer["segmentation"]["url"] == "http://s3.invalid/results/j1/s000/seg/series-001.dcm?ttl=60"
    assert answer["measurements"] == [
        {"segment": "Lesion", "name": "Volume", "value": 1.5, "unit": "ml"},
        {"segment": "Lesion", "name": "Attenuation Coefficient (mean)", "value": -20.2, "unit": "HU"}]
    assert audit.targets_of("viewer", {}, "job/j1", answer) == {
        "study_uids": [STUDY], "series_uids": ["1.2.840.1.2"], "job_id": ["j1"]}


def test_a_job_without_seg_or_sr_has_nothing_to_overlay(store):
    store.put_bytes("results/j2/a.dcm", b"not dicom at all")
    answer = _viewer(store).job({"job_id": "j2", "outputs": [{"key": "results/j2/a.dcm", "name": "a.dcm"}]})
    assert answer["source"] is None and answer["segmentation"] is None and answer["measurements"] == []


def _pacs_seg(store, *, stage_source=True):
    """A CT, its SEG and an SR citing the SEG, each staged as a pull from the PACS stages a series."""
    from radcloud.ops.samples import viewerdata

    ct = viewerdata.ct_series(4, 16, tag="PACS")
    seg = viewerdata.seg_of(ct, viewerdata.Box(1, 3, 4, 8, 4, 8))
    sr = viewerdata.sr_of(ct, seg, 2.5, 33.0)
    for series in ([ct] if stage_source else []) + [[seg], [sr]]:
        viewerdata.stage(store, store.index, series)
    return ct, seg, sr


def test_a_seg_pulled_from_the_pacs_opens_over_its_source_with_the_srs_that_cite_it(store):
    ct, seg, sr = _pacs_seg(store)
    answer = _viewer(store).seg(str(seg.SeriesInstanceUID))
    study, source = str(ct[0].StudyInstanceUID), str(ct[0].SeriesInstanceUID)
    assert answer["source"] == {"SeriesInstanceUID": source, "StudyInstanceUID": study}
    assert answer["segmentation"]["SeriesInstanceUID"] == str(seg.SeriesInstanceUID)
    assert answer["segmentation"]["url"].startswith(f"http://s3.invalid/staged/{study}/{seg.SeriesInstanceUID}/")
    assert answer["measurements"] == [
        {"segment": "Lesion", "name": "Volume", "value": 2.5, "unit": "ml"},
        {"segment": "Lesion", "name": "Attenuation Coefficient (mean)", "value": 33.0, "unit": "HU"}]
    assert audit.targets_of("viewer", {}, f"seg/{seg.SeriesInstanceUID}", answer) == {
        "study_uids": [study], "series_uids": [source, str(seg.SeriesInstanceUID)]}
    # Another SEG of the same CT: the study's SR cites the first one only.
    from radcloud.ops.samples import viewerdata

    other = viewerdata.seg_of(ct, viewerdata.Box(0, 1, 0, 2, 0, 2))
    viewerdata.stage(store, store.index, [other])
    assert _viewer(store).seg(str(other.SeriesInstanceUID))["measurements"] == []


def test_a_pacs_seg_without_its_source_staged_or_a_series_that_is_no_seg_is_refused_by_name(store):
    ct, seg, sr = _pacs_seg(store, stage_source=False)
    with pytest.raises(NotFound, match=f"series {ct[0].SeriesInstanceUID}\\) are not staged: pull"):
        _viewer(store).seg(str(seg.SeriesInstanceUID))
    with pytest.raises(BadRequest, match="not a DICOM Segmentation"):
        _viewer(store).seg(str(sr.SeriesInstanceUID))
    action = load_action("viewer")
    services = _Services(store, ManifestStaging(store, store.index), _Jobs())
    with pytest.raises(BadRequest, match="not a DICOM Segmentation"):
        action.handle(_request(f"/seg/{sr.SeriesInstanceUID}"), None, Principal("dr.jones", "clinician"), services)


def test_a_job_that_wrote_dicom_images_answers_them_as_a_series_to_open(store):
    """A result series (deidentify's copies, a resampled CT): more outputs than are probed."""
    from radcloud.ops.samples import viewerdata

    outputs = []
    for i, ds in enumerate(viewerdata.ct_series(60, 16, tag="RESULT")):
        info = store.put_bytes(f"results/j3/s000/ct/{i:03d}.dcm", viewerdata.ds_bytes(ds))
        outputs.append({"key": info.key, "name": f"s000/ct/{i:03d}.dcm", "size": info.size})
    info = store.put_bytes("results/j3/s000/notes.dcm", b"not dicom")  # unreadable: not an image
    outputs.append({"key": info.key, "name": "s000/notes.dcm", "size": info.size})
    answer = _viewer(store).job({"job_id": "j3", "outputs": outputs})
    assert answer["source"] is None and answer["segmentation"] is None
    assert answer["images"]["count"] == 60
    assert answer["images"]["instances"][59]["url"] == "http://s3.invalid/results/j3/s000/ct/059.dcm?ttl=60"
    assert answer["images"]["next_offset"] is None
    # a long result series comes in pages, as a staged series does
    first = _viewer(store).job({"job_id": "j3", "outputs": outputs}, limit=25)
    last = _viewer(store).job({"job_id": "j3", "outputs": outputs}, offset=50, limit=25)
    assert len(first["images"]["instances"]) == 25 and first["images"]["next_offset"] == 25
    assert last["images"]["instances"][-1] == answer["images"]["instances"][59] and last["images"]["next_offset"] is None
    assert "images" not in _viewer(store).job(_seg_sr_outputs(store))  # a SEG job shows its overlay instead


def test_a_seg_series_of_several_files_answers_every_file_and_the_srs_citing_any(store):
    """#19: a SEG series split into two instances (a segment each): both are overlaid, not the first only."""
    from radcloud.ops.samples import viewerdata

    ct = viewerdata.ct_series(4, 16, tag="PACS")
    first = viewerdata.seg_of(ct, viewerdata.Box(1, 3, 4, 8, 4, 8))
    second = viewerdata.seg_of(ct, viewerdata.Box(0, 2, 10, 14, 10, 14))
    second.SeriesInstanceUID, second.InstanceNumber = first.SeriesInstanceUID, 2
    sr = viewerdata.sr_of(ct, second, 4.0, 12.0)        # measures the second file's segment
    for series in (ct, [first, second], [sr]):
        viewerdata.stage(store, store.index, series)
    answer = _viewer(store).seg(str(first.SeriesInstanceUID))
    seg = answer["segmentation"]
    assert seg["count"] == 2 and len(set(seg["urls"])) == 2 and seg["url"] == seg["urls"][0]
    assert all(f"/{first.SeriesInstanceUID}/" in u for u in seg["urls"])
    assert [r["value"] for r in answer["measurements"]] == [4.0, 12.0]   # the SR citing the second file


def test_a_job_with_several_seg_files_of_one_source_answers_them_all(store):
    manifest = _seg_sr_outputs(store)
    seg_out = next(o for o in manifest["outputs"] if "/seg/" in o["name"])
    extra = {**seg_out, "name": seg_out["name"].replace("series-001", "series-002"),
             "key": seg_out["key"].replace("series-001", "series-002")}
    store.put_bytes(extra["key"], store.open(seg_out["key"]).read(), content_type="application/dicom")
    manifest["outputs"].append(extra)
    seg = _viewer(store).job(manifest)["segmentation"]
    assert seg["count"] == 2 and seg["urls"][1].endswith("series-002.dcm?ttl=60")


def test_sr_rows_name_a_planar_groups_measurements_as_on_one_slice():
    """radcloud's reports hold per segment a volumetric group and a planar one (its largest slice, for OHIF)."""
    import numpy as np

    from radcloud.ops.samples import viewerdata
    from radcloud.results import segsr
    from radcloud.results.viewer import sr_rows

    ct = viewerdata.ct_series(4, 16, tag="UNIT")
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[1:3, 4:8, 4:10] = 1
    labels[2, 8, 4:10] = 1                                    # slice 2 is the larger: 30 pixels
    hu = np.full(labels.shape, 40, np.int16)
    segments, algorithm = [segsr.segment(1, "soft_tissue")], segsr.Algorithm("radcloud unit", "0")
    seg = segsr.segmentation(ct, labels, segments, algorithm, content_label="X", description="x")
    sr = segsr.measurement_report(seg, ct, segments, segsr.label_stats(hu, labels, 0.5, [1]), algorithm,
                                  rois=segsr.slice_rois(hu, labels, [1]))
    dy, dx = (float(v) for v in ct[2].PixelSpacing)
    assert sr_rows(sr) == [
        {"segment": "Soft tissue", "name": "Volume", "value": 27.0, "unit": "mL"},
        {"segment": "Soft tissue", "name": "Attenuation Coefficient (mean)", "value": 40.0, "unit": "HU"},
        {"segment": "Soft tissue", "name": "Attenuation Coefficient (standard deviation)", "value": 0.0, "unit": "HU"},
        {"segment": "Soft tissue", "name": "Area (on one slice)", "value": round(30 * dy * dx, 1), "unit": "mm²"},
        {"segment": "Soft tissue", "name": "Attenuation Coefficient (mean, on one slice)", "value": 40.0, "unit": "HU"}]


def test_sr_rows_keep_a_segments_rows_together():
    import numpy as np

    from radcloud.ops.samples import viewerdata
    from radcloud.results import segsr
    from radcloud.results.viewer import sr_rows

    ct = viewerdata.ct_series(2, 16, tag="UNIT")
    labels = np.zeros((2, 16, 16), np.uint8)
    labels[0, 2:6, 2:6], labels[1, 8:12, 8:12] = 1, 2
    hu = np.zeros(labels.shape, np.int16)
    segments, algorithm = [segsr.segment(1, "fat"), segsr.segment(2, "bone")], segsr.Algorithm("radcloud unit", "0")
    seg = segsr.segmentation(ct, labels, segments, algorithm, content_label="X", description="x")
    sr = segsr.measurement_report(seg, ct, segments, segsr.label_stats(hu, labels, 1.0, [1, 2]), algorithm,
                                  rois=segsr.slice_rois(hu, labels, [1, 2]))
    assert [(r["segment"], r["name"].split(" (")[0]) for r in sr_rows(sr) if "(standard" not in r["name"]] == [
        ("Fat", "Volume"), ("Fat", "Attenuation Coefficient"), ("Fat", "Area"), ("Fat", "Attenuation Coefficient"),
        ("Bone", "Volume"), ("Bone", "Attenuation Coefficient"), ("Bone", "Area"), ("Bone", "Attenuation Coefficient")]
