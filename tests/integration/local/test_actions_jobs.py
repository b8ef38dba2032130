"""The dispatch, status and results actions' handlers, with injected services (fakes, real Redis)."""

from __future__ import annotations

import threading
import time

import pytest
from jobs_fakes import FIXTURE_PLUGINS, FakeInvoker, MemStore, stage_series

from radcloud.api.action import Request
from radcloud.access.auth import Principal
from radcloud.work.cache import ResultCache
from radcloud.core.errors import BadRequest, Conflict, NotFound
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec
from radcloud.work.jobservices import JobServices
from radcloud.run.registry import Registry
from radcloud.work.reporter import RedisShardReporter
from radcloud.work.jobresults import Results
from radcloud.core.settings import Settings
from radcloud.run.shard import run_shard
from radcloud.work.staging import ManifestStaging
from radcloud.work.reconcile import GATE
from action_loader import load_action as action

SETTINGS = Settings.load(environ={})
ALICE = Principal("alice", "clinician")
BOB = Principal("bob", "researcher")
ADMIN = Principal("root", "admin")


DISPATCH, STATUS, RESULTS = action("dispatch"), action("status"), action("results")
RECONCILE = action("reconcile")


class _NoRetrieves:
    """No open retrieve (the retrieve side of reconcile is tests/integration/local/test_retrieve_progress.py)."""

    def open_retrieves(self, limit=1000):
        return []


@pytest.fixture
def services(redis_client):
    store = MemStore()
    jobs = JobStore(redis_client)
    registry = Registry(FIXTURE_PLUGINS)
    svc = JobServices(jobs=jobs, cache=ResultCache(redis_client, jobs), store=store, registry=registry,
                      staging=ManifestStaging(store, redis_client), invoker=FakeInvoker(),
                      results=Results(store, redis_client, jobs))

    def runner(params, aid):
        rep = RedisShardReporter(jobs, params["job_id"], finaliser=svc.finaliser, activation_id=aid)
        return run_shard(params, store=store, reporter=rep, registry=registry)

    svc.runner = runner
    return svc


def get(path="", **params):
    return Request(params=params, method="get", path=path, web=True)


def post(path="", **params):
    return Request(params=params, method="post", path=path, web=True)


def test_dispatch_refuses_get(services):
    with pytest.raises(BadRequest):
        DISPATCH.handle(get(), SETTINGS, ALICE, services)


def test_dispatch_then_status_then_results_with_urls_and_thumbnail(services):
    stage_series(services.store, "1.2", "1.2.1", 1, payload=_png(), ext=".png")
    services.invoker = FakeInvoker(services.runner)
    answer = DISPATCH.handle(post(plugin="copy", inputs={"series": ["1.2.1"]}), SETTINGS, ALICE, services)
    job = STATUS.handle(get(f"/{answer['job_id']}"), SETTINGS, ALICE, services)
    assert job["state"] == "succeeded" and job["progress"]["instances_done"] == 1
    assert "inputs" not in job["shards"][0]
    manifest = RESULTS.handle(get(f"/{answer['job_id']}", urls="true"), SETTINGS, ALICE, services)
    png = [o for o in manifest["outputs"] if o["content_type"] == "image/png"][0]
    assert png["url"].startswith("http://s3.invalid/results/") and manifest["url_ttl_s"] == 900
    thumb = RESULTS.handle(get(f"/{answer['job_id']}/thumbnail", name=png["name"]), SETTINGS, ALICE, services)
    assert thumb["thumbnail_key"].endswith(".thumb.png") and thumb["thumbnail_key"] in services.store.objects
    redirect = RESULTS.handle(get(f"/{answer['job_id']}/url", name=png["name"], redirect="true"),
                              SETTINGS, ALICE, services)
    assert redirect["statusCode"] == 302 and "results/" in redirect["headers"]["Location"]


def test_other_users_cannot_see_a_job_but_admin_can(services):
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    with pytest.raises(NotFound):
        STATUS.handle(get(f"/{job_id}"), SETTINGS, BOB, services)
    assert STATUS.handle(get(f"/{job_id}"), SETTINGS, ADMIN, services)["id"] == job_id
    assert STATUS.handle(get(""), SETTINGS, BOB, services)["jobs"] == []
    assert [j["id"] for j in STATUS.handle(get(""), SETTINGS, ADMIN, services)["jobs"]] == [job_id]


def test_results_of_unfinished_job_is_409(services):
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    with pytest.raises(Conflict):
        RESULTS.handle(get(f"/{job_id}"), SETTINGS, ALICE, services)


def test_long_poll_wakes_on_change_not_on_timeout(services):
    services.watch_slots = 1  # long-polls are opt-in (radcloud.work.jobwatch): a lone watcher may take one
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    writer = threading.Timer(0.2, lambda: services.jobs.shard_started(job_id, "s0"))
    writer.start()
    t0 = time.monotonic()
    job = STATUS.handle(get(f"/{job_id}", wait="60", since="1"), SETTINGS, ALICE, services)
    writer.join()  # its Redis reply may still be on the way: the teardown closes that client
    # woken at 0.2 s, not after the 60 s wait: half the wait is the bound, so a loaded box can't flake it
    assert job["state"] == "running" and time.monotonic() - t0 < 30


def test_status_get_never_writes_and_reconcile_fails_the_lost_shard(services):
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0")]))
    services.jobs.transition(job_id, "staging")
    services.jobs.shard_invoked(job_id, "s0", "dead")
    services.invoker.records["dead"] = {"response": {"status": "action developer error"}}
    before = services.jobs.version(job_id)
    job = STATUS.handle(get(f"/{job_id}"), SETTINGS, ALICE, services)
    assert job["state"] == "staging" and job["shards"][0]["state"] == "invoked"
    assert services.jobs.version(job_id) == before and not getattr(services.invoker, "lookups", 0)
    services.jobs.r.delete(GATE)
    report = RECONCILE.handle(Request(params={}), SETTINGS, Principal.system(), services, retrieves=_NoRetrieves())
    assert report["failed"] == 1 and report["finalised"] == 1
    job = STATUS.handle(get(f"/{job_id}"), SETTINGS, ALICE, services)
    assert job["state"] == "failed" and "ended (action developer error) without an outcome" in job["reason"]
    assert job_id not in services.jobs.open_jobs()


def test_cancel_and_retry_routes(services):
    stage_series(services.store, "1.2", "1.2.1", 1)
    stage_series(services.store, "1.2", "1.2.2", 1)
    services.invoker = FakeInvoker()  # shards never run: stay invoked
    answer = DISPATCH.handle(post(plugin="copy", inputs={"series": ["1.2.1", "1.2.2"]}), SETTINGS, ALICE, services)
    job = STATUS.handle(Request(params={}, method="delete", path=f"/{answer['job_id']}", web=True),
                        SETTINGS, ALICE, services)
    assert job["state"] == "cancelled" and job["cancel"] is True
    with pytest.raises(Conflict):
        STATUS.handle(post(f"/{answer['job_id']}/retry"), SETTINGS, ALICE, services)
    # a crashed job: retry reruns the failed shard only
    services.invoker = FakeInvoker(services.runner)
    crashed = DISPATCH.handle(post(plugin="crash", inputs={"series": ["1.2.1"]}), SETTINGS, ALICE, services)
    assert STATUS.handle(get(f"/{crashed['job_id']}"), SETTINGS, ALICE, services)["state"] == "failed"
    retried = STATUS.handle(post(f"/{crashed['job_id']}/retry"), SETTINGS, ALICE, services)
    assert retried["retried"] == ["s000"] and retried["shards"][0]["attempt"] == 2
    events = STATUS.handle(get(f"/{crashed['job_id']}/events"), SETTINGS, ALICE, services)["events"]
    assert [e["type"] for e in events].count("retry") == 1


def test_a_retried_shard_gets_as_long_as_its_job_was_created_with(services):
    # Deployed with a short shard_timeout_s (the e2e world's 25 s), a job of a plugin action allowed
    # 300 s (its manifest timeout) gives its shards 300 s before reconcile fails them; a retried
    # shard got only the 25 s, so a long plugin run on retry was failed while still running.
    short = Settings.load(environ={"RADCLOUD_SHARD_TIMEOUT_S": "25"})
    services.settings, services.shard_timeout_s = short, short.shard_timeout_s  # as deployed: with a router
    services.invoker = FakeInvoker(services.runner)
    stage_series(services.store, "1.2", "1.2.1", 1)
    crashed = DISPATCH.handle(post(plugin="crash", inputs={"series": ["1.2.1"]}), short, ALICE, services)
    assert services.jobs.get(crashed["job_id"])["state"] == "failed"
    services.invoker = FakeInvoker()  # the retried shard is submitted and stays open
    before = time.time()
    STATUS.handle(post(f"/{crashed['job_id']}/retry"), short, ALICE, services)
    shard = services.jobs.get(crashed["job_id"])["shards"][0]
    assert shard["state"] != "failed" and shard["attempt"] == 2
    assert shard["deadline"] >= before + 300, (shard["deadline"] - before, shard)


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (600, 300), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_reconcile_runs_at_most_once_a_second_however_often_asked(services):
    job_id = services.jobs.create(JobSpec("copy", "1", "alice", {}, [ShardSpec("s0"), ShardSpec("s1")]))
    services.jobs.shard_invoked(job_id, "s0", "a0")
    services.jobs.shard_invoked(job_id, "s1", "a1")
    services.jobs.r.delete(GATE)
    answers = [RECONCILE.handle(Request(params={}), SETTINGS, Principal.system(), services, retrieves=_NoRetrieves())
               for _ in range(5)]
    assert services.invoker.lookups == 2  # one round (2 open shards), not five
    assert [a["skipped"] for a in answers] == [False] + [True] * 4


def test_a_shard_the_executor_was_too_busy_to_take_stays_pending_and_reconcile_submits_it(services):
    from radcloud.core.errors import TooManyRequests

    stage_series(services.store, "1.2", "1.2.1", 1)

    class Busy(FakeInvoker):
        def invoke(self, action, params, *, blocking=False):
            raise TooManyRequests("OpenWhisk refused to invoke for 3 s (HTTP 429)")

    services.invoker = Busy()
    answer = DISPATCH.handle(post(plugin="copy", inputs={"series": ["1.2.1"]}), SETTINGS, ALICE, services)
    shard = services.jobs.get(answer["job_id"])["shards"][0]
    assert shard["state"] == "pending" and shard["busy_at"] and "concurrency limit" in shard["reason"]
    services.invoker, services.executor = FakeInvoker(services.runner), None
    services.jobs.r.delete(GATE)
    report = RECONCILE.handle(Request(params={}), SETTINGS, Principal.system(), services, retrieves=_NoRetrieves())
    assert report["resubmitted"] == 1
    assert services.jobs.get(answer["job_id"])["state"] == "succeeded"


def test_job_store_down_is_503_naming_it(services):
    import redis as redis_lib

    from radcloud.core.errors import Unavailable

    dead = redis_lib.Redis(unix_socket_path="/nonexistent/redis.sock", decode_responses=True)
    services.jobs = JobStore(dead)
    with pytest.raises(Unavailable) as err:
        STATUS.handle(get("/j1"), SETTINGS, ALICE, services)
    assert "job store" in err.value.message
