"""How a plugin's declared resources become its action's limits, and when it cannot run.

A ChRIS descriptor declares what a plugin needs (``min_memory_limit``,
``min_cpu_limit``, ``min_gpu_limit``, ``min_number_of_workers``) and what it
may use (``max_memory_limit``, ``max_cpu_limit``); radcloud's extension adds a
wall clock (``radcloud.timeout_s``). A plugin runs as one OpenWhisk action
(``plugin-<name>``) whose container holds the shard runner and the plugin
together, so:

* ``memorySize`` = ``max_memory_limit`` (else ``min_memory_limit``, else
  256 Mi), rounded up to whole MB and clamped into OpenWhisk's range: min 128,
  max :data:`MAX_ACTION_MEMORY_MB` (OpenWhisk's default maximum, 512 MB; an
  operator who raised ``whisk.memory.max`` changes it here and redeploys).
  The container's memory cgroup is the only memory bound a plugin has.
* ``timeout`` = ``timeout_s`` plus :data:`SHARD_MARGIN_MS` for staging and
  upload, clamped to OpenWhisk's 300 s; the runner cuts the plugin's own wall
  clock so the outcome is recorded before the platform kills the action.
* A plugin cannot run as an action when its declared minimum does not fit:
  ``min_memory_limit`` above ``memorySize``, any GPU, or more than one
  worker. :func:`check_fits` refuses it at dispatch, before any job exists,
  naming both numbers. CPU is not refused: an action gets a CPU share, not
  cores, and ``max_cpu_limit`` only sets the plugin's thread count.

``radcloud deploy --write-plugins`` writes :func:`action_limits` into
deploy/manifest.yaml; dispatch applies :func:`check_fits` to the same numbers
(derived from the same descriptor), so the two cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from radcloud.core.errors import Conflict
from radcloud.run.registry import parse_memory

MIN_ACTION_MEMORY_MB = 128
MAX_ACTION_MEMORY_MB = 512  # OpenWhisk's default whisk.memory.max
DEFAULT_MEMORY = 256 * 1024**2
TIMEOUT_MS = (100, 300_000)  # OpenWhisk's default action timeout range
SHARD_MARGIN_MS = 30_000  # staging inputs and uploading outputs, beyond the plugin's own wall clock
DEFAULT_TIMEOUT_S = 300
MIB = 1024**2


@dataclasses.dataclass(frozen=True)
class ActionLimits:
    """An action's ``limits`` as wskdeploy writes them (MB = MiB in OpenWhisk)."""

    memory_mb: int
    timeout_ms: int

    def manifest(self) -> dict[str, int]:
        return {"timeout": self.timeout_ms, "memorySize": self.memory_mb}


def action_limits(descriptor: Mapping[str, Any], *,
                  max_memory_mb: int = MAX_ACTION_MEMORY_MB) -> ActionLimits:
    """The ``plugin-<name>`` action's limits for this descriptor."""
    memory = (parse_memory(descriptor.get("max_memory_limit"))
              or parse_memory(descriptor.get("min_memory_limit")) or DEFAULT_MEMORY)
    memory_mb = max(MIN_ACTION_MEMORY_MB, min(max_memory_mb, math.ceil(memory / MIB)))
    ext = descriptor.get("radcloud") or {}
    timeout_ms = int(float(ext.get("timeout_s", DEFAULT_TIMEOUT_S)) * 1000) + SHARD_MARGIN_MS
    return ActionLimits(memory_mb, max(TIMEOUT_MS[0], min(TIMEOUT_MS[1], timeout_ms)))


def misfits(descriptor: Mapping[str, Any], limits: ActionLimits) -> list[str]:
    """What the plugin declares it needs that its action cannot give ([] = it fits)."""
    name = descriptor.get("name", "?")
    problems = []
    need = parse_memory(descriptor.get("min_memory_limit"))
    if need is not None and need > limits.memory_mb * MIB:
        problems.append(
            f"plugin {name} declares min_memory_limit {descriptor['min_memory_limit']} "
            f"({math.ceil(need / MIB)} MiB) but its action plugin-{name} has memorySize "
            f"{limits.memory_mb} MB (the most an action may have here is {MAX_ACTION_MEMORY_MB} MB)")
    gpus = _number(descriptor.get("min_gpu_limit"))
    if gpus > 0:
        problems.append(f"plugin {name} declares min_gpu_limit {gpus:g} but an action has no GPU")
    workers = _number(descriptor.get("min_number_of_workers"))
    if workers > 1:
        problems.append(f"plugin {name} declares min_number_of_workers {workers:g} but an action "
                        "is one container (1 worker)")
    return problems


def check_fits(descriptor: Mapping[str, Any]) -> ActionLimits:
    """The action's limits, or Conflict (409) naming what the plugin needs and what it would get.

    Raises:
        Conflict: the plugin cannot run as an OpenWhisk action (see the module docstring).
    """
    limits = action_limits(descriptor)
    problems = misfits(descriptor, limits)
    if problems:
        raise Conflict("; ".join(problems) + ". It cannot run as an OpenWhisk action: lower the "
                       "descriptor's minimum if the plugin needs less, or run it on a batch cluster",
                       field="plugin")
    return limits


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
