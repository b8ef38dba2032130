"""The query, retrieve and retrieve-series actions' handlers with injected fakes (real private Redis)."""

from __future__ import annotations

import pytest

from radcloud.api.action import Request, run
from radcloud.core.errors import BadRequest, RadcloudError, TooManyRequests, UpstreamError
from radcloud.pacs.orthanc import Orthanc
from radcloud.work.retrieves import Progress
from radcloud.core.settings import Settings
from radcloud.store.storage import ObjectStore
from pacs_fakes import FakeMinio, FakeOrthanc, FakeWhisk
from action_loader import load_action as action

SETTINGS = Settings.load(environ={})


QUERY, RETRIEVE, SERIES = action("query"), action("retrieve"), action("retrieve_series")


@pytest.fixture
def fake():
    f = FakeOrthanc()
    f.add_study("st1", "1.2.1", "MRN1", "20250102")
    f.add_series("se1", "st1", "1.2.1.1", 3)
    f.add_series("se2", "st1", "1.2.1.2", 2, number=2)
    return f


@pytest.fixture
def services(fake, redis_client):
    return {"orthanc": Orthanc("http://o", session=fake), "progress": Progress(redis_client),
            "whisk": FakeWhisk(), "store": ObjectStore(FakeMinio(), "b")}


def test_query_action_validates_before_calling_orthanc(fake):
    with pytest.raises(BadRequest):
        QUERY.handle(Request({"StudyDate": "2025-02-30"}), SETTINGS, None, orthanc=Orthanc("http://o", session=fake))
    assert fake.calls == []


def test_query_action_answers_and_carries_run(fake):
    run_request = {"plugin": "dcm2png", "options": {"push_to_pacs": True}}
    answer = QUERY.handle(Request({"PatientID": "MRN1", "run": run_request}), SETTINGS, None,
                          orthanc=Orthanc("http://o", session=fake))
    assert answer["items"][0]["StudyInstanceUID"] == "1.2.1" and answer["run"] == run_request


@pytest.mark.parametrize("run_request, field", [
    ({"plugin": "no-such-plugin"}, "plugin"),
    ({"plugin": "dcm2png", "params": {"no_such_parameter": 1}}, "no_such_parameter"),
    ({"plugin": "dcm2png", "options": {"priority": 12}}, "run.options.priority"),
    ({"params": {}}, "run.plugin"),
    ([], "run"),
])
def test_query_action_refuses_a_run_dispatch_would_refuse_before_calling_orthanc(fake, run_request, field):
    """pull-and-run's first step: nothing is searched, so nothing is pulled, for a run that cannot start."""
    with pytest.raises(RadcloudError) as refused:
        QUERY.handle(Request({"PatientID": "MRN1", "run": run_request}), SETTINGS, None,
                     orthanc=Orthanc("http://o", session=fake))
    assert refused.value.field == field, (refused.value.field, refused.value.message)
    assert fake.calls == []


def test_query_errors_become_400_through_the_wrapper():
    direct = QUERY.main({"level": "frame"})
    assert direct["error"]["statusCode"] == 400 and direct["error"]["field"] == "level"


def test_retrieve_fans_out_one_invoke_per_series(services):
    answer = RETRIEVE.handle(Request({"StudyInstanceUID": "1.2.1", "run": {"p": 1}}), SETTINGS, None, services)
    invokes = services["whisk"].invokes
    assert [i[0] for i in invokes] == ["radcloud/retrieve-series"] * 2
    assert all(blocking is False for _, _, blocking in invokes)
    assert {i[1]["series"]["SeriesInstanceUID"] for i in invokes} == {"1.2.1.1", "1.2.1.2"}
    assert all(len(str(i[1])) < 2000 for i in invokes)  # keys, never data
    assert answer["state"] == "queued" and answer["series"] == 2 and answer["instances"] == 5
    assert answer["run"] == {"p": 1}
    status = RETRIEVE.handle(Request({"retrieve_id": answer["retrieve_id"]}), SETTINGS, None, services)
    assert [s["activation"] for s in status["series"]] == ["act1", "act2"]


def test_retrieve_accepts_a_query_answer(services, fake):
    answer = QUERY.handle(Request({"level": "series", "SeriesDescription": "AXIAL"}), SETTINGS, None,
                          orthanc=services["orthanc"])
    out = RETRIEVE.handle(Request(dict(answer)), SETTINGS, None, services)
    assert out["series"] == 2


def test_retrieve_unknown_uid_is_404_and_records_nothing(services, redis_client):
    from radcloud.core.errors import NotFound
    with pytest.raises(NotFound):
        RETRIEVE.handle(Request({"SeriesInstanceUID": "1.9.9"}), SETTINGS, None, services)
    assert redis_client.keys("radcloud:retrieve:*") == [] and services["whisk"].invokes == []


def test_failed_invoke_is_recorded_per_series(services):
    services["whisk"] = FakeWhisk(fail=TooManyRequests("too many"))
    answer = RETRIEVE.handle(Request({"StudyInstanceUID": "1.2.1"}), SETTINGS, None, services)
    status = services["progress"].status(answer["retrieve_id"])
    assert status["state"] == "failed" and "too many" in status["series"][0]["reason"]


def test_get_with_a_bad_id_is_400(services):
    with pytest.raises(BadRequest):
        RETRIEVE.handle(Request({"retrieve_id": "../x"}), SETTINGS, None, services)


def test_worker_stages_and_reinvokes_itself_when_out_of_time(services):
    answer = RETRIEVE.handle(Request({"StudyInstanceUID": "1.2.1"}), SETTINGS, None, services)
    payload = services["whisk"].invokes[0][1]
    services["whisk"].invokes.clear()
    done = SERIES.handle(Request(payload), SETTINGS, None, services)
    assert done["state"] == "succeeded" and services["whisk"].invokes == []
    # Out of time after the first batch: it re-invokes itself for the rest.
    services["store"].client.objects.clear()
    fake = services["orthanc"].session
    fake.add_series("se9", "st1", "1.2.1.9", 20, number=9)
    big = dict(payload, series={"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.9", "orthanc_id": "se9"})
    services["progress"].create([big["series"]], source="orthanc", layout="uid", retrieve_id=answer["retrieve_id"])
    result = SERIES.handle(Request(big), SETTINGS, None, {**services, "budget_s": 1e-9})
    assert result["state"] == "staging" and 0 < result["next"] < 20
    (name, params, blocking), = services["whisk"].invokes
    assert name == "radcloud/retrieve-series" and params["start"] == result["next"] and not blocking
    final = SERIES.handle(Request(params), SETTINGS, None, services)
    assert final["state"] == "succeeded"
    manifest = services["store"].get_json("staged/1.2.1/1.2.1.9/manifest.json")
    assert manifest["count"] == 20 and manifest["complete"]


def test_worker_hands_a_long_c_move_to_its_next_hop(services):
    fake = services["orthanc"].session
    series = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2", "orthanc_id": None}
    rid = services["progress"].create([series], source="modality:PACS", layout="uid")
    fake.job_running_polls = 10**6
    params = {"retrieve_id": rid, "series": series, "modality": "PACS"}
    first = SERIES.handle(Request(params), SETTINGS, None, {**services, "budget_s": 1e-9})
    assert first["state"] == "moving"
    (name, follow, blocking), = services["whisk"].invokes
    assert follow["move_job"] == "job1" and follow["modality"] == "PACS" and follow["start"] == 0
    assert follow["move_started"] <= __import__("time").time()
    fake.job_running_polls = 1
    services["whisk"].invokes.clear()
    final = SERIES.handle(Request(follow), SETTINGS, None, services)
    assert final["state"] == "succeeded" and services["whisk"].invokes == [] and len(fake.moves) == 1


def test_a_c_move_running_past_the_limit_fails_the_series(services):
    fake = services["orthanc"].session
    series = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2", "orthanc_id": None}
    rid = services["progress"].create([series], source="modality:PACS", layout="uid")
    fake.job_running_polls = 10**6
    params = {"retrieve_id": rid, "series": series, "modality": "PACS", "move_job": "job1",
              "move_started": __import__("time").time() - SERIES.MOVE_LIMIT_S - 1}
    result = SERIES.handle(Request(params), SETTINGS, None, {**services, "budget_s": 1e-9})
    assert result["state"] == "failed" and services["whisk"].invokes == []
    assert "still running after 30 minutes" in result["reason"] and fake.moves == []
    status = services["progress"].status(rid)
    assert status["series"][0]["state"] == "failed" and "remote PACS" in status["series"][0]["reason"]
    with pytest.raises(BadRequest):
        SERIES.handle(Request({**params, "move_started": "yesterday"}), SETTINGS, None, services)


def test_worker_deadline_budget():
    assert SERIES.budget_s({"__OW_DEADLINE": "100000"}, now=lambda: 40.0) == 45.0
    assert SERIES.budget_s({}, now=lambda: 0) == SERIES.DEFAULT_BUDGET_S


def test_status_get_never_writes_and_reconcile_fails_a_series_whose_activation_died(services):
    """The runner restarted under act1: its record says so; the GET only reads, reconcile settles it."""
    from radcloud.work.executors.action import ActionExecutor
    from radcloud.work.reconcile import sweep

    answer = RETRIEVE.handle(Request({"StudyInstanceUID": "1.2.1"}), SETTINGS, None, services)
    whisk = services["whisk"]
    whisk.records["act1"] = {"response": {"status": "action developer error", "success": False}}
    get = Request({"retrieve_id": answer["retrieve_id"]})
    status = RETRIEVE.handle(get, SETTINGS, None, services)
    assert [s["state"] for s in status["series"]] == ["queued", "queued"] and whisk.lookups == []
    report = sweep(retrieves=services["progress"], retrieve_executor=ActionExecutor(whisk), every_s=0)
    assert report.failed == 1 and sorted(whisk.lookups) == ["act1", "act2"]
    status = RETRIEVE.handle(get, SETTINGS, None, services)
    first, second = status["series"]
    assert first["state"] == "failed" and "activation act1 ended (action developer error)" in first["reason"]
    assert second["state"] == "queued" and status["state"] == "running"


def test_reconcile_concludes_nothing_when_openwhisk_lookups_fail(services):
    from radcloud.work.executors.action import ActionExecutor
    from radcloud.work.reconcile import sweep

    answer = RETRIEVE.handle(Request({"StudyInstanceUID": "1.2.1"}), SETTINGS, None, services)
    services["whisk"].lookup_fail = UpstreamError("OpenWhisk unreachable")
    report = sweep(retrieves=services["progress"], retrieve_executor=ActionExecutor(services["whisk"]), every_s=0)
    assert report.failed == 0
    status = RETRIEVE.handle(Request({"retrieve_id": answer["retrieve_id"]}), SETTINGS, None, services)
    assert status["state"] == "queued"


def test_each_worker_hop_records_its_own_activation(services):
    answer = RETRIEVE.handle(Request({"StudyInstanceUID": "1.2.1"}), SETTINGS, None, services)
    rid = answer["retrieve_id"]
    fake = services["orthanc"].session
    fake.add_series("se9", "st1", "1.2.1.9", 20, number=9)
    big = {"retrieve_id": rid, "layout": "uid",
           "series": {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.9", "orthanc_id": "se9"}}
    services["progress"].create([big["series"]], source="orthanc", layout="uid", retrieve_id=rid)
    seen = []
    progress = services["progress"]

    class Watch:   # the stager's first write: what activation is recorded by then?
        def __getattr__(self, name):
            return getattr(progress, name)

        def update(self, rid_, uid, **fields):
            seen.append(progress.status(rid_)["series"][-1].get("activation"))
            return progress.update(rid_, uid, **fields)

    hop = SERIES.handle(Request(big), SETTINGS, None, {**services, "progress": Watch(), "budget_s": 1e-9},
                        environ={"__OW_ACTIVATION_ID": "hop1"})
    assert seen[0] == "hop1" and hop["next"]
    # It re-invoked itself (FakeWhisk answers act3): the successor is what is recorded now.
    assert progress.status(rid)["series"][-1]["activation"] == "act3"
