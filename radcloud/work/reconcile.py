"""Reconcile: no unit of tracked work stays open once nothing can finish it.

A unit reports its own outcome (the shard runner, the retrieve-series hop).
When it cannot — its container was killed, the executor lost it, its
deadline passed, the finaliser died — reconciliation gives it a final state
with a reason saying which, and finalises the work if that was its last
unit. It runs on the write side and on a schedule, never inside a read:

* :func:`reconcile_job` — one job: fail open shards whose deadline passed,
  whose executor reports them ended without an outcome, or that the executor
  no longer knows; submit again shards the executor was too busy to take;
  take over a finaliser that went silent.
* a pipeline (:mod:`radcloud.work.pipelines`) is a job whose steps are run by
  other jobs: :meth:`Pipelines.reconcile` delivers the outcome of a step whose
  job ended while the word was lost, fails a step whose dispatch died or
  whose deadline passed, and submits a step that was never submitted.
* :func:`reconcile_retrieve` — one retrieve: fail series whose recorded
  activation has ended without an outcome.
* :func:`sweep` — every open job and retrieve (the Redis indexes
  ``P:jobs:open`` and ``radcloud:retrieves:open`` keep this cheap), at most
  once per ``every_s`` however many callers ask. The admin-only ``reconcile``
  action runs it (functions/reconcile), on an alarm trigger where one is
  configured (deploy/manifest.yaml).

Executors are asked in batches (:meth:`Executor.poll`); one that cannot be
asked (:class:`~radcloud.core.errors.UpstreamError`) concludes nothing: the
deadline stays the backstop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from radcloud.core.errors import Conflict, NotFound, RadcloudError
from radcloud.work import lifecycle as L
from radcloud.work.executors.base import Executor, UnitStatus
from radcloud.work.lifecycle import JOB, SERIES, SHARD_OPEN

log = logging.getLogger(__name__)

EVERY_S = 1.0        # a sweep at most this often per namespace
GATE = "radcloud:reconcile:gate"
MAX_OPEN = 1000      # open jobs (and retrieves) looked at per sweep, oldest first

ExecutorOf = Callable[[str], "Executor | None"]


@dataclasses.dataclass
class Report:
    """What one pass did (the reconcile action's answer)."""

    jobs: int = 0            # open jobs looked at
    retrieves: int = 0       # open retrieves looked at
    failed: int = 0          # units given a final state here, each with its reason
    resubmitted: int = 0     # shards the executor had been too busy to take, submitted again
    finalised: int = 0       # jobs finalised here (their last unit failed here, or a finaliser took over)
    closed: int = 0          # entries dropped from the open indexes (final or expired)
    delivered: int = 0       # pipeline steps given their ended job's outcome here (the word was lost)
    skipped: bool = False    # another sweep ran less than EVERY_S ago

    def add(self, other: "Report") -> None:
        for f in ("jobs", "retrieves", "failed", "resubmitted", "finalised", "closed", "delivered"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _executor_of(executors: Executor | ExecutorOf | None) -> ExecutorOf:
    if executors is None:
        return lambda _name: None
    if hasattr(executors, "poll"):
        return lambda _name: executors  # one executor for every unit
    return executors  # type: ignore[return-value]


def _poll(executor: Executor, handles: Sequence[str], what: str) -> dict[str, UnitStatus] | None:
    try:
        return executor.poll(list(handles))
    except RadcloudError as exc:
        log.warning("%s: the %s executor cannot be asked (%s); its deadline stays the backstop",
                    what, executor.name, exc.message)
        return None


def lost_reason(handle: str, status: UnitStatus | None, executor: str) -> str:
    """Why a unit with ``handle`` failed, or '' while it may still report."""
    if status is None:
        return f"the {executor} executor no longer knows unit {handle}; it ended without an outcome"
    if status.phase == "ended":
        advice = f"; {status.advice}" if status.advice else ""
        return f"{status.reason or f'unit {handle} ended'} without an outcome{advice}"
    return ""


def reconcile_job(jobs: Any, job_id: str, executors: Executor | ExecutorOf | None = None, *,
                  finaliser: Callable[[str], Any] | None = None,
                  resubmit: Callable[[str, list[str]], Any] | None = None, pipelines: Any = None) -> Report:
    """Reconcile one job; ``executors`` is one Executor or ``name -> Executor``.

    ``resubmit(job_id, shard_ids)`` submits shards again (the dispatcher's
    fan_out); ``finaliser(job_id)`` finishes the job; ``pipelines`` (a
    :class:`radcloud.work.pipelines.Pipelines`) reconciles a pipeline's steps.
    """
    report = Report(jobs=1)
    try:
        job = jobs.get(job_id)
    except NotFound:
        jobs.closed(job_id)
        report.closed += 1
        return report
    if JOB.is_final(job["state"]):
        jobs.closed(job_id)
        report.closed += 1
        return report
    if job["state"] == "finishing":
        if jobs.claim_finaliser(job_id) and finaliser:
            finaliser(job_id)
            report.finalised += 1
        return report
    if job.get("kind") == L.PIPELINE_KIND:  # its steps' units are jobs, not executor handles
        if pipelines is not None:
            counts = pipelines.reconcile(job_id)
            report.failed += counts["failed"]
            report.delivered += counts["delivered"]
            report.resubmitted += counts["resubmitted"]
        return report
    executor_of = _executor_of(executors)
    now = jobs.clock()
    reasons: dict[str, str] = {}
    by_executor: dict[str, dict[str, str]] = {}  # executor name -> handle -> shard id
    busy: list[str] = []
    for shard in job["shards"]:
        if shard["state"] not in SHARD_OPEN:
            continue
        if now > float(shard.get("deadline") or now + 1):
            reasons[shard["id"]] = "deadline passed without an outcome" + (
                f" (never started: {shard['reason']})" if shard.get("busy_at") and shard.get("reason") else "")
        elif shard.get("activation_id"):
            by_executor.setdefault(shard.get("executor") or "action", {})[shard["activation_id"]] = shard["id"]
        elif shard["state"] == "pending" and shard.get("busy_at"):
            busy.append(shard["id"])
    for name, handles in by_executor.items():
        executor = executor_of(name)
        if executor is None:
            continue
        statuses = _poll(executor, list(handles), f"job {job_id}")
        if statuses is None:
            continue
        for handle, sid in handles.items():
            reason = lost_reason(handle, statuses.get(handle), executor.name)
            if reason:
                reasons[sid] = reason
            else:
                _note_queue(jobs, job, sid, statuses.get(handle))
    must_finalise = False
    for sid, reason in reasons.items():
        try:
            must_finalise |= jobs.shard_finished(job_id, sid, state=L.FAILED, reason=reason)
            report.failed += 1
            log.warning("job %s shard %s: %s", job_id, sid, reason)
        except Conflict:
            pass  # its outcome arrived meanwhile: it was not lost
    if must_finalise and finaliser:
        finaliser(job_id)
        report.finalised += 1
    elif busy and resubmit and not job.get("cancel"):
        resubmit(job_id, busy)
        report.resubmitted += len(busy)
    return report


def _note_queue(jobs: Any, job: dict[str, Any], sid: str, status: UnitStatus | None) -> None:
    """Keep a waiting unit's queue reason on its shard ("queued: waiting for resources"), for the
    UI and CLI; written only when it changes."""
    if status is None:
        return
    wanted = status.reason if status.phase == "queued" else ""
    shard = next((s for s in job["shards"] if s["id"] == sid), {})
    if (shard.get("queue_reason") or "") == wanted:
        return
    try:
        jobs.update_shard(job["id"], sid, {"queue_reason": wanted}, allowed=SHARD_OPEN, event="queue",
                          data={"queue_reason": wanted})
    except (Conflict, NotFound):
        pass


def reconcile_retrieve(retrieves: Any, rid: str, executor: Executor | None) -> Report:
    """Reconcile one retrieve: fail series whose activation ended without an outcome."""
    report = Report(retrieves=1)
    units = retrieves.units(rid)
    open_units = [(key, handle) for key, state, handle in units if not SERIES.is_final(state)]
    if not open_units:
        retrieves.closed(rid)
        report.closed += 1
        return report
    handles = {handle: key for key, handle in open_units if handle}
    if executor is None or not handles:
        return report
    statuses = _poll(executor, list(handles), f"retrieve {rid}")
    if statuses is None:
        return report
    for handle, key in handles.items():
        reason = lost_reason(handle, statuses.get(handle), executor.name)
        if reason and retrieves.fail_if_on(rid, key, handle, f"{reason}; rerun the retrieve to finish it"):
            report.failed += 1
            log.warning("retrieve %s series %s: %s", rid, key, reason)
    return report


def sweep(*, jobs: Any = None, retrieves: Any = None, executors: Executor | ExecutorOf | None = None,
          retrieve_executor: Executor | None = None, finaliser: Callable[[str], Any] | None = None,
          resubmit: Callable[[str, list[str]], Any] | None = None, every_s: float = EVERY_S,
          limit: int = MAX_OPEN, pipelines: Any = None) -> Report:
    """Reconcile every open job and retrieve, at most once per ``every_s`` (namespace-wide)."""
    report = Report()
    gate = jobs.r if jobs is not None else getattr(retrieves, "redis", None)
    if gate is not None and every_s > 0 and not gate.set(GATE, 1, nx=True, px=max(1, int(every_s * 1000))):
        report.skipped = True
        return report
    if jobs is not None:
        for job_id in jobs.open_jobs(limit):
            report.add(reconcile_job(jobs, job_id, executors, finaliser=finaliser, resubmit=resubmit,
                                     pipelines=pipelines))
    if retrieves is not None:
        for rid in retrieves.open_retrieves(limit):
            if not retrieves.exists(rid):
                retrieves.closed(rid)
                report.closed += 1
                continue
            report.add(reconcile_retrieve(retrieves, rid, retrieve_executor))
    return report
