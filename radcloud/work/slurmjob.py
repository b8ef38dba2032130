"""The batch script's body on a Slurm compute node: run one shard with the same runner as an action.

    python3 -m radcloud.work.slurmjob      # what the Slurm executor's job script execs

Reads the shard spec from ``RADCLOUD_SHARD_SPEC`` and the settings from the
``RADCLOUD_*`` environment the executor gave the job, then runs it through
:func:`radcloud.work.shardaction.run_shard_action` — inputs from S3, the
plugin in :mod:`radcloud.run.sandbox`, outputs to S3, progress and outcome into
Redis — with the job's end (its start + Slurm's time limit) as the deadline,
so the plugin's wall clock leaves room for the upload. The spec is taken out
of the environment before the plugin runs (the sandbox builds the plugin's
environment from scratch anyway). Exits 0 when the shard succeeded, 1 when
it did not (its reason is in Redis), 2 when it could not start.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(environ: dict[str, str] | None = None) -> int:
    from radcloud.core.errors import RadcloudError
    from radcloud.core.settings import Settings
    from radcloud.run.shard import STATUS_OK
    from radcloud.work.shardaction import run_shard_action

    env = os.environ if environ is None else environ
    started = time.time()
    try:
        spec = json.loads(env.pop("RADCLOUD_SHARD_SPEC", "") or "null")
        if not isinstance(spec, dict):
            raise ValueError("RADCLOUD_SHARD_SPEC is missing or not a JSON object")
        settings = Settings.load(environ=env)
        limit_s = int(env.get("RADCLOUD_SLURM_TIME_LIMIT_S") or 0)
    except (ValueError, RadcloudError) as exc:
        print(f"radcloud slurm job: cannot start: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    summary = run_shard_action(spec, settings, activation_id=env.get("SLURM_JOB_ID"),
                               deadline=started + limit_s if limit_s else None)
    print(json.dumps({k: summary.get(k) for k in ("job_id", "shard_id", "status", "reason", "duration_s",
                                                  "memory_peak_mib")}))
    return 0 if summary.get("status") == STATUS_OK else 1


if __name__ == "__main__":
    sys.exit(main())
