"""The OpenWhisk action executor: a unit is one non-blocking invoke of an action.

This is how shards have always run: ``submit`` invokes ``<package>/<action>``
with the unit's payload and returns the activation id; ``poll`` reads the
activation records (OpenWhisk answers 404 while an activation is queued or
running, so "no record yet" is ``running``); ``cancel`` is a no-op because
OpenWhisk cannot stop an activation — the shard runner sees the job's cancel
flag and stops itself.

A namespace at its concurrency limit answers 429. The client waits that out
for ``busy_budget_s`` only (short: the dispatching action holds a container
while it waits, and that may be the slot the shard is waiting for — the
issue-15 deadlock), then the unit is :class:`ExecutorBusy` and stays pending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from radcloud.core.errors import RadcloudError, TooManyRequests, UpstreamError
from radcloud.work.executors.base import ExecutorBusy, Unit, UnitStatus
from radcloud.work.lifecycle import FAILED, SUCCEEDED

log = logging.getLogger(__name__)

SUBMIT_BUSY_S = 3.0  # how long one submit waits out a busy namespace before the unit stays pending
_ENDED = {"success": SUCCEEDED, "application error": FAILED, "action developer error": FAILED,
          "whisk internal error": FAILED}


class Invoker(Protocol):
    def invoke(self, action: str, params: dict[str, Any], *, blocking: bool = False) -> dict[str, Any]: ...

    def activation(self, activation_id: str) -> dict[str, Any] | None: ...


class ActionExecutor:
    """Units as OpenWhisk activations of ``<package>/<unit.action>``."""

    name = "action"

    def __init__(self, invoker: Invoker, *, package: str = "radcloud") -> None:
        self.invoker, self.package = invoker, package

    def submit(self, unit: Unit) -> str:
        try:
            name = f"{self.package}/{unit.action}" if self.package else unit.action
            answer = self.invoker.invoke(name, dict(unit.payload), blocking=False)
        except TooManyRequests as exc:
            raise ExecutorBusy(f"OpenWhisk is at its concurrency limit; {unit.unit_id} of {unit.job_id} "
                               f"waits for a free slot ({exc.message[:160]})") from None
        except RadcloudError:
            raise
        except Exception as exc:  # a client bug or a transport error the client did not wrap
            raise UpstreamError(f"invoke of {unit.action} failed: {type(exc).__name__}: {str(exc)[:160]}") from None
        activation = answer.get("activationId") if isinstance(answer, dict) else None
        if not activation:
            raise UpstreamError(f"OpenWhisk returned no activation id: {str(answer)[:100]}")
        return str(activation)

    def poll(self, handles: Sequence[str]) -> dict[str, UnitStatus]:
        """One activation lookup per handle (OpenWhisk has no batch lookup by id)."""
        out: dict[str, UnitStatus] = {}
        for handle in handles:
            record = self.invoker.activation(handle)  # UpstreamError: cannot tell, nothing concluded
            out[handle] = status_of(handle, record)
        return out

    def cancel(self, handle: str) -> None:
        # OpenWhisk has no API to stop an activation: the unit sees the job's cancel flag.
        return None


def status_of(handle: str, record: dict[str, Any] | None) -> UnitStatus:
    """An activation record (None while in flight) as a UnitStatus."""
    if record is None:
        return UnitStatus("running", reason="activation in flight", detail={"activation_id": handle})
    response = record.get("response") or {}
    status = str(response.get("status") or "ended")
    return UnitStatus("ended", outcome=_ENDED.get(status, FAILED),
                      reason=f"activation {handle} ended ({status})",
                      detail={"activation_id": handle, "status": status})


def from_settings(settings: Any, *, on_busy: Callable[[int], None] | None = None,
                  busy_budget_s: float = SUBMIT_BUSY_S) -> ActionExecutor:
    from radcloud.core.openwhisk import OpenWhisk, busy_budget_s as deadline_budget

    # Never longer than this activation's own deadline leaves (radcloud.core.openwhisk).
    client = OpenWhisk(settings.ow_api_host, settings.ow_api_key.reveal(), settings.ow_namespace,
                       busy_budget_s=min(busy_budget_s, deadline_budget()), on_busy=on_busy)
    return ActionExecutor(client, package=settings.ow_package)
