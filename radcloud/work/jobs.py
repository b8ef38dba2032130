"""The job model: one radcloud job and its shards, kept in Redis.

A job is one plugin run over staged inputs, fanned out into shards (one per
series or per N instances). Every change goes through a Lua script, so the
state, the per-job version counter and the event stream move together:
a reader that sees version ``v`` can long-poll the stream for anything newer
and cannot miss an event.

Key layout (``P`` is the prefix, ``radcloud`` by default)::

    P:job:{id}            hash    the job: state, owner, plugin, plugin_version,
                                  params/options (JSON), counters (shards_total,
                                  shards_done, shards_failed, shards_succeeded,
                                  shards_cancelled, instances_total,
                                  instances_done), version, cancel, cached,
                                  cache_key, results_of, reason, timings
    P:job:{id}:shards     hash    shard id -> shard record (JSON): state,
                                  attempt, activation_id, deadline, exit_code,
                                  reason, stderr_tail, outputs, timings
    P:job:{id}:events     stream  one entry per change: type, v (version),
                                  shard, data (JSON), ts
    P:jobs:recent         zset    job id -> created_at (all jobs)
    P:jobs:owner:{owner}  zset    job id -> created_at (one owner's jobs)

    P:jobs:open           zset    job id -> created_at (jobs not final yet: what
                                  :mod:`radcloud.work.reconcile` looks at)

States and transitions are :mod:`radcloud.work.lifecycle`'s ``JOB`` and
``SHARD`` machines (the one table; the ``allowed`` lists below come from it)::

    created -> staging -> running -> finishing -> succeeded | failed | partial | cancelled

``staging``: shards are being invoked; ``running``: a shard has started;
``finishing``: every shard has an outcome and exactly one finaliser (the
caller whose shard outcome completed the set, decided inside the Lua script)
builds the results manifest, the cache entry and the optional PACS push.
Shards go ``pending -> invoked -> running -> succeeded | failed | cancelled``.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from radcloud.core.errors import Conflict, NotFound
from radcloud.work.jobs_lua import JOB_LUA, RETRY_LUA, SHARD_LUA
from radcloud.work import lifecycle as L
from radcloud.work.lifecycle import JOB, JOB_FINAL, JOB_STATES, SHARD, SHARD_FINAL, SHARD_OPEN

__all__ = ["JOB_STATES", "FINAL_STATES", "SHARD_FINAL", "SHARD_OPEN", "JobSpec", "JobStore", "ShardSpec",
           "final_state", "new_job_id"]

log = logging.getLogger(__name__)

FINAL_STATES = JOB_FINAL  # the job's final states (radcloud.work.lifecycle)
EVENTS_MAXLEN = 2000
STDERR_TAIL = 4000
FINISHING_STALE_S = 120.0  # a finaliser silent this long is presumed dead; another may take over
JOB_TTL_S = 30 * 24 * 3600

@dataclass
class ShardSpec:
    """One shard as dispatch plans it: what to run on, not the data itself."""

    id: str
    inputs: list[str] = field(default_factory=list)  # object keys or one prefix
    instances_total: int = 0
    series_uid: str = ""
    study_uid: str = ""
    input_prefix: str = ""  # inputs land in the plugin's input dir relative to it


@dataclass
class JobSpec:
    plugin: str
    plugin_version: str
    owner: str
    params: dict[str, Any]
    shards: list[ShardSpec]
    options: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    cache_key: str = ""
    output_prefix: str = ""
    subject: dict[str, Any] | None = None   # radcloud.work.subject: PHI, never logged


def new_job_id() -> str:
    # Time-ordered prefix so ids sort like creation; random tail so they cannot be guessed.
    return f"j{int(time.time() * 1000):x}{secrets.token_hex(6)}"


class JobStore:
    """Jobs, shards and events in one Redis (client passed in, ``decode_responses=True``)."""

    def __init__(self, redis: Any, *, prefix: str = "radcloud",
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.r = redis
        self.prefix = prefix
        self.clock = clock  # timestamps recorded on jobs
        self.monotonic = monotonic  # long-poll deadlines (injected by tests)
        self._shard_lua = redis.register_script(SHARD_LUA)
        self._job_lua = redis.register_script(JOB_LUA)
        self._retry_lua = redis.register_script(RETRY_LUA)

    # -- keys ---------------------------------------------------------------
    def key(self, job_id: str, part: str = "") -> str:
        base = f"{self.prefix}:job:{job_id}"
        return f"{base}:{part}" if part else base

    @property
    def open_index(self) -> str:
        """The sorted set of jobs not final yet (job id -> created_at)."""
        return f"{self.prefix}:jobs:open"

    def open_jobs(self, limit: int = 1000) -> list[str]:
        """Ids of jobs not final yet, oldest first (what reconcile looks at)."""
        return list(self.r.zrange(self.open_index, 0, limit - 1))

    def closed(self, job_id: str) -> None:
        """Drop a final (or vanished) job from the open index."""
        self.r.zrem(self.open_index, job_id)

    def _keys(self, job_id: str) -> tuple[str, str, str]:
        return self.key(job_id), self.key(job_id, "shards"), self.key(job_id, "events")

    # -- create -------------------------------------------------------------
    def create(self, spec: JobSpec, *, job_id: str | None = None, shard_timeout_s: float = 300.0,
               state: str = "created", extra: dict[str, Any] | None = None) -> str:
        """Write a new job with all its shards ``pending``; returns its id."""
        job_id = job_id or new_job_id()
        now = self.clock()
        job = {
            "id": job_id, "state": state, "owner": spec.owner, "plugin": spec.plugin,
            "plugin_version": spec.plugin_version, "params": json.dumps(spec.params, sort_keys=True),
            "options": json.dumps(spec.options, sort_keys=True), "priority": spec.priority,
            "cache_key": spec.cache_key, "output_prefix": spec.output_prefix or f"results/{job_id}/",
            "shards_total": len(spec.shards), "shards_done": 0, "shards_failed": 0,
            "shards_succeeded": 0, "shards_cancelled": 0,
            "instances_total": sum(s.instances_total for s in spec.shards), "instances_done": 0,
            "version": 1, "cancel": 0, "cached": 0, "results_of": "", "reason": "",
            "created_at": now, "started_at": "", "finished_at": "", "finishing_at": "",
            "subject": spec.subject or "",
            "shard_timeout_s": int(shard_timeout_s),  # a retried shard gets as long again
        }
        job.update(extra or {})
        shards = {s.id: json.dumps({
            "id": s.id, "state": "pending", "attempt": 1, "inputs": s.inputs, "input_prefix": s.input_prefix,
            "series_uid": s.series_uid, "study_uid": s.study_uid,
            "instances_total": s.instances_total, "instances_done": 0,
            "deadline": now + shard_timeout_s, "activation_id": None,
        }) for s in spec.shards}
        jk, sk, ek = self._keys(job_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(jk, mapping={k: _flat(v) for k, v in job.items()})
        if shards:
            pipe.hset(sk, mapping=shards)
        pipe.xadd(ek, {"type": "created", "v": 1, "shard": "", "ts": now,
                       "data": json.dumps({"state": state, "shards": len(shards)})},
                  maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.zadd(f"{self.prefix}:jobs:recent", {job_id: now})
        pipe.zadd(f"{self.prefix}:jobs:owner:{spec.owner}", {job_id: now})
        if JOB.is_final(state):
            pipe.expire(jk, JOB_TTL_S).expire(ek, JOB_TTL_S)
        else:
            pipe.zadd(self.open_index, {job_id: now})
        pipe.execute()
        log.info("job %s created: plugin=%s shards=%d", job_id, spec.plugin, len(shards))
        return job_id

    # -- read ---------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        """The job with its shards. Raises NotFound."""
        jk, sk, _ = self._keys(job_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(jk).hgetall(sk)
        raw, shards = pipe.execute()
        if not raw:
            raise NotFound(f"job {job_id!r} does not exist (or has expired)", field="job")
        job = _unflat(raw)
        job["shards"] = sorted((_shard_record(v) for v in shards.values()), key=lambda s: s["id"])
        return job

    def owner(self, job_id: str) -> str | None:
        """The job's owner, or None if there is no such job."""
        return self.r.hget(self.key(job_id), "owner")

    def version(self, job_id: str) -> int:
        v = self.r.hget(self.key(job_id), "version")
        if v is None:
            raise NotFound(f"job {job_id!r} does not exist (or has expired)", field="job")
        return int(v)

    def shard(self, job_id: str, shard_id: str) -> dict[str, Any]:
        raw = self.r.hget(self.key(job_id, "shards"), shard_id)
        if raw is None:
            raise NotFound(f"shard {shard_id!r} of job {job_id!r} does not exist", field="shard")
        return _shard_record(raw)

    def is_cancelled(self, job_id: str) -> bool:
        """Cheap check a running shard makes in its loop."""
        return self.r.hget(self.key(job_id), "cancel") == "1"

    def events(self, job_id: str, *, after: str = "-", count: int = 500) -> list[dict[str, Any]]:
        """The job's event history (oldest first), after stream id ``after``."""
        start = "-" if after in ("", "-", "0") else f"({after}"
        return [_event(eid, f) for eid, f in self.r.xrange(self.key(job_id, "events"), start, "+", count=count)]

    def wait(self, job_id: str, since_version: int, timeout_s: float) -> dict[str, Any]:
        """Block until the job's version exceeds ``since_version`` or the timeout ends.

        Version and the newest stream id are read in one transaction, then
        XREAD BLOCK waits on the stream from that id: an event between the two
        steps is on the stream and wakes the read, so none can be missed.
        Returns the job (NotFound if it does not exist).
        """
        deadline = self.monotonic() + max(0.0, min(timeout_s, 60.0))
        _, _, ek = self._keys(job_id)
        while True:
            pipe = self.r.pipeline(transaction=True)
            pipe.hget(self.key(job_id), "version").xrevrange(ek, "+", "-", count=1)
            version, last = pipe.execute()
            if version is None:
                raise NotFound(f"job {job_id!r} does not exist (or has expired)", field="job")
            remaining = deadline - self.monotonic()
            if int(version) > since_version or remaining <= 0:
                return self.get(job_id)
            last_id = last[0][0] if last else "0-0"
            self.r.xread({ek: last_id}, count=1, block=max(1, int(remaining * 1000)))

    def list(self, *, owner: str | None = None, state: str | None = None,
             limit: int = 50, scan_max: int = 2000) -> list[dict[str, Any]]:
        """Recent jobs (newest first), optionally one owner's and in one state.

        State filtering reads at most ``scan_max`` recent ids: cheap and bounded.
        """
        index = f"{self.prefix}:jobs:owner:{owner}" if owner else f"{self.prefix}:jobs:recent"
        ids = self.r.zrevrange(index, 0, (scan_max if state else limit) - 1)
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.key(job_id))
        out = []
        for raw in pipe.execute():
            if not raw or (state and raw.get("state") != state):
                continue
            out.append(_unflat(raw))
            if len(out) >= limit:
                break
        return out

    # -- job transitions ------------------------------------------------------
    def transition(self, job_id: str, to: str, *, allowed: Iterable[str] | str = "*",
                   fields: dict[str, Any] | None = None, event: str = "state",
                   data: dict[str, Any] | None = None) -> int:
        """Move the job to ``to`` ('' keeps the state) if it is in ``allowed``.

        Raises Conflict naming the current state otherwise; returns the version.
        """
        allowed_csv = allowed if isinstance(allowed, str) else ",".join(allowed)
        payload = dict(data or {})
        if to:
            payload.setdefault("state", to)
        jk, _, ek = self._keys(job_id)
        res = self._job_lua(keys=[jk, ek], args=[
            allowed_csv, to, json.dumps({k: _flat(v) for k, v in (fields or {}).items()}),
            event, json.dumps(payload), self.clock(), EVENTS_MAXLEN])
        if int(res[0]) == -2:
            raise NotFound(f"job {job_id!r} does not exist (or has expired)", field="job")
        if int(res[0]) == -1:
            raise Conflict(f"job {job_id} is {res[1]}; cannot move it to {to or event}",
                           field="job", state=res[1])
        return int(res[0])

    def complete(self, job_id: str, state: str, *, reason: str = "", fields: dict[str, Any] | None = None) -> int:
        """The finaliser's last step: ``finishing`` -> a final state; keys get a TTL."""
        if not JOB.is_final(state):
            raise ValueError(f"{state} is not a final state")
        f = {"finished_at": self.clock(), "reason": reason, **(fields or {})}
        v = self.transition(job_id, state, allowed=JOB.sources(L.COMPLETE_EVENT[state]), fields=f,
                            data={"reason": reason})
        for k in self._keys(job_id):
            self.r.expire(k, JOB_TTL_S)
        self.closed(job_id)
        return v

    def claim_finaliser(self, job_id: str) -> bool:
        """Take over a ``finishing`` job whose finaliser went silent (never stuck)."""
        job = self.get(job_id)
        if job["state"] != "finishing" or self.clock() - float(job.get("finishing_at") or 0) < FINISHING_STALE_S:
            return False
        try:
            # Compare-and-set on finishing_at: only one taker wins the refresh.
            jk, _, ek = self._keys(job_id)
            with self.r.pipeline() as pipe:
                pipe.watch(jk)
                if pipe.hget(jk, "finishing_at") != str(job["finishing_at"]):
                    return False
                pipe.multi()
                pipe.hset(jk, "finishing_at", self.clock())
                pipe.execute()
            return True
        except Exception as exc:  # WatchError: someone else took it
            log.info("finaliser claim on %s lost: %s", job_id, type(exc).__name__)
            return False

    # -- shard updates --------------------------------------------------------
    def update_shard(self, job_id: str, shard_id: str, patch: dict[str, Any], *,
                     allowed: Iterable[str], event: str, data: dict[str, Any] | None = None
                     ) -> tuple[int, bool]:
        """Patch a shard atomically. Returns (version, am_i_the_finaliser).

        Raises Conflict if the shard is not in ``allowed`` (e.g. already final).
        """
        jk, sk, ek = self._keys(job_id)
        res = self._shard_lua(keys=[jk, sk, ek], args=[
            shard_id, ",".join(allowed), json.dumps(patch), event,
            json.dumps(data if data is not None else patch), self.clock(), EVENTS_MAXLEN])
        if int(res[0]) == -2:
            raise NotFound(f"shard {shard_id!r} of job {job_id!r} does not exist", field="shard")
        if int(res[0]) == -1:
            raise Conflict(f"shard {shard_id} of job {job_id} is already {res[1]}", field="shard", state=res[1])
        return int(res[0]), bool(int(res[1]))

    def shard_invoked(self, job_id: str, shard_id: str, activation_id: str, *, executor: str = "action") -> None:
        """The executor took the shard: ``activation_id`` is its handle (an activation id for
        the action executor, a batch job id for another), ``executor`` the executor's name."""
        self.update_shard(job_id, shard_id, {"state": "invoked", "activation_id": activation_id,
                                             "executor": executor, "invoked_at": self.clock(), "busy_at": None,
                                             "reason": None},
                          allowed=SHARD.sources("invoked"), event="invoked")

    def shard_started(self, job_id: str, shard_id: str, *, activation_id: str | None = None,
                      n_inputs: int | None = None) -> None:
        """The shard's runner reported itself: running (its plugin starts later, once its
        ``n_inputs`` are fetched: :func:`radcloud.work.jobview.phase_words`)."""
        # Running: a queue reason noted while it waited ("queued: waiting to be scheduled") is over.
        patch: dict[str, Any] = {"state": "running", "started_at": self.clock(), "queue_reason": ""}
        if activation_id:
            patch["activation_id"] = activation_id
        if n_inputs is not None:
            patch["n_inputs"] = int(n_inputs)
        self.update_shard(job_id, shard_id, patch, allowed=SHARD.sources("started"), event="started",
                          data={} if n_inputs is None else {"n_inputs": int(n_inputs)})

    def shard_progress(self, job_id: str, shard_id: str, instances_done: int, message: str = "") -> None:
        self.update_shard(job_id, shard_id, {"instances_done": int(instances_done)},
                          allowed=SHARD.sources("progress"), event="progress",
                          data={"instances_done": int(instances_done), "message": message[:200]})

    def shard_log(self, job_id: str, shard_id: str, line: str) -> None:
        """A log line is an event only: it wakes long-pollers, the shard record stays."""
        self.update_shard(job_id, shard_id, {}, allowed=SHARD.sources("log"), event="log", data={"line": line[:500]})

    def shard_finished(self, job_id: str, shard_id: str, *, state: str, reason: str = "",
                       exit_code: int | None = None, stderr_tail: str = "",
                       outputs: list[dict[str, Any]] | None = None,
                       duration_s: float | None = None, instances_done: int | None = None,
                       warnings: int = 0, file_reasons: list[dict[str, str]] | None = None,
                       sandbox: str = "") -> bool:
        """Record a shard's outcome. Returns True if the caller must finalise the job.

        ``sandbox``: how its plugin was confined (:class:`radcloud.run.sandbox.RunResult`).

        Idempotent per shard: a second outcome for a final shard raises Conflict
        and can never make a second finaliser.
        """
        if not SHARD.is_final(state):
            raise ValueError(f"{state} is not a final shard state")
        patch: dict[str, Any] = {"state": state, "reason": reason, "exit_code": exit_code,
                                 "stderr_tail": stderr_tail[-STDERR_TAIL:], "outputs": outputs or [],
                                 "finished_at": self.clock(), "duration_s": duration_s}
        if warnings:  # input files the plugin did not process (radcloud.run.filereasons)
            patch["warnings"] = int(warnings)
            patch["file_reasons"] = list(file_reasons or [])
        if instances_done is not None:
            patch["instances_done"] = int(instances_done)
        if sandbox:
            patch["sandbox"] = sandbox[:300]
        data = {k: patch[k] for k in ("state", "reason", "exit_code", "duration_s")}
        data["warnings"] = int(warnings)
        data["outputs"] = len(patch["outputs"])
        _, finaliser = self.update_shard(job_id, shard_id, patch,
                                         allowed=SHARD.sources(L.SHARD_OUTCOME_EVENT[state]),
                                         event="finished", data=data)
        return finaliser

    # -- cancel / retry / never stuck ----------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Set the cancel flag and cancel every shard not yet running.

        Running shards see the flag and report ``cancelled`` themselves.
        Returns True if the caller must finalise (no shard was running) —
        also for a job with no open shard at all (none planned, or all
        already ended), which no shard outcome would ever finalise.
        """
        self.transition(job_id, "", allowed=JOB.sources("cancel"), fields={"cancel": 1}, event="cancel")
        finaliser = False
        for shard in self.get(job_id)["shards"]:
            if shard["state"] in L.SHARD_WAITING:
                try:
                    finaliser |= self.shard_finished(job_id, shard["id"], state=L.CANCELLED,
                                                     reason="cancelled before it started")
                except Conflict:
                    pass  # it started or finished meanwhile
        if not finaliser and not any(s["state"] in SHARD_OPEN for s in self.get(job_id)["shards"]):
            try:
                self.transition(job_id, "finishing", allowed=JOB.sources("all_done"),
                                fields={"finishing_at": self.clock()})
                return True
            except Conflict:
                pass  # a last outcome moved it to finishing meanwhile: that shard finalises
        return finaliser

    def reopen_failed(self, job_id: str, shard_timeout_s: float = 300.0, *, event: str = "retry") -> list[str]:
        """Retry: the shards the SHARD ``event`` leaves go back to ``pending`` (``retry``: the failed
        ones; ``rerun``: a pipeline's failed step and the steps it stopped); returns their ids."""
        jk, sk, ek = self._keys(job_id)
        res = self._retry_lua(keys=[jk, sk, ek], args=[self.clock(), EVENTS_MAXLEN,
                                                       self.clock() + shard_timeout_s,
                                                       ",".join(SHARD.sources(event))])
        if res and res[0] == -1:
            raise Conflict(f"job {job_id} is {res[1]}; only failed or partial jobs can be retried",
                           field="job", state=res[1])
        if not res:
            raise Conflict(f"job {job_id} has no failed shards to retry", field="job")
        self.r.zadd(self.open_index, {job_id: self.clock()})  # open again: reconcile looks at it
        return list(res)


# The final state a finishing job ends in, with a short reason (the lifecycle's rule).
final_state = L.job_outcome


_NUMERIC = {"version", "shards_total", "shards_done", "shards_failed", "shards_succeeded",
            "shards_cancelled", "instances_total", "instances_done", "priority", "shard_timeout_s"}
_FLOATS = {"created_at", "started_at", "finished_at", "finishing_at"}


def _flat(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def _unflat(raw: dict[str, str]) -> dict[str, Any]:
    job: dict[str, Any] = dict(raw)
    for k in _NUMERIC & raw.keys():
        job[k] = int(raw[k] or 0)
    for k in _FLOATS & raw.keys():
        job[k] = float(raw[k]) if raw[k] else None
    for k in ("params", "options", "subject"):
        if raw.get(k):
            job[k] = json.loads(raw[k])
    job["cancel"] = raw.get("cancel") == "1"
    job["cached"] = raw.get("cached") == "1"
    return job


def _shard_record(raw: str) -> dict[str, Any]:
    shard = json.loads(raw)
    # Lua's cjson encodes an empty list as {}: give lists back their shape.
    for k in ("inputs", "outputs"):
        if shard.get(k) == {}:
            shard[k] = []
    return shard


def _event(eid: str, fields: dict[str, str]) -> dict[str, Any]:
    return {"id": eid, "type": fields.get("type"), "v": int(fields.get("v", 0)),
            "shard": fields.get("shard") or None, "ts": float(fields.get("ts", 0)),
            "data": json.loads(fields.get("data") or "{}")}
