"""radcloud.work.reconcile with fake stores and the in-process executor: lost units get a reason."""

from __future__ import annotations

from typing import Any

from radcloud.core.errors import Conflict, NotFound
from radcloud.work import reconcile
from radcloud.work.executors.inprocess import InProcessExecutor


class Jobs:
    """The slice of radcloud.work.jobs.JobStore reconcile uses."""

    def __init__(self, job: dict[str, Any] | None, now: float = 100.0) -> None:
        self.job, self.now = job, now
        self.finished: dict[str, tuple[str, str]] = {}
        self.closed_ids: list[str] = []
        self.claimable = False

    def clock(self) -> float:
        return self.now

    def get(self, job_id: str) -> dict[str, Any]:
        if self.job is None:
            raise NotFound("gone")
        return self.job

    def closed(self, job_id: str) -> None:
        self.closed_ids.append(job_id)

    def claim_finaliser(self, job_id: str) -> bool:
        return self.claimable

    def shard_finished(self, job_id: str, sid: str, *, state: str, reason: str) -> bool:
        shard = next(s for s in self.job["shards"] if s["id"] == sid)
        if shard["state"] not in ("pending", "invoked", "running"):
            raise Conflict("already final")
        shard.update(state=state, reason=reason)
        self.finished[sid] = (state, reason)
        return all(s["state"] in ("succeeded", "failed", "cancelled") for s in self.job["shards"])


def job(*shards: dict[str, Any], state: str = "running") -> dict[str, Any]:
    return {"id": "j1", "state": state, "cancel": False,
            "shards": [{"deadline": 1000.0, "activation_id": None, **s} for s in shards]}


def test_a_unit_its_executor_lost_fails_with_a_reason_and_the_job_is_finalised():
    ex = InProcessExecutor()
    from radcloud.work.executors.base import Unit

    h1 = ex.submit(Unit("j1", "s0", "plugin-x", {}))
    h2 = ex.submit(Unit("j1", "s1", "plugin-x", {}))
    ex.forget(h1)                       # the executor lost it
    ex.finish(h2, "succeeded")          # ended, but the unit never reported
    jobs = Jobs(job({"id": "s0", "state": "invoked", "activation_id": h1, "executor": "inprocess"},
                    {"id": "s1", "state": "running", "activation_id": h2, "executor": "inprocess"}))
    finalised = []
    report = reconcile.reconcile_job(jobs, "j1", ex, finaliser=finalised.append)
    assert report.failed == 2 and finalised == ["j1"] and report.finalised == 1
    assert "no longer knows" in jobs.finished["s0"][1]
    assert jobs.finished["s1"][1].endswith("without an outcome")
    assert ex.polls == 1  # one batch for both handles


def test_a_running_unit_and_an_executor_that_cannot_be_asked_conclude_nothing():
    from radcloud.work.executors.base import Unit

    ex = InProcessExecutor()
    h = ex.submit(Unit("j1", "s0", "plugin-x", {}))
    jobs = Jobs(job({"id": "s0", "state": "running", "activation_id": h}))
    assert reconcile.reconcile_job(jobs, "j1", ex).failed == 0
    ex.down()
    assert reconcile.reconcile_job(jobs, "j1", ex).failed == 0 and jobs.finished == {}


def test_deadline_passed_fails_without_asking_the_executor():
    jobs = Jobs(job({"id": "s0", "state": "pending", "deadline": 50.0, "busy_at": 10.0,
                     "reason": "OpenWhisk is at its concurrency limit"}))
    report = reconcile.reconcile_job(jobs, "j1", None)
    assert report.failed == 1
    assert jobs.finished["s0"][1].startswith("deadline passed without an outcome (never started: OpenWhisk")


def test_busy_shards_are_submitted_again_unless_cancelled():
    again = []
    jobs = Jobs(job({"id": "s0", "state": "pending", "busy_at": 10.0}, {"id": "s1", "state": "pending"}))
    report = reconcile.reconcile_job(jobs, "j1", InProcessExecutor(), resubmit=lambda j, ids: again.append(ids))
    assert again == [["s0"]] and report.resubmitted == 1  # s1 is being submitted by its dispatch
    jobs.job["cancel"] = True
    reconcile.reconcile_job(jobs, "j1", InProcessExecutor(), resubmit=lambda j, ids: again.append(ids))
    assert again == [["s0"]]


def test_final_and_vanished_jobs_leave_the_open_index_and_a_silent_finaliser_is_replaced():
    jobs = Jobs(job(state="succeeded"))
    assert reconcile.reconcile_job(jobs, "j1").closed == 1 and jobs.closed_ids == ["j1"]
    gone = Jobs(None)
    assert reconcile.reconcile_job(gone, "j1").closed == 1
    finishing = Jobs(job(state="finishing"))
    finishing.claimable = True
    done = []
    assert reconcile.reconcile_job(finishing, "j1", finaliser=done.append).finalised == 1 and done == ["j1"]


class Retrieves:
    def __init__(self, units):
        self._units, self.failed, self.closed_ids = units, [], []

    def units(self, rid):
        return self._units

    def fail_if_on(self, rid, key, handle, reason):
        self.failed.append((key, reason))
        return True

    def closed(self, rid):
        self.closed_ids.append(rid)


def test_a_series_whose_activation_ended_fails_and_a_finished_retrieve_is_closed():
    from radcloud.work.executors.base import Unit

    ex = InProcessExecutor()
    h = ex.submit(Unit("r1", "1.2.3", "retrieve-series", {}))
    ex.finish(h, "failed", reason=f"activation {h} ended (whisk internal error)")
    r = Retrieves([("1.2.3", "staging", h), ("1.2.4", "succeeded", "x")])
    assert reconcile.reconcile_retrieve(r, "r1", ex).failed == 1
    assert "ended (whisk internal error) without an outcome; rerun the retrieve" in r.failed[0][1]
    done = Retrieves([("1.2.3", "failed", h)])
    assert reconcile.reconcile_retrieve(done, "r1", ex).closed == 1 and done.closed_ids == ["r1"]
