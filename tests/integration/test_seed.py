"""Seeding the sample studies into a real Orthanc: counts, idempotency, bad credentials."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from radcloud.errors import UpstreamError
from radcloud.samples.seed import seed_orthanc
from radcloud.samples.synthetic import plan
from radcloud.settings import Secret, Settings

pytestmark = pytest.mark.integration

ORTHANC = Path("/usr/sbin/Orthanc")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A private, empty Orthanc for this module (auth on, compression off)."""
    if not ORTHANC.exists():
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port, password = _free_port(), _free_port(), "seed-test-password"
    config = {
        "Name": "radcloud-seed-test", "HttpPort": http_port, "DicomPort": dicom_port,
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
        "RegisteredUsers": {"radcloud": password}, "HttpCompressionEnabled": False,
        "Plugins": [], "DicomServerEnabled": False,
        "OverwriteInstances": True,   # as the stack runs it: re-uploads answer "Success"
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen([str(ORTHANC), str(root / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/system", auth=("radcloud", password), timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, f"Orthanc exited; see {root / 'orthanc.log'}"
            assert time.monotonic() < deadline, f"Orthanc did not start; see {root / 'orthanc.log'}"
            time.sleep(0.1)
        yield Settings.load({"orthanc_url": url, "orthanc_user": "radcloud",
                             "orthanc_password": password}, environ={})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _get(settings: Settings, path: str):
    response = requests.get(settings.orthanc_url + path, timeout=10,
                            auth=(settings.orthanc_user, settings.orthanc_password.reveal()))
    response.raise_for_status()
    return response.json()


def test_seed_loads_every_sample_then_a_second_seed_uploads_nothing(orthanc):
    calls = []
    first = seed_orthanc(orthanc, workers=4, progress=lambda done, total: calls.append((done, total)))

    assert first["patients"] >= 3 and first["series"] >= 5 and first["instances"] >= 300
    assert first["failed"] == 0
    assert first["uploaded"] + first["already_stored"] == first["instances"]
    stats = _get(orthanc, "/statistics")
    # Orthanc is private to this module and empty before: its counts are ours.
    assert stats["CountInstances"] == first["instances"]
    assert stats["CountSeries"] == first["series"]
    assert stats["CountStudies"] == first["studies"]
    assert stats["CountPatients"] == first["patients"]
    assert calls[-1] == (first["instances"], first["instances"])
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    second = seed_orthanc(orthanc, workers=2)
    assert second["uploaded"] == 0 and second["failed"] == 0
    assert second["already_stored"] == second["instances"] == first["instances"]
    assert _get(orthanc, "/statistics")["CountInstances"] == first["instances"]


def test_seeded_ct_series_is_complete_and_findable(orthanc):
    seed_orthanc(orthanc, include_pydicom_files=False)
    ct = next(p for p in plan() if p.series.description == "AXIAL 5mm")
    found = requests.post(orthanc.orthanc_url + "/tools/find", timeout=10,
                          auth=(orthanc.orthanc_user, orthanc.orthanc_password.reveal()),
                          json={"Level": "Series", "Query": {"SeriesInstanceUID": ct.series_uid},
                                "Expand": True}).json()
    assert len(found) == 1
    assert len(found[0]["Instances"]) == ct.count
    assert found[0]["MainDicomTags"]["SeriesDescription"] == "AXIAL 5mm"


def test_wrong_password_is_a_one_line_upstream_error_naming_the_url(orthanc):
    wrong = dataclasses.replace(orthanc, orthanc_password=Secret("not-the-password"))
    with pytest.raises(UpstreamError) as info:
        seed_orthanc(wrong)
    message = str(info.value)
    assert orthanc.orthanc_url in message and "401" in message and "\n" not in message
    assert "not-the-password" not in message


def test_orthanc_down_is_an_upstream_error_naming_the_url():
    url = f"http://127.0.0.1:{_free_port()}"
    settings = Settings.load({"orthanc_url": url, "orthanc_timeout_s": 2.0}, environ={})
    with pytest.raises(UpstreamError, match="unreachable") as info:
        seed_orthanc(settings)
    assert url in str(info.value)
