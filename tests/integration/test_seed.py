"""Seeding the sample studies into the stack's real Orthanc: completeness, idempotency, errors.

The ``stack`` fixture's Orthanc is shared by the session, so these tests
check that every sample is there (not that Orthanc holds nothing else).
"""

from __future__ import annotations

import dataclasses
import socket

import pytest
import requests

from radcloud.core.errors import UpstreamError
from radcloud.ops.samples.seed import seed_orthanc
from radcloud.ops.samples.synthetic import plan
from radcloud.core.settings import Secret, Settings

pytestmark = pytest.mark.integration


def _orthanc(settings: Settings, method: str, path: str, **kwargs):
    response = requests.request(method, settings.orthanc_url + path, timeout=30,
                                auth=(settings.orthanc_user, settings.orthanc_password.reveal()),
                                **kwargs)
    response.raise_for_status()
    return response.json()


def _held_counts(settings: Settings) -> dict[str, int]:
    """Instances Orthanc holds per sample series UID."""
    query = {"Level": "Series", "Expand": True,
             "Query": {"SeriesInstanceUID": "\\".join(p.series_uid for p in plan())}}
    return {s["MainDicomTags"]["SeriesInstanceUID"]: len(s["Instances"])
            for s in _orthanc(settings, "POST", "/tools/find", json=query)}


@pytest.fixture(scope="module")
def seeded(stack, sample_encoder):
    """The first seed of this module, with its progress calls."""
    calls = []
    report = seed_orthanc(stack.settings, workers=4, progress=lambda done, total: calls.append((done, total)),
                          encode=sample_encoder)
    return report, calls


def test_first_seed_loads_every_sample_instance(stack, seeded):
    report, calls = seeded
    assert report["patients"] >= 3 and report["series"] >= 5 and report["instances"] >= 300
    assert report["failed"] == 0
    assert report["uploaded"] + report["already_stored"] == report["instances"]
    assert _held_counts(stack.settings) == {p.series_uid: p.count for p in plan()}
    stats = _orthanc(stack.settings, "GET", "/statistics")
    assert stats["CountInstances"] >= report["instances"]
    assert stats["CountPatients"] >= report["patients"]
    assert calls[-1] == (report["instances"], report["instances"])
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_second_seed_uploads_nothing(stack, seeded):
    before = _orthanc(stack.settings, "GET", "/statistics")["CountInstances"]
    again = seed_orthanc(stack.settings, workers=2)
    assert again["uploaded"] == 0 and again["failed"] == 0
    assert again["already_stored"] == again["instances"] == seeded[0]["instances"]
    assert _orthanc(stack.settings, "GET", "/statistics")["CountInstances"] == before


def test_a_deleted_instance_is_the_only_one_uploaded_again(stack, seeded):
    ct = next(p for p in plan() if p.series.description == "AXIAL 5mm")
    found = _orthanc(stack.settings, "POST", "/tools/lookup", data=ct.sop_uid(50))
    _orthanc(stack.settings, "DELETE", f"/instances/{found[0]['ID']}")
    assert _held_counts(stack.settings)[ct.series_uid] == ct.count - 1

    report = seed_orthanc(stack.settings, include_pydicom_files=False)
    assert report["uploaded"] == 1 and report["failed"] == 0
    assert _held_counts(stack.settings)[ct.series_uid] == ct.count
    series = _orthanc(stack.settings, "POST", "/tools/find",
                      json={"Level": "Series", "Query": {"SeriesInstanceUID": ct.series_uid}, "Expand": True})
    assert series[0]["MainDicomTags"]["SeriesDescription"] == "AXIAL 5mm"


def test_wrong_password_is_a_one_line_upstream_error_naming_the_url(stack):
    wrong = dataclasses.replace(stack.settings, orthanc_password=Secret("not-the-password"))
    with pytest.raises(UpstreamError) as info:
        seed_orthanc(wrong)
    message = str(info.value)
    assert stack.orthanc_url in message and "401" in message and "\n" not in message
    assert "not-the-password" not in message


def test_orthanc_down_is_an_upstream_error_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings.load({"orthanc_url": url, "orthanc_timeout_s": 2.0}, environ={})
    with pytest.raises(UpstreamError, match="unreachable") as info:
        seed_orthanc(settings)
    assert url in str(info.value) and "\n" not in str(info.value)
