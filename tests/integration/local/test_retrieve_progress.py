"""Retrieve records in (a real, private) Redis: counters, derived state, stalls, unknown ids."""

from __future__ import annotations

import pytest

from radcloud.core.errors import NotFound
from radcloud.work.retrieves import Progress, overall
from radcloud.work.executors.action import ActionExecutor
from radcloud.work.reconcile import GATE, reconcile_retrieve, sweep


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


def _ended(status="action developer error"):
    return {"response": {"status": status, "success": False}}


class _Lookup:
    """An OpenWhisk client's activation lookup, as the action executor polls it."""

    def __init__(self, fn):
        self.activation = fn


def _reconcile(progress, rid, lookup):
    return reconcile_retrieve(progress, rid, ActionExecutor(_Lookup(lookup))).failed


def test_reconcile_fails_only_series_whose_activation_ended(redis_client):
    now = [1000.0]
    progress = Progress(redis_client, clock=lambda: now[0])
    rid = progress.create([{"SeriesInstanceUID": u} for u in ("1.1", "1.2", "1.3", "1.4")],
                          source="orthanc", layout="uid")
    for uid, aid in (("1.1", "dead"), ("1.2", "alive"), ("1.3", "done")):
        progress.record_activation(rid, uid, aid)
    progress.update(rid, "1.1", state="staging")
    progress.update(rid, "1.3", state="succeeded")   # ended with its outcome: left alone
    records = {"dead": _ended(), "done": _ended("success")}
    looked = []
    assert _reconcile(progress, rid, lambda aid: looked.append(aid) or records.get(aid)) == 1
    assert sorted(looked) == ["alive", "dead"]          # 1.3 is final, 1.4 has no activation yet
    series = {s["SeriesInstanceUID"]: s for s in progress.status(rid)["series"]}
    assert series["1.1"]["state"] == "failed"
    assert series["1.1"]["reason"].startswith("activation dead ended (action developer error)")
    assert [series[u]["state"] for u in ("1.2", "1.3", "1.4")] == ["queued", "succeeded", "queued"]


def test_a_sweep_runs_at_most_once_per_interval_and_closes_finished_retrieves(redis_client):
    progress = Progress(redis_client)
    rid = progress.create([{"SeriesInstanceUID": "1.1"}], source="orthanc", layout="uid")
    progress.record_activation(rid, "1.1", "alive")
    looked = []
    ex = ActionExecutor(_Lookup(lambda aid: looked.append(aid)))
    assert rid in progress.open_retrieves()
    assert sweep(retrieves=progress, retrieve_executor=ex, every_s=60).retrieves >= 1
    assert sweep(retrieves=progress, retrieve_executor=ex, every_s=60).skipped is True
    assert looked == ["alive"]
    progress.update(rid, "1.1", state="succeeded")
    redis_client.delete(GATE)
    assert sweep(retrieves=progress, retrieve_executor=ex, every_s=60).closed >= 1
    assert rid not in progress.open_retrieves()


def test_reconcile_spares_a_series_whose_hop_moved_on(redis_client):
    """The hop found ended had already re-invoked itself: its successor's id is recorded."""
    progress = Progress(redis_client)
    rid = progress.create([{"SeriesInstanceUID": "1.1"}], source="orthanc", layout="uid")
    progress.record_activation(rid, "1.1", "hop1")
    progress.update(rid, "1.1", state="staging")

    def lookup(aid):
        progress.record_activation(rid, "1.1", "hop2")  # written between the read and the verdict
        return _ended("success")

    assert _reconcile(progress, rid, lookup) == 0
    series = progress.status(rid)["series"][0]
    assert series["state"] == "staging" and series["activation"] == "hop2"


def test_reconcile_lookup_failure_leaves_the_stall_timeout(redis_client):
    from radcloud.core.errors import UpstreamError

    progress = Progress(redis_client)
    rid = progress.create([{"SeriesInstanceUID": "1.1"}, {"SeriesInstanceUID": "1.2"}],
                          source="orthanc", layout="uid")
    progress.record_activation(rid, "1.1", "a1")
    progress.record_activation(rid, "1.2", "a2")
    calls = []

    def lookup(aid):
        calls.append(aid)
        raise UpstreamError("OpenWhisk unreachable")

    assert _reconcile(progress, rid, lookup) == 0 and calls == ["a1"]   # one failure ends the pass
    assert progress.status(rid)["state"] == "queued"


def test_first_activation_never_overwrites_a_later_one(redis_client):
    progress = Progress(redis_client)
    rid = progress.create([{"SeriesInstanceUID": "1.1"}], source="orthanc", layout="uid")
    progress.record_activation(rid, "1.1", "hop2")                 # the worker got there first
    progress.record_activation(rid, "1.1", "hop1", replace=False)  # the fan-out's late write
    assert progress.status(rid)["series"][0]["activation"] == "hop2"
