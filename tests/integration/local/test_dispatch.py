"""Dispatch: validation before anything is created, cache, sharding, fan-out (fakes, real Redis)."""

from __future__ import annotations

import pytest
from jobs_fakes import FIXTURE_PLUGINS, FakeInvoker, MemStore, job_wiring, stage_series

from radcloud.work.dispatch import Dispatcher, Options, request_from_params
from radcloud.core.errors import BadRequest, Conflict, NotFound
from radcloud.run.registry import Registry
from radcloud.work.reporter import Finaliser, RedisShardReporter
from radcloud.run.shard import run_shard
from radcloud.work.staging import ManifestStaging

REGISTRY = Registry(FIXTURE_PLUGINS)


@pytest.fixture
def world(redis_client):
    store = MemStore()
    w = job_wiring(redis_client, store, REGISTRY)
    w.store, w.redis = store, redis_client
    w.make = lambda invoker: Dispatcher(w.jobs, w.cache, REGISTRY, ManifestStaging(store, redis_client), invoker,
                                        finaliser=w.finaliser)
    return w


def req(**kw):
    base = {"plugin": "copy", "params": {}, "inputs": {"series": ["1.2.1", "1.2.2"]}}
    return {**base, **kw}


def test_unknown_plugin_is_404_and_creates_nothing(world):
    stage_series(world.store, "1.2", "1.2.1", 2)
    with pytest.raises(NotFound) as err:
        world.make(FakeInvoker()).dispatch(req(plugin="nope"), "alice")
    assert "copy" in err.value.message  # names what exists
    assert world.jobs.list() == []


def test_plugin_whose_minimum_memory_cannot_fit_its_action_is_409_naming_both(world):
    stage_series(world.store, "1.2", "1.2.1", 2)
    invoker = FakeInvoker()
    with pytest.raises(Conflict) as err:
        world.make(invoker).dispatch(req(plugin="toobig", inputs={"series": ["1.2.1"]}), "alice")
    assert "min_memory_limit 1Gi (1024 MiB)" in err.value.message and "memorySize 512 MB" in err.value.message
    assert world.jobs.list() == [] and not invoker.calls


def test_bad_param_is_400_naming_it(world):
    with pytest.raises(BadRequest) as err:
        world.make(FakeInvoker()).dispatch(req(params={"times": "many"}), "alice")
    assert err.value.field == "times"


@pytest.mark.parametrize("opts,field", [({"shard_by": "patient"}, "shard_by"), ({"priority": 12}, "priority"),
                                        ({"force": "yes"}, "force"), ({"shard_size": 0}, "shard_size")])
def test_bad_options_are_400(opts, field):
    with pytest.raises(BadRequest) as err:
        Options.parse(opts)
    assert err.value.field == field


def test_unstaged_series_is_404_and_incomplete_is_409(world):
    stage_series(world.store, "1.2", "1.2.1", 2)
    with pytest.raises(NotFound) as err:
        world.make(FakeInvoker()).dispatch(req(), "alice")
    assert "1.2.2" in err.value.message
    stage_series(world.store, "1.2", "1.2.2", 2, complete=False)
    with pytest.raises(Conflict):
        world.make(FakeInvoker()).dispatch(req(), "alice")
    assert world.jobs.list() == []


def test_fan_out_one_tiny_payload_per_series(world):
    stage_series(world.store, "1.2", "1.2.1", 3)
    stage_series(world.store, "1.2", "1.2.2", 2)
    inv = FakeInvoker()
    answer = world.make(inv).dispatch(req(params={"times": 2}, options={"priority": 3}), "alice")
    assert answer["cached"] is False and answer["shards"] == 2
    assert [a for a, _ in inv.calls] == ["radcloud/plugin-copy"] * 2
    payload = inv.calls[0][1]
    assert payload["inputs"] == [f"studies/1.2/1.2.1/1.2.1.{i}.dcm" for i in range(3)]
    assert payload["input_prefix"] == "studies/1.2/1.2.1/" and payload["params"]["times"] == 2
    assert payload["output_prefix"] == f"results/{answer['job_id']}/s000/"
    assert len(str(payload)) < 2000
    job = world.jobs.get(answer["job_id"])
    assert job["state"] == "staging" and job["priority"] == 3 and job["instances_total"] == 5
    assert {s["activation_id"] for s in job["shards"]} == {"0" * 31 + "1", "0" * 31 + "2"}


def test_shard_by_instances_splits_within_series(world):
    stage_series(world.store, "1.2", "1.2.1", 5)
    inv = FakeInvoker()
    answer = world.make(inv).dispatch(req(inputs={"prefixes": ["studies/1.2/1.2.1/"]},
                                          options={"shard_by": "instances", "shard_size": 2}), "a")
    assert [len(p["inputs"]) for _, p in inv.calls] == [2, 2, 1]
    assert [s["id"] for s in world.jobs.get(answer["job_id"])["shards"]] == ["s000-000", "s000-001", "s000-002"]


def test_invoke_failure_fails_that_shard_with_reason(world):
    stage_series(world.store, "1.2", "1.2.1", 1)
    stage_series(world.store, "1.2", "1.2.2", 1)
    answer = world.make(FakeInvoker(fail={"s001"})).dispatch(req(), "alice")
    shards = world.jobs.get(answer["job_id"])["shards"]
    assert shards[1]["state"] == "failed" and "invoke failed" in shards[1]["reason"]


def test_real_shards_run_to_success_then_identical_rerun_is_cache_hit(world):
    stage_series(world.store, "1.2", "1.2.1", 2, redis=world.redis)  # found through the Redis index
    stage_series(world.store, "1.2", "1.2.2", 2)                      # found by listing manifests/
    d = world.make(FakeInvoker(world.runner))
    first = d.dispatch(req(), "alice")
    job = world.jobs.get(first["job_id"])
    assert job["state"] == "succeeded", job
    assert job["instances_done"] == 4
    manifest = world.results.manifest(first["job_id"])
    assert manifest["count"] == 6 and {o["shard"] for o in manifest["outputs"]} == {"s000", "s001"}
    second = d.dispatch(req(), "bob")
    assert second["cached"] is True and second["results_of"] == first["job_id"]
    assert world.results.manifest(second["job_id"])["outputs"] == manifest["outputs"]
    forced = d.dispatch(req(options={"force": True}), "bob")
    assert forced["cached"] is False


def test_different_params_miss_the_cache(world):
    stage_series(world.store, "1.2", "1.2.1", 1)
    d = world.make(FakeInvoker(world.runner))
    d.dispatch(req(inputs={"series": ["1.2.1"]}), "a")
    again = d.dispatch(req(inputs={"series": ["1.2.1"]}, params={"prefix": "x"}), "a")
    assert again["cached"] is False


def test_crashing_plugin_fails_job_with_reason(world):
    stage_series(world.store, "1.2", "1.2.1", 1)
    answer = world.make(FakeInvoker(world.runner)).dispatch(req(plugin="crash", inputs={"series": ["1.2.1"]}), "a")
    job = world.jobs.get(answer["job_id"])
    assert job["state"] == "failed" and "crash" in job["reason"]
    assert job["shards"][0]["exit_code"] not in (None, 0)


def test_retrieve_input_and_sequence_request_shape(world, redis_client):
    from radcloud.work.retrieves import Progress

    mkey_prefix = stage_series(world.store, "1.2", "1.2.1", 1)
    progress = Progress(redis_client)
    rid = progress.create([{"SeriesInstanceUID": "1.2.1", "StudyInstanceUID": "1.2"}], source="local", layout="uid")
    request = request_from_params({"retrieve_id": rid, "run": {"plugin": "copy", "params": {}}})
    assert request["inputs"] == {"retrieve": rid} and request["options"]["wait_staged"] == 50
    request["options"]["wait_staged"] = 0
    with pytest.raises(Conflict) as err:  # still queued
        world.make(FakeInvoker()).dispatch(request, "a")
    assert "still staging" in err.value.message
    progress.update(rid, "1.2.1", state="succeeded", manifest="manifests/1.2/1.2.1.json")
    answer = world.make(FakeInvoker()).dispatch(request, "a")
    job = world.jobs.get(answer["job_id"])
    assert job["shards_total"] == 1 and job["shards"][0]["input_prefix"] == mkey_prefix
    with pytest.raises(NotFound):
        world.make(FakeInvoker()).dispatch(request_from_params({"retrieve_id": "r2", "plugin": "copy"}), "a")


def test_pull_and_run_waits_for_a_running_retrieve(world, redis_client):
    import threading

    from radcloud.work.retrieves import Progress

    stage_series(world.store, "1.2", "1.2.1", 1)
    progress = Progress(redis_client)
    rid = progress.create([{"SeriesInstanceUID": "1.2.1", "StudyInstanceUID": "1.2"}], source="local", layout="uid")
    writer = threading.Timer(0.4, lambda: progress.update(rid, "1.2.1", state="succeeded",
                                                          manifest="manifests/1.2/1.2.1.json"))
    writer.start()
    request = request_from_params({"retrieve_id": rid, "state": "running", "series": [{"x": 1}],
                                   "run": {"plugin": "copy", "options": {"wait_staged": 5}}})
    answer = world.make(FakeInvoker()).dispatch(request, "a")
    writer.join()
    assert world.jobs.get(answer["job_id"])["shards_total"] == 1


def test_deidentify_runs_first_in_each_shard_and_only_final_outputs_are_results(world):
    from radcloud.work.dispatch import advance_stage

    stage_series(world.store, "1.2", "1.2.1", 2)
    holder = {}
    finaliser = Finaliser(world.jobs, results=world.results, cache=world.cache)

    def runner(params, aid):
        rep = RedisShardReporter(world.jobs, params["job_id"], finaliser=finaliser, activation_id=aid,
                                 advance=lambda j, s, o: advance_stage(world.jobs, holder["inv"], j, s, o,
                                                                       package="radcloud", timeout_s=60,
                                                                       finaliser=finaliser))
        return run_shard(params, store=world.store, reporter=rep, registry=REGISTRY)

    holder["inv"] = inv = FakeInvoker(runner)
    d = Dispatcher(world.jobs, world.cache, REGISTRY, ManifestStaging(world.store, world.redis), inv,
                   finaliser=finaliser, deidentify_plugin="copy")  # "copy" stands in for deidentify here
    answer = d.dispatch(req(inputs={"series": ["1.2.1"]}, params={"prefix": "x-"},
                            options={"deidentify": True}), "alice")
    job = world.jobs.get(answer["job_id"])
    assert job["state"] == "succeeded", job
    first, second = inv.calls
    assert first[1]["params"] == {} and "/_stages/s000/copy/" in first[1]["output_prefix"]
    assert all("/_stages/" in k for k in second[1]["inputs"]) and second[1]["params"]["prefix"] == "x-"
    names = [o["name"] for o in world.results.manifest(answer["job_id"])["outputs"]]
    assert names and all("_stages" not in n for n in names)
    assert any(n.startswith("s000/x-") for n in names)
    assert job["shards"][0]["stage"] == 1 and job["instances_done"] == 2


def test_deidentify_without_the_plugin_installed_is_404(world):
    stage_series(world.store, "1.2", "1.2.1", 1)
    with pytest.raises(NotFound) as err:
        world.make(FakeInvoker()).dispatch(req(inputs={"series": ["1.2.1"]}, options={"deidentify": True}), "a")
    assert "deidentify" in err.value.message


def test_deidentify_without_the_secret_is_503_naming_the_setting_before_any_shard(world):
    from pathlib import Path

    from radcloud.core.errors import Unavailable

    stage_series(world.store, "1.2", "1.2.1", 1)
    real = Registry(Path(__file__).resolve().parents[3] / "plugins")
    for request in (req(plugin="deidentify", inputs={"series": ["1.2.1"]}),
                    req(plugin="dicom-tags", inputs={"series": ["1.2.1"]}, options={"deidentify": True})):
        inv = FakeInvoker()
        with pytest.raises(Unavailable) as err:
            Dispatcher(world.jobs, world.cache, real, ManifestStaging(world.store, world.redis), inv
                       ).dispatch(request, "alice")
        assert err.value.status == 503 and err.value.field == "deid_secret"
        assert "RADCLOUD_DEID_SECRET" in err.value.message
        assert world.jobs.list() == [] and inv.calls == []
    # With the setting, the job fans out and the secret stays out of the payload.
    inv = FakeInvoker()
    secret = "a-hospital-side-secret-0123456789"
    answer = Dispatcher(world.jobs, world.cache, real, ManifestStaging(world.store, world.redis), inv,
                        deid_secret=secret).dispatch(req(plugin="deidentify", inputs={"series": ["1.2.1"]}), "alice")
    assert answer["job_id"] and len(inv.calls) == 1 and secret not in repr(inv.calls)


def test_another_users_results_are_refused_like_a_missing_job_and_nothing_is_created(world):
    """Finding 5: alice got 200 and a job stuck in ``staging`` for bob's results/<job>/."""
    stage_series(world.store, "1.2", "1.2.1", 2)
    d = world.make(FakeInvoker(world.runner))
    bobs = d.dispatch(req(inputs={"series": ["1.2.1"]}), "bob")
    assert world.jobs.get(bobs["job_id"])["state"] == "succeeded"
    answers = []
    for job in (bobs["job_id"], "j" + "0" * 20):
        with pytest.raises(NotFound) as info:
            d.dispatch(req(inputs={"prefixes": [f"results/{job}/"]}), "alice")  # holds its manifest.json
        answers.append(info.value.message.replace(job, "<job>"))
    assert answers[0] == answers[1]
    assert world.jobs.list(owner="alice") == []
    with pytest.raises(BadRequest, match="nothing to run"):  # an admin passes the ownership check
        d.dispatch(req(inputs={"prefixes": [f"results/{bobs['job_id']}/"]}), "root", privileged=True)


def test_inputs_with_nothing_to_run_fail_at_once_with_a_reason(world):
    # A job's results manifest lists outputs, not instances: nothing for a plugin to run on.
    stage_series(world.store, "1.2", "1.2.1", 1)
    d = world.make(FakeInvoker(world.runner))
    job = d.dispatch(req(inputs={"series": ["1.2.1"]}), "alice")["job_id"]
    with pytest.raises(BadRequest, match="no instances: nothing to run"):
        d.dispatch(req(inputs={"prefixes": [f"results/{job}/"]}), "alice")
    assert [j["id"] for j in world.jobs.list(owner="alice")] == [job]  # no job was created


PATIENT = {"PatientName": "SMITH^JOHN", "PatientID": "RC100002", "PatientBirthDate": "19600101",
           "PatientSex": "M", "StudyDate": "20250610", "StudyDescription": "CT CHEST",
           "AccessionNumber": "A1", "Modality": "CT"}


def test_the_job_records_whose_images_it_ran_on_and_never_logs_it(world, caplog):
    """The subject (patient, study, series) is in the job's record and the status/results
    answers; not in any log line or shard payload (radcloud.work.subject)."""
    caplog.set_level("DEBUG")
    stage_series(world.store, "1.2", "1.2.1", 2, tags={**PATIENT, "SeriesNumber": 2, "SeriesDescription": "lung"})
    stage_series(world.store, "1.2", "1.2.2", 1, tags={**PATIENT, "SeriesNumber": 1, "SeriesDescription": "soft"})
    invoker = FakeInvoker(world.runner)
    answer = world.make(invoker).dispatch(req(options={"force": True}), "alice")
    job = world.jobs.get(answer["job_id"])
    subject = job["subject"]
    assert subject["patients"] == [{k: PATIENT[k] for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")}]
    assert subject["studies"] == [{"StudyInstanceUID": "1.2", "StudyDate": "20250610", "StudyDescription": "CT CHEST",
                                   "AccessionNumber": "A1"}]
    assert [s["SeriesDescription"] for s in subject["series"]] == ["soft", "lung"]   # by series number
    assert world.results.manifest(answer["job_id"])["subject"] == subject
    assert "subject" not in answer
    assert invoker.calls and not any("SMITH" in str(params) for _action, params in invoker.calls)
    assert "SMITH" not in caplog.text and "RC100002" not in caplog.text
    # A cached answer is about the same images: it carries the same subject.
    again = world.make(FakeInvoker(world.runner)).dispatch(req(), "alice")
    assert again["cached"] and world.jobs.get(again["job_id"])["subject"] == subject


def test_a_job_on_series_staged_without_patient_attributes_has_no_subject(world):
    stage_series(world.store, "1.2", "1.2.1", 1)
    stage_series(world.store, "1.2", "1.2.2", 1)
    answer = world.make(FakeInvoker(world.runner)).dispatch(req(options={"force": True}), "alice")
    assert not world.jobs.get(answer["job_id"])["subject"]


def test_the_staged_list_reads_the_staged_index_and_its_series_run_as_prefixes(world):
    from radcloud.store.staged import list_studies

    stage_series(world.store, "1.2", "1.2.1", 2, redis=world.redis, tags=PATIENT)
    stage_series(world.store, "1.2", "1.2.2", 1, redis=world.redis, tags=PATIENT)
    stage_series(world.store, "1.9", "1.9.1", 1)   # written, never indexed: not (yet) staged
    listed = list_studies(world.store, now=0.0, redis=world.redis)
    assert [s["StudyInstanceUID"] for s in listed["studies"]] == ["1.2"]
    study = listed["studies"][0]
    assert study["PatientID"] == "RC100002" and study["instances"] == 3
    prefixes = [s["manifest"] for s in study["series"]]
    answer = world.make(FakeInvoker(world.runner)).dispatch(
        {"plugin": "copy", "params": {}, "inputs": {"prefixes": prefixes}, "options": {"force": True}}, "alice")
    assert world.jobs.get(answer["job_id"])["subject"]["patients"][0]["PatientID"] == "RC100002"


def test_radcloud_result_series_are_refused_naming_them_unless_asked_and_a_jobs_outputs_always_run(world):
    """Dispatch itself refuses derived series (by UID root, whatever the description says), for
    every caller; include_derived runs on them; a pipeline's inputs.job is never refused."""
    from radcloud.pacs.derivedseries import uid

    result = uid("1.2.1", "dcm2png", "1.0", "pictures-series")
    stage_series(world.store, "1.2", "1.2.1", 2)
    stage_series(world.store, "1.2", result, 1, tags={"SeriesNumber": "101", "SeriesDescription": "renamed by a user"})
    d = world.make(FakeInvoker(world.runner))
    with pytest.raises(BadRequest) as err:
        d.dispatch(req(inputs={"series": ["1.2.1", result]}), "alice")
    assert err.value.field == "inputs" and err.value.details["series"] == [result]
    assert f"{result} (series 101)" in err.value.message and "options.include_derived" in err.value.message
    assert "1 of the 2 input series" in err.value.message and world.jobs.list() == []
    first = d.dispatch(req(inputs={"series": [result]}, options={"include_derived": True}), "alice")
    assert world.jobs.get(first["job_id"])["state"] == "succeeded"
    # A step consuming the job before it: its outputs carry the (derived) source's UID, and run.
    step = d.dispatch(req(inputs={"job": first["job_id"]}), "alice")
    assert world.jobs.get(step["job_id"])["state"] == "succeeded"


def test_an_action_shard_may_stay_open_as_long_as_its_action_may_run(world):
    """Reconcile's backstop (the shard's deadline) is never shorter than the action's own time limit
    (the manifest's, from the descriptor): with a shorter shard_timeout_s, a shard still running
    was failed ("deadline passed without an outcome") and its outcome came too late."""
    from radcloud.run.resources import action_limits
    from radcloud.work import routing

    stage_series(world.store, "1.2", "1.2.1", 1)
    stage_series(world.store, "1.2", "1.2.2", 1)
    router = lambda d, o: routing.route(d, requested=o["executor"], default="action", cluster=False,  # noqa: E731
                                        default_timeout_s=25)
    dispatcher = Dispatcher(world.jobs, world.cache, REGISTRY, ManifestStaging(world.store, world.redis),
                            FakeInvoker(), finaliser=world.finaliser, shard_timeout_s=25, router=router)
    job = world.jobs.get(dispatcher.dispatch(req(), "alice")["job_id"])
    limit_s = action_limits(REGISTRY.get("copy").descriptor).timeout_ms // 1000
    assert job["options"]["executor"] == "action" and limit_s > 25
    assert [s["deadline"] - float(job["created_at"]) for s in job["shards"]] == pytest.approx([limit_s] * 2, abs=0.01)
    # without a router (no settings): the dispatcher's own shard_timeout_s, as before
    plain = Dispatcher(world.jobs, world.cache, REGISTRY, ManifestStaging(world.store, world.redis), FakeInvoker(),
                       finaliser=world.finaliser, shard_timeout_s=25)
    job = world.jobs.get(plain.dispatch(req(options={"force": True}), "alice")["job_id"])
    assert [s["deadline"] - float(job["created_at"]) for s in job["shards"]] == pytest.approx([25] * 2, abs=0.01)
