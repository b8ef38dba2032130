"""Shard outcomes into the job model, and the one finaliser per job.

:class:`RedisShardReporter` implements the shard runner's reporter protocol
(:mod:`radcloud.run.shard`: running/started/progress/log/finished/cancelled) on
:class:`radcloud.work.jobs.JobStore`. The shard whose outcome completes the set
is told so by the store's Lua script and runs :class:`Finaliser` — exactly
once per job: results manifest, cache entry, optional push to the PACS,
then the final state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from radcloud.core.errors import Conflict
from radcloud.work.jobs import JobStore, final_state
from radcloud.work import lifecycle as L

log = logging.getLogger(__name__)

_STATUS_TO_STATE = {"finishedSuccessfully": L.SUCCEEDED, "cancelled": L.CANCELLED}
CANCEL_CHECK_S = 0.2  # the runner polls often; Redis is asked at most this often


class Finaliser:
    """Ends a job whose shards all have outcomes. Collaborators are optional.

    ``results``: has ``save_manifest(job) -> dict``; ``cache``: has
    ``put(key, job_id)``; ``push``: ``(job, manifest) -> dict`` storing a
    derived series into the PACS; ``pipelines``: a
    :class:`radcloud.work.pipelines.Pipelines` told when a job that runs a
    pipeline step has ended (without one, reconcile delivers it).
    A pipeline itself is ended by :func:`radcloud.work.pipelines.finalise`.
    """

    def __init__(self, jobs: JobStore, *, results: Any = None, cache: Any = None,
                 push: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
                 pipelines: Any = None) -> None:
        self.jobs, self.results, self.cache, self.push = jobs, results, cache, push
        self.pipelines = pipelines

    def __call__(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        if job.get("kind") == L.PIPELINE_KIND:
            from radcloud.work.pipelines import finalise

            return finalise(self.jobs, job)
        state = self._finish(job_id, job)
        if self.pipelines is not None and (job.get("options") or {}).get("pipeline"):
            try:
                self.pipelines.child_ended(job_id)
            except Exception as exc:  # the job stands; reconcile delivers its outcome to the pipeline
                log.warning("job %s: telling its pipeline failed (%s); reconcile will", job_id, type(exc).__name__)
        return state

    def _finish(self, job_id: str, job: dict[str, Any]) -> str:
        state, reason = final_state(job)
        fields: dict[str, Any] = {}
        try:
            manifest = self.results.save_manifest(job) if self.results else {}
            fields["outputs"] = len(manifest.get("outputs", []))
            if state == L.SUCCEEDED and job.get("cache_key") and self.cache:
                self.cache.put(job["cache_key"], job_id)
            if self.push and state in (L.SUCCEEDED, L.PARTIAL) and (job.get("options") or {}).get("push_to_pacs"):
                try:
                    pushed = self.push(job, manifest)
                    fields["pacs_series_uid"] = pushed.get("series_uid", "")
                    fields["pacs_instances"] = pushed.get("instances", 0)
                except Exception as exc:  # the analysis still stands; say why the push did not
                    log.warning("job %s: PACS push failed: %s", job_id, exc)
                    fields["pacs_error"] = f"push to PACS failed: {type(exc).__name__}: {str(exc)[:200]}"
        except Exception as exc:
            log.exception("job %s: finalising failed", job_id)
            state = L.FAILED if state == L.SUCCEEDED else state
            reason = f"finalising failed: {type(exc).__name__}; {reason}".rstrip("; ")
        self.jobs.complete(job_id, state, reason=reason, fields=fields)
        log.info("job %s finished: %s", job_id, state)
        return state


class RedisShardReporter:
    """The reporter a plugin action passes to :func:`radcloud.run.shard.run_shard`."""

    def __init__(self, jobs: JobStore, job_id: str, *, finaliser: Callable[[str], Any] | None = None,
                 activation_id: str | None = None,
                 advance: Callable[[str, str, list[dict[str, Any]]], bool] | None = None) -> None:
        """Every call writes to Redis through ``jobs.r``, whose client rides out a
        Redis restart itself (:mod:`radcloud.core.redisclient`): no call here retries."""
        self.jobs, self.job_id = jobs, job_id
        self.finaliser = finaliser
        self._advance = advance
        self.activation_id = activation_id
        self._running: set[str] = set()
        self._plugin_started: set[str] = set()
        self._cancel_checked = 0.0
        self._cancel = False

    def resume(self, shard_id: str, *, running: bool, plugin_started: bool) -> None:
        """Go on from where an earlier reporter of this shard left it (a shard reporting call by call)."""
        if running:
            self._running.add(shard_id)
        if plugin_started:
            self._plugin_started.add(shard_id)

    def _ensure_running(self, shard_id: str, n_inputs: int | None = None) -> bool:
        """The shard's one ``started`` transition, made by whichever report comes first (``running``,
        else a later one whose ``running`` was lost): never twice, not again after a requeue."""
        if shard_id in self._running:
            return True
        try:
            self.jobs.shard_started(self.job_id, shard_id, activation_id=self.activation_id, n_inputs=n_inputs)
        except Conflict as exc:
            # Cancelled before it started, or already ended by "never stuck":
            # the runner learns it through cancelled() / its outcome is refused.
            log.info("job %s shard %s not started: %s", self.job_id, shard_id, exc.message)
            return False
        self._running.add(shard_id)
        return True

    def running(self, shard_id: str, info: dict[str, Any]) -> None:
        """The runner is up, its inputs not fetched yet: the shard shows "running: fetching N inputs"."""
        n = info.get("n_inputs")
        self._ensure_running(shard_id, n_inputs=n if isinstance(n, int) else None)

    def started(self, shard_id: str, info: dict[str, Any]) -> None:
        self._ensure_running(shard_id)
        self._plugin_started.add(shard_id)
        try:
            self.jobs.update_shard(self.job_id, shard_id, {"argv": info.get("argv"), "plugin_started_at": time.time()},
                                   allowed=L.SHARD.sources("progress"), event="plugin_started",
                                   data={"n_inputs": info.get("n_inputs"), "version": info.get("version")})
        except Conflict:
            pass

    def progress(self, shard_id: str, done: int, total: int) -> None:
        if not self._ensure_running(shard_id):
            return
        if shard_id in self._plugin_started:
            # After the plugin ran, progress counts uploaded outputs, not instances.
            self.jobs.update_shard(self.job_id, shard_id, {}, allowed=L.SHARD.sources("progress"), event="upload",
                                   data={"done": done, "total": total})
        else:
            self.jobs.shard_progress(self.job_id, shard_id, done, f"staged {done}/{total}")

    def log(self, shard_id: str, line: str) -> None:
        self.jobs.shard_log(self.job_id, shard_id, line)

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._cancel_checked >= CANCEL_CHECK_S:
            self._cancel_checked = now
            self._cancel = self.jobs.is_cancelled(self.job_id)
        return self._cancel

    def finished(self, shard_id: str, outcome: dict[str, Any]) -> None:
        state = _STATUS_TO_STATE.get(outcome.get("status", ""), L.FAILED)
        reason = outcome.get("reason") or ""
        if state == L.FAILED and outcome.get("message"):
            reason = f"{reason}: {outcome['message']}"[:300]
        warnings = int(outcome.get("warnings") or 0)
        if state == L.SUCCEEDED and warnings:  # succeeded with warnings: the reason says which files
            reason = f"warnings: {outcome.get('message') or warnings}"[:300]
        shard = self.jobs.shard(self.job_id, shard_id)
        if state == L.SUCCEEDED and self._multi_stage():
            # De-identify first: this was an intermediate stage; the next one runs on its outputs.
            try:
                if self.advance(shard_id, outcome.get("outputs") or []):
                    return
            except Exception as exc:
                state, reason = L.FAILED, f"could not start the next stage: {type(exc).__name__}"
                log.warning("job %s shard %s: %s", self.job_id, shard_id, reason)
        try:
            # A retry after a reply lost in transit meets a final shard: Conflict, as below.
            must_finalise = self.jobs.shard_finished(
                self.job_id, shard_id, state=state, reason=reason, exit_code=outcome.get("exit_code"),
                stderr_tail=outcome.get("stderr_tail") or "", outputs=outcome.get("outputs") or [],
                duration_s=outcome.get("duration_s"), warnings=warnings,
                file_reasons=outcome.get("file_reasons") or [], sandbox=outcome.get("sandbox") or "",
                instances_done=shard.get("instances_total") if state == L.SUCCEEDED else None)
        except Conflict as exc:
            log.info("job %s shard %s outcome not recorded: %s", self.job_id, shard_id, exc.message)
            return
        if must_finalise and self.finaliser is not None:
            self.finaliser(self.job_id)

    def _multi_stage(self) -> bool:
        options = self.jobs.r.hget(self.jobs.key(self.job_id), "options") or "{}"
        return len(json.loads(options).get("stages") or []) > 1

    def advance(self, shard_id: str, outputs: list[dict[str, Any]]) -> bool:
        if self._advance is None:
            # Inside a plugin action: OpenWhisk gives it __OW_API_HOST/__OW_API_KEY.
            from radcloud.work.dispatch import advance_stage
            from radcloud.core.settings import Settings
            from radcloud.work.executors import executor_for

            settings = Settings.load()
            executor = executor_for(settings.executor, settings)
            self._advance = lambda job_id, sid, outs: advance_stage(
                self.jobs, executor, job_id, sid, outs, package=settings.ow_package,
                timeout_s=settings.shard_timeout_s, finaliser=self.finaliser,
                executors=lambda name: executor_for(name, settings))
        return self._advance(self.job_id, shard_id, outputs)
