"""De-identified outputs hold no PHI: an independent checker over every output of ``deidentify``.

The checker does not reuse the plugin's own ``find_phi``: it knows the
seeded patient's values and looks for them in every output byte, and checks
the tags PS3.15's Basic Profile names (identity, dates of birth, people,
institutions, private tags, original UIDs). It runs over the plugin as a
ChRIS CLI on instances downloaded from Orthanc (with extra PHI planted in
sequences, private tags and free text), and over every output object a
``deidentify`` job through localwhisk wrote to S3.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "deidentify" / "deidentify.py"
NAME, PID, BIRTH = "Phitest^Ottoline", "PHI990077", "19440229"
PLANTED = ("Phitest", "Ottoline", PID, BIRTH, "Leakcheck General", "Leak^Doctor", "Dr^Planted", "PLANTED-ACC",
           "12 Secret Street", "+44 1234 567890")
# Tags that must be absent or emptied/replaced (PS3.15 Table E.1-1, the ones a seeded study carries).
MUST_NOT_KEEP = ("OtherPatientIDs", "InstitutionName", "PatientAddress", "PatientTelephoneNumbers",
                 "PerformingPhysicianName", "OperatorsName")


def plant_phi(raw: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.AccessionNumber = "PLANTED-ACC"
    ds.PatientAddress, ds.PatientTelephoneNumbers = "12 Secret Street", "+44 1234 567890"
    ds.PerformingPhysicianName, ds.OperatorsName = "Dr^Planted", "Dr^Planted"
    item = Dataset()
    item.PatientName, item.PatientID = NAME, PID
    ds.ReferencedPatientSequence = [item]
    block = ds.private_block(0x0011, "LEAKCO", create=True)
    block.add_new(0x01, "LO", PID)
    ds.ImageComments = f"patient {NAME} born {BIRTH}"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def check_output(data: bytes, originals: dict[str, str]) -> list[str]:
    """Problems found in one de-identified output (empty = clean)."""
    problems = [f"bytes hold {s!r}" for s in PLANTED if s.encode() in data]
    problems += [f"bytes hold original UID {u}" for u in originals.values() if u.encode() in data]
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - a non-DICOM output (summary JSON) is checked by bytes only
        return problems
    if str(ds.get("PatientName", "")) == NAME or ds.get("PatientID") == PID:
        problems.append("identity kept")
    if ds.get("PatientBirthDate") == BIRTH:
        problems.append("birth date kept")
    problems += [f"{kw} kept" for kw in MUST_NOT_KEEP if str(ds.get(kw, "") or "").strip()]
    if any(elem.tag.is_private for elem in ds.iterall()):
        problems.append("private tags kept")
    if ds.get("PatientIdentityRemoved") != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    return problems


@pytest.fixture(scope="module")
def seeded(world):
    study, series = world.seed_patient(NAME, PID, BIRTH, [3, 2])
    orthanc = world.endpoints.orthanc
    found = requests.post(orthanc.url + "/tools/find", auth=orthanc.auth, timeout=30,
                          json={"Level": "Instance", "Query": {"StudyInstanceUID": study}}).json()
    files = [requests.get(f"{orthanc.url}/instances/{i}/file", auth=orthanc.auth, timeout=30).content for i in found]
    return study, series, files


def test_checker_catches_a_raw_instance(seeded):
    _study, series, files = seeded
    problems = check_output(plant_phi(files[0]), {"series": series[0]})
    assert "identity kept" in problems and "private tags kept" in problems and len(problems) > 5


def test_cli_output_is_clean(seeded, tmp_path):
    study, series, files = seeded
    inputdir, outputdir, mapdir = tmp_path / "in", tmp_path / "out", tmp_path / "map"
    inputdir.mkdir()
    for n, raw in enumerate(files):
        (inputdir / f"{n}.dcm").write_bytes(plant_phi(raw))
    (inputdir / "notes.txt").write_text("not dicom")
    done = subprocess.run([sys.executable, str(PLUGIN), "--mapDir", str(mapdir), str(inputdir), str(outputdir)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RADCLOUD_DEID_SECRET": "a-hospital-side-secret-0123456789"})
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = sorted(p for p in outputdir.rglob("*") if p.is_file())
    assert len([p for p in outputs if p.suffix == ".dcm"]) == len(files)
    originals = {"study": study, **{f"s{i}": s for i, s in enumerate(series)}}
    report = {p.name: check_output(p.read_bytes(), originals) for p in outputs}
    assert all(not v for v in report.values()), report
    for needle in PLANTED:  # the plugin's own output lines are logs too
        assert needle not in done.stdout + done.stderr
    assert list(mapdir.iterdir())  # the re-identification map went hospital-side, not to the output


@pytest.fixture(scope="module")
def whisk_job(world, seeded):
    from radcloud.store.storage import ObjectStore

    study, series, _files = seeded
    job = world.run_job("deidentify", world.stage(study))
    keys = [o["key"] for o in world.call("results", {"job_id": job["id"]}).get("outputs", [])]
    store = ObjectStore.from_settings(world.settings)
    data = {}
    for key in keys:
        stream = store.open(key)
        try:
            data[key] = stream.read()
        finally:
            stream.close()
            stream.release_conn()
    return job, data


def test_whisk_job_never_publishes_unchecked_output(whisk_job, seeded):
    study, series, _files = seeded
    job, data = whisk_job
    if job["state"] != "succeeded":  # refused: then nothing at all is published
        assert data == {} and all(s["state"] == "failed" and s["reason"] for s in job["shards"]), job
    originals = {"study": study, **{f"s{i}": s for i, s in enumerate(series)}}
    assert {k: check_output(v, originals) for k, v in data.items() if check_output(v, originals)} == {}


def test_whisk_deidentify_job_succeeds_with_clean_outputs(world, whisk_job, seeded):
    study, series, _files = seeded
    job, data = whisk_job
    assert job["state"] == "succeeded", job["shards"][0].get("stderr_tail")
    originals = {"study": study, **{f"s{i}": s for i, s in enumerate(series)}}
    dicoms = [k for k in data if k.endswith(".dcm")]
    assert len(dicoms) == 5 and all(check_output(data[k], originals) == [] for k in data)
    assert not [k for k in data if "deid-maps" in k]  # the map is no result...
    from radcloud.store.storage import ObjectStore

    store = ObjectStore.from_settings(world.settings)
    maps = [o.key for o in store.list(f"deid-maps/{job['id']}/")]
    assert len(maps) == len(job["shards"]) == 2, maps  # ...it is stored hospital-side, one per shard
    stream = store.open(maps[0])
    try:
        assert PID.encode() in stream.read()  # and it does link back to the patient
    finally:
        stream.close()
        stream.release_conn()
