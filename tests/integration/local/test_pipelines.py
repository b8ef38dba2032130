"""Pipelines: steps as jobs of the one lifecycle, outputs -> next inputs, stop on failure, never stuck.

Real Redis (the job store's Lua scripts), the real dispatch/status/reconcile
action handlers and the fixture plugins run in-process; the "OpenWhisk"
routes ``radcloud/dispatch`` to the dispatch action and ``plugin-*`` to the
shard runner, inline, as the deployed chain would (tests/e2e covers it deployed).
"""

from __future__ import annotations

import itertools

import pytest
from action_loader import load_action
from jobs_fakes import FIXTURE_PLUGINS, MemStore, stage_series

from radcloud.api.action import Request
from radcloud.access.auth import Principal
from radcloud.work.cache import ResultCache
from radcloud.core.errors import RadcloudError, TooManyRequests
from radcloud.work.jobs import JobStore
from radcloud.work.jobservices import JobServices
from radcloud.run.registry import Registry
from radcloud.work.reporter import Finaliser, RedisShardReporter
from radcloud.work.jobresults import Results
from radcloud.core.settings import Settings
from radcloud.run.shard import run_shard
from radcloud.work.staging import ManifestStaging
from radcloud.work import pipelines as P

SETTINGS = Settings.load(environ={})
SERVICE = Principal("router", "service", kind="service")
ADMIN = Principal("root", "admin")
DISPATCH, STATUS, RECONCILE, ROUTE = (load_action(a) for a in ("dispatch", "status", "reconcile", "route"))
REGISTRY = Registry(FIXTURE_PLUGINS)


class Whisk:
    """OpenWhisk for the pipeline: dispatch runs the action handler, plugin-* the shard runner (inline)."""

    def __init__(self, services: JobServices) -> None:
        self.services, self.calls, self.records = services, [], {}
        self.ids = itertools.count(1)
        self.queue = []
        self.lose_dispatch = False   # the dispatch activation dies before it runs
        self.hold_dispatch = False   # the dispatch activation has not run yet
        self.finaliser = None         # a shard's finaliser (None: the deployed one, which tells the pipeline)

    def invoke(self, action, params, *, blocking=False, result=False):
        aid = f"{next(self.ids):032x}"
        self.calls.append((action, params))
        if action == "radcloud/dispatch":
            if self.hold_dispatch:  # still on its way: no record yet (the activation is in flight)
                return {"activationId": aid}
            if self.lose_dispatch:
                self.records[aid] = {"response": {"status": "whisk internal error"}}
                return {"activationId": aid}
            try:
                answer = DISPATCH.handle(Request(params=params), SETTINGS, SERVICE, self.services)
            except RadcloudError as exc:
                answer = {"error": exc.message}
        else:  # a shard runs later, as a non-blocking invoke does: dispatch answers first
            self.queue.append((aid, params))
            return {"activationId": aid}
        self.records[aid] = {"response": {"status": "success", "result": answer}}
        return {"activationId": aid}

    def drain(self):
        """Run the queued shards (and the shards of the steps they start) to the end."""
        while self.queue:
            aid, params = self.queue.pop(0)
            reporter = RedisShardReporter(self.services.jobs, params["job_id"],
                                          finaliser=self.finaliser or self.services.finaliser, activation_id=aid)
            answer = run_shard(params, store=self.services.store, reporter=reporter, registry=REGISTRY)
            self.records[aid] = {"response": {"status": "success", "result": answer}}

    def activation(self, aid):
        return self.records.get(aid)

    def dispatches(self):
        return [p for a, p in self.calls if a == "radcloud/dispatch"]


@pytest.fixture
def services(redis_client):
    store = MemStore()
    jobs = JobStore(redis_client)
    svc = JobServices(jobs=jobs, cache=ResultCache(redis_client, jobs), store=store, registry=REGISTRY,
                      staging=ManifestStaging(store, redis_client), results=Results(store, redis_client, jobs))
    svc.invoker = Whisk(svc)
    stage_series(store, "1.2", "1.2.1", 2, redis=redis_client,
                 tags={"PatientName": "DOE^JANE", "PatientID": "P1", "StudyInstanceUID": "1.2"})
    return svc


class NoRetrieves:
    def open_retrieves(self, limit=1000):
        return []


def steps(*plugins_params):
    return P.validate_steps([{"plugin": p, "params": params} for p, params in plugins_params], REGISTRY)


def view(services, job_id):
    services.invoker.drain()
    return STATUS.handle(Request(params={}, method="get", path=f"/{job_id}", web=True), SETTINGS, SERVICE, services)


def test_each_step_runs_on_the_previous_steps_dicom_outputs_and_status_shows_every_step(services):
    pid = services.pipelines().start(steps(("copy", {"prefix": "a"}), ("copy", {"prefix": "b"}),
                                           ("copy", {"prefix": "c"})), {"series": ["1.2.1"]}, "router", name="abc")
    job = view(services, pid)
    assert job["state"] == "succeeded" and job["kind"] == "pipeline", job
    assert [(s["step"], s["plugin"], s["state"]) for s in job["steps"]] == [
        (1, "copy", "succeeded"), (2, "copy", "succeeded"), (3, "copy", "succeeded")]
    first, second, third = (services.jobs.get(s["job"]) for s in job["steps"])
    # The pipeline names whose images it ran on, as its first step's job does (the owner's view only).
    assert job["subject"] and job["subject"] == first["subject"], (job["subject"], first["subject"])
    # Step 2's inputs are step 1's DICOM outputs, by object key (probe.json is not DICOM: not passed on).
    assert second["shards"][0]["inputs"] == sorted(o["key"] for o in first["shards"][0]["outputs"]
                                                    if o["key"].endswith(".dcm"))
    assert all(k.startswith(f"results/{first['id']}/") for k in second["shards"][0]["inputs"])
    # The pipeline's results are its last step's.
    manifest = services.results.manifest(pid)
    assert manifest["results_of"] == third["id"]
    assert sorted(o["name"] for o in manifest["outputs"] if o["name"].endswith(".dcm")) == [
        "s000/cba1.2.1.0.dcm", "s000/cba1.2.1.1.dcm"]
    # One dispatch per step, each carrying its link, inputs by key only.
    assert [d["options"]["pipeline"] for d in services.invoker.dispatches()] == [
        {"job": pid, "step": s} for s in ("s00", "s01", "s02")]
    assert services.invoker.dispatches()[1]["inputs"] == {"job": first["id"]}
    # Run again: every step is answered by the cache (reused, not rerun), still one pipeline job.
    plugin_runs = sum(1 for a, _ in services.invoker.calls if a.startswith("radcloud/plugin-"))
    again = view(services, services.pipelines().start(steps(("copy", {"prefix": "a"}), ("copy", {"prefix": "b"}),
                                                            ("copy", {"prefix": "c"})), {"series": ["1.2.1"]},
                                                      "router"))
    assert again["state"] == "succeeded" and all(s["cached"] for s in again["steps"]), again["steps"]
    assert sum(1 for a, _ in services.invoker.calls if a.startswith("radcloud/plugin-")) == plugin_runs


def test_a_failing_step_stops_the_pipeline_with_a_reason_naming_it(services):
    pid = services.pipelines().start(steps(("copy", {}), ("crash", {}), ("copy", {})), {"series": ["1.2.1"]},
                                     "router")
    job = view(services, pid)
    assert job["state"] == "failed" and job["reason"].startswith("stopped at step 2 (crash): "), job["reason"]
    assert "plugin bug" in job["reason"] or "exit" in job["reason"], job["reason"]
    assert [s["state"] for s in job["steps"]] == ["succeeded", "failed", "cancelled"]
    assert job["steps"][2]["reason"] == "not run: step 2 (crash) failed" and job["steps"][2]["job"] is None
    assert len(services.invoker.dispatches()) == 2  # step 3 never dispatched
    assert services.jobs.open_jobs() == []          # nothing left open


def test_a_step_dispatch_refuses_fails_the_step_with_dispatchs_reason(services):
    # Step 1 writes no DICOM (ignoreInputDir: only probe.json): step 2 has nothing to run on.
    pid = services.pipelines().start(steps(("copy", {"b_ignoreInputDir": True}), ("copy", {})),
                                     {"series": ["1.2.1"]}, "router")
    job = view(services, pid)
    assert job["state"] == "failed", job
    assert "step 2 (copy)" in job["reason"] and "no DICOM outputs" in job["reason"], job["reason"]


def test_reconcile_delivers_a_lost_step_outcome_exactly_once_and_fails_a_lost_dispatch(services):
    pipelines = services.pipelines()
    # The word from step 1's job to its pipeline is lost (a finaliser that does not tell it).
    services.invoker.finaliser = Finaliser(services.jobs, results=services.results, cache=services.cache)
    pid = pipelines.start(steps(("copy", {}), ("copy", {"prefix": "x"})), {"series": ["1.2.1"]}, "router")
    services.invoker.drain()
    job = services.jobs.get(pid)
    assert [s["state"] for s in job["shards"]] == ["running", "pending"]   # step 1's job ended, unheard
    assert services.jobs.get(job["shards"][0]["activation_id"])["state"] == "succeeded"
    services.invoker.finaliser = None
    report = RECONCILE.handle(Request(params={}), SETTINGS, ADMIN, services, retrieves=NoRetrieves())
    assert report["delivered"] == 1, report
    services.invoker.drain()
    assert services.jobs.get(pid)["state"] == "succeeded"
    # Delivered again (a late finaliser, another reconcile): nothing is recorded or started twice.
    dispatches = len(services.invoker.dispatches())
    pipelines.child_ended(job["shards"][0]["activation_id"])
    pipelines.reconcile(pid)
    assert len(services.invoker.dispatches()) == dispatches and services.jobs.get(pid)["state"] == "succeeded"
    # A dispatch activation that dies before creating the step's job fails the step, naming it.
    services.invoker.lose_dispatch = True
    pid = pipelines.start(steps(("copy", {})), {"series": ["1.2.1"]}, "router")
    assert services.jobs.get(pid)["shards"][0]["state"] == "invoked"
    pipelines.reconcile(pid)
    job = services.jobs.get(pid)
    assert job["state"] == "failed" and job["reason"].startswith("stopped at step 1 (copy): its dispatch"), job


def test_cancel_stops_the_running_steps_job_and_the_pipeline(services):
    pid = services.pipelines().start(steps(("copy", {}), ("copy", {})), {"series": ["1.2.1"]}, "router")
    child = services.jobs.get(pid)["shards"][0]["activation_id"]   # step 1 runs its job (shards queued)
    job = STATUS.handle(Request(params={}, method="post", path=f"/{pid}/cancel", web=True), SETTINGS, ADMIN, services)
    assert job["state"] == "cancelled" and [s["state"] for s in job["steps"]] == ["cancelled", "cancelled"], job
    assert services.jobs.get(child)["state"] == "cancelled"
    services.invoker.drain()  # its queued shards find the job cancelled
    assert len(services.invoker.dispatches()) == 1 and services.jobs.open_jobs() == []


def test_an_admin_starts_a_rules_pipeline_by_hand_and_the_listing_shows_each_step(services, redis_server):
    from radcloud.arrivals.rules import RuleStore

    routing = load_action("routing")
    settings = Settings.load(environ={"RADCLOUD_REDIS_URL": redis_server})
    store = RuleStore(services.jobs.r, REGISTRY)
    store.save({"name": "by-hand", "enabled": False,
                "pipeline": [{"plugin": "copy"}, {"plugin": "copy", "params": {"prefix": "z"}}]})
    body = {"run": "by-hand", "inputs": {"series": ["1.2.1"]}}
    answer = routing.handle(Request(params=body, method="post", web=True), settings, ADMIN, store=store,
                            services=services)
    assert answer["run"]["by"] == "root" and answer["run"]["steps"] == ["copy", "copy"]
    assert view(services, answer["run"]["pipeline"])["state"] == "succeeded"
    listing = routing.handle(Request(params={}, method="get", web=True), settings, ADMIN, store=store,
                             jobs=services.jobs)
    [run] = listing["runs"]
    assert run["pipeline_state"] == "succeeded" and [s["state"] for s in run["step_states"]] == ["succeeded"] * 2


def test_a_step_whose_retrieve_is_still_staging_waits_and_reconcile_submits_it_again(services):
    """dispatch gave up waiting for staging (a burst): the step is not failed; reconcile submits it again."""
    pipelines = services.pipelines()
    services.invoker.lose_dispatch = True   # the first dispatch's answer: "still staging" (below)
    pid = pipelines.start(steps(("copy", {})), {"series": ["1.2.1"]}, "router")
    pipelines.waiting(pid, "s00", "retrieve r1 is still staging 1 of 1 series")
    step = services.jobs.shard(pid, "s00")
    assert step["state"] == "invoked" and step["busy_at"] and step["reason"].startswith("waiting for its inputs")
    services.invoker.lose_dispatch = False
    assert pipelines.reconcile(pid)["resubmitted"] == 1
    assert view(services, pid)["state"] == "succeeded" and len(services.invoker.dispatches()) == 2


def test_a_job_dispatched_for_a_step_cancelled_meanwhile_is_stopped_not_left_running(services):
    services.invoker.hold_dispatch = True   # the step's dispatch is still on its way ...
    pid = services.pipelines().start(steps(("copy", {})), {"series": ["1.2.1"]}, "router")
    STATUS.handle(Request(params={}, method="post", path=f"/{pid}/cancel", web=True), SETTINGS, ADMIN, services)
    assert services.jobs.get(pid)["state"] == "cancelled"
    # ... and arrives now: it creates the job, finds the step cancelled, and cancels that job.
    request = {"plugin": "copy", "inputs": {"series": ["1.2.1"]}, "options": {"pipeline": {"job": pid, "step": "s00"}}}
    answer = DISPATCH.handle(Request(params=request), SETTINGS, SERVICE, services)
    services.invoker.drain()
    assert services.jobs.get(answer["job_id"])["state"] == "cancelled"
    assert services.jobs.get(pid)["shards"][0]["state"] == "cancelled"


class BusyNamespace(Whisk):
    """The namespace at a concurrency limit of ``limit`` activations: every route activation of a
    burst holds a slot while it runs (``in_flight``); the blocking retrieve invoke it makes needs one
    more and is refused (TooManyRequests: what the invoker raises once its busy budget is spent)."""

    def __init__(self, services, limit):
        super().__init__(services)
        self.limit, self.in_flight, self.retrieve_ids = limit, 0, itertools.count(1)
        self.hold_dispatch = True  # the pipelines' first steps stay on their way: only the start is looked at

    def invoke(self, action, params, *, blocking=False, result=False):
        if action != "radcloud/retrieve":
            return super().invoke(action, params, blocking=blocking, result=result)
        self.calls.append((action, params))
        if self.in_flight >= self.limit:
            raise TooManyRequests(f"OpenWhisk refused to invoke {action} (HTTP 429: Too many concurrent "
                                  f"requests in flight (count: {self.in_flight}, allowed: {self.limit}))")
        return {"retrieve_id": f"{next(self.retrieve_ids):032x}", "state": "queued"}


def test_a_burst_at_the_namespace_limit_starts_exactly_one_pipeline_per_arrival(services, monkeypatch, redis_server):
    """A burst of 12 arrivals against a namespace of 4 concurrent activations: the route runs of each
    wave of 4 hold the slots their retrieves need, so most are refused. None is lost: a refused arrival
    stays pending, later route runs and reconcile route it again, and every study ends with exactly one
    started pipeline — also when the watcher fires an arrival twice."""
    from radcloud.arrivals import rules as R

    monkeypatch.setattr(R, "BACKOFF_MAX_S", 0)  # a refused arrival is due again at once (no clock to wait on)
    whisk = services.invoker = BusyNamespace(services, limit=4)
    store = R.RuleStore(services.jobs.r, REGISTRY)
    store.save({"name": "all", "pipeline": [{"plugin": "copy"}]})
    arrivals = [{"arrival_id": f"{i:032x}", "study_uid": f"1.2.{i}", "orthanc_study": f"o{i}",
                 "series": [{"series_uid": f"1.2.{i}.1", "orthanc_series": f"s{i}", "modality": "CT"}]}
                for i in range(1, 13)]

    def route(batch, others=0):
        """The rule's activations of one wave: all admitted at once (beside ``others`` activations of
        other work), each running to its end in turn."""
        whisk.in_flight = others + len(batch)
        answers = []
        for arrival in batch:
            answers.append(ROUTE.handle(Request(params=arrival), SETTINGS, SERVICE, store=store, services=services))
            whisk.in_flight -= 1
        return answers

    # Two waves: the first route runs are refused, the later ones of the wave route them again.
    first = route(arrivals[:4]) + route(arrivals[4:8])
    assert [bool(a["pending"]) for a in first] == [True, False, False, False] * 2, first
    assert all("HTTP 429" in a["pending"] for a in first[::4]) and store.pending() == []
    # The last wave meets a namespace full of other work: every one is refused and left pending ...
    assert all("HTTP 429" in a["pending"] for a in route(arrivals[8:], others=4))
    assert sorted(e["arrival"]["arrival_id"] for e in store.pending()) == [a["arrival_id"] for a in arrivals[8:]]
    listing = load_action("routing").handle(Request(params={}, method="get", web=True),
                                            Settings.load(environ={"RADCLOUD_REDIS_URL": redis_server}), ADMIN,
                                            store=store, jobs=services.jobs)
    assert sorted((p["study_uid"], p["attempts"]) for p in listing["pending"]) == sorted(
        (a["study_uid"], 1) for a in arrivals[8:])
    assert all("HTTP 429" in p["reason"] for p in listing["pending"]), listing["pending"]
    # ... until the alarm's reconcile (one activation: the namespace has room again) routes them.
    whisk.in_flight = 1
    report = RECONCILE.handle(Request(params={}), SETTINGS, ADMIN, services, retrieves=NoRetrieves(), rules=store)
    assert report["arrivals_redriven"] == 4 and store.pending() == [], report
    whisk.in_flight = 0
    runs = store.runs(limit=100)
    assert sorted(r["study_uid"] for r in runs) == sorted(a["study_uid"] for a in arrivals), runs
    assert {r["state"] for r in runs} == {"started"}
    pipelines = {r["pipeline"] for r in runs}
    assert len(pipelines) == 12 and all(services.jobs.get(p)["kind"] == "pipeline" for p in pipelines)
    assert len(services.invoker.dispatches()) == 12  # one first step each: no pipeline started twice
    # The watcher firing every arrival again (a crash before its fingerprints were written) starts nothing.
    assert all(a["duplicate"] for a in route(arrivals)) and len(services.invoker.dispatches()) == 12


def test_routing_with_its_store_down_answers_503_naming_it(redis_server):
    import redis as redis_lib

    from radcloud.arrivals.rules import RuleStore
    from radcloud.core.errors import Unavailable

    dead = redis_lib.Redis(unix_socket_path="/nonexistent/redis.sock", decode_responses=True)
    settings = Settings.load(environ={"RADCLOUD_REDIS_URL": redis_server})
    with pytest.raises(Unavailable) as err:
        load_action("routing").handle(Request(params={}, method="get", web=True), settings, ADMIN,
                                      store=RuleStore(dead, REGISTRY), jobs=JobStore(dead))
    assert "job store (Redis) is unreachable" in err.value.message


def test_retry_restarts_a_failed_pipeline_from_the_failed_step_keeping_the_steps_that_succeeded(services):
    """status retry on a failed pipeline: the failed step and the steps it stopped run again (the
    lifecycle's SHARD rerun, JOB retry), step 1's job is kept, not rerun; one pipeline job throughout."""
    pipelines = services.pipelines()
    pid = pipelines.start(steps(("copy", {}), ("copy", {"prefix": "x"}), ("copy", {"prefix": "y"})),
                          {"series": ["1.2.1"]}, "router")
    services.invoker.lose_dispatch = True     # step 2's dispatch activation dies before it creates a job
    services.invoker.drain()
    services.invoker.lose_dispatch = False
    pipelines.reconcile(pid)
    failed = view(services, pid)
    assert failed["state"] == "failed" and [s["state"] for s in failed["steps"]] == ["succeeded", "failed", "cancelled"]
    first_job = failed["steps"][0]["job"]
    dispatches = len(services.invoker.dispatches())

    answer = STATUS.handle(Request(params={}, method="post", path=f"/{pid}/retry", web=True), SETTINGS, SERVICE,
                           services)
    assert answer["retried"] == ["s01", "s02"], answer
    job = view(services, pid)
    assert job["state"] == "succeeded", job
    assert [s["state"] for s in job["steps"]] == ["succeeded"] * 3 and job["steps"][0]["job"] == first_job
    assert job["reason"] == "" and all(s["reason"] == "" for s in job["steps"])
    sent = services.invoker.dispatches()[dispatches:]
    assert [d["options"]["pipeline"]["step"] for d in sent] == ["s01", "s02"]   # step 1 not rerun
    assert sent[0]["inputs"] == {"job": first_job}                               # on step 1's outputs
    record = services.jobs.get(pid)
    assert [s.get("attempt", 1) for s in record["shards"]] == [1, 2, 2]
    assert (record["shards_succeeded"], record["shards_failed"], record["shards_cancelled"], record["shards_done"]) \
        == (3, 0, 0, 3)
    assert services.jobs.open_jobs() == []
    # A succeeded (or cancelled) pipeline is not retried: 409 naming its state and what to do.
    with pytest.raises(RadcloudError) as refused:
        STATUS.handle(Request(params={}, method="post", path=f"/{pid}/retry", web=True), SETTINGS, SERVICE, services)
    assert refused.value.status == 409 and "is succeeded; only a failed pipeline can be retried" in refused.value.message


def test_a_retried_step_that_fails_again_stops_the_pipeline_again_with_its_reason(services):
    pid = services.pipelines().start(steps(("copy", {}), ("crash", {})), {"series": ["1.2.1"]}, "router")
    assert view(services, pid)["state"] == "failed"
    STATUS.handle(Request(params={}, method="post", path=f"/{pid}/retry", web=True), SETTINGS, SERVICE, services)
    job = view(services, pid)
    assert job["state"] == "failed" and job["reason"].startswith("stopped at step 2 (crash): "), job["reason"]
    assert [s["state"] for s in job["steps"]] == ["succeeded", "failed"]
    assert len(services.invoker.dispatches()) == 3 and services.jobs.open_jobs() == []


def test_a_route_run_that_dies_after_starting_a_pipeline_leaves_one_pipeline_not_two(services):
    """The duplicate window: the route action dies between a pipeline's start and its record under the
    arrival (rule_started). The next attempt (once the lease has expired) starts the pipeline under
    the same id (rules.pipeline_id), finds it and records it: one pipeline, its first step sent once."""
    from radcloud.arrivals import rules as R

    class DiesAfterStart(R.RuleStore):
        def rule_started(self, arrival_id, rule, pipeline):
            raise SystemExit("the route activation was killed (timeout, OOM) before recording its pipeline")

    whisk = services.invoker = BusyNamespace(services, limit=100)   # room: never busy; dispatches in flight
    arrival = {"arrival_id": "c" * 32, "study_uid": "1.2.9", "orthanc_study": "o9",
               "series": [{"series_uid": "1.2.9.1", "orthanc_series": "s9", "modality": "CT"}]}
    dying = DiesAfterStart(services.jobs.r, REGISTRY)
    dying.save({"name": "all", "pipeline": [{"plugin": "copy"}, {"plugin": "copy", "params": {"prefix": "x"}}]})
    R.expect(services.jobs.r, arrival, 0.0)
    with pytest.raises(SystemExit):
        R.route_arrival(arrival, dying, whisk, services.pipelines(), clock=lambda: 0.0)
    pid = R.pipeline_id(arrival["arrival_id"], "all", 0.0)   # pending since the watcher's expect at 0.0
    assert services.jobs.get(pid)["kind"] == "pipeline" and len(whisk.dispatches()) == 1
    assert dying.runs() == [] and dying.started(arrival["arrival_id"]) == set()   # nothing says it started
    store = R.RuleStore(services.jobs.r, REGISTRY)
    assert R.redrive(store, whisk, services.pipelines(), clock=lambda: R.LEASE_S - 1) == 0   # lease held
    services.jobs.r.delete(R.CLAIM + arrival["arrival_id"])          # the lease expires (its TTL)
    assert R.redrive(store, whisk, services.pipelines(), clock=lambda: R.LEASE_S + 1) == 1
    [run] = store.runs()
    assert run["state"] == "started" and run["pipeline"] == pid and store.pending() == []
    assert len(whisk.dispatches()) == 1 and [d["options"]["pipeline"]["job"] for d in whisk.dispatches()] == [pid]
    assert [j for j in services.jobs.open_jobs() if services.jobs.get(j)["kind"] == "pipeline"] == [pid]
    assert store.started(arrival["arrival_id"]) == {"all"}
