"""The body of every plugin action (one shard), callable from any executor.

The ``plugin-<name>`` action (functions/shard) and the in-process executor
both run a shard spec through here: build the job-side services from the
settings, report into Redis through :class:`radcloud.work.reporter.RedisShardReporter`
and run the plugin with :func:`radcloud.run.shard.run_shard`, which records an
outcome whatever happens.
"""

from __future__ import annotations

from typing import Any

from radcloud.api import parse
from radcloud.api.models import ShardRequest


def run_shard_action(spec: dict[str, Any], settings: Any, *, activation_id: str | None = None,
                     deadline: float | None = None, services: Any = None) -> dict[str, Any]:
    """Run one shard spec; returns the runner's small summary (never data).

    ``deadline`` (epoch seconds) is when the executor will kill the unit.
    """
    from radcloud.work.jobservices import JobServices
    from radcloud.work.reporter import RedisShardReporter
    from radcloud.run.shard import run_shard

    parse(ShardRequest, spec)  # the job id; the rest of the spec is radcloud.run.shard's to read
    services = services or JobServices.from_settings(settings)
    reporter = RedisShardReporter(services.jobs, spec["job_id"], finaliser=services.finaliser,
                                  activation_id=activation_id)
    return run_shard(spec, store=services.store, reporter=reporter, registry=services.registry,
                     default_timeout_s=settings.shard_timeout_s, deadline=deadline,
                     deid_secret=settings.deid_secret)  # used only for plugins declaring radcloud.deid
