"""Load bench: 50 concurrent query clients for 30 s, then 20 concurrent jobs, through localwhisk.

The full-length version of tests/load/test_load.py (which runs the query
load for 10 s in CI). Starts its own world (Orthanc, Redis, SeaweedFS,
localwhisk with radcloud deployed) in a temp dir, seeds one small study,
and prints the figures as JSON: requests, failures, throughput, p50/p99,
memory of localwhisk and its containers (start / warm / end), and the job
run's states and p50/p99 job duration.

    .venv/bin/python bench/load_bench.py [--clients 50] [--seconds 30] [--jobs 20] [--slots 100]

``--slots`` is the namespace's concurrent-activation cap (OpenWhisk's
default is 100); the jobs run on the harness's 30 slots unless
``--job-slots`` says otherwise, so dispatch's 429 back-off is exercised.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e"), str(ROOT / "tests" / "reliability")]

from loadgen import job_load, query_load  # noqa: E402
from rcworld import RcWorld  # noqa: E402


def _slots(world: RcWorld, n: int) -> None:
    if world.whisk.max_concurrent != n:
        world.whisk.stop()
        world.whisk.max_concurrent = n
        world.whisk.start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--slots", type=int, default=100)
    ap.add_argument("--job-slots", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="radcloud-load-") as tmp:
        world = RcWorld.up(Path(tmp))
        try:
            study, _series = world.seed_patient("Load^Bench", "LOADB0001", "19900101", [2, 2])
            rid = world.stage(study)
            _slots(world, a.job_slots)
            jobs = job_load(world, rid, jobs=a.jobs, plugin="copy")
            jobs.pop("finals")
            _slots(world, a.slots)
            queries = query_load(world, clients=a.clients, duration_s=a.seconds,
                                 query="PatientID=LOADB0001&level=series", expect_total=2)
        finally:
            world.down()
    print(json.dumps({"query_load": queries, "job_load": jobs}, indent=1))
    ok = queries["n_failures"] == 0 and jobs["states"] == {"succeeded": a.jobs}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
