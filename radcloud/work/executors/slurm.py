"""The Slurm executor: a unit is one batch job on an HPC cluster, through slurmrestd.

``submit`` sends a batch job whose script runs the **same shard runner**
(:mod:`radcloud.work.slurmjob` → :func:`radcloud.work.shardaction.run_shard_action`,
the plugin in :mod:`radcloud.run.sandbox`) with the unit's resources as Slurm's
(``--cpus-per-task``, ``--mem``, ``--time``, GPUs as ``gres:gpu:N``). The
runner reads its inputs from S3 and writes outputs to S3 (no filesystem is
shared with the hospital side) and reports progress and outcome into Redis
like an action does. ``poll`` asks slurmrestd for every job at once and maps
states with :mod:`radcloud.work.slurmstate`; ``cancel`` is ``scancel``.

What the job is given, in its environment (Slurm keeps it with the job,
readable by the submitting user and the cluster's admins): the shard spec
(object keys, never data) and the settings the runner needs — the S3
endpoint and keys, the Redis URL. That is the same trust an OpenWhisk
action's package parameters get; docs/deploy.md ("What the cluster is
trusted with") says so and what a site can do about it.

A cluster that cannot be reached, or that refuses more jobs for now, makes
the unit :class:`ExecutorBusy` (it stays pending; reconcile submits it again).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from radcloud.core.errors import BadRequest, RadcloudError, Unavailable
from radcloud.work.executors.base import ExecutorBusy, Unit, UnitStatus
from radcloud.work.slurmstate import status_of

log = logging.getLogger(__name__)

RUNNER = "python3 -m radcloud.work.slurmjob"
# Settings the runner needs on the node (and nothing else: no token secret, no de-id key).
JOB_SETTINGS = ("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_secure", "s3_region", "s3_bucket",
                "redis_url", "shard_timeout_s")
UPLOAD_GRACE_S = 60  # Slurm's time limit = the unit's timeout + this (outputs and outcome still fit)
_BUSY_WORDS = ("QOSMaxSubmitJobPerUserLimit", "AssocMaxSubmitJobLimit", "Job violates accounting/QOS policy",
               "Slurm temporarily unable", "Resource temporarily unavailable")


def job_env(settings: Any) -> dict[str, str]:
    """``RADCLOUD_*`` variables for the runner on the node, from the dispatcher's settings."""
    from radcloud.core.settings import Secret

    env = {}
    for name in JOB_SETTINGS:
        value = getattr(settings, name)
        value = value.reveal() if isinstance(value, Secret) else value
        env[f"RADCLOUD_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class SlurmExecutor:
    """Units as Slurm batch jobs; handles are Slurm job ids (as strings)."""

    name = "slurm"
    stops_units = True  # scancel stops a job (radcloud.work.dispatch.stop_units cancels its shard)

    def __init__(self, client: Any, *, runner: str = RUNNER, env: Mapping[str, str] | None = None,
                 workdir: str = "/tmp") -> None:
        self.client, self.runner, self.env, self.workdir = client, runner, dict(env or {}), workdir

    def script(self) -> str:
        # exec: the runner is the batch step itself, so Slurm's signals (scancel, time limit) reach it.
        return f"#!/bin/sh\nexec {self.runner}\n"

    def submit(self, unit: Unit) -> str:
        r = unit.resources
        time_limit_min = max(1, math.ceil((int(r.timeout_s) + UPLOAD_GRACE_S) / 60))
        environment = {**self.env,
                       "RADCLOUD_SHARD_SPEC": json.dumps(dict(unit.payload), separators=(",", ":")),
                       "RADCLOUD_SLURM_TIME_LIMIT_S": str(time_limit_min * 60)}
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

    client = client or SlurmClient.from_settings(settings)
    env = job_env(settings)
    if os.environ.get("RADCLOUD_PLUGINS_DIR"):  # where plugins are installed: the same on the nodes
        env["RADCLOUD_PLUGINS_DIR"] = os.environ["RADCLOUD_PLUGINS_DIR"]
    return SlurmExecutor(client, runner=settings.slurm_runner or RUNNER, env=env)
