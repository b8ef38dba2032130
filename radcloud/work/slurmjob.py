"""The batch script's body on a Slurm compute node: run one shard with the same runner as an action.

    python3 -m radcloud.work.slurmjob      # what the Slurm executor's job script execs

The job's environment holds no secret of the deployment (no S3 key, no Redis
URL): the shard spec (object keys, never data), a shard ticket and the URL
of the ``shard_report`` web action (:mod:`radcloud.work.shardchannel`). The
shard runs through :func:`radcloud.run.shard.run_shard` — the plugin in
:mod:`radcloud.run.sandbox`, as in an action — with inputs fetched and outputs
uploaded by presigned URLs and progress and outcome reported through that
action, with the job's end (its start + Slurm's time limit) as the deadline
so the plugin's wall clock leaves room for the upload. The spec and the
ticket are taken out of the environment before the plugin runs (the sandbox
builds the plugin's environment from scratch anyway). Exits 0 when the shard
succeeded, 1 when it did not (its reason is reported), 2 when it could not start.
"""

from __future__ import annotations

import json
import os
import sys


def main(environ: dict[str, str] | None = None) -> int:
    from radcloud.run.shard import STATUS_OK
    from radcloud.work.shardchannel import run

    env = os.environ if environ is None else environ
    try:
        summary = run(env)
    except ValueError as exc:
        print(f"radcloud slurm job: cannot start: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary.get(k) for k in ("job_id", "shard_id", "status", "reason", "duration_s",
                                                  "memory_peak_mib")}))
    return 0 if summary.get("status") == STATUS_OK else 1


if __name__ == "__main__":
    sys.exit(main())
