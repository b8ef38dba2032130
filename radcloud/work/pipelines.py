"""Pipelines: ordered plugin steps run as one tracked job of the one lifecycle.

A pipeline is a job (:mod:`radcloud.work.jobs`, ``kind=pipeline``) whose units
are its *steps* instead of shards: the same JOB and SHARD machines of
:mod:`radcloud.work.lifecycle`, the same Lua scripts, the same open index,
so status, cancel and reconcile see it like any job. A step's "executor" is
another job::

    step pending --(claimed, dispatch invoked)--> invoked --(dispatch created its job)--> running
         --(that job ended)--> succeeded | failed | cancelled

1. :meth:`Pipelines.start` creates the pipeline with every step ``pending``
   and submits step 1: a non-blocking invoke of the ``dispatch`` action
   (through the action executor, so a busy namespace leaves it waiting, not
   failed) with ``options.pipeline = {job, step}``.
2. ``dispatch`` links the job it created to the step (:meth:`dispatched`),
   or, when it refuses the run, fails the step with its reason (:meth:`refused`) — unless
   it only gave up waiting for a retrieve still staging (:meth:`waiting`): then reconcile
   submits the step again.
   A cache hit is a finished job at once: the step is reused, not rerun.
3. When the step's job is finalised, its finaliser calls :meth:`child_ended`:
   the step takes the job's outcome (recorded once: the Lua script refuses a
   second) and the next step is submitted with ``inputs = {"job": <that job>}``
   — the DICOM outputs of the previous step, by object key
   (:mod:`radcloud.work.staging`), never image data in parameters.
4. A step that fails (or a job that ends ``partial``/``cancelled``) stops the
   pipeline: the steps after it are cancelled with a reason naming the step,
   and the pipeline ends ``failed`` with "step 2 (lung-seg) failed: …"
   (:func:`radcloud.work.lifecycle.job_outcome`).
5. :meth:`Pipelines.retry` (``status retry`` on the pipeline) runs a failed
   pipeline again from that step: the failed and stopped steps go back to
   ``pending`` (the lifecycle's ``rerun``), the steps that succeeded keep
   their jobs, and step 1 above submits the failed step on the outputs of the
   last one that succeeded.

Exactly once: a step is claimed ``pending -> invoked`` in one Lua script
before its dispatch is invoked, so two callers (a finaliser and reconcile,
or a repeated delivery after a Redis restart) cannot start it twice; a
step's outcome is recorded once for the same reason. Never stuck:
:meth:`reconcile` (the ``reconcile`` action's sweep) delivers the outcome of
a step whose job ended while the notification was lost, fails a step whose
dispatch activation ended without linking a job or whose job expired,
submits again a step that was claimed but never submitted, and fails any
step past its deadline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from radcloud.core.errors import BadRequest, Conflict, NotFound, RadcloudError
from radcloud.work.reasons import plain
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec, new_job_id
from radcloud.work import lifecycle as L
from radcloud.work.executors.base import ExecutorBusy, Unit
from radcloud.work.lifecycle import JOB, SHARD

log = logging.getLogger(__name__)

KIND = L.PIPELINE_KIND
MAX_STEPS = 8
STEP_DEADLINE_S = 24 * 3600   # backstop only: a step's own job has shard deadlines of its own
CLAIM_STALE_S = 60.0          # a step claimed this long ago with no dispatch handle is submitted again
DISPATCH = "dispatch"


def step_id(index: int) -> str:
    return f"s{index:02d}"   # sorts in step order (MAX_STEPS < 100)


def step_label(job: Mapping[str, Any], sid: str) -> str:
    """'step 2 (lung-seg)': how reasons and the UI name a step."""
    steps = (job.get("options") or {}).get("steps") or []
    index = int(sid[1:])
    plugin = steps[index]["plugin"] if index < len(steps) else "?"
    return f"step {index + 1} ({plugin})"


def link_of(request: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(pipeline id, step id)`` a dispatch request runs a step of, or None."""
    link = (request.get("options") or {}).get("pipeline")
    if not link:
        return None
    return str(link["job"]), str(link["step"])


def validate_steps(steps: Any, registry: Any) -> list[dict[str, Any]]:
    """Each step ``{plugin, params, options}`` checked against the plugin registry.

    Raises:
        BadRequest: naming the step and the field.
    """
    from radcloud.api import parse
    from radcloud.api.models import PipelineStepOptions

    if not isinstance(steps, list) or not steps:
        raise BadRequest("pipeline must be a non-empty list of steps {plugin, params, options}", field="pipeline")
    if len(steps) > MAX_STEPS:
        raise BadRequest(f"a pipeline has at most {MAX_STEPS} steps, not {len(steps)}", field="pipeline")
    checked = []
    for i, step in enumerate(steps):
        where, field = f"pipeline step {i + 1}", f"pipeline[{i}]"
        if not isinstance(step, Mapping) or not isinstance(step.get("plugin"), str):
            raise BadRequest(f"{where} must be an object {{plugin, params, options}}", field=field)
        extra = set(step) - {"plugin", "params", "options"}
        if extra:
            raise BadRequest(f"{where}: unknown field(s) {sorted(extra)}; a step has plugin, params, options",
                             field=field)
        try:
            options = parse(PipelineStepOptions, step.get("options") or {}).model_dump(exclude_defaults=True)
        except BadRequest as exc:
            raise BadRequest(f"{where}: options: {exc.message}", field=f"{field}.options") from None
        try:
            plugin = registry.get(step["plugin"])
            params = plugin.validate(step.get("params") or {})
        except (NotFound, BadRequest) as exc:
            raise BadRequest(f"{where} ({step['plugin']}): {exc.message}", field=field) from None
        checked.append({"plugin": step["plugin"], "params": params, "options": options})
    return checked


class Pipelines:
    """Starts, advances and reconciles pipelines. ``invoker`` is an OpenWhisk client
    (or an Executor); ``clock`` comes from the job store."""

    def __init__(self, jobs: JobStore, invoker: Any, *, package: str = "radcloud",
                 finaliser: Callable[[str], Any] | None = None) -> None:
        from radcloud.work.executors import as_executor

        self.jobs = jobs
        self.executor = as_executor(invoker, package) if invoker is not None else None
        # Ends the pipeline when its last step has an outcome (radcloud.work.reporter.Finaliser
        # hands a pipeline to finalise() below); the default needs nothing else.
        self.finaliser = finaliser or (lambda job_id: finalise(self.jobs, self.jobs.get(job_id)))

    # -- start ---------------------------------------------------------------------
    def start(self, steps: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any], owner: str, *,
              name: str = "", extra: Mapping[str, Any] | None = None, job_id: str | None = None) -> str:
        """Create a pipeline over ``inputs`` (a dispatch ``inputs``) and submit its first step;
        ``steps`` are already validated (:func:`validate_steps`). Returns its id.

        ``job_id``: the id to create it under, chosen by the caller before it starts anything
        (the router's :func:`radcloud.arrivals.rules.pipeline_id`). When a pipeline with that id
        exists already — a caller that died after starting it and before recording that it had —
        it is the one: nothing is created, and it is only advanced (idempotent), so a retry of
        that caller never starts a second pipeline.
        """
        if job_id is not None and self.jobs.r.exists(self.jobs.key(job_id)):
            log.info("pipeline %s exists: reused, not started twice", job_id)
            self.advance(job_id)
            return job_id
        job_id = job_id or new_job_id()
        spec = JobSpec(plugin="pipeline", plugin_version="", owner=owner, params={"name": name},
                       shards=[ShardSpec(id=step_id(i)) for i in range(len(steps))],
                       options={"steps": [dict(s) for s in steps], "inputs": dict(inputs), "name": name})
        self.jobs.create(spec, job_id=job_id, shard_timeout_s=STEP_DEADLINE_S,
                         extra={"kind": KIND, **(extra or {})})
        self.advance(job_id)
        return job_id

    def retry(self, pipeline_id: str) -> list[str]:
        """Run a failed pipeline again from the step that failed: that step and the steps it stopped
        go back to ``pending`` (SHARD ``rerun``), the pipeline to ``staging`` (JOB ``retry``), in one
        Lua script; the steps that succeeded are kept with their jobs, and the failed step's next
        run starts on the outputs of the last one that succeeded. Returns the reopened step ids.

        Raises:
            Conflict: the pipeline is not failed (e.g. cancelled, still running), naming its state.
        """
        job = self.jobs.get(pipeline_id)
        if job.get("kind") != KIND:
            raise BadRequest(f"job {pipeline_id} is not a pipeline", field="job")
        if not JOB.allows(job["state"], "retry"):
            raise Conflict(f"pipeline {pipeline_id} is {job['state']}; only a failed pipeline can be retried "
                           "(start a cancelled one again with radcloud routes run)", field="job", state=job["state"])
        reopened = sorted(self.jobs.reopen_failed(pipeline_id, STEP_DEADLINE_S, event="rerun"))  # step order
        log.info("pipeline %s retried from %s", pipeline_id, reopened[0] if reopened else "-")
        self.advance(pipeline_id)
        return reopened

    # -- the step's dispatch reports -------------------------------------------------
    def dispatched(self, pipeline_id: str, sid: str, answer: Mapping[str, Any]) -> bool:
        """dispatch created (or found cached) the step's job: the step runs it.

        Returns False when the step no longer wants it (the pipeline was cancelled or the step
        failed meanwhile): the caller stops that job rather than leave it running for nobody.
        """
        child = str(answer["job_id"])
        try:
            self.jobs.update_shard(pipeline_id, sid, {"state": "running", "executor": "job",
                                                      "activation_id": child, "started_at": self.jobs.clock(),
                                                      "cached": bool(answer.get("cached"))},
                                   allowed=SHARD.sources("started"), event="started",
                                   data={"job": child, "cached": bool(answer.get("cached"))})
        except Conflict as exc:
            # A fast job may have ended (and told the step) before this answer: then it is the step's.
            ours = self.jobs.shard(pipeline_id, sid).get("activation_id") == child
            if not ours:
                log.info("pipeline %s %s: job %s not linked: %s", pipeline_id, sid, child, exc.message)
            return ours
        self._adopt_subject(pipeline_id, sid, child)
        if answer.get("cached") or L.JOB.is_final(str(answer.get("state") or "")):
            self.child_ended(child)
        return True

    def _adopt_subject(self, pipeline_id: str, sid: str, child_id: str) -> None:
        """The pipeline names whose images it runs on as its first step's job does (radcloud.work.subject:
        PHI, in the job record and the owner's answers only, never logged)."""
        if sid != step_id(0):
            return
        subject = self.jobs.r.hget(self.jobs.key(child_id), "subject")
        if subject and not self.jobs.r.hget(self.jobs.key(pipeline_id), "subject"):
            with contextlib.suppress(Conflict, NotFound):
                self.jobs.transition(pipeline_id, "", fields={"subject": subject}, event="subject", data={})

    def waiting(self, pipeline_id: str, sid: str, reason: str) -> None:
        """dispatch gave up waiting for the step's inputs to be staged (a retrieve still running after
        ``wait_staged``, e.g. behind a burst): the step is not failed but left for reconcile to submit
        again, like a unit the executor was too busy to take."""
        self._note(pipeline_id, sid, {"busy_at": self.jobs.clock(), "dispatch_activation": None,
                                      "reason": f"waiting for its inputs: {reason}"[:300]}, "busy")

    def refused(self, pipeline_id: str, sid: str, reason: str) -> None:
        """dispatch refused the step's run (bad inputs, nothing staged...): the step fails with why."""
        self._step_outcome(pipeline_id, sid, L.FAILED, reason)

    def child_ended(self, child_id: str) -> None:
        """The job of a step reached a final state (its finaliser, or reconcile, says so)."""
        child = self.jobs.get(child_id)
        link = link_of(child)
        if link is None:
            return
        pipeline_id, sid = link
        self._adopt_subject(pipeline_id, sid, child_id)
        state = child["state"]
        outcome = {L.SUCCEEDED: L.SUCCEEDED, L.CANCELLED: L.CANCELLED}.get(state, L.FAILED)
        reason = child.get("reason") or ""
        if state == L.PARTIAL:
            reason = f"partial: {reason}"
        self._step_outcome(pipeline_id, sid, outcome, reason,
                           patch={"executor": "job", "activation_id": child_id, "job_state": state,
                                  "result_job": child.get("results_of") or child_id,
                                  "cached": bool(child.get("cached"))})

    # -- moving on -----------------------------------------------------------------
    def advance(self, pipeline_id: str) -> None:
        """Do the next thing the pipeline needs: submit the next step, or stop after a failed one.

        Idempotent: any number of callers may call it at any time.
        """
        job = self.jobs.get(pipeline_id)
        if JOB.is_final(job["state"]) or job["state"] == "finishing":
            return
        steps = job["shards"]
        stop = next((s for s in steps if s["state"] in (L.FAILED, L.CANCELLED)), None)
        if stop is not None or job.get("cancel"):
            why = (f"not run: {step_label(job, stop['id'])} {stop['state']}" if stop is not None
                   else "not run: the pipeline was cancelled")
            self._cancel_waiting(job, why)
            return
        previous: Mapping[str, Any] | None = None
        for step in steps:
            if step["state"] == L.SUCCEEDED:
                previous = step
                continue
            if step["state"] == "pending":
                inputs = ((job.get("options") or {}).get("inputs") if previous is None
                          else {"job": previous["result_job"]})
                self._submit(job, step["id"], inputs)
            return

    def _submit(self, job: Mapping[str, Any], sid: str, inputs: Mapping[str, Any], *, claimed: bool = False) -> None:
        pipeline_id = job["id"]
        if self.executor is None:  # no OpenWhisk client here: the step stays as it is for reconcile
            log.warning("pipeline %s %s: no OpenWhisk client here; reconcile submits it", pipeline_id, sid)
            return
        if not claimed:
            try:  # the claim: pending -> invoked, once (one Lua script)
                # A step run again (retry) starts clean: nothing of its earlier attempt's dispatch or job.
                self.jobs.update_shard(pipeline_id, sid, {"state": "invoked", "executor": DISPATCH,
                                                          "claimed_at": self.jobs.clock(), "inputs": [],
                                                          "deadline": self.jobs.clock() + STEP_DEADLINE_S,
                                                          "dispatch_activation": None, "busy_at": None,
                                                          "result_job": None, "job_state": None,
                                                          "cached": False},
                                       allowed=SHARD.sources("invoked"), event="invoked",
                                       data={"step": step_label(job, sid)})
            except Conflict:
                return  # another caller took it
            with contextlib.suppress(Conflict):
                self.jobs.transition(pipeline_id, JOB.next("created", "submit"), allowed=JOB.sources("submit"))
        step = job["options"]["steps"][int(sid[1:])]
        request = {"plugin": step["plugin"], "params": step.get("params") or {}, "inputs": dict(inputs),
                   "options": {**(step.get("options") or {}), "wait_staged": 50,
                               "pipeline": {"job": pipeline_id, "step": sid}}}
        try:
            handle = self.executor.submit(Unit(job_id=pipeline_id, unit_id=sid, action=DISPATCH, payload=request))
        except ExecutorBusy as exc:
            self._note(pipeline_id, sid, {"busy_at": self.jobs.clock(), "reason": exc.message[:300]}, "busy")
            return
        except RadcloudError as exc:
            self._step_outcome(pipeline_id, sid, L.FAILED, f"could not start: {exc.message}")
            return
        self._note(pipeline_id, sid, {"dispatch_activation": handle, "busy_at": None, "reason": None}, "submitted")

    def _note(self, pipeline_id: str, sid: str, patch: dict[str, Any], event: str) -> None:
        """Annotate an open step without moving it (like a log line)."""
        with contextlib.suppress(Conflict, NotFound):
            self.jobs.update_shard(pipeline_id, sid, patch, allowed=SHARD.sources("log"), event=event)

    def _step_outcome(self, pipeline_id: str, sid: str, state: str, reason: str, *,
                      patch: dict[str, Any] | None = None) -> None:
        job = self.jobs.get(pipeline_id)
        label = step_label(job, sid)
        try:
            if patch:
                self.jobs.update_shard(pipeline_id, sid, patch, allowed=L.SHARD_OPEN, event="result",
                                       data=patch)
            must_finalise = self.jobs.shard_finished(pipeline_id, sid, state=state,
                                                     reason=f"{label}: {reason}"[:300] if reason else "")
        except Conflict:
            return  # recorded already (a repeated delivery): exactly once
        log.info("pipeline %s %s: %s", pipeline_id, label, state)
        if must_finalise:
            self.finaliser(pipeline_id)
        else:
            self.advance(pipeline_id)

    def _cancel_waiting(self, job: Mapping[str, Any], why: str) -> None:
        must_finalise = False
        for step in job["shards"]:
            if step["state"] in L.SHARD_WAITING and not step.get("dispatch_activation"):
                with contextlib.suppress(Conflict):
                    must_finalise |= self.jobs.shard_finished(job["id"], step["id"], state=L.CANCELLED,
                                                              reason=why)
        if must_finalise:
            self.finaliser(job["id"])

    # -- never stuck -----------------------------------------------------------------
    def reconcile(self, pipeline_id: str) -> dict[str, int]:
        """Settle what was lost; returns counts (failed, delivered, resubmitted)."""
        counts = {"failed": 0, "delivered": 0, "resubmitted": 0}
        job = self.jobs.get(pipeline_id)
        now = self.jobs.clock()
        for step in job["shards"]:
            if step["state"] not in L.SHARD_OPEN:
                continue
            sid, label = step["id"], step_label(job, step["id"])
            if now > float(step.get("deadline") or now + 1):
                self._step_outcome(pipeline_id, sid, L.FAILED, "deadline passed without an outcome")
                counts["failed"] += 1
            elif step["state"] == "running" and step.get("executor") == "job":
                try:
                    child = self.jobs.get(step["activation_id"])
                except NotFound:
                    self._step_outcome(pipeline_id, sid, L.FAILED, f"its job {step['activation_id']} has expired")
                    counts["failed"] += 1
                    continue
                if JOB.is_final(child["state"]):
                    self.child_ended(child["id"])   # its finaliser's call was lost
                    counts["delivered"] += 1
            elif step["state"] == "invoked" and step.get("dispatch_activation"):
                counts["failed"] += self._lost_dispatch(pipeline_id, sid, label, step["dispatch_activation"])
            elif step["state"] == "invoked" and (step.get("busy_at") or
                                                 now - float(step.get("claimed_at") or now) > CLAIM_STALE_S):
                self._submit(job, sid, self._inputs_of(job, sid), claimed=True)
                counts["resubmitted"] += 1
        self.advance(pipeline_id)
        return counts

    def _lost_dispatch(self, pipeline_id: str, sid: str, label: str, handle: str) -> int:
        if self.executor is None:
            return 0
        try:
            status = self.executor.poll([handle]).get(handle)
        except RadcloudError:
            return 0  # cannot tell: the deadline stays the backstop
        if status is not None and status.phase != "ended":
            return 0
        step = self.jobs.shard(pipeline_id, sid)
        if step["state"] != "invoked":
            return 0  # it linked its job meanwhile
        self._step_outcome(pipeline_id, sid, L.FAILED,
                           f"its dispatch activation {handle} ended without creating a job")
        return 1

    def _inputs_of(self, job: Mapping[str, Any], sid: str) -> Mapping[str, Any]:
        index = int(sid[1:])
        if index == 0:
            return (job.get("options") or {}).get("inputs") or {}
        return {"job": job["shards"][index - 1].get("result_job")}


def finalise(jobs: JobStore, job: Mapping[str, Any]) -> str:
    """End a finishing pipeline: its outcome (the lifecycle's rule), and the last step's
    results as its own (``results_of``) when it succeeded."""
    state, reason = L.job_outcome(job)
    fields: dict[str, Any] = {}
    if state == L.SUCCEEDED and job["shards"]:
        fields["results_of"] = job["shards"][-1].get("result_job") or ""
    jobs.complete(job["id"], state, reason=reason, fields=fields)
    log.info("pipeline %s finished: %s", job["id"], state)
    return state


def steps_view(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each step of a pipeline for status, the CLI and the UI: plugin, state, its job, reason."""
    steps = (job.get("options") or {}).get("steps") or []
    out = []
    for step in job.get("shards") or []:
        index = int(step["id"][1:])
        out.append({"step": index + 1, "id": step["id"],
                    "plugin": steps[index]["plugin"] if index < len(steps) else "",
                    "state": step["state"], "job": step.get("activation_id") if step.get("executor") == "job" else None,
                    "cached": bool(step.get("cached")), "reason": step.get("reason") or "",
                    "reason_plain": plain(step.get("reason"))})
    return out


def running_jobs(job: Mapping[str, Any]) -> list[str]:
    """The jobs a pipeline's running steps are waiting for ([] for any other job): cancel stops them."""
    if job.get("kind") != KIND:
        return []
    return [s["activation_id"] for s in job.get("shards") or []
            if s["state"] == "running" and s.get("executor") == "job" and s.get("activation_id")]
