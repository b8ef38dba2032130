"""Retrieve records in (a real, private) Redis: counters, derived state, stalls, unknown ids."""

from __future__ import annotations

import pytest

from radcloud.errors import NotFound
from radcloud.progress import Progress, overall


def test_overall_state():
    assert overall(["queued", "queued"]) == "queued"
    assert overall(["succeeded", "staging"]) == "running"
    assert overall(["succeeded", "succeeded"]) == "succeeded"
    assert overall(["succeeded", "failed"]) == "partial"
    assert overall(["failed", "stalled"]) == "failed"


def test_record_counts_and_errors(redis_client):
    now = [1000.0]
    progress = Progress(redis_client, clock=lambda: now[0], stall_s=60)
    rid = progress.create([{"SeriesInstanceUID": "1.1", "StudyInstanceUID": "1", "total": 3},
                           {"SeriesInstanceUID": "1.2", "total": 2}], source="orthanc", layout="uid")
    progress.advance(rid, "1.1", done=2, nbytes=100, skipped=1)
    progress.advance(rid, "1.1", done=1, nbytes=50)
    progress.update(rid, "1.1", state="succeeded", manifest="m.json", errors=[{"e": i} for i in range(50)])
    status = progress.status(rid)
    first = status["series"][0]
    assert (first["done"], first["bytes"], first["skipped"], first["total"]) == (3, 150, 1, 3)
    assert len(first["errors"]) == 20 and first["manifest"] == "m.json"
    assert status["state"] == "running" and status["instances_total"] == 5
    assert redis_client.ttl(f"radcloud:retrieve:{rid}") > 0


def test_a_silent_series_is_reported_stalled(redis_client):
    now = [1000.0]
    progress = Progress(redis_client, clock=lambda: now[0], stall_s=60)
    rid = progress.create([{"SeriesInstanceUID": "1.1"}], source="orthanc", layout="uid")
    progress.update(rid, "1.1", state="staging")
    now[0] += 61
    status = progress.status(rid)
    assert status["series"][0]["state"] == "stalled" and "rerun" in status["series"][0]["reason"]
    assert status["state"] == "failed"


def test_unknown_retrieve_is_not_found(redis_client):
    with pytest.raises(NotFound) as err:
        Progress(redis_client).status("nope")
    assert err.value.field == "retrieve_id"
