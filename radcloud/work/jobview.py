"""What callers see of a job: access rules and the public shape.

Shared by the status and results actions. A job is visible to its owner
and to admins, services and the system; to anyone else it does not exist
(404, so job ids cannot be probed).
"""

from __future__ import annotations

from typing import Any

from radcloud.core.errors import NotFound
from radcloud.work.lifecycle import PIPELINE_KIND, SHARD_FINAL
from radcloud.work.pipelines import steps_view
from radcloud.work.reasons import plain

PRIVILEGED = ("admin", "service", "system")


def can_see(job: dict[str, Any], principal: Any) -> bool:
    if principal is None:
        return False
    return principal.role in PRIVILEGED or job.get("owner") == principal.name


def check(job: dict[str, Any], principal: Any) -> dict[str, Any]:
    if not can_see(job, principal):
        raise NotFound(f"job {job.get('id')!r} does not exist (or has expired)", field="job")
    return job


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """One line of a job list: the job hash with its progress, no shards."""
    out = {k: v for k, v in job.items() if k != "shards"}
    out["reason_plain"] = plain(job.get("reason"))  # what the UI shows; reason: its technical details
    out["subject"] = job.get("subject") or None   # radcloud.work.subject; None: not recorded (older jobs)
    out["progress"] = {
        "shards_done": int(job.get("shards_done") or 0), "shards_total": int(job.get("shards_total") or 0),
        "instances_done": int(job.get("instances_done") or 0),
        "instances_total": int(job.get("instances_total") or 0),
    }
    return out


def public(job: dict[str, Any]) -> dict[str, Any]:
    """The job without bulky internals (input key lists, argv, output listings)."""
    out = summary(job)
    out["shards"] = [{k: v for k, v in s.items() if k not in ("inputs", "argv", "outputs")}
                     | {"outputs": len(s.get("outputs") or []), "reason_plain": plain(s.get("reason")),
                        "attempt_plain": attempt_words(s), "phase_plain": phase_words(s)}
                     for s in job.get("shards", [])]
    if job.get("kind") == PIPELINE_KIND:  # its units are steps, each run by a job of its own
        out["steps"] = steps_view(job)
    return out


def phase_words(shard: dict[str, Any]) -> str:
    """What a running shard is doing, in the words the web UI and the CLI show beside its state ('' when
    it is not running): "fetching 5 inputs" from the moment its runner reports itself (before any
    download: on Slurm, as its batch job starts) until its plugin starts, then "running the plugin"."""
    if shard.get("state") != "running":
        return ""
    if shard.get("plugin_started_at"):
        return "running the plugin"
    try:
        n = int(shard.get("n_inputs"))
    except (TypeError, ValueError):
        return "fetching inputs"
    return f"fetching {n} input{'' if n == 1 else 's'}" if n else "starting"


def wait_and_attempt_words(shard: dict[str, Any]) -> list[str]:
    """Why a shard waits (Slurm's queue reason, while it is open) and which attempt it is, in the words
    the CLI's notes and pfcon's status message put after its executor: ["queued: waiting for
    resources", "requeued by Slurm, attempt 2"]. Takes a stored shard or its :func:`public` shape (whose
    ``attempt_plain`` is these attempt words already)."""
    words = [str(shard["queue_reason"])] if shard.get("queue_reason") and shard.get("state") not in SHARD_FINAL else []
    attempt = shard["attempt_plain"] if "attempt_plain" in shard else attempt_words(shard)
    return words + ([attempt] if attempt else [])


def attempt_words(shard: dict[str, Any]) -> str:
    """Which run of a shard this is, in words the web UI and the CLI show under "Runs on" ('' for a
    first attempt): "requeued by Slurm, attempt 2" when the Slurm job it runs as was requeued
    (its same id, run again: ``requeued`` names that job), "retried, attempt 2" after a retry (a new
    unit). Slurm's job record does not say why it requeued a job (a node failure, an administrator,
    preemption), so neither do these words."""
    try:
        attempt = int(shard.get("attempt") or 1)
    except (TypeError, ValueError):
        return ""
    if attempt <= 1:
        return ""
    requeued = shard.get("requeued") if isinstance(shard.get("requeued"), dict) else {}
    if requeued and str(requeued.get("handle")) == str(shard.get("activation_id")):
        runs = int(requeued.get("restarts") or 0) + 1
        return f"requeued by Slurm, attempt {attempt}" + (f" (run {runs} of this job)" if runs != attempt else "")
    return f"retried, attempt {attempt}"
