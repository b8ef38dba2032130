"""Load bench: watchers must not starve compute; then 50 query clients for 30 s. Through localwhisk.

Starts its own world (Orthanc, Redis, SeaweedFS, localwhisk with radcloud
deployed) in a temp dir, seeds one small study (2 series: 2 shards per job)
and measures, on the harness's 30-slot namespace (OpenWhisk's default
concurrency limit):

1. **watchers**: ``--jobs`` jobs dispatched at once by ``--dispatchers``
   clients (default 4; 20 sends every job at once), run twice per round —
   *baseline*, followed by reading the job store (no status activations),
   and *watched*, followed by ``--watchers`` web clients polling the status
   action as the web UI does. Rounds run ABBA (baseline, watched, watched,
   baseline, ...) so machine noise falls on both. Printed: jobs final, lost
   answers (a watcher that never got the final state), status calls, and how
   long shards waited to start (shard ``started_at`` - job ``created_at``),
   p50/p90/mean per condition, and ``shard_start_ratio`` = watched p50 /
   baseline p50 (the target is <= 1.5); per run also the status calls'
   latency as watchers saw them and, per action, the activations kept
   (shards): cold starts and how long they queued for a container.
2. **queries** (``--seconds`` > 0, on ``--slots``, OpenWhisk's 100): 50
   concurrent query clients: requests, failures, throughput, p50/p99,
   memory of localwhisk and its containers (start / warm / end).

    .venv/bin/python bench/load_bench.py [--jobs 20] [--watchers 50] [--rounds 1] [--dispatchers N]
                                         [--containers N] [--clients 50] [--seconds 30] [--slots 100]

Exit status 0 when every job succeeded, no answer was lost, the ratio is
<= 1.5 and no query failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the test tree's helpers, as pyproject's pytest pythonpath lists them (rcworld imports tests/unit/fast_hasher)
sys.path[:0] = [str(ROOT), *(str(ROOT / "tests" / d) for d in ("e2e", "reliability", "unit"))]

from loadgen import job_load, percentile, query_load  # noqa: E402
from rcworld import RcWorld  # noqa: E402

TARGET_RATIO = 1.5


def _slots(world: RcWorld, n: int) -> None:
    if world.whisk.max_concurrent != n:
        world.whisk.stop()
        world.whisk.max_concurrent = n
        world.whisk.start()


def _starts(run: dict) -> list[float]:
    return [float(s["started_at"]) - float(j["created_at"]) for j in run["finals"].values()
            for s in j["shards"] if s.get("started_at")]


def watchers_bench(world: RcWorld, rid: str, *, jobs: int, watchers: int, rounds: int, dispatchers: int) -> dict:
    order = [c for r in range(rounds) for c in (("baseline", "watched") if r % 2 == 0 else ("watched", "baseline"))]
    runs: dict[str, list[dict]] = {"baseline": [], "watched": []}
    for cond in order:
        run = job_load(world, rid, jobs=jobs, plugin="copy", watchers=0 if cond == "baseline" else watchers,
                       dispatchers=dispatchers)
        runs[cond].append(run)
        print(f"  {cond}: " + json.dumps({k: v for k, v in run.items() if k != "finals"}), file=sys.stderr)
    out: dict = {"jobs": jobs, "watchers": watchers, "rounds": rounds, "dispatchers": dispatchers}
    for cond, done in runs.items():
        starts = [x for run in done for x in _starts(run)]
        out[cond] = {
            "jobs_final": sum(r["final"] for r in done), "jobs_dispatched": sum(r["dispatched"] for r in done),
            "succeeded": sum(r["states"].get("succeeded", 0) for r in done),
            "lost_answers": sum(r["lost_answers"] for r in done), "status_calls": sum(r["status_calls"] for r in done),
            "errors": [e for r in done for e in r["errors"]][:5], "shards_started": len(starts),
            "shard_start_p50_s": round(percentile(starts, 50), 3), "shard_start_p90_s": round(percentile(starts, 90), 3),
            "shard_start_mean_s": round(statistics.fmean(starts), 3) if starts else None,
            "job_p50_s": round(statistics.median([r["job_p50_s"] for r in done if r["job_p50_s"] is not None]), 2),
        }
    base, watched = out["baseline"]["shard_start_p50_s"], out["watched"]["shard_start_p50_s"]
    out["shard_start_ratio"] = round(watched / base, 2) if base else None
    out["shard_start_ratio_mean"] = round(out["watched"]["shard_start_mean_s"] / out["baseline"]["shard_start_mean_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--watchers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1, help="baseline/watched pairs, run ABBA")
    ap.add_argument("--dispatchers", type=int, default=4,
                    help="concurrent dispatch clients (4, as before: the figures in docs/jobs.md; "
                         "--dispatchers 20 sends every job at once)")
    ap.add_argument("--job-slots", type=int, default=30)
    ap.add_argument("--containers", type=int, default=None,
                    help="localwhisk's container pool (the invoker's memory; localwhisk's default is 8)")
    ap.add_argument("--prewarm", type=int, default=None, help="localwhisk's stem cells per kind (default 1)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0, help="query load length; 0 skips it")
    ap.add_argument("--slots", type=int, default=100)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="radcloud-load-") as tmp:
        world = RcWorld.up(Path(tmp), max_containers=a.containers, prewarm=a.prewarm)
        try:
            study, _series = world.seed_patient("Load^Bench", "LOADB0001", "19900101", [2, 2])
            rid = world.stage(study)
            _slots(world, a.job_slots)
            job_load(world, rid, jobs=2, plugin="copy", watchers=0)  # warm the containers
            watch = watchers_bench(world, rid, jobs=a.jobs, watchers=a.watchers, rounds=a.rounds,
                                   dispatchers=a.dispatchers)
            queries = None
            if a.seconds > 0:
                _slots(world, a.slots)
                queries = query_load(world, clients=a.clients, duration_s=a.seconds,
                                     query="PatientID=LOADB0001&level=series", expect_total=2)
        finally:
            world.down()
    print(json.dumps({"watchers": watch, "query_load": queries}, indent=1))
    ok = all(watch[c]["succeeded"] == a.jobs * a.rounds and watch[c]["lost_answers"] == 0
             for c in ("baseline", "watched"))
    ok = ok and watch["shard_start_ratio"] is not None and watch["shard_start_ratio"] <= TARGET_RATIO
    ok = ok and (queries is None or queries["n_failures"] == 0)
    print(f"shard start ratio (watched p50 / baseline p50): {watch['shard_start_ratio']} "
          f"(target <= {TARGET_RATIO}); {'OK' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
