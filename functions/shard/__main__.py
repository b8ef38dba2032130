"""Action ``plugin-<name>``: the body of every plugin action (one shard).

Invoked non-blocking by dispatch with a shard spec (see
:class:`radcloud.shard.ShardSpec`): ``{"job_id", "shard_id", "plugin",
"params", "inputs", "input_prefix", "output_prefix", "limits"}``. Runs the
plugin through :func:`radcloud.shard.run_shard`, which records the outcome
in Redis whatever happens, and answers a small summary (never data).
"""

import os

from radcloud.action import run
from radcloud.api import parse
from radcloud.api.models import ShardRequest
from radcloud.jobservices import JobServices
from radcloud.reporter import RedisShardReporter
from radcloud.shard import run_shard


def handle(request, settings, principal):
    spec = request.params
    parse(ShardRequest, spec)  # the rest of the spec is radcloud.shard's to read
    services = JobServices.from_settings(settings)
    # OpenWhisk tells the action when it will be killed (epoch ms).
    raw_deadline = os.environ.get("__OW_DEADLINE")
    deadline = float(raw_deadline) / 1000 if raw_deadline else None
    reporter = RedisShardReporter(services.jobs, spec["job_id"], finaliser=services.finaliser,
                                  activation_id=os.environ.get("__OW_ACTIVATION_ID"))
    return run_shard(spec, store=services.store, reporter=reporter, registry=services.registry,
                     default_timeout_s=settings.shard_timeout_s,
                     deadline=deadline,
                     deid_secret=settings.deid_secret)  # used only for plugins declaring radcloud.deid


def main(args):
    return run(args, handle, roles=("service", "admin"))
