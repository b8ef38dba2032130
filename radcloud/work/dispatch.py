"""Dispatch: validate a run request, answer it from the cache or fan it out.

Everything is checked before anything is created: the plugin exists (404),
its parameters are valid (400), options are sane (400), every input is
staged (404) and complete (409). Then the result cache is asked; a miss
creates the job (:mod:`radcloud.work.jobs`) and submits one unit per shard
through the configured :class:`~radcloud.work.executors.Executor` (by
default one non-blocking plugin action invoke), with a payload of object keys only (a shard spec as
:class:`radcloud.run.shard.ShardSpec` reads it). The caller gets the job id at
once; shards report into Redis themselves.

Inputs are resolved by a :class:`Staging` (the staging manifests that
retrieve writes, see :mod:`radcloud.staging`); the OpenWhisk client and
the plugin registry are passed in, so this module runs in unit tests
without sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from radcloud.pacs import derivedseries
from radcloud.work.cache import ResultCache, cache_key
from radcloud.store.staged import InputAccess, StagedSeries
from radcloud.core.errors import BadRequest, Conflict, RadcloudError, Unavailable
from radcloud.work.jobs import JobSpec, JobStore, ShardSpec, new_job_id
from radcloud.run.resources import action_limits, check_fits
from radcloud.work.subject import from_series as subject_of
from radcloud.work import lifecycle as L
from radcloud.work.executors import Executor, ExecutorBusy, Resources, Unit, as_executor
from radcloud.work.lifecycle import JOB, SHARD

log = logging.getLogger(__name__)

SHARD_BY = ("series", "instances")
MAX_SHARDS = 500
DEIDENTIFY_PLUGIN = "deidentify"  # runs first in every shard when options.deidentify  # keeps one dispatch within the action's timeout and the namespace's rate


class Staging(Protocol):
    def resolve(self, inputs: Mapping[str, Any], access: Any = None) -> list[StagedSeries]: ...


class Invoker(Protocol):
    def invoke(self, action: str, params: dict[str, Any], *, blocking: bool = False) -> dict[str, Any]: ...


@dataclasses.dataclass
class Options:
    shard_by: str = "series"
    shard_size: int = 100
    priority: int = 0
    deidentify: bool = False
    push_to_pacs: bool = False
    force: bool = False
    include_derived: bool = False  # run on radcloud's own result series too (refused otherwise)
    wait_staged: int = 0  # seconds to wait for a running retrieve (pull-and-run sets it)
    executor: str | None = None  # "action" | "slurm": where the plugin's shards run (radcloud.work.routing)
    pipeline: dict[str, str] | None = None  # {job, step}: the pipeline step this run is (radcloud.work.pipelines)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "Options":
        """Options from the request (:class:`radcloud.api.models.DispatchOptions`);
        BadRequest names the first bad one."""
        from radcloud.api import parse
        from radcloud.api.models import DispatchOptions

        return cls(**parse(DispatchOptions, raw).model_dump())


def refuse_derived(series: list[StagedSeries]) -> None:
    """BadRequest naming the staged series that radcloud itself wrote into the PACS.

    Results of earlier runs (:func:`radcloud.pacs.derivedseries.is_derived`)
    are no scanner images: running a plugin on them again by mistake makes
    results of results. Retrieve leaves them out of a pulled study and the
    Run page does not offer them; this is the check every caller passes
    (the API, the CLI, routing rules). A job's own outputs (``inputs.job``,
    how a pipeline step consumes the step before) are not checked.
    """
    derived = [s for s in series if derivedseries.is_derived({"SeriesInstanceUID": s.series_uid})]
    if not derived:
        return
    named = ", ".join(f"{s.series_uid} (series {s.tags.get('SeriesNumber') or '?'})" for s in derived[:3])
    more = f" and {len(derived) - 3} more" if len(derived) > 3 else ""
    raise BadRequest(f"{len(derived)} of the {len(series)} input series are results radcloud made earlier, not "
                     f"scanner images: {named}{more}; leave them out (choose the study's other series), or set "
                     "options.include_derived to run on them on purpose", field="inputs",
                     series=[s.series_uid for s in derived[:10]])


def plan_shards(series: list[StagedSeries], opts: Options) -> list[ShardSpec]:
    """The shards of a run; each knows the prefix its keys are relative to.

    A shard never mixes series: a plugin sees one series per input dir,
    which is what per-series tools (dcm2niix, dicom-tags) expect.
    """
    shards: list[ShardSpec] = []
    for n, s in enumerate(series):
        keys = [i["key"] for i in s.instances]
        size = len(keys) if opts.shard_by == "series" else opts.shard_size
        for part, start in enumerate(range(0, len(keys), max(size, 1))):
            chunk = keys[start:start + size]
            sid = f"s{n:03d}" if opts.shard_by == "series" else f"s{n:03d}-{part:03d}"
            shards.append(ShardSpec(id=sid, inputs=chunk, instances_total=len(chunk),
                                    series_uid=s.series_uid, study_uid=s.study_uid, input_prefix=s.prefix))
    return shards


@dataclasses.dataclass(frozen=True)
class RunCheck:
    """A run request as checked (:meth:`Dispatcher.check`): what dispatch goes on with."""

    plugin: Any
    params: dict[str, Any]
    opts: Options
    stages: list[str]
    route: Any


class RunChecker:
    """What can be refused of a run request without its inputs. Needs no store, queue or
    executor: the query action (pull-and-run's first step) builds one from its settings."""

    def __init__(self, registry: Any, *, router: Callable[[Mapping[str, Any], Mapping[str, Any]], Any] | None = None,
                 deid_secret: Any = None, deidentify_plugin: str = DEIDENTIFY_PLUGIN) -> None:
        self.registry, self.router = registry, router
        # Only its truth is used here: shards read the secret from their own settings.
        self.has_deid_secret = bool(deid_secret)
        self.deidentify_plugin = deidentify_plugin

    @classmethod
    def from_settings(cls, settings: Any) -> "RunChecker":
        from radcloud.run.registry import Registry
        from radcloud.work import routing

        return cls(Registry(), router=routing.chooser(settings), deid_secret=settings.deid_secret)

    def check(self, request: Mapping[str, Any]) -> RunCheck:
        """What can be refused without the inputs: the plugin (404), its parameters (400), the
        options (400), where it would run (409 naming both numbers when nothing can run it, 400
        when it asks a partition for more than it has), the de-identification secret (503).
        pull-and-run asks this before it searches or pulls anything (functions/query)."""
        name = request.get("plugin")
        if not isinstance(name, str) or not name:
            raise BadRequest("'plugin' (a plugin name) is required", field="plugin")
        plugin = self.registry.get(name)                      # NotFound names the known ones
        params = plugin.validate(request.get("params") or {})  # BadRequest names the parameter
        opts = Options.parse(request.get("options") or {})
        stages = [plugin.name]
        needs_secret = [plugin] if getattr(plugin, "deid", None) else []
        if opts.deidentify:
            deid = self.registry.get(self.deidentify_plugin)  # NotFound: not installed here
            stages = [deid.name, plugin.name]
            needs_secret += [deid] if getattr(deid, "deid", None) else []
        # Intermediate stages (de-identification: hospital side) run on the default executor; the
        # plugin where its router says.
        for name in stages[:-1] if self.router else stages:
            check_fits(self.registry.get(name).descriptor)
        route = self.router(plugin.descriptor, {"executor": opts.executor}) if self.router else None
        if needs_secret and not self.has_deid_secret:
            # Fail closed before any job or shard exists: every shard would fail anyway.
            raise Unavailable(f"plugin {needs_secret[0].name} needs the de-identification secret, which is not "
                              "configured: set the deid_secret setting (RADCLOUD_DEID_SECRET, a package "
                              "input) and redeploy", field="deid_secret")
        return RunCheck(plugin, params, opts, stages, route)


class Dispatcher:
    """Turns one run request into a job. Collaborators injected."""

    def __init__(self, jobs: JobStore, cache: ResultCache, registry: Any, staging: Staging,
                 invoker: Executor | Invoker, *, package: str = "radcloud", shard_timeout_s: int = 300,
                 finaliser: Any = None, deidentify_plugin: str = DEIDENTIFY_PLUGIN,
                 deid_secret: Any = None, executors: Callable[[str], Executor | None] | None = None,
                 router: Callable[[Mapping[str, Any], Mapping[str, Any]], Any] | None = None) -> None:
        self.jobs, self.cache, self.registry, self.staging = jobs, cache, registry, staging
        # ``router(descriptor, options) -> radcloud.work.routing.Route`` picks the plugin's
        # executor (None: every shard on ``invoker``); ``executors(name)`` builds it.
        self.router, self.executors = router, executors
        self.checker = RunChecker(registry, router=router, deid_secret=deid_secret,
                                  deidentify_plugin=deidentify_plugin)
        # Shards run through an Executor (radcloud.work.executors); an OpenWhisk
        # client passed here is the action executor's.
        self.executor = as_executor(invoker, package)
        self.package, self.shard_timeout_s = package, shard_timeout_s
        self.finaliser = finaliser

    def dispatch(self, request: Mapping[str, Any], owner: str, *, privileged: bool = False,
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Validate, look up the cache, create and fan out. Returns ``{"job_id", ...}``.

        ``owner`` runs the job; unless ``privileged`` (admin, service,
        system) it may use only its own jobs' results as inputs
        (:class:`radcloud.store.staged.InputAccess`). ``env``: variables every
        shard's plugin gets (pfcon: CUBE's ``CHRIS_*``), kept with the job so a
        retried, resubmitted or next-stage shard gets them too; not part of the
        HTTP request, and no secret (job records are readable by their owner).
        """
        checked = self.checker.check(request)  # the plugin, its parameters, options, where it runs
        plugin, params, opts, stages, route = (checked.plugin, checked.params, checked.opts, checked.stages,
                                               checked.route)
        inputs = request.get("inputs")
        if not isinstance(inputs, Mapping) or not inputs:
            raise BadRequest("'inputs' must name a retrieve id, series UIDs or object prefixes, "
                             "e.g. {\"series\": [\"1.2.3\"]}", field="inputs")
        series = self._resolve(inputs, opts.wait_staged, self._access(owner, privileged))  # 404/409 per series
        if not series:
            raise BadRequest("the inputs name no staged series", field="inputs")
        incomplete = [s.series_uid for s in series if not s.complete]
        if incomplete:
            raise Conflict(f"{len(incomplete)} series not completely staged yet; wait for the "
                           "retrieve to finish", field="inputs", series=incomplete[:10])
        if not inputs.get("job") and not opts.include_derived:
            refuse_derived(series)
        shards = plan_shards(series, opts)
        if not shards:
            # A job with nothing to run would wait for shards that never come.
            raise BadRequest(f"the inputs name {len(series)} series but no instances: nothing to run; "
                             "name staged series (a retrieve id, series UIDs or their prefixes)", field="inputs")
        if len(shards) > MAX_SHARDS:
            raise BadRequest(f"{len(shards)} shards exceed the limit of {MAX_SHARDS}; "
                             "raise shard_size or shard by series", field="shard_size")
        md5s = [i.get("md5") or "" for s in series for i in s.instances]
        # Options that change the outputs are part of what is cached.
        key = cache_key(plugin.name, plugin.version, {"params": params, "deidentify": opts.deidentify},
                        md5s)
        options = dataclasses.asdict(opts) | {"stages": stages}
        if env:
            options["env"] = {str(k): str(v) for k, v in env.items()}
        shard_timeout_s = self.shard_timeout_s
        if route is not None:
            options |= {"executor": route.executor, "routed": route.why}
            if route.executor != "action":  # an action's limits are its deployment's (the manifest)
                options["resources"] = dataclasses.asdict(route.resources)
                shard_timeout_s = max(shard_timeout_s, deadline_s(route))
            else:
                # Reconcile's backstop waits out the time the platform lets the action run (its
                # manifest timeout, from the descriptor): a shorter shard_timeout_s failed shards
                # still running, whose outcome then came too late (a 28 s dcm2niix shard among
                # twelve at once on two cores, with the e2e world's 25 s).
                shard_timeout_s = max(shard_timeout_s, action_limits(plugin.descriptor).timeout_ms // 1000)
        spec = JobSpec(plugin=plugin.name, plugin_version=plugin.version, owner=owner, params=params,
                       shards=shards, options=options, priority=opts.priority,
                       cache_key=key, subject=subject_of(series))
        if not opts.force:
            hit = self.cache.serve(key, spec)
            if hit:
                return {"job_id": hit, "state": L.SUCCEEDED, "cached": True,
                        "results_of": self.jobs.get(hit)["results_of"]}
        job_id = new_job_id()
        spec.output_prefix = f"results/{job_id}/"
        self.jobs.create(spec, job_id=job_id, shard_timeout_s=shard_timeout_s)
        self.fan_out(job_id, [s.id for s in shards])
        return {"job_id": job_id, "state": self.jobs.get(job_id)["state"], "cached": False,
                "shards": len(shards)}

    def _access(self, owner: str, privileged: bool) -> Any:
        return InputAccess(owner, privileged=privileged, job_owner=self.jobs.owner)

    def _resolve(self, inputs: Mapping[str, Any], wait_s: int, access: Any = None) -> list[StagedSeries]:
        """Resolve inputs; a retrieve still staging is waited for, bounded by ``wait_s``.

        Retrieve records have no event stream to block on, so this polls
        (4 times a second) — only in dispatch, only for ``wait_staged``.
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.staging.resolve(inputs, access)
            except Conflict as exc:
                if not exc.details.get("running") or time.monotonic() >= deadline:
                    raise
            time.sleep(0.25)

    def fan_out(self, job_id: str, shard_ids: list[str]) -> None:
        """Submit one unit per (pending) shard through the executor, recording handles.

        Also used by retry and by reconcile (shards the executor was too busy
        to take). A shard whose submit fails is failed with the reason at
        once, so the job cannot wait for it.
        """
        job = self.jobs.get(job_id)
        if JOB.allows(job["state"], "submit"):
            self.jobs.transition(job_id, JOB.next(job["state"], "submit"), allowed=JOB.sources("submit"))
        by_id = {s["id"]: s for s in job["shards"]}
        for sid in shard_ids:
            submit_shard(self.jobs, self.executor, job, by_id[sid], timeout_s=self.shard_timeout_s,
                         finaliser=self.finaliser, executors=self.executors)


def stage_plan(job: Mapping[str, Any]) -> list[str]:
    """The plugins each shard runs in turn: ``[deidentify, plugin]`` or ``[plugin]``."""
    return list((job.get("options") or {}).get("stages") or [job["plugin"]])


def shard_payload(job: Mapping[str, Any], shard: Mapping[str, Any], timeout_s: int) -> dict[str, Any]:
    """The spec one plugin action gets (keys, never data) for the shard's current stage.

    Intermediate stages (de-identification) write under ``_stages/``, so a
    job's results are only what its plugin produced.
    """
    stages, stage = stage_plan(job), int(shard.get("stage") or 0)
    last = stage == len(stages) - 1
    sid = shard["id"]
    prefix = job["output_prefix"]
    return {
        "job_id": job["id"], "shard_id": sid, "plugin": stages[stage],
        "params": job["params"] if last else {},
        "inputs": shard["inputs"], "input_prefix": shard.get("input_prefix", ""),
        "output_prefix": f"{prefix}{sid}/" if last else f"{prefix}_stages/{sid}/{stages[stage]}/",
        "limits": {"timeout_s": timeout_s},
        # From the job, not the submit: a retried or resubmitted shard gets the same variables.
        **({"env": dict(env)} if (env := (job.get("options") or {}).get("env")) else {}),
    }


def stage_executor(job: Mapping[str, Any], shard: Mapping[str, Any]) -> str | None:
    """The executor the job's router chose for the shard's current stage (None: the default).

    Only the plugin's own stage is routed; a de-identification stage before
    it runs hospital side, on the default executor.
    """
    options = job.get("options") or {}
    stages, stage = stage_plan(job), int(shard.get("stage") or 0)
    return options.get("executor") if stage == len(stages) - 1 else None


def deadline_s(route: Any) -> int:
    """A routed shard's deadline (reconcile's backstop): its run and upload, and for a batch
    cluster time in the queue (``QUEUE_ALLOWANCE_S``) — Slurm's own states are polled meanwhile."""
    from radcloud.work.executors.slurm import QUEUE_ALLOWANCE_S, UPLOAD_GRACE_S

    queue = QUEUE_ALLOWANCE_S if route.executor == "slurm" else 0
    return int(route.resources.timeout_s) + UPLOAD_GRACE_S + queue


def shard_deadline_s(job: Mapping[str, Any], default: int) -> int:
    """How long a (retried) shard of ``job`` may stay open: what its job was created with (``create``:
    the routed run's deadline, or the plugin action's own timeout when longer than ``default``); for a
    job recorded before that was kept, its routed run, else ``default``."""
    if job.get("shard_timeout_s"):
        return int(job["shard_timeout_s"])
    options = job.get("options") or {}
    if options.get("executor") not in (None, "action") and options.get("resources"):
        from radcloud.work.routing import Route

        return max(default, deadline_s(Route(options["executor"], Resources(**options["resources"]), "")))
    return default


def shard_unit(job: Mapping[str, Any], shard: Mapping[str, Any], timeout_s: int) -> Unit:
    """The executor's view of a shard's current stage: what runs it, its spec and its resources."""
    payload = shard_payload(job, shard, timeout_s)
    routed = (job.get("options") or {}).get("resources") if stage_executor(job, shard) else None
    resources = Resources(**routed) if routed else Resources(timeout_s=int(timeout_s))
    return Unit(job_id=job["id"], unit_id=shard["id"], action=f"plugin-{payload['plugin']}", payload=payload,
                resources=resources)


def submit_shard(jobs: JobStore, executor: Executor, job: Mapping[str, Any], shard: Mapping[str, Any], *,
                 timeout_s: int, finaliser: Any = None,
                 executors: Callable[[str], Executor | None] | None = None) -> str | None:
    """Submit a shard's current stage through the executor; returns its handle.

    The lifecycle's rules for a submit (radcloud.work.executors.base):
    the executor is busy -> the shard stays ``pending``, marked ``busy``, and
    reconcile submits it again; any other failure fails the shard with the
    reason (and finalises if it was the last).
    """
    sid = shard["id"]
    wanted = stage_executor(job, shard)
    try:
        if wanted and wanted != executor.name:
            routed = executors(wanted) if executors is not None else None
            if routed is None:
                raise Unavailable(f"the {wanted} executor this job was routed to is not available here")
            executor = routed
        unit = shard_unit(job, shard, timeout_s)
        handle = executor.submit(unit)
    except ExecutorBusy as exc:
        log.info("job %s shard %s: %s", job["id"], sid, exc.message)
        with contextlib.suppress(Conflict):  # it was cancelled meanwhile
            jobs.update_shard(job["id"], sid, {"busy_at": jobs.clock(), "reason": exc.message[:300]},
                              allowed=SHARD.sources("busy"), event="busy")
        return None
    except Exception as exc:
        reason = f"invoke failed: {getattr(exc, 'message', None) or type(exc).__name__}"
        log.warning("job %s shard %s: %s", job["id"], sid, reason)
        try:
            if jobs.shard_finished(job["id"], sid, state=L.FAILED, reason=reason) and finaliser:
                finaliser(job["id"])
        except Conflict:
            pass
        return None
    try:
        jobs.shard_invoked(job["id"], sid, handle, executor=executor.name)
    except Conflict:
        # A fast shard already reported started/finished: record the handle only.
        jobs.update_shard(job["id"], sid, {"activation_id": handle, "executor": executor.name},
                          allowed=SHARD.sources("handle"), event="invoked")
    return handle


def stop_units(jobs: JobStore, job_id: str, executors: Callable[[str], Executor | None]) -> bool:
    """After :meth:`JobStore.cancel`: stop the units an executor can stop (Slurm's scancel).

    An OpenWhisk activation cannot be stopped (its runner sees the cancel
    flag); a batch job can, and once stopped it reports nothing, so its
    shard is cancelled here. Returns True if the caller must finalise.
    """
    must_finalise = False
    for shard in jobs.get(job_id)["shards"]:
        handle, name = shard.get("activation_id"), shard.get("executor")
        executor = executors(name) if handle and name else None
        if executor is None or not getattr(executor, "stops_units", False):
            continue
        if shard["state"] in SHARD.sources("cancel"):
            with contextlib.suppress(Conflict):  # it reported its outcome meanwhile
                must_finalise |= jobs.shard_finished(job_id, shard["id"], state=L.CANCELLED,
                                                     reason=f"cancelled: {executor.name} unit {handle} stopped")
        executor.cancel(handle)  # quiet for a unit that already ended
    return must_finalise


def cancel_job(jobs: JobStore, job_id: str, executors: Callable[[str], Executor | None],
               finaliser: Callable[[str], Any] | None) -> None:
    """Cancel a job wherever its units run: the flag its runners see, Slurm's scancel for its batch
    jobs (:func:`stop_units`), and the job finalised when nothing is left to report. The status
    action's cancel and pfcon's DELETE of a plugin job both come here.

    Raises NotFound or Conflict (a job already final) from :meth:`JobStore.cancel`.
    """
    must_finalise = jobs.cancel(job_id)
    must_finalise |= stop_units(jobs, job_id, executors)
    if must_finalise and finaliser:
        finaliser(job_id)


def advance_stage(jobs: JobStore, executor: Executor | Invoker, job_id: str, shard_id: str,
                  outputs: list[dict[str, Any]], *, package: str, timeout_s: int,
                  finaliser: Any = None, executors: Callable[[str], Executor | None] | None = None) -> bool:
    """After an intermediate stage succeeded, run the next one on its DICOM outputs.

    Returns False if the shard was at its last stage (the caller records the
    outcome as usual); True when the next stage has been invoked or the shard
    has been failed/cancelled here.
    """
    job = jobs.get(job_id)
    shard = jobs.shard(job_id, shard_id)
    stages, stage = stage_plan(job), int(shard.get("stage") or 0)
    if stage >= len(stages) - 1:
        return False
    if job["cancel"]:
        if jobs.shard_finished(job_id, shard_id, state=L.CANCELLED, reason="cancelled between stages") and finaliser:
            finaliser(job_id)
        return True
    keys = [o["key"] for o in outputs
            if o["key"].lower().endswith(".dcm") or o.get("content_type") == "application/dicom"]
    if not keys:
        reason = f"stage {stages[stage]} produced no DICOM for {stages[stage + 1]}"
        if jobs.shard_finished(job_id, shard_id, state=L.FAILED, reason=reason) and finaliser:
            finaliser(job_id)
        return True
    prefix = shard_payload(job, shard, timeout_s)["output_prefix"]
    patch = {"stage": stage + 1, "inputs": keys, "input_prefix": prefix, "state": "invoked",
             "deadline": jobs.clock() + timeout_s, "activation_id": None, "plugin_started_at": None}
    jobs.update_shard(job_id, shard_id, patch, allowed=SHARD.sources("stage"), event="stage",
                      data={"stage": stage + 1, "plugin": stages[stage + 1], "inputs": len(keys)})
    submit_shard(jobs, as_executor(executor, package), job, {**shard, **patch}, timeout_s=timeout_s,
                 finaliser=finaliser, executors=executors)
    return True


def request_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The run request, whether sent directly or arriving at the end of a sequence.

    In ``pull-and-run`` the caller's run request travels along as ``run``
    and retrieve's answer names what it staged (``retrieve_id``); an explicit
    ``inputs`` always wins.
    """
    request = dict(params)
    nested = request.pop("run", None)
    if isinstance(nested, Mapping):
        request = {**request, **nested}
        # At the end of pull-and-run the retrieve has only just started: wait for it.
        options = dict(request.get("options") or {})
        options.setdefault("wait_staged", 50)
        request["options"] = options
    if not request.get("inputs"):
        rid = request.get("retrieve_id") or (request.get("retrieve") if isinstance(request.get("retrieve"), str) else None)
        if rid:
            request["inputs"] = {"retrieve": rid}
    return request
