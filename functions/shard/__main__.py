"""Action ``plugin-<name>``: the body of every plugin action (one shard).

Invoked non-blocking by the action executor (radcloud.work.executors.action)
with a shard spec (see :class:`radcloud.run.shard.ShardSpec`): ``{"job_id",
"shard_id", "plugin", "params", "inputs", "input_prefix", "output_prefix",
"limits"}``. Runs it through :func:`radcloud.work.shardaction.run_shard_action`,
which records the outcome in Redis whatever happens, and answers a small
summary (never data).
"""

import os

from radcloud.api.action import run
from radcloud.work.shardaction import run_shard_action


def handle(request, settings, principal):
    # OpenWhisk tells the action when it will be killed (epoch ms).
    raw_deadline = os.environ.get("__OW_DEADLINE")
    return run_shard_action(request.params, settings, activation_id=os.environ.get("__OW_ACTIVATION_ID"),
                            deadline=float(raw_deadline) / 1000 if raw_deadline else None)


def main(args):
    return run(args, handle, roles=("service", "admin"))
