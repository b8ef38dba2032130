"""Slurm job states as radcloud's unit statuses: the one table, with the words people see.

slurmrestd (``v0.0.38``) describes a job with ``job_state``, ``state_reason``
and ``exit_code`` (the raw wait status). :func:`status_of` turns that into a
:class:`~radcloud.work.executors.base.UnitStatus`:

=============================  =========  =========  ==================================================
Slurm                          phase      outcome    reason
=============================  =========  =========  ==================================================
PENDING (reason Resources)     queued     —          queued: waiting for resources
PENDING (reason Priority)      queued     —          queued: waiting for priority
PENDING (other reason)         queued     —          queued: <Slurm's reason>
PENDING after a requeue        queued     —          queued: <reason> (requeued, run N)
REQUEUED, SUSPENDED…           queued     —          queued: requeued / suspended
CONFIGURING, RUNNING           running    —          running on <node>
COMPLETING                     running    —          ending on <node>
COMPLETED                      ended      succeeded  Slurm job N completed
FAILED                         ended      failed     Slurm job N failed with exit code X
TIMEOUT                        ended      failed     Slurm job N ran past its time limit (T min): TIMEOUT ¹
OUT_OF_MEMORY                  ended      failed     Slurm job N ran out of memory (M MB): OUT_OF_MEMORY ¹
NODE_FAIL                      ended      failed     Slurm job N lost its node <node>: NODE_FAIL
CANCELLED                      ended      cancelled  Slurm job N was cancelled
BOOT_FAIL, DEADLINE, PREEMPTED ended      failed     Slurm job N ended <STATE>
=============================  =========  =========  ==================================================

¹ with advice (:attr:`UnitStatus.advice`): what the plugin's descriptor should
ask for instead (:data:`TIME_ADVICE`, :data:`MEMORY_ADVICE`).

The outcome is used only when the shard runner inside the job never
reported one (it was killed: timeout, memory, node failure): reconcile then
fails the shard with this reason. A job Slurm no longer knows is absent
from ``poll``'s answer and reconcile says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from radcloud.work.executors.base import UnitStatus

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED", "STOPPED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "POWER_UP_NODE", "UPDATE_DB", "SPECIAL_EXIT"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING"}
_PENDING_WORDS = {"Resources": "waiting for resources", "Priority": "waiting for priority",
                  "None": "waiting to be scheduled", "Dependency": "waiting for a dependency",
                  "BeginTime": "waiting for its start time", "JobHeldUser": "held by its user",
                  "JobHeldAdmin": "held by an administrator", "ReqNodeNotAvail": "its node is not available",
                  "NodeDown": "its node is down", "PartitionDown": "the partition is down",
                  "PartitionInactive": "the partition is inactive"}

TIME_ADVICE = ("give the plugin more time (radcloud.timeout_s in its descriptor; Slurm's limit is that plus "
               "a minute for the upload, within the partition's MaxTime) or split its input, then run it again")
MEMORY_ADVICE = ("give the plugin more memory (max_memory_limit in its descriptor, within what the partition's "
                 "nodes have), then run it again")


def exit_code(raw: Any) -> int | None:
    """The exit code from v0.0.38's raw wait status (-signal for a signal), None if unknown."""
    if isinstance(raw, dict):  # later API versions: {"return_code": N, "signal": {...}}
        raw = raw.get("return_code")
    if not isinstance(raw, int) or raw < 0:
        return None
    try:
        return os.waitstatus_to_exitcode(raw)
    except ValueError:
        return None


def queue_reason(reason: str | None) -> str:
    """``queued: waiting for resources`` — Slurm's pending reason in words."""
    reason = (reason or "None").strip()
    return f"queued: {_PENDING_WORDS.get(reason, reason)}"


def state_of(job: Mapping[str, Any]) -> str:
    state = job.get("job_state") or "UNKNOWN"
    if isinstance(state, list):  # later API versions give a list of flags, the base state first
        state = state[0] if state else "UNKNOWN"
    return str(state).upper()


def status_of(job: Mapping[str, Any]) -> UnitStatus:
    """One slurmrestd job record as a UnitStatus (``detail``: Slurm's id, state, reason, node, exit code)."""
    state = state_of(job)
    jid = job.get("job_id")
    node = job.get("batch_host") or job.get("nodes") or ""
    reason = str(job.get("state_reason") or "None")
    code = exit_code(job.get("exit_code"))
    restarts = job.get("restart_cnt") if isinstance(job.get("restart_cnt"), int) else 0
    detail = {"slurm_job_id": jid, "state": state, "reason": reason, "node": node, "exit_code": code,
              "restarts": restarts}
    if state in QUEUED:
        words = queue_reason(reason) if state == "PENDING" else f"queued: {state.lower()}"
        if restarts and state == "PENDING":  # requeued: it runs again under the same id, into the same shard
            words += f" (requeued, run {restarts + 1})"
        return UnitStatus("queued", reason=words, detail=detail)
    if state in RUNNING:
        verb = "ending" if state == "COMPLETING" else "running"
        return UnitStatus("running", reason=f"{verb} on {node}" if node else verb, detail=detail)
    if state == "COMPLETED":
        return UnitStatus("ended", "succeeded", f"Slurm job {jid} completed", detail)
    if state == "CANCELLED":
        return UnitStatus("ended", "cancelled", f"Slurm job {jid} was cancelled", detail)
    if state == "FAILED":
        why = f" with exit code {code}" if code is not None and code >= 0 else \
            f": killed by signal {-code}" if code is not None else f" ({reason})"
        return UnitStatus("ended", "failed", f"Slurm job {jid} failed{why}", detail)
    if state == "TIMEOUT":
        limit = job.get("time_limit")
        within = f" ({limit} min)" if isinstance(limit, int) else ""
        return UnitStatus("ended", "failed", f"Slurm job {jid} ran past its time limit{within}: TIMEOUT", detail,
                          advice=TIME_ADVICE)
    if state == "OUT_OF_MEMORY":
        mem = job.get("memory_per_node")
        limit = f" ({mem} MB)" if isinstance(mem, int) and mem > 0 else ""
        return UnitStatus("ended", "failed", f"Slurm job {jid} ran out of memory{limit}: OUT_OF_MEMORY", detail,
                          advice=MEMORY_ADVICE)
    if state == "NODE_FAIL":
        return UnitStatus("ended", "failed", f"Slurm job {jid} lost its node {node or '?'}: NODE_FAIL", detail)
    return UnitStatus("ended", "failed", f"Slurm job {jid} ended {state}", detail)
