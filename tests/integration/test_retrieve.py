"""Retrieve through the real library: Orthanc -> SeaweedFS S3, Redis progress, faults survived.

Covers: a whole study staged with every MD5 matching Orthanc's; a rerun is a
no-op; Orthanc killed mid-retrieve then restarted -> the rerun completes with
no duplicates; a remote PACS C-MOVEd through Orthanc first; S3 refusing;
unknown UIDs; and that an interrupted S3 PUT leaves no object (why staging
needs no temporary keys).
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests

from radcloud.work import retrieve as r
from radcloud.core.errors import NotFound, UpstreamError
from radcloud.pacs.orthanc import Orthanc
from radcloud.work.retrieves import Progress
from radcloud.ops.samples.seed import seed_orthanc
from radcloud.ops.samples.spec import DEFAULT_SPEC, PatientSpec, SeriesSpec, StudySpec
from radcloud.core.settings import Secret
from radcloud.store.storage import ObjectStore

pytestmark = pytest.mark.integration

REMOTE_ONLY = (PatientSpec("REMOTE^ONLY", "RCR000001", "19800101", "O", (
    StudySpec("CT", "CT REMOTE ONLY", "20250505", "101010", "RCR0000001", "CHEST", (
        SeriesSpec("AXIAL A", "ct_axial", 6, rows=64, cols=64, pixel_spacing=6.25),
        SeriesSpec("AXIAL B", "ct_axial", 4, rows=64, cols=64, pixel_spacing=6.25),
    )),
)),)


@dataclasses.dataclass
class World:
    settings: object
    orthanc: Orthanc
    store: ObjectStore
    progress: Progress

    def study_uid(self, accession: str) -> str:
        return self.orthanc.find("Study", {"AccessionNumber": accession})[0]["MainDicomTags"]["StudyInstanceUID"]

    def retrieve(self, params: dict, **stager_kw) -> tuple[str, list[dict]]:
        req = r.parse_request(params)
        series = r.plan(req, self.orthanc)
        rid = self.progress.create(series, source="test", layout=req.layout)
        stager = r.Stager(self.orthanc, self.store, self.progress, layout=req.layout,
                          pacs_name=req.pacs_name, **stager_kw)
        return rid, [stager.stage(rid, s, modality=req.modality) for s in series]

    def orthanc_md5s(self, study_uid: str) -> dict[str, str]:
        """SOPInstanceUID -> MD5 Orthanc stored."""
        out = {}
        for inst in self.orthanc.find("Instance", {"StudyInstanceUID": study_uid}):
            out[inst["MainDicomTags"]["SOPInstanceUID"]] = self.orthanc.instance_md5(inst["ID"])
        return out

    def staged(self, study_uid: str) -> dict[str, str]:
        """SOPInstanceUID -> MD5 of the bytes actually in S3 (downloaded and hashed)."""
        out = {}
        for info in self.store.list(f"staged/{study_uid}/"):
            if info.key.endswith(".dcm"):
                stream = self.store.open(info.key)
                try:
                    out[info.key.rsplit("/", 1)[1][:-4]] = hashlib.md5(stream.read()).hexdigest()
                finally:
                    stream.close()
                    stream.release_conn()
        return out


@pytest.fixture(scope="module")
def world(stack, sample_encoder):
    seed_orthanc(stack.settings, include_pydicom_files=False, encode=sample_encoder)
    return World(stack.settings, Orthanc.from_settings(stack.settings), ObjectStore.from_settings(stack.settings),
                 Progress.from_settings(stack.settings))


def test_whole_study_then_rerun_is_a_no_op(world):
    study = world.study_uid("RCA0000101")
    world.store.delete_prefix(f"staged/{study}/")
    rid, results = world.retrieve({"StudyInstanceUID": study})
    assert [x["state"] for x in results] == ["succeeded"] * 3
    expected = world.orthanc_md5s(study)
    assert len(expected) == 201
    assert world.staged(study) == expected
    status = world.progress.status(rid)
    assert status["state"] == "succeeded" and status["instances_done"] == 201
    assert status["bytes"] == sum(i.size for i in world.store.list(f"staged/{study}/") if i.key.endswith(".dcm"))
    manifests = [world.store.get_json(x["manifest"]) for x in results]
    assert sum(m["count"] for m in manifests) == 201 and all(m["complete"] for m in manifests)
    by_sop = {i["SOPInstanceUID"]: i["md5"] for m in manifests for i in m["instances"]}
    assert by_sop == expected

    rid2, again = world.retrieve({"StudyInstanceUID": study})
    assert [x["skipped"] for x in again] == [x["done"] for x in again] and sum(x["bytes"] for x in again) == 0
    assert world.progress.status(rid2)["state"] == "succeeded"


def test_orthanc_killed_mid_retrieve_then_rerun_completes(world, stack):
    study = world.study_uid("RCA0000301")  # 65 instances
    world.store.delete_prefix(f"staged/{study}/")
    req = r.parse_request({"StudyInstanceUID": study})
    series = r.plan(req, world.orthanc)
    big = max(series, key=lambda s: s["total"])
    rid = world.progress.create([big], source="test", layout="uid")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(
        r.Stager(world.orthanc, world.store, world.progress).stage(rid, big)))
    worker.start()
    deadline = time.monotonic() + 60
    while world.progress.status(rid)["series"][0]["done"] < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    stack.kill("orthanc")
    worker.join(120)
    assert outcome["state"] == "failed" and outcome.get("reason") or outcome.get("errors")
    status = world.progress.status(rid)
    assert status["state"] == "failed" and status["series"][0]["reason"]
    partial = [i for i in world.store.list(f"staged/{study}/") if i.key.endswith(".dcm")]
    assert 10 <= len(partial) < big["total"]

    stack.start("orthanc")
    rid2, results = world.retrieve({"StudyInstanceUID": study})
    assert all(x["state"] == "succeeded" for x in results)
    staged, expected = world.staged(study), world.orthanc_md5s(study)
    assert staged == expected  # every MD5 matches, no duplicates, nothing extra
    keys = [i.key for i in world.store.list(f"staged/{study}/")]
    assert len(keys) == len(set(keys)) == len(expected) + len(series)  # + one manifest per series


def test_remote_pacs_is_moved_into_orthanc_then_staged(world, stack, remote_pacs, sample_encoder):
    remote_settings = dataclasses.replace(stack.settings, orthanc_url=remote_pacs.url,
                                          orthanc_user=remote_pacs.user, orthanc_password=remote_pacs.password)
    seed_orthanc(remote_settings, include_pydicom_files=False, spec=REMOTE_ONLY, encode=sample_encoder)
    remote = Orthanc.from_settings(remote_settings)
    study = remote.find("Study", {"AccessionNumber": "RCR0000001"})[0]["MainDicomTags"]["StudyInstanceUID"]
    for local in world.orthanc.find("Study", {"StudyInstanceUID": study}, expand=False):
        requests.delete(f"{world.orthanc.url}/studies/{local}", auth=world.orthanc.session.auth, timeout=30)
    world.store.delete_prefix(f"staged/{study}/")
    with pytest.raises(NotFound):  # not local: only the remote PACS has it
        world.retrieve({"StudyInstanceUID": study})
    rid, results = world.retrieve({"StudyInstanceUID": study, "modality": remote_pacs.aet})
    assert [x["state"] for x in results] == ["succeeded", "succeeded"]
    remote_sops = {i["MainDicomTags"]["SOPInstanceUID"] for i in remote.find("Instance", {"StudyInstanceUID": study})}
    staged = world.staged(study)
    # C-STORE rewrites the file meta header, so the bytes are Orthanc's copy, not the PACS's.
    assert set(staged) == remote_sops and len(remote_sops) == 10
    assert staged == world.orthanc_md5s(study)


def test_s3_refusing_fails_the_series_with_the_reason(world, stack):
    study = world.study_uid("RCA0000302")
    wrong = dataclasses.replace(stack.settings, s3_secret_key=Secret("not-the-key"))
    store = ObjectStore.from_settings(wrong)
    series = r.plan(r.parse_request({"StudyInstanceUID": study}), world.orthanc)
    rid = world.progress.create(series, source="test", layout="uid")
    result = r.Stager(world.orthanc, store, world.progress).stage(rid, series[0])
    assert result["state"] == "failed"
    assert "S3" in result["reason"] and "refused" in result["reason"], result["reason"]
    assert world.progress.status(rid)["state"] == "failed"


def test_unknown_uids_are_404_before_anything_is_recorded(world):
    with pytest.raises(NotFound) as err:
        world.retrieve({"SeriesInstanceUID": ["1.2.3.4.5.6.7"]})
    assert "1.2.3.4.5.6.7" in err.value.message


def test_an_interrupted_s3_put_leaves_no_object(world):
    """S3 PUT is atomic per object: a body cut short is never visible (SeaweedFS verified)."""
    key = "atomicity/probe.bin"
    url = urlsplit(world.store.client.presigned_put_object(world.store.bucket, key, timedelta(minutes=5)))
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                     f"Content-Length: 1000000\r\n\r\n".encode() + b"x" * 400_000)
        time.sleep(0.2)
    time.sleep(0.5)
    assert world.store.stat(key) is None


def test_the_real_store_refuses_bytes_whose_md5_is_not_the_expected_one(world):
    """The checked PUT relies on the store honouring Content-MD5 (BadDigest), not on a local hash."""
    import io

    from radcloud.store.storage import ChecksumMismatch

    data = b"\x00DICM" * 20_000
    right, wrong = hashlib.md5(data).hexdigest(), hashlib.md5(data + b"!").hexdigest()
    with pytest.raises(ChecksumMismatch) as err:
        world.store.put_stream("checked/wrong.dcm", io.BytesIO(data), len(data), md5=wrong)
    assert "nothing stored" in err.value.message
    assert world.store.stat("checked/wrong.dcm") is None
    info = world.store.put_stream("checked/right.dcm", io.BytesIO(data), len(data), md5=right,
                                  content_type="application/dicom")
    stat = world.store.stat("checked/right.dcm")
    assert (info.md5, stat.md5, stat.size, stat.content_type) == (right, right, len(data), "application/dicom")


def test_per_instance_calls_on_the_real_orthanc_keep_requests_errors(world, stack):
    """radcloud's own Orthanc client fetches instances through a urllib3 pool: same answers, same errors."""
    inst = world.orthanc.find("Instance", {"AccessionNumber": "RCA0000302"})[0]
    resp = world.orthanc.open_instance(inst["ID"])
    head = resp.raw.read(1000)
    resp.close()  # half read: the connection is dropped, not reused
    whole = b"".join(world.orthanc.iter_instance(inst["ID"]))
    assert whole[:1000] == head and whole[128:132] == b"DICM"
    assert hashlib.md5(whole).hexdigest() == world.orthanc.instance_md5(inst["ID"])
    with pytest.raises(NotFound):
        world.orthanc.instance_md5("00000000-00000000-00000000-00000000-00000000")
    wrong = Orthanc(stack.orthanc_url, user=stack.orthanc_auth[0], password="not-the-password")
    with pytest.raises(UpstreamError, match="credentials"):
        wrong.open_instance(inst["ID"])
    dead = Orthanc("http://127.0.0.1:9", user="u", password="p", timeout_s=2)
    with pytest.raises(UpstreamError, match="unreachable"):
        dead.instance_md5(inst["ID"])


def _store_in_orthanc(world, ds) -> None:
    import io

    buf = io.BytesIO()
    ds.save_as(buf)
    orthanc = world.settings
    r_ = requests.post(orthanc.orthanc_url.rstrip("/") + "/instances", data=buf.getvalue(), timeout=30,
                       auth=(orthanc.orthanc_user, orthanc.orthanc_password.reveal()))
    r_.raise_for_status()
    assert r_.json()["Status"] == "Success", r_.json()


def test_series_sharing_a_uid_across_patients_are_both_staged_never_merged(world):
    """Two patients, one SeriesInstanceUID (an anonymiser that keeps UIDs): Orthanc keeps two
    series; the retrieve used to stage one, drop the other and answer succeeded."""
    import pydicom
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    study, series = generate_uid(), generate_uid()
    for patient, n in (("UIDTWIN-A", 3), ("UIDTWIN-B", 2)):
        for k in range(1, n + 1):
            ds = source.copy()
            ds.PatientID, ds.PatientName = patient, f"TWIN^{patient[-1]}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{k}"  # same SOPs in both
            ds.InstanceNumber = k
            _store_in_orthanc(world, ds)
    holders = world.orthanc.find("Series", {"SeriesInstanceUID": series}, expand=False)
    assert len(holders) == 2  # Orthanc keeps them apart
    rid, results = world.retrieve({"SeriesInstanceUID": series})
    assert [x["state"] for x in results] == ["succeeded", "succeeded"], results
    status = world.progress.status(rid)
    assert status["state"] == "succeeded" and status["instances_done"] == 5 == status["instances_total"]
    manifests = [world.store.get_json(s["manifest"]) for s in status["series"]]
    assert sorted(m["count"] for m in manifests) == [2, 3] and all(m["complete"] for m in manifests)
    assert {m["orthanc_id"] for m in manifests} == set(holders)
    assert len({m["prefix"] for m in manifests}) == 2  # same SOP UIDs, so only the prefix keeps them apart
    for m in manifests:  # each object is that patient's own bytes
        held = {i["MainDicomTags"]["SOPInstanceUID"]: world.orthanc.instance_md5(i["ID"])
                for i in world.orthanc.series_instances(m["orthanc_id"])}
        assert {i["SOPInstanceUID"]: i["md5"] for i in m["instances"]} == held


def test_a_study_with_a_non_conformant_uid_orthanc_holds_is_retrievable(world):
    """pydicom's bad_sequence.dcm has 64-hex-digit UIDs: Orthanc accepts them, so must retrieve
    (it answered 400 'StudyInstanceUID is not a DICOM UID')."""
    import pydicom

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("bad_sequence.dcm", download=False))
    _store_in_orthanc(world, ds)
    study = str(ds.StudyInstanceUID)
    rid, results = world.retrieve({"StudyInstanceUID": study})
    assert [x["state"] for x in results] == ["succeeded"], results
    manifest = world.store.get_json(results[0]["manifest"])
    assert manifest["StudyInstanceUID"] == study and manifest["count"] == 1
    assert manifest["instances"][0]["key"] == f"staged/{study}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
