"""The executor interface: how a unit of tracked work is submitted, watched and cancelled.

An executor only *runs* units. The unit itself (the shard runner inside the
action, the batch job, the thread) reports started/progress/outcome into
Redis through the job store, exactly as before; the executor is asked three
things by the lifecycle:

* :meth:`Executor.submit` — start a unit; returns an opaque ``handle``
  (an OpenWhisk activation id, a Slurm job id...). It raises
  :class:`ExecutorBusy` when the executor cannot take the unit *now*
  (OpenWhisk's 429, a full queue): the unit stays ``pending`` and is
  submitted again later, by the next write on the job or by ``reconcile``.
  Any other :class:`~radcloud.core.errors.RadcloudError` fails the unit with that
  message as its reason.
* :meth:`Executor.poll` — a batch of handles to their :class:`UnitStatus`.
  A handle missing from the answer is one the executor no longer knows
  (lost, purged): reconcile fails the unit with a reason saying so. When
  the executor cannot be asked at all, ``poll`` raises
  :class:`~radcloud.core.errors.UpstreamError` and nothing is concluded.
* :meth:`Executor.cancel` — best effort; a running unit also sees the job's
  cancel flag and reports ``cancelled`` itself.

Executors are one module each under :mod:`radcloud.work.executors`, each
with a ``from_settings(settings) -> Executor`` (see
:func:`radcloud.work.executors.executor_for`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from radcloud.core.errors import TooManyRequests
from radcloud.work.lifecycle import SHARD_FINAL

PHASES = ("queued", "running", "ended")
OUTCOMES = (None, *sorted(SHARD_FINAL))  # how a unit ended: a shard's final states


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one unit needs; an executor maps it onto its own limits (memorySize, --mem, --gres)."""

    memory_mb: int = 512
    cpus: float = 1.0
    gpus: int = 0
    timeout_s: int = 300


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of tracked work, as submitted: names and keys, never data.

    ``action`` is what runs it (``plugin-<name>`` for a shard, ``retrieve_series``
    for a series); ``payload`` is the spec that action receives (a shard spec
    as :mod:`radcloud.run.shard` reads it: object keys, prefixes, params).
    """

    job_id: str
    unit_id: str
    action: str
    payload: Mapping[str, Any]
    resources: Resources = Resources()


@dataclasses.dataclass(frozen=True)
class UnitStatus:
    """What an executor knows of one handle.

    ``outcome`` is the executor's view of how it ended and is used only when
    the unit itself never reported one; ``reason`` is for people ("queued:
    waiting for resources", "activation … ended (developer error)");
    ``detail`` carries executor ids, exit codes, queue reasons; ``advice``
    says what to do about an ended unit ("give the plugin more time…"), kept
    apart so the reason a unit failed with reads "<reason> without an outcome;
    <advice>".
    """

    phase: str
    outcome: str | None = None
    reason: str = ""
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    advice: str = ""

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase {self.phase!r} is not one of {', '.join(PHASES)}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of succeeded, failed, cancelled or None")
        if self.outcome is not None and self.phase != "ended":
            raise ValueError(f"an outcome ({self.outcome}) needs phase 'ended', not {self.phase!r}")


class ExecutorBusy(TooManyRequests):
    """The executor cannot take the unit now; it stays pending and is submitted again later.

    Not a failure: only a caller that cannot wait (none in the lifecycle)
    would show it, as a 429.
    """


@runtime_checkable
class Executor(Protocol):
    name: str

    def submit(self, unit: Unit) -> str:
        """Start ``unit``; returns its handle. Raises ExecutorBusy or RadcloudError."""
        ...

    def poll(self, handles: Sequence[str]) -> dict[str, UnitStatus]:
        """Statuses of the handles it still knows. Raises UpstreamError when it cannot tell."""
        ...

    def cancel(self, handle: str) -> None:
        """Stop the unit if it can (best effort; never raises for an ended or unknown handle)."""
        ...
