"""Staging series with fakes: streaming, skip-if-staged, errors recorded, continuation, manifests."""

from __future__ import annotations

import hashlib

import pytest

from radcloud.pacs.derivedseries import uid
from radcloud.work import retrieve as r
from radcloud.core.errors import BadRequest, NotFound
from radcloud.pacs.orthanc import Orthanc
from radcloud.work.retrieves import Progress
from radcloud.store.storage import ObjectStore
from pacs_fakes import FakeMinio, FakeOrthanc


@pytest.fixture
def fake():
    f = FakeOrthanc()
    f.add_study("st1", "1.2.1", "MRN1", "20250102", StudyDescription="CT CHEST", AccessionNumber="ACC1")
    f.add_series("se1", "st1", "1.2.1.1", 5)
    f.add_series("se2", "st1", "1.2.1.2", 2, number=2)
    return f


@pytest.fixture
def env(fake, redis_client):
    orthanc = Orthanc("http://o", session=fake)
    store = ObjectStore(FakeMinio(), "b")
    progress = Progress(redis_client)
    return orthanc, store, progress


def start(env, fake, **kw):
    orthanc, store, progress = env
    series = r.plan(r.parse_request({"StudyInstanceUID": "1.2.1", **kw}), orthanc)
    rid = progress.create(series, source="orthanc", layout=kw.get("layout", "uid"))
    return rid, series, r.Stager(orthanc, store, progress, layout=kw.get("layout", "uid"))


def test_parse_request_validates_before_any_call():
    for params, field in [({}, "StudyInstanceUID"), ({"StudyInstanceUID": "1/02"}, "StudyInstanceUID"),
                          ({"SeriesInstanceUID": ["1.2", "x y"]}, "SeriesInstanceUID"),
                          ({"StudyInstanceUID": "1.2", "layout": "flat"}, "layout"),
                          ({"StudyInstanceUID": "1.2", "bogus": 1}, "bogus"),
                          ({"StudyInstanceUID": "1.2", "modality": "a b"}, "modality"),
                          ({"StudyInstanceUID": "1.2", "pacs_name": "../x"}, "pacs_name")]:
        with pytest.raises(BadRequest) as err:
            r.parse_request(params)
        assert err.value.field == field


def test_plan_accepts_orthanc_series_ids(fake):
    orthanc = Orthanc("http://o", session=fake)
    fake.series["0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"] = dict(fake.series.pop("se2"),
                                                                       ID="0123abcd-0123abcd-0123abcd-0123abcd-0123abcd")
    req = r.parse_request({"orthanc_series": ["0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"]})
    (item,) = r.plan(req, orthanc)
    assert item == {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2",
                    "orthanc_id": "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd", "total": 2}
    for bad in (["../x"], "not-an-id", [1]):
        with pytest.raises(BadRequest) as err:
            r.parse_request({"orthanc_series": bad})
        assert err.value.field == "orthanc_series"


def test_a_pulled_study_leaves_out_radcloud_results_unless_asked(fake):
    orthanc = Orthanc("http://o", session=fake)
    made = uid("1.2.1.1", "dcm2png", "1", "pictures-series")
    fake.add_series("se3", "st1", made, 4, modality="OT", number=101)
    fake.series["se3"]["MainDicomTags"]["SeriesDescription"] = "renamed by a user"
    fake.series["se2"]["MainDicomTags"]["SeriesDescription"] = "radcloud-like words another tool wrote"
    plan = r.plan(r.parse_request({"StudyInstanceUID": "1.2.1"}), orthanc)
    assert [s["SeriesInstanceUID"] for s in plan] == ["1.2.1.1", "1.2.1.2"] and plan.skipped_derived == 1
    plan = r.plan(r.parse_request({"StudyInstanceUID": "1.2.1", "include_derived": True}), orthanc)
    assert sorted(s["SeriesInstanceUID"] for s in plan) == sorted(["1.2.1.1", "1.2.1.2", made])
    assert plan.skipped_derived == 0
    (asked,) = r.plan(r.parse_request({"SeriesInstanceUID": made}), orthanc)  # named by UID: pulled
    assert asked["SeriesInstanceUID"] == made
    for sid in ("se1", "se2"):
        fake.series[sid]["MainDicomTags"]["SeriesInstanceUID"] = uid(sid, "dcm2png", "0", "old push")
    with pytest.raises(NotFound) as err:
        r.plan(r.parse_request({"StudyInstanceUID": "1.2.1"}), orthanc)
    assert err.value.field == "include_derived" and "3 derived series" in err.value.message


def test_plan_names_unknown_uids(env):
    with pytest.raises(NotFound) as err:
        r.plan(r.parse_request({"StudyInstanceUID": ["1.2.1", "1.2.99"]}), env[0])
    assert "1.2.99" in err.value.message and "1.2.1," not in err.value.message


def test_stage_study_streams_every_instance_with_orthanc_md5(env, fake):
    rid, series, stager = start(env, fake)
    assert [s["total"] for s in series] == [5, 2]
    for s in series:
        assert stager.stage(rid, s)["state"] == "succeeded"
    store, progress = env[1], env[2]
    objects = store.client.objects
    for inst in fake.instances.values():
        key = f"staged/1.2.1/{inst.sop.rsplit('.', 1)[0]}/{inst.sop}.dcm"
        assert objects[key]["data"] == inst.data
        assert objects[key]["meta"]["x-amz-meta-md5"] == hashlib.md5(inst.data).hexdigest()
    manifest = store.get_json("staged/1.2.1/1.2.1.1/manifest.json")
    assert manifest["complete"] and manifest["count"] == manifest["expected"] == 5
    assert [i["InstanceNumber"] for i in manifest["instances"]] == [1, 2, 3, 4, 5]
    # The patient tags ride with the images they come from (S3, PHI either way): they become
    # a job's subject at dispatch (radcloud/work/subject.py), the UI's identity header.
    assert manifest["tags"]["PatientID"] == "MRN1" and "PatientName" in manifest["tags"]
    status = progress.status(rid)
    assert status["state"] == "succeeded"
    assert status["instances_done"] == status["instances_total"] == 7
    assert status["bytes"] == sum(len(i.data) for i in fake.instances.values())
    assert progress.redis.get("radcloud:staged:series:1.2.1.1") == "staged/1.2.1/1.2.1.1/manifest.json"


def test_rerun_is_a_no_op(env, fake):
    rid, series, stager = start(env, fake)
    for s in series:
        stager.stage(rid, s)
    puts = env[1].client.puts
    rid2, series, stager = start(env, fake)
    results = [stager.stage(rid2, s) for s in series]
    assert env[1].client.puts == puts + 2  # only the two manifests are rewritten
    assert [x["skipped"] for x in results] == [5, 2] and all(x["bytes"] == 0 for x in results)


def test_broken_stream_is_recorded_and_rerun_finishes(env, fake):
    rid, series, stager = start(env, fake)
    fake.broken = {"se1-i3"}
    result = stager.stage(rid, series[0])
    assert result["state"] == "failed"
    assert result["errors"][0]["SOPInstanceUID"] == "1.2.1.1.3"
    status = env[2].status(rid)
    assert status["series"][0]["state"] == "failed" and "1 of 5" in status["series"][0]["reason"]
    assert not any(k.endswith("1.2.1.1.3.dcm") for k in env[1].client.objects)  # nothing half-written
    fake.broken = set()
    rid2, series, stager = start(env, fake)
    again = stager.stage(rid2, series[0])
    assert again["state"] == "succeeded" and again["skipped"] == 4 and again["done"] == 5


def test_instances_too_big_to_read_ahead_are_streamed_with_the_same_checks(env, fake):
    orthanc, store, progress = env
    series = r.plan(r.parse_request({"StudyInstanceUID": "1.2.1"}), orthanc)
    rid = progress.create(series, source="orthanc", layout="uid")
    streaming = r.Stager(orthanc, store, progress, workers=2, read_ahead_max_bytes=0)
    fake.broken, fake.bad_md5 = {"se1-i3"}, {"se2-i1"}
    first, second = (streaming.stage(rid, s) for s in series)
    assert first["state"] == second["state"] == "failed"
    assert [e["SOPInstanceUID"] for e in first["errors"] + second["errors"]] == ["1.2.1.1.3", "1.2.1.2.1"]
    assert not any(k.endswith(("1.2.1.1.3.dcm", "1.2.1.2.1.dcm")) for k in store.client.objects)
    fake.broken = fake.bad_md5 = set()
    again = [streaming.stage(rid, s) for s in series]
    assert [a["state"] for a in again] == ["succeeded", "succeeded"]
    for inst in fake.instances.values():
        assert store.client.objects[f"staged/1.2.1/{inst.sop.rsplit('.', 1)[0]}/{inst.sop}.dcm"]["data"] == inst.data
    opened = [c[1] for c in fake.calls if c[1].endswith("/file")]
    assert len(opened) == 7 + 2  # each upload opened its own stream: the failed two, then the rest


def test_a_window_too_small_for_two_instances_still_stages_one_at_a_time(env, fake):
    orthanc, store, progress = env
    series = r.plan(r.parse_request({"StudyInstanceUID": "1.2.1"}), orthanc)
    rid = progress.create(series, source="orthanc", layout="uid")
    tight = r.Stager(orthanc, store, progress, workers=4, read_ahead_window_bytes=1)
    assert [tight.stage(rid, s)["state"] for s in series] == ["succeeded", "succeeded"]
    assert len([k for k in store.client.objects if k.endswith(".dcm")]) == 7


def test_md5_mismatch_never_stored(env, fake):
    rid, series, stager = start(env, fake)
    fake.bad_md5 = {"se2-i1"}
    result = stager.stage(rid, series[1])
    assert result["state"] == "failed" and "MD5" in result["errors"][0]["error"]
    assert not any(k.endswith("1.2.1.2.1.dcm") for k in env[1].client.objects)


def test_md5_mismatch_refused_by_the_store_on_the_checked_put(fake, redis_client):
    """Read-ahead instances go out as presigned PUTs with Content-MD5: the store refuses them."""
    from pacs_fakes import FakeS3Http

    s3 = FakeMinio()
    store = ObjectStore(s3, "b", http=FakeS3Http(s3))
    orthanc, progress = Orthanc("http://o", session=fake), Progress(redis_client)
    rid, series, stager = start((orthanc, store, progress), fake)
    fake.bad_md5 = {"se2-i1"}
    result = stager.stage(rid, series[1])
    assert result["state"] == "failed" and "nothing stored" in result["errors"][0]["error"]
    assert not any(k.endswith("1.2.1.2.1.dcm") for k in s3.objects)
    assert any(k.endswith("1.2.1.2.2.dcm") for k in s3.objects)  # its sibling went through
    # two instances and the manifest, each a PUT the store checks
    assert [(m, "Content-MD5" in h) for m, _, h in store.http.requests] == [("PUT", True)] * 3


def test_orthanc_down_fails_the_series_with_the_reason(env, fake):
    rid, series, stager = start(env, fake)
    fake.down = True
    result = stager.stage(rid, series[0])
    assert result["state"] == "failed" and "unreachable" in result["reason"]
    assert env[2].status(rid)["series"][0]["state"] == "failed"
    assert env[2].status(rid)["state"] == "running"  # the other series is still queued


def test_s3_refusing_stops_after_a_streak(env, fake):
    rid, series, stager = start(env, fake)
    env[1].client.refuse = "AccessDenied"
    result = stager.stage(rid, series[0])
    assert result["state"] == "failed" and "AccessDenied" in result["reason"]


def test_budget_exhausted_returns_the_next_index(env, fake):
    orthanc, store, progress = env
    rid, series, _ = start(env, fake)
    ticks = iter(range(0, 10_000, 10))
    stager = r.Stager(orthanc, store, progress, clock=lambda: next(ticks))
    first = stager.stage(rid, series[0], budget_s=25)
    assert first["state"] == "staging" and 0 < first["next"] < 5
    rest = r.Stager(orthanc, store, progress).stage(rid, series[0], start=first["next"])
    assert rest["state"] == "succeeded"
    assert store.get_json("staged/1.2.1/1.2.1.1/manifest.json")["count"] == 5
    assert progress.status(rid)["series"][0]["done"] == 5


def test_remote_series_is_moved_first(env, fake):
    orthanc, store, progress = env
    rid = progress.create([{"SeriesInstanceUID": "1.2.1.2"}], source="modality:PACS", layout="uid")
    result = r.Stager(orthanc, store, progress).stage(
        rid, {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2", "orthanc_id": None}, modality="PACS")
    assert fake.moves == [{"Level": "Series", "Asynchronous": True,
                           "Resources": [{"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2"}]}]
    assert result["state"] == "succeeded"


def test_a_move_outliving_the_budget_is_waited_for_by_the_next_call(env, fake):
    orthanc, store, progress = env
    series = {"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2", "orthanc_id": None}
    rid = progress.create([series], source="modality:PACS", layout="uid")
    fake.job_running_polls = 10**6
    stager = r.Stager(orthanc, store, progress)
    first = stager.stage(rid, series, modality="PACS", budget_s=1e-9)
    assert (first["state"], first["next"], first["move_job"]) == ("moving", 0, "job1")
    assert progress.status(rid)["series"][0]["state"] == "moving"
    fake.job_running_polls = 2
    done = stager.stage(rid, series, modality="PACS", budget_s=30, move_job="job1")
    assert done["state"] == "succeeded" and len(fake.moves) == 1  # waited for, not moved again
    # Without a budget (a caller that cannot continue) the wait's timeout is an error.
    fake.job_running_polls = 10**6
    stager.move_timeout_s = 0.01
    failed = stager.stage(rid, series, modality="PACS")
    assert failed["state"] == "failed" and "still Running" in failed["reason"]


def test_chris_layout_keys(env, fake):
    rid, series, stager = start(env, fake, layout="chris", pacs_name="PACS")
    stager.pacs_name = "PACS"
    stager.stage(rid, series[0])
    keys = sorted(k for k in env[1].client.objects if k.endswith(".dcm"))
    assert keys[0].startswith("SERVICES/PACS/PACS/MRN1-DOE^JANE-19700101/CT CHEST-ACC1-20250102/00001-AXIAL-")
    assert keys[0].endswith("/0001-1.2.1.1.1.dcm")
    manifest = env[1].get_json("staged/1.2.1/1.2.1.1/manifest.json")
    assert manifest["prefix"].startswith("SERVICES/PACS/PACS/") and manifest["tags"]["PatientID"] == "MRN1"


def test_series_sharing_a_uid_are_staged_apart_and_both_complete(fake, redis_client):
    """Two series Orthanc keeps apart (different patients) share a SeriesInstanceUID:
    each is tracked, staged and found under its own key; none is merged and lost."""
    from radcloud.work.staging import ManifestStaging

    fake.add_study("stA", "7.7", "MRN-A", "20250101")
    fake.add_study("stB", "7.7", "MRN-B", "20250101")   # same study UID too: only Orthanc's ids differ
    fake.add_series("a1b2c3d4-0000", "stA", "7.7.1", 3)
    fake.add_series("e5f6a7b8-0000", "stB", "7.7.1", 2)  # SOP UIDs 7.7.1.1-2 in both, as an anonymiser keeps them
    orthanc, store, progress = Orthanc("http://o", session=fake), ObjectStore(FakeMinio(), "b"), Progress(redis_client)
    series = r.plan(r.parse_request({"SeriesInstanceUID": "7.7.1"}), orthanc)
    assert sorted(s["series_key"] for s in series) == ["7.7.1+a1b2c3d4", "7.7.1+e5f6a7b8"]
    assert sum(s["total"] for s in series) == 5
    rid = progress.create(series, source="orthanc", layout="uid")
    stager = r.Stager(orthanc, store, progress)
    assert [stager.stage(rid, s)["state"] for s in series] == ["succeeded", "succeeded"]
    status = progress.status(rid)
    assert status["state"] == "succeeded" and status["instances_done"] == 5
    assert {s["SeriesInstanceUID"] for s in status["series"]} == {"7.7.1"}
    manifests = [store.get_json(s["manifest"]) for s in status["series"]]
    assert sorted(m["count"] for m in manifests) == [2, 3] and all(m["complete"] for m in manifests)
    assert len({m["prefix"] for m in manifests}) == 2
    inputs = ManifestStaging(store, redis_client, prefix="radcloud").resolve({"retrieve": rid})
    assert sorted(len(s.instances) for s in inputs) == [2, 3]
    # retrieved alone, a twin is keyed the same way: the two never share objects
    alone = r.plan(r.parse_request({"orthanc_series": []} | {"SeriesInstanceUID": "7.7.1"}), orthanc)
    assert {s["series_key"] for s in alone} == {s["series_key"] for s in series}


def test_unsafe_uid_from_orthanc_fails_its_series_with_the_reason(fake, redis_client):
    fake.add_study("stX", "8.8", "MRN-X", "20250101")
    fake.add_series("sx", "stX", "8.8/../../etc", 1)
    orthanc, store, progress = Orthanc("http://o", session=fake), ObjectStore(FakeMinio(), "b"), Progress(redis_client)
    series = r.plan(r.parse_request({"StudyInstanceUID": "8.8"}), orthanc)
    rid = progress.create(series, source="orthanc", layout="uid")
    out = r.Stager(orthanc, store, progress).stage(rid, series[0])
    assert out["state"] == "failed" and "unsafe in object keys" in out["reason"]
    assert not store.client.objects
