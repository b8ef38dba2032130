"""Routing rules: glob matching on routing attributes, validation when saved (the repository's plugins)."""

from __future__ import annotations

import pytest

from redis_fakes import FakeRedis

from radcloud.core.errors import BadRequest, NotFound, TooManyRequests, Unavailable, UpstreamError
from radcloud.run.registry import Registry
from radcloud.arrivals.rules import (CLAIM, LEASE_S, MAX_ATTEMPTS, RuleStore, matching_series, pipeline_id,
                                     redrive, route, route_arrival, validate)

ARRIVAL = {"study_uid": "1.2", "study_description": "CT THORAX", "calling_aet": "CT_SCANNER_3",
           "series": [{"orthanc_series": "a", "modality": "CT", "body_part": "CHEST", "series_description": "Lung 1mm"},
                      {"orthanc_series": "b", "modality": "CT", "body_part": "ABDOMEN", "series_description": "Soft"},
                      {"orthanc_series": "c", "modality": "SR", "body_part": "", "series_description": ""}]}


@pytest.fixture(scope="module")
def registry():
    return Registry()


@pytest.mark.parametrize("match, series", [
    ({"modality": "CT", "body_part": "CHEST*"}, ["a"]),
    ({"modality": "ct"}, ["a", "b"]),                     # case-insensitive
    ({"series_description": "*lung*"}, ["a"]),
    ({"calling_aet": "CT_*", "modality": "SR"}, ["c"]),
    ({"calling_aet": "MR_*"}, []),
    ({"study_description": "*THORAX*", "body_part": "ABD*"}, ["b"]),
    ({}, ["a", "b", "c"]),                                 # no match: every series
])
def test_matching_series(match, series):
    rule = {"name": "r", "match": match, "pipeline": [{"plugin": "lung-seg"}]}
    assert [s["orthanc_series"] for s in matching_series(rule, ARRIVAL)] == series


def test_disabled_rules_do_not_route_and_order_is_kept():
    rules = [{"name": "off", "enabled": False, "match": {}}, {"name": "ct", "match": {"modality": "CT"}},
             {"name": "all", "match": {}}]
    assert [r["name"] for r, _ in route(rules, ARRIVAL)] == ["ct", "all"]


def test_a_valid_rule_is_normalised_with_plugin_defaults(registry):
    plugin = registry.names()[0]
    rule = validate({"name": "ct-chest", "match": {"modality": "CT"}, "pipeline": [{"plugin": plugin}]}, registry)
    assert rule["enabled"] is True and rule["pipeline"][0]["plugin"] == plugin
    assert rule["pipeline"][0]["params"] == registry.get(plugin).validate({})


@pytest.mark.parametrize("rule, field, message", [
    ({"name": "x", "pipeline": [{"plugin": "no-such-plugin"}]}, "pipeline[0]", "step 1 (no-such-plugin): no plugin"),
    ({"name": "x", "pipeline": [{"plugin": "lung-seg", "params": {"bogus": 1}}]}, "pipeline[0]",
     "unknown parameter 'bogus'"),
    ({"name": "x", "pipeline": []}, "pipeline", "non-empty list"),
    ({"name": "x", "pipeline": [{"plugin": "lung-seg"}] * 9}, "pipeline", "at most 8 steps"),
    ({"name": "x", "pipeline": [{"plugin": "deidentify"}, {"plugin": "lung-seg", "params": {"lungHU": "x"}}]},
     "pipeline[1]", "step 2 (lung-seg)"),
    ({"name": "x", "pipeline": [{"plugin": "lung-seg", "options": {"push": True}}]}, "pipeline[0].options",
     "push_to_pacs"),
    ({"name": "x", "match": {"patient_name": "DOE*"}, "pipeline": [{"plugin": "lung-seg"}]}, "match.patient_name",
     "not a routing attribute"),
    ({"name": "x", "match": {"modality": ""}, "pipeline": [{"plugin": "lung-seg"}]}, "match.modality", "glob"),
    ({"name": "bad name!", "pipeline": [{"plugin": "lung-seg"}]}, "name", "letters"),
    ({"name": "x", "enabled": "yes", "pipeline": [{"plugin": "lung-seg"}]}, "enabled", "true or false"),
    ({"name": "x", "pipeline": [{"plugin": "lung-seg", "when": 1}]}, "pipeline[0]", "unknown field"),
])
def test_bad_rules_are_refused_naming_the_field(registry, rule, field, message):
    with pytest.raises(BadRequest) as err:
        validate(rule, registry)
    assert err.value.field == field and message in err.value.message


CT_CHEST = {"name": "ct-chest", "match": {"modality": "CT", "body_part": "CHEST"},
            "pipeline": [{"plugin": "lung-seg", "options": {"push_to_pacs": True}}]}


class FakeWhisk:
    """The router's invoker: retrieve answers a retrieve id, dispatch an activation id."""

    def __init__(self, retrieve_answer=None) -> None:
        self.calls = []
        self.retrieve_answer = retrieve_answer or {"retrieve_id": "r1", "state": "queued"}

    def invoke(self, action, params, *, blocking=False, result=False):
        self.calls.append((action, params, blocking))
        if action.endswith("/retrieve"):
            if isinstance(self.retrieve_answer, Exception):
                raise self.retrieve_answer
            return self.retrieve_answer
        return {"activationId": "a" * 32}


class FakePipelines:
    """The router's pipelines: records what it was asked to start."""

    def __init__(self) -> None:
        self.started = []

    def start(self, steps, inputs, owner, *, name="", job_id=None):
        self.started.append((steps, inputs, owner, name))
        return job_id or f"p{len(self.started)}"


@pytest.fixture
def store(registry):
    return RuleStore(FakeRedis(), registry)


def test_rule_store_saves_validated_rules_and_disabling_takes_effect_at_once(store):
    saved = store.save(CT_CHEST)
    assert saved["pipeline"][0]["options"] == {"push_to_pacs": True} and saved["enabled"] is True
    assert [r["name"] for r in store.list()] == ["ct-chest"]
    assert route(store.list(), ARRIVAL)
    store.set_enabled("ct-chest", False)
    assert route(store.list(), ARRIVAL) == []
    store.delete("ct-chest")
    with pytest.raises(NotFound, match="no routing rule named 'ct-chest'"):
        store.get("ct-chest")
    with pytest.raises(BadRequest):
        store.save({**CT_CHEST, "pipeline": [{"plugin": "no-such"}]})
    assert store.list() == []


def test_an_arrival_stages_the_matched_series_and_starts_the_rules_pipeline_once(store):
    store.save({**CT_CHEST, "pipeline": [{"plugin": "deidentify"}, *CT_CHEST["pipeline"]]})
    whisk, pipelines = FakeWhisk(), FakePipelines()
    arrival = {**ARRIVAL, "arrival_id": "f" * 32}
    first = route_arrival(arrival, store, whisk, pipelines, owner="router", clock=lambda: 5.0)
    [run] = first["runs"]
    assert run["state"] == "started" and run["retrieve_id"] == "r1" and run["series"] == [""]
    assert run["pipeline"] == pipeline_id("f" * 32, "ct-chest", 5.0) and run["steps"] == ["deidentify", "lung-seg"]
    [(retrieve, rparams, blocking)] = whisk.calls
    assert retrieve == "radcloud/retrieve" and rparams == {"orthanc_series": ["a"]} and blocking
    [(steps, inputs, owner, name)] = pipelines.started
    assert [s["plugin"] for s in steps] == ["deidentify", "lung-seg"] and steps[1]["options"] == {"push_to_pacs": True}
    assert inputs == {"retrieve": "r1"} and owner == "router" and name == "ct-chest"
    again = route_arrival(arrival, store, whisk, pipelines)
    assert again["duplicate"] is True and len(whisk.calls) == 1 and len(pipelines.started) == 1
    assert store.runs() == [run]


def test_a_failing_step_is_recorded_with_its_reason_and_bad_arrivals_are_refused(store):
    store.save(CT_CHEST)
    whisk = FakeWhisk({"error": {"statusCode": 404, "body": {"error": {"message": "no series a in Orthanc"}}}})
    answer = route_arrival({**ARRIVAL, "arrival_id": "e" * 32}, store, whisk, FakePipelines())
    [run] = answer["runs"]
    assert run["state"] == "failed" and "no series a in Orthanc" in run["reason"]
    assert not answer["pending"] and store.pending() == []  # final: routing it again would not help
    with pytest.raises(BadRequest, match="arrival_id"):
        route_arrival(ARRIVAL, store, whisk, FakePipelines())


def test_a_rules_pipeline_started_by_hand_runs_even_disabled_and_is_recorded(store):
    from radcloud.arrivals.rules import run_by_hand

    store.save({**CT_CHEST, "enabled": False})
    pipelines = FakePipelines()
    run = run_by_hand(store, pipelines, "ct-chest", {"job": "j1"}, "root", clock=lambda: 7.0)
    assert run == {"at": 7.0, "arrival_id": "", "rule": "ct-chest", "by": "root", "study_uid": "", "series": [],
                   "steps": ["lung-seg"], "state": "started", "pipeline": "p1"}
    [(steps, inputs, owner, name)] = pipelines.started
    assert inputs == {"job": "j1"} and owner == "root" and steps[0]["options"] == {"push_to_pacs": True}
    assert store.runs() == [run]
    with pytest.raises(NotFound):
        run_by_hand(store, pipelines, "no-such-rule", {"job": "j1"}, "root")


# -- exactly once, eventually: a busy namespace or a dead run loses no arrival ---------------

class BusyWhisk(FakeWhisk):
    """Refuses the first ``busy`` retrieve invokes as the namespace at its concurrency limit does."""

    def __init__(self, busy: int, error=None) -> None:
        super().__init__()
        self.busy, self.error = busy, error or TooManyRequests("OpenWhisk refused to invoke radcloud/retrieve")

    def invoke(self, action, params, *, blocking=False, result=False):
        if action.endswith("/retrieve") and self.busy > 0:
            self.busy -= 1
            self.calls.append((action, params, blocking))
            raise self.error
        return super().invoke(action, params, blocking=blocking, result=result)


@pytest.mark.parametrize("error", [TooManyRequests("OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)"),
                                   UpstreamError("OpenWhisk at http://ow unreachable: ConnectionError"),
                                   Unavailable("S3 is down")])
def test_a_transient_refusal_leaves_the_arrival_pending_and_redrive_routes_it_once(store, error):
    store.save(CT_CHEST)
    whisk, pipelines = BusyWhisk(1, error), FakePipelines()
    arrival = {**ARRIVAL, "arrival_id": "d" * 32}
    first = route_arrival(arrival, store, whisk, pipelines, clock=lambda: 100.0)
    assert first["runs"] == [] and error.message in first["pending"] and pipelines.started == []
    [entry] = store.pending()
    assert entry["arrival"] == arrival and entry["attempts"] == 1 and entry["next_at"] == 102.0
    assert store.runs() == []  # nothing final to show yet
    assert redrive(store, whisk, pipelines, clock=lambda: 101.0) == 0  # not due: backoff
    assert redrive(store, whisk, pipelines, clock=lambda: 102.0, budget_s=-1) == 0  # the caller's time is up
    assert redrive(store, whisk, pipelines, clock=lambda: 102.0) == 1
    assert len(pipelines.started) == 1 and store.pending() == []
    [run] = store.runs()
    assert run["state"] == "started" and run["pipeline"] == pipeline_id("d" * 32, "ct-chest", 100.0)
    # The watcher's second fire of the same arrival, and any later re-drive, start nothing.
    assert route_arrival(arrival, store, whisk, pipelines)["duplicate"] is True
    assert redrive(store, whisk, pipelines, clock=lambda: 1e9) == 0 and len(pipelines.started) == 1


def test_a_fire_while_another_run_holds_the_arrival_is_a_duplicate_and_a_dead_run_is_redriven(store):
    store.save(CT_CHEST)
    whisk, pipelines = FakeWhisk(), FakePipelines()
    arrival = {**ARRIVAL, "arrival_id": "c" * 32}
    assert store.claim(arrival["arrival_id"])
    store.hold(arrival, 10.0)  # a route run took the arrival ... and died before starting anything
    assert route_arrival(arrival, store, whisk, pipelines)["duplicate"] is True
    assert redrive(store, whisk, pipelines, clock=lambda: 10.0 + LEASE_S - 1) == 0  # its lease still runs
    store.redis.kv.pop(CLAIM + arrival["arrival_id"])  # the lease expired
    assert redrive(store, whisk, pipelines, clock=lambda: 10.0 + LEASE_S) == 1
    assert len(pipelines.started) == 1 and store.pending() == []


class BytesRedis(FakeRedis):
    """Replies as the route action's client gives them (radcloud.access.auth: no decode_responses)."""

    def get(self, key):
        value = super().get(key)
        return value.encode() if value is not None else None

    def hkeys(self, key):
        return [k.encode() for k in super().hkeys(key)]


@pytest.mark.parametrize("redis", [FakeRedis, BytesRedis])
def test_a_redrive_starts_only_the_rules_not_started_yet(registry, redis):
    store = RuleStore(redis(), registry)
    store.save(CT_CHEST)
    store.save({**CT_CHEST, "name": "ct-chest-2"})
    whisk, pipelines = FakeWhisk(), FakePipelines()

    class SecondBusy(FakePipelines):
        def start(self, steps, inputs, owner, *, name="", job_id=None):
            if name == "ct-chest-2" and not hasattr(self, "refused"):
                self.refused = True
                raise TooManyRequests("OpenWhisk refused to invoke radcloud/dispatch")
            return super().start(steps, inputs, owner, name=name, job_id=job_id)

    pipelines = SecondBusy()
    arrival = {**ARRIVAL, "arrival_id": "b" * 32}
    first = route_arrival(arrival, store, whisk, pipelines, clock=lambda: 0.0)
    assert [r["rule"] for r in first["runs"]] == ["ct-chest"] and "rule ct-chest-2" in first["pending"]
    assert redrive(store, whisk, pipelines, clock=lambda: 1e6) == 1
    assert [name for *_, name in pipelines.started] == ["ct-chest", "ct-chest-2"]
    assert sorted(r["rule"] for r in store.runs()) == ["ct-chest", "ct-chest-2"] and store.pending() == []


def test_a_refusal_that_never_ends_is_recorded_failed_after_the_last_attempt(store):
    store.save(CT_CHEST)
    whisk, pipelines = BusyWhisk(MAX_ATTEMPTS), FakePipelines()
    arrival = {**ARRIVAL, "arrival_id": "a" * 32}
    route_arrival(arrival, store, whisk, pipelines, clock=lambda: 0.0)
    for i in range(1, MAX_ATTEMPTS):
        assert redrive(store, whisk, pipelines, clock=lambda i=i: i * 1e6) == 1
    assert store.pending() == [] and pipelines.started == []
    [run] = store.runs()
    assert run["state"] == "failed" and run["reason"].startswith(f"gave up after {MAX_ATTEMPTS} attempts: OpenWhisk")


def test_a_retrieve_that_outlasts_the_blocking_wait_is_read_back_not_invoked_again(store):
    """The bench's lost arrivals: OpenWhisk answered the blocking retrieve 202 {activationId} (its 60 s
    wait ran out behind a burst). The arrival stays pending with that activation; the re-drive reads
    its result (None while it runs) and starts the pipeline on it, staging the series once."""
    store.save(CT_CHEST)

    class SlowWhisk(FakeWhisk):
        records = {}

        def activation(self, aid):
            return self.records.get(aid)

    whisk, pipelines = SlowWhisk({"activationId": "9" * 32}), FakePipelines()
    arrival = {**ARRIVAL, "arrival_id": "7" * 32}
    first = route_arrival(arrival, store, whisk, pipelines, clock=lambda: 0.0)
    assert "outlasted the blocking wait" in first["pending"] and len(whisk.calls) == 1
    assert redrive(store, whisk, pipelines, clock=lambda: 1e3) == 1 and pipelines.started == []
    assert "still running" in store.pending()[0]["reason"]
    whisk.records["9" * 32] = {"response": {"status": "success", "result": {"retrieve_id": "r9"}}}
    assert redrive(store, whisk, pipelines, clock=lambda: 1e6) == 1
    [(_, inputs, _, _)] = pipelines.started
    assert inputs == {"retrieve": "r9"} and len(whisk.calls) == 1 and store.pending() == []


def test_a_fire_that_never_reaches_the_route_action_is_routed_by_redrive_and_a_repeat_leaves_nothing(store):
    """The watcher marks every arrival it fires as expected: OpenWhisk's 202 does not say the rule's
    action ran (its invoke refused at the concurrency limit, its activation lost)."""
    from radcloud.arrivals.rules import expect, unexpect

    store.save(CT_CHEST)
    whisk, pipelines = FakeWhisk(), FakePipelines()
    lost, refused = {**ARRIVAL, "arrival_id": "6" * 32}, {**ARRIVAL, "arrival_id": "5" * 32}
    expect(store.redis, lost, 0.0)
    expect(store.redis, refused, 0.0)
    unexpect(store.redis, refused["arrival_id"])  # the fire was refused: the watcher fires it again itself
    assert [e["arrival"]["arrival_id"] for e in store.pending()] == [lost["arrival_id"]]
    assert redrive(store, whisk, pipelines, clock=lambda: LEASE_S - 1) == 0  # a route run may still come
    assert redrive(store, whisk, pipelines, clock=lambda: LEASE_S) == 1 and len(pipelines.started) == 1
    # The watcher repeats the fire after a crash: expected again, the route run finds it routed, drops it.
    expect(store.redis, lost, 500.0)
    assert route_arrival(lost, store, whisk, pipelines)["duplicate"] is True
    assert store.pending() == [] and len(pipelines.started) == 1
    # A route run that took an arrival (and was refused) is not undone by a late unexpect.
    busy = BusyWhisk(1)
    expect(store.redis, refused, 0.0)
    route_arrival(refused, store, busy, pipelines, clock=lambda: 0.0)
    unexpect(store.redis, refused["arrival_id"])
    assert [e["attempts"] for e in store.pending()] == [1]


def test_pending_view_says_attempts_next_try_and_why_in_plain_words(store):
    """What ``radcloud routes runs`` and the Automations page show of the arrivals not routed yet."""
    from radcloud.arrivals.rules import expect, pending_view

    fired, busy = {**ARRIVAL, "arrival_id": "7" * 32}, {**ARRIVAL, "arrival_id": "8" * 32, "study_uid": "1.3"}
    expect(store.redis, fired, 0.0)
    store.save(CT_CHEST)
    route_arrival(busy, store, BusyWhisk(1), FakePipelines(), clock=lambda: 1.0)
    [f, b] = pending_view(store.pending(), now=10.0)
    assert (f["arrival_id"], f["attempts"], f["due_in_s"]) == (fired["arrival_id"], 0, LEASE_S - 10.0)
    assert f["summary"] == (f"not routed yet: fired, no route run has taken it; routed again in "
                            f"{(LEASE_S - 10) // 60} min {(LEASE_S - 10) % 60:02d} s if none does")
    assert b["study_uid"] == "1.3" and b["attempts"] == 1 and b["due_in_s"] == 0.0   # 2 s backoff: due at 3.0
    assert b["summary"] == (f"waiting: 1 attempt(s) of {MAX_ATTEMPTS} refused (busy or a service down); "
                            "tried again now (a route run or reconcile takes it)")
    assert b["reason"].startswith("rule ct-chest:") and b["reason_plain"].startswith("radcloud was busy")
    assert pending_view(store.pending(), now=2.0)[1]["summary"].endswith("tried again in 1 s")


def test_the_pipeline_id_is_known_before_the_start_one_per_arrival_and_rule():
    """The router starts a rule's pipeline under an id fixed by the arrival and the rule, so an attempt
    after a crash finds the pipeline it started (tests/integration/local/test_pipelines.py)."""
    a, b = "a" * 32, "b" * 32
    assert pipeline_id(a, "ct", 1.0) == pipeline_id(a, "ct", 1.0) and len(pipeline_id(a, "ct", 1.0)) == 32
    # Another rule, another arrival, or the same instances routed anew after the claim expired: another id.
    assert len({pipeline_id(a, "ct", 1.0), pipeline_id(a, "mr", 1.0), pipeline_id(b, "ct", 1.0),
                pipeline_id(a, "ct", 2.0)}) == 4
