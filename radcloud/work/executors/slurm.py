"""The Slurm executor: a unit is one batch job on an HPC cluster, through slurmrestd.

``submit`` sends a batch job whose script runs the **same shard runner**
(:mod:`radcloud.work.slurmjob` → :func:`radcloud.work.shardaction.run_shard_action`,
the plugin in :mod:`radcloud.run.sandbox`) with the unit's resources as Slurm's
(``--cpus-per-task``, ``--mem``, ``--time``, GPUs as ``gres:gpu:N``). The
runner reads its inputs from S3 and writes outputs to S3 (no filesystem is
shared with the hospital side) and reports progress and outcome into Redis
like an action does. ``poll`` asks slurmrestd for every job at once and maps
states with :mod:`radcloud.work.slurmstate`; ``cancel`` is ``scancel``.

What the job is given: its script (``exec`` the runner) and an environment
holding no secret of the deployment — no S3 key, no Redis URL — because
Slurm keeps both with the job, shows them to its admins and copies them to
the node: the shard spec (object keys, never data), a shard ticket (one
shard, expiring with its deadline) and the URL of the ``shard_report`` web
action, through which the job gets presigned URLs and reports
(:mod:`radcloud.work.shardchannel`); the shard timeout and plugins dir.

A cluster that cannot be reached, or that refuses more jobs for now, makes
the unit :class:`ExecutorBusy` (it stays pending; reconcile submits it again).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from radcloud.core.errors import BadRequest, RadcloudError, Unavailable
from radcloud.work.executors.base import ExecutorBusy, Unit, UnitStatus
from radcloud.work.slurmstate import status_of

log = logging.getLogger(__name__)

RUNNER = "python3 -m radcloud.work.slurmjob"
UPLOAD_GRACE_S = 60  # Slurm's time limit = the unit's timeout + this (outputs and outcome still fit)
QUEUE_ALLOWANCE_S = 6 * 3600  # how long a shard may wait in the cluster's queue (its deadline, its ticket)
_BUSY_WORDS = ("QOSMaxSubmitJobPerUserLimit", "AssocMaxSubmitJobLimit", "Job violates accounting/QOS policy",
               "Slurm temporarily unable", "Resource temporarily unavailable")


def job_env(settings: Any) -> dict[str, str]:
    """``RADCLOUD_*`` variables every job of this deployment gets (none of them a secret).

    ``PYTHONSAFEPATH``: ``python3 -m radcloud.work.slurmjob`` would put the job's working dir first on
    ``sys.path``, and that is ``/tmp`` on a node, writable by every user of the cluster: a ``radcloud``
    package left there would run in place of the runner, with the job's shard ticket. Python 3.11+
    leaves it out with this variable; older ones ignore it (docs/deploy.md: use 3.11+ on the nodes)."""
    env = {"RADCLOUD_SHARD_TIMEOUT_S": str(settings.shard_timeout_s), "PYTHONSAFEPATH": "1"}
    if os.environ.get("RADCLOUD_PLUGINS_DIR"):  # where plugins are installed: the same on the nodes
        env["RADCLOUD_PLUGINS_DIR"] = os.environ["RADCLOUD_PLUGINS_DIR"]
    return env


class SlurmExecutor:
    """Units as Slurm batch jobs; handles are Slurm job ids (as strings)."""

    name = "slurm"
    stops_units = True  # scancel stops a job (radcloud.work.dispatch.stop_units cancels its shard)

    def __init__(self, client: Any, *, runner: str = RUNNER, env: Mapping[str, str] | None = None,
                 workdir: str = "/tmp", ticket: Callable[[Unit, int], str] | None = None,
                 report_url: Callable[[], str] | None = None) -> None:
        """``ticket(unit, ttl_s)``: the unit's shard ticket (:func:`radcloud.access.auth.issue_shard_ticket`);
        ``report_url()``: where the job reports (asked at submit: a ConfigError names the setting)."""
        self.client, self.runner, self.env, self.workdir = client, runner, dict(env or {}), workdir
        self.ticket, self.report_url = ticket, report_url

    def script(self) -> str:
        # exec: the runner is the batch step itself, so Slurm's signals (scancel, time limit) reach it.
        return f"#!/bin/sh\nexec {self.runner}\n"

    def submit(self, unit: Unit) -> str:
        r = unit.resources
        time_limit_min = max(1, math.ceil((int(r.timeout_s) + UPLOAD_GRACE_S) / 60))
        # The ticket lives as long as the shard may stay open: its queue time and its run.
        ttl_s = time_limit_min * 60 + QUEUE_ALLOWANCE_S
        environment = {**self.env,
                       "RADCLOUD_SHARD_SPEC": json.dumps(dict(unit.payload), separators=(",", ":")),
                       "RADCLOUD_SLURM_TIME_LIMIT_S": str(time_limit_min * 60)}
        if self.ticket is not None:
            environment["RADCLOUD_SHARD_TICKET"] = self.ticket(unit, ttl_s)
        if self.report_url is not None:
            environment["RADCLOUD_REPORT_URL"] = self.report_url()
        try:
            job_id = self.client.submit(
                self.script(), name=f"radcloud-{unit.job_id}-{unit.unit_id}"[:120],
                cpus=max(1, math.ceil(r.cpus)), memory_mb=int(r.memory_mb), time_limit_min=time_limit_min,
                gpus=int(r.gpus), environment=environment, cwd=self.workdir)
        except Unavailable as exc:
            raise ExecutorBusy(f"the Slurm cluster cannot take {unit.unit_id} of {unit.job_id} now "
                               f"({exc.message[:160]}); it is submitted again later") from None
        except BadRequest as exc:
            if any(word in exc.message for word in _BUSY_WORDS):
                raise ExecutorBusy(f"the Slurm cluster refuses more jobs for now ({exc.message[:160]})") from None
            raise
        log.info("job %s shard %s: Slurm job %s", unit.job_id, unit.unit_id, job_id)
        return str(job_id)

    def poll(self, handles: Sequence[str]) -> dict[str, UnitStatus]:
        """One request for every handle; a job Slurm forgot is absent (reconcile says so)."""
        known = self.client.jobs(handles)  # Unavailable/UpstreamError: cannot tell, nothing concluded
        return {h: status_of(known[str(h)]) for h in handles if str(h) in known}

    def cancel(self, handle: str) -> None:
        try:
            self.client.cancel(handle)
        except RadcloudError as exc:  # best effort: the runner also sees the job's cancel flag
            log.warning("scancel %s failed: %s", handle, exc.message)


def from_settings(settings: Any, *, client: Any = None) -> SlurmExecutor:
    """The executor for the cluster in ``settings`` (ConfigError naming slurm_url when none is)."""
    from radcloud.work.slurmclient import SlurmClient

    from radcloud.access.auth import issue_shard_ticket
    from radcloud.work.shardchannel import report_url

    client = client or SlurmClient.from_settings(settings)

    def ticket(unit: Unit, ttl_s: int) -> str:
        payload = unit.payload
        return issue_shard_ticket(settings, unit.job_id, unit.unit_id, output_prefix=str(payload["output_prefix"]),
                                  inputs=list(payload.get("inputs") or []), ttl_s=ttl_s)

    return SlurmExecutor(client, runner=settings.slurm_runner or RUNNER, env=job_env(settings), ticket=ticket,
                         report_url=lambda: report_url(settings))
