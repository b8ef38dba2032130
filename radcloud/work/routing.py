"""Which executor runs a plugin's shards, with what resources, decided at dispatch before any job exists.

The rules (docs/architecture.md, "Executors"):

* ``options.executor`` (``action`` | ``slurm``) asks for one per job;
* otherwise a plugin whose declared needs exceed what an OpenWhisk action
  can give (:func:`radcloud.run.resources.misfits`: ``min_memory_limit`` above
  512 MB, a GPU, several workers) runs on **Slurm** when a cluster is
  configured (``slurm_url``); with none, dispatch refuses it (409) naming
  what the plugin needs and what an action has;
* every other plugin runs on the deployment's default (the ``executor``
  setting, ``RADCLOUD_EXECUTOR``, default ``action``);
* a **de-identifier** (a descriptor declaring ``radcloud.deid``) always runs
  hospital side, as an action: it needs ``deid_secret``, which never leaves
  the hospital (docs/security.md, "De-identification stays hospital side").
  ``options.executor: slurm`` for it is refused (409) naming what to do
  instead; a Slurm default leaves it on actions.

A plugin routed to Slurm asks for its descriptor's resources
(:func:`unit_resources`): memory ``max_memory_limit`` (else the minimum),
CPUs ``max_cpu_limit``, GPUs ``min_gpu_limit``, the wall clock
``radcloud.timeout_s``. When that is more than the partition's biggest node
or its time limit, dispatch answers 400 naming the limit
(:func:`check_partition`) instead of queueing a job Slurm could never start.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from radcloud.core.errors import BadRequest, Conflict
from radcloud.run.registry import parse_memory
from radcloud.run.resources import DEFAULT_MEMORY, MIB, action_limits, misfits
from radcloud.work.executors.base import Resources

EXECUTORS = ("action", "slurm")


@dataclasses.dataclass(frozen=True)
class Route:
    executor: str
    resources: Resources
    why: str  # for the job record and logs: "declared needs exceed an action", "options.executor"


def unit_resources(descriptor: Mapping[str, Any], default_timeout_s: int = 300) -> Resources:
    """What one shard of this plugin asks of a batch cluster, from its ChRIS descriptor."""
    memory = (parse_memory(descriptor.get("max_memory_limit"))
              or parse_memory(descriptor.get("min_memory_limit")) or DEFAULT_MEMORY)
    ext = descriptor.get("radcloud") or {}
    return Resources(memory_mb=math.ceil(memory / MIB),
                     cpus=max(1.0, _cpus(descriptor.get("max_cpu_limit") or descriptor.get("min_cpu_limit"))),
                     gpus=int(_number(descriptor.get("min_gpu_limit"))),
                     timeout_s=int(float(ext.get("timeout_s", default_timeout_s))))


def route(descriptor: Mapping[str, Any], *, requested: str | None, default: str, cluster: bool,
          default_timeout_s: int = 300) -> Route:
    """The executor for this plugin's shards (Conflict when none can run it).

    ``cluster``: a Slurm cluster is configured (``slurm_url`` set).
    """
    name = descriptor.get("name", "?")
    problems = misfits(descriptor, action_limits(descriptor))
    resources = unit_resources(descriptor, default_timeout_s)
    if requested not in (None, "", *EXECUTORS):
        raise BadRequest(f"options.executor {requested!r} is not one of {', '.join(EXECUTORS)}", field="executor")
    if is_deidentifier(descriptor):
        if requested == "slurm":
            raise Conflict(f"plugin {name} de-identifies with the deployment's deid_secret, which never leaves the "
                           "hospital side, so it cannot run on Slurm: drop options.executor (it runs as an "
                           "action), or to run a heavy plugin on de-identified data on Slurm dispatch that plugin "
                           "with options.deidentify: true (the de-identification stage runs as an action first)",
                           field="executor", plugin=name)
        if problems:
            raise Conflict("; ".join(problems) + f". Plugin {name} de-identifies, so it runs only as an OpenWhisk "
                           "action (deid_secret never leaves the hospital side): lower its declared needs",
                           field="plugin", plugin=name)
        return Route("action", Resources(memory_mb=action_limits(descriptor).memory_mb,
                                         timeout_s=resources.timeout_s),
                     "de-identification stays hospital side (it needs deid_secret)")
    if requested == "slurm" or (not requested and problems and cluster):
        if not cluster:
            raise Conflict("options.executor is 'slurm' but no Slurm cluster is configured here "
                           "(set slurm_url, RADCLOUD_SLURM_URL; docs/deploy.md section 9)", field="executor")
        return Route("slurm", resources, "options.executor" if requested else
                     "its declared needs exceed an action: " + "; ".join(problems))
    if problems:
        where = ("options.executor is 'action'" if requested == "action" else
                 "and no Slurm cluster is configured (slurm_url) to run it instead")
        raise Conflict("; ".join(problems) + f". It cannot run as an OpenWhisk action, {where}", field="plugin",
                       plugin=name)
    executor = requested or default or "action"
    why = "options.executor" if requested else "the deployment's default (RADCLOUD_EXECUTOR)"
    if executor == "slurm":
        if not cluster:
            raise Conflict("the default executor is slurm (RADCLOUD_EXECUTOR) but no Slurm cluster is "
                           "configured (slurm_url)", field="executor")
        return Route("slurm", resources, why)
    return Route(executor, Resources(memory_mb=action_limits(descriptor).memory_mb, timeout_s=resources.timeout_s),
                 why)


def is_deidentifier(descriptor: Mapping[str, Any]) -> bool:
    """The plugin declares ``radcloud.deid``: the shard runner hands it ``deid_secret``."""
    ext = descriptor.get("radcloud")
    return isinstance(ext, Mapping) and isinstance(ext.get("deid"), Mapping)


def check_partition(name: str, resources: Resources, limits: Any) -> None:
    """400 naming the limit when one shard asks for more than the partition can ever give.

    ``limits``: :class:`radcloud.work.slurmclient.Limits` (the biggest node's CPUs,
    memory and GPUs, the partition's time limit in minutes).
    """
    problems = []
    if limits.memory_mb and resources.memory_mb > limits.memory_mb:
        problems.append(f"{resources.memory_mb} MB of memory but the largest node of partition "
                        f"{limits.partition} has {limits.memory_mb} MB")
    if limits.cpus and math.ceil(resources.cpus) > limits.cpus:
        problems.append(f"{math.ceil(resources.cpus)} CPUs but the largest node of partition "
                        f"{limits.partition} has {limits.cpus}")
    if resources.gpus > limits.gpus:
        problems.append(f"{resources.gpus} GPUs but the nodes of partition {limits.partition} have {limits.gpus}")
    from radcloud.work.executors.slurm import UPLOAD_GRACE_S

    minutes = math.ceil((resources.timeout_s + UPLOAD_GRACE_S) / 60)
    if limits.max_time_min is not None and minutes > limits.max_time_min:
        problems.append(f"{minutes} minutes (timeout_s {resources.timeout_s} + upload) but partition "
                        f"{limits.partition} allows {limits.max_time_min}")
    if problems:
        raise BadRequest(f"plugin {name} asks Slurm for " + "; ".join(problems) +
                         ": lower the descriptor's limits or use a bigger partition (slurm_partition)",
                         field="plugin")


def chooser(settings: Any) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Route]:
    """:func:`choose` with these settings: the router dispatch (and pull-and-run's check) ask."""
    return lambda descriptor, options: choose(descriptor, options, settings)


def choose(descriptor: Mapping[str, Any], options: Mapping[str, Any], settings: Any, *,
           slurm_limits: Callable[[], Any] | None = None) -> Route:
    """:func:`route` with the deployment's settings, and the partition check when routed to Slurm.

    ``slurm_limits()`` (default: ask the cluster) gives the partition's limits.
    """
    chosen = route(descriptor, requested=options.get("executor"), default=settings.executor,
                   cluster=bool(settings.slurm_url), default_timeout_s=settings.shard_timeout_s)
    if chosen.executor == "slurm":
        if slurm_limits is None:
            from radcloud.work.slurmclient import SlurmClient

            slurm_limits = SlurmClient.from_settings(settings).limits
        check_partition(str(descriptor.get("name", "?")), chosen.resources, slurm_limits())
    return chosen


def _cpus(value: Any) -> float:
    """A Kubernetes-style CPU quantity ("2000m", "2", 1.5) in CPUs."""
    if isinstance(value, str) and value.endswith("m"):
        return _number(value[:-1]) / 1000.0
    return _number(value)


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
