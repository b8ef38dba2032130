"""Hand-written bad input against the live web actions: refused with a 4xx JSON naming the field, never a 5xx.

Malformed UIDs/dates/wildcards, huge lists, unicode names, wrong types in
every action, path traversal in every name that reaches storage (retrieve
layout/pacs_name, dispatch input prefixes and plugin names, results output
names, a plugin leaving symlinks out of its output dir), bodies over 1 MB,
and non-DICOM / corrupt DICOM in Orthanc.
"""

from __future__ import annotations

import io
import json

import pydicom
import pytest
import requests

from jobflow import ct_instance

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _refused(world, action, *, field=None, status=400, method="POST", body=None, query="", path="", role="admin"):
    got, _h, answer = world.web(action, method=method, body=body, query=query, path=path, token=world.tokens[role])
    where = f"{action} {method} {path}?{query} {json.dumps(body)[:200] if body is not None else ''}"
    assert got == status, f"{where}: {got} {answer}"
    assert isinstance(answer, dict) and isinstance(answer.get("error"), dict), f"{where}: {answer}"
    assert answer["error"].get("message"), where
    if field is not None:
        assert answer["error"].get("field") == field, f"{where}: {answer}"
    return answer["error"]


QUERY_CASES = [  # (params, field)
    ({"StudyInstanceUID": "1.2/../x"}, "StudyInstanceUID"),
    ({"StudyInstanceUID": "1.2 abc"}, "StudyInstanceUID"),
    ({"StudyInstanceUID": ["1.2", ".3"]}, "StudyInstanceUID"),
    ({"StudyDate": "20241301"}, "StudyDate"),
    ({"StudyDate": "2024-02-30"}, "StudyDate"),
    ({"StudyDate": "last week"}, "StudyDate"),
    ({"PatientBirthDate": "19000229"}, "PatientBirthDate"),
    ({"StudyTime": "256000"}, "StudyTime"),
    ({"PatientID": "*" * 20}, "PatientID"),
    ({"PatientName": "Doe\\Jane"}, "PatientName"),
    ({"PatientName": "a\x00b"}, "PatientName"),
    ({"PatientID": [f"MRN{i}" for i in range(5000)]}, "PatientID"),
    ({"Modality": "C T"}, "ModalitiesInStudy"),
    ({"limit": "ten"}, "limit"),
    ({"limit": 10**12}, "limit"),
    ({"offset": -5}, "offset"),
    ({"level": "everything"}, "level"),
    ({"level": ["study"]}, "level"),
    ({"counts": "sometimes"}, "counts"),
    ({"PatientID": {"$ne": ""}}, "PatientID"),
    ({"PatientID": 12345}, None),  # a number may be taken as an ID; must not be a 5xx
    ({"modality": "../../etc"}, "modality"),
    ({"SOPInstanceUID": "1.2", "level": "study"}, "SOPInstanceUID"),
    ({"source": "ldap"}, "source"),
]


@pytest.mark.parametrize("params,field", QUERY_CASES, ids=[str(i) for i in range(len(QUERY_CASES))])
def test_query_refuses_malformed_input(world, params, field):
    if field is None:
        status, _h, body = world.web("query", method="POST", body=params, token=world.tokens["clinician"])
        assert status in (200, 400), body
        return
    _refused(world, "query", body=params, field=field, role="clinician")


def test_unicode_names_are_searched_not_refused(world):
    world.seed_patient("Müller^Zoë", "UNI000001", "19800101", [1])
    for name in ("Müller^Zoë", "Müller*", "山田^太郎", "Ærøskøbing*"):
        status, _h, body = world.web("query", query="PatientName=" + requests.utils.quote(name),
                                     token=world.tokens["clinician"])
        assert status == 200, (name, body)
    assert world.web("query", method="POST", body={"PatientName": "Müller^Zoë"},
                     token=world.tokens["clinician"])[2]["total"] == 1


WRONG_TYPES = [  # (action, method, path, body, field)
    ("retrieve", "POST", "", {"StudyInstanceUID": 5}, "StudyInstanceUID"),
    ("retrieve", "POST", "", {"StudyInstanceUID": {"a": 1}}, "StudyInstanceUID"),
    ("retrieve", "POST", "", {"StudyInstanceUID": [f"1.2.{i}" for i in range(20000)]}, "StudyInstanceUID"),
    ("retrieve", "POST", "", {"StudyInstanceUID": "1.2.3", "layout": "../../x"}, "layout"),
    ("retrieve", "POST", "", {"StudyInstanceUID": "1.2.3", "pacs_name": "../../etc"}, "pacs_name"),
    ("retrieve", "POST", "", {"StudyInstanceUID": "1.2.3", "pacs_name": "a/b"}, "pacs_name"),
    ("retrieve", "POST", "", {"items": "not a list"}, "items"),
    ("retrieve", "POST", "", {"retrieve_id": "../x"}, "retrieve_id"),
    ("retrieve", "GET", "/..%2F..%2Fx", None, "retrieve_id"),
    ("dispatch", "POST", "", {"plugin": 5}, "plugin"),
    ("dispatch", "POST", "", {"plugin": "../copy", "inputs": {"retrieve": "x"}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "inputs": "everything"}, "inputs"),
    ("dispatch", "POST", "", {"plugin": "copy", "inputs": {"prefixes": ["../staged/"]}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "inputs": {"prefixes": ["/etc/"]}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "inputs": {"prefixes": ["staged/../../"]}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "inputs": {"series": [5]}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "params": "x", "inputs": {"retrieve": "x"}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "params": {"times": "many"}, "inputs": {"prefixes": ["staged/"]}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "options": [], "inputs": {"retrieve": "x"}}, None),
    ("dispatch", "POST", "", {"plugin": "copy", "options": {"shard_size": -1}, "inputs": {"retrieve": "x"}}, None),
    ("status", "GET", "", {"limit": "x"}, "limit"),
    ("status", "GET", "/nojob", {"wait": "forever"}, None),
    ("status", "POST", "/x", {"op": "explode"}, "op"),
    ("results", "GET", "/../../staged", None, None),
    ("results", "GET", "/nojob/url", {"name": "../../etc/passwd"}, None),
    ("results", "GET", "/nojob", {"op": "delete"}, None),
    ("audit", "GET", "", {"limit": "lots"}, "limit"),
    ("login", "POST", "", {"username": 5, "password": ["x"]}, "username"),
]


@pytest.mark.parametrize("action,method,path,body,field", WRONG_TYPES, ids=[str(i) for i in range(len(WRONG_TYPES))])
def test_wrong_types_and_traversal_are_4xx_naming_the_problem(world, action, method, path, body, field):
    query = ""
    if method == "GET" and body:
        query, body = "&".join(f"{k}={requests.utils.quote(str(v))}" for k, v in body.items()), None
    got, _h, answer = world.web(action, method=method, path=path, body=body, query=query,
                                token=None if action == "login" else world.tokens["admin"])
    assert 400 <= got < 500, (action, path, body, got, answer)
    err = answer.get("error") if isinstance(answer, dict) else None
    assert isinstance(err, dict) and err.get("message"), (action, answer)
    if field is not None:
        assert err.get("field") == field, (action, body, err)


def test_bodies_over_1mb_are_413_everywhere(world):
    big = {"PatientID": "x" * (1024 * 1024 + 10)}
    for action in ("query", "retrieve", "dispatch", "status", "results", "audit", "login", "pull-and-run"):
        got, _h, answer = world.web(action, method="POST", body=big, token=world.tokens["admin"])
        assert got == 413, (action, got, str(answer)[:200])
        assert isinstance(answer, dict) and answer.get("error"), (action, answer)


def test_non_dicom_is_refused_by_orthanc_and_corrupt_dicom_fails_its_shard(world):
    orthanc = world.endpoints.orthanc
    refused = requests.post(orthanc.url + "/instances", data=b"not a dicom file at all" * 10, auth=orthanc.auth, timeout=30)
    assert refused.status_code in (400, 415), refused.status_code
    # A series of 3 good instances and a 2-instance series whose pixel data is truncated.
    study, series = world.seed_patient("Corrupt^Pixels", "CORRUPT01", "19800101", [3])
    bad_series = pydicom.uid.generate_uid()
    for i in (1, 2):
        ds = pydicom.dcmread(io.BytesIO(ct_instance(study, bad_series, i, 2, 64)))
        ds.PixelData = ds.PixelData[:100]  # 64x64x2 bytes declared, 100 present
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        assert requests.post(orthanc.url + "/instances", data=buf.getvalue(), auth=orthanc.auth, timeout=30).ok
    rid = world.stage(study)
    job = world.run_job("dcm2png", rid, timeout_s=120)
    assert job["state"] in ("partial", "succeeded"), job
    good = [s for s in job["shards"] if s["state"] == "succeeded"]
    assert good, job  # the intact series is converted whatever the corrupt one does
    for shard in job["shards"]:
        if shard["state"] == "failed":
            assert shard["reason"], shard
    # Reasons, logs tails and per-file reasons name no patient; only the job's subject (shown to its
    # owner as the identity header, docs/security.md) does.
    text = json.dumps({k: v for k, v in job.items() if k != "subject"})
    assert "Corrupt" not in text and "CORRUPT01" not in text
    assert "CORRUPT01" in {p["PatientID"] for p in job["subject"]["patients"]}


def test_plugin_output_symlinks_never_escape(world):
    study, _series = world.seed_patient("Escape^Artist", "ESCAPE001", "19800101", [3, 2])
    rid = world.stage(study)
    job = world.run_job("misbehave", rid, params={"mode": "escape"}, timeout_s=120)
    assert job["state"] in FINAL_STATES, job
    from radcloud.store.storage import ObjectStore

    store = ObjectStore.from_settings(world.settings)
    outputs = world.call("results", {"job_id": job["id"]}).get("outputs", [])
    for out in outputs:
        assert "passwd" not in out["name"] and not out["name"].startswith(("up/", "etc/")), out
        stream = store.open(out["key"])
        try:
            assert b"root:x:0:0" not in stream.read(), out["key"]
        finally:
            stream.close()
            stream.release_conn()


FINAL_STATES = ("succeeded", "failed", "partial", "cancelled")
