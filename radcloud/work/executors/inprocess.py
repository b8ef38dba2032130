"""The in-process executor: units run as calls (inline or on a thread) in this process.

For tests and for single-process tools: it needs no OpenWhisk, and it can
be told to behave like a loaded or forgetful executor — ``capacity`` (units
in flight at once; more are refused with :class:`ExecutorBusy`, as a namespace
at its limit answers 429), :meth:`InProcessExecutor.refuse` (the next N submits
are busy) and :meth:`InProcessExecutor.forget` (a handle it no longer knows,
as a purged activation or a Slurm job aged out of ``sacct``).

``runner(payload, handle)`` runs one unit; the unit reports into Redis itself
(the shard runner does), so the runner's return value is only the executor's
view of how it ended.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from radcloud.core.errors import UpstreamError
from radcloud.work.executors.base import ExecutorBusy, Unit, UnitStatus
from radcloud.work.lifecycle import FAILED, SUCCEEDED

log = logging.getLogger(__name__)

Runner = Callable[[Mapping[str, Any], str], Any]


class InProcessExecutor:
    name = "inprocess"

    def __init__(self, runner: Runner | None = None, *, threaded: bool = False,
                 capacity: int | None = None) -> None:
        self.runner, self.threaded, self.capacity = runner, threaded, capacity
        self.submitted: list[Unit] = []
        self.cancelled: list[str] = []
        self.polls = 0
        self._status: dict[str, UnitStatus] = {}
        self._threads: list[threading.Thread] = []
        self._refuse = 0
        self._down = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- test controls ----------------------------------------------------------
    def refuse(self, n: int) -> None:
        """The next ``n`` submits raise ExecutorBusy."""
        self._refuse = n

    def forget(self, handle: str) -> None:
        """Drop a handle: poll no longer answers for it (the executor lost the unit)."""
        with self._lock:
            self._status.pop(handle, None)

    def down(self, is_down: bool = True) -> None:
        """While down, poll raises UpstreamError (the executor cannot be asked)."""
        self._down = is_down

    def finish(self, handle: str, outcome: str = SUCCEEDED, reason: str = "") -> None:
        """End a unit from outside (a unit that ran without a runner)."""
        with self._lock:
            self._status[handle] = UnitStatus("ended", outcome=outcome, reason=reason or f"unit {handle} ended")

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for s in self._status.values() if s.phase != "ended")

    def join(self, timeout: float = 30.0) -> None:
        for t in list(self._threads):
            t.join(timeout)

    # -- the Executor protocol ----------------------------------------------------
    def submit(self, unit: Unit) -> str:
        if self._refuse > 0:
            self._refuse -= 1
            raise ExecutorBusy(f"in-process executor refused {unit.unit_id} of {unit.job_id}: busy")
        if self.capacity is not None and self.in_flight() >= self.capacity:
            raise ExecutorBusy(f"in-process executor is at its capacity of {self.capacity} units")
        handle = f"ip{next(self._ids):06d}"
        with self._lock:
            self._status[handle] = UnitStatus("queued" if self.runner else "running", reason="submitted")
            self.submitted.append(unit)
        if self.runner is not None:
            if self.threaded:
                t = threading.Thread(target=self._run, args=(handle, unit), daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._run(handle, unit)
        return handle

    def poll(self, handles: Sequence[str]) -> dict[str, UnitStatus]:
        if self._down:
            raise UpstreamError("in-process executor is down (test control)")
        self.polls += 1
        with self._lock:
            return {h: self._status[h] for h in handles if h in self._status}

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)

    def _run(self, handle: str, unit: Unit) -> None:
        with self._lock:
            if handle in self._status:
                self._status[handle] = UnitStatus("running", reason="running")
        try:
            self.runner(unit.payload, handle)  # type: ignore[misc]
            ended = UnitStatus("ended", outcome=SUCCEEDED, reason=f"unit {handle} returned")
        except Exception as exc:  # the unit's own guard reports; this is the executor's view only
            log.warning("in-process unit %s raised %s", handle, type(exc).__name__)
            ended = UnitStatus("ended", outcome=FAILED, reason=f"unit {handle} raised {type(exc).__name__}")
        with self._lock:
            if handle in self._status:  # a forgotten unit stays forgotten
                self._status[handle] = ended


def from_settings(settings: Any, *, runner: Runner | None = None, threaded: bool = True,
                  **_: Any) -> InProcessExecutor:
    """Without a runner, units run the shard action's body in this process."""
    if runner is None:
        from radcloud.work.shardaction import run_shard_action

        def runner(payload: Mapping[str, Any], handle: str) -> Any:
            return run_shard_action(dict(payload), settings, activation_id=handle)
    return InProcessExecutor(runner, threaded=threaded)
