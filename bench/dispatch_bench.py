"""Job benchmarks, through localwhisk with the real stack (all started here, in a temp dir).

    .venv/bin/python bench/dispatch_bench.py                # everything, prints one JSON object
    .venv/bin/python bench/dispatch_bench.py --only latency,wake --runs 10

Figures (targets from issue 6):

* ``latency``: dispatch -> final status of a no-op plugin on one series,
  as a lone client sees it (dispatch action, then status every
  ``poll_after_ms``, 0.2 s alone) — ≤ 300 ms.
* ``wake``: an event written to an unfinished job -> a ``status wait=N``
  call returns, with long-polls turned on (``watch_slots=1``) — ≤ 250 ms;
  also the library alone (JobStore.wait in-process).
* ``cache``: an identical dispatch answered from the cache vs computed
  (dcm2png on one series, to final) — hit ≤ 50 ms, ≥ 50× faster.
* ``fanout``: dcm2png on 8 series, one job fanned out vs one shard at a
  time, both warm (median of ``runs // 3``, at least 3, parallel jobs) —
  ≥ 1.7× on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from jobflow import JobWorld  # noqa: E402

from radcloud.work.jobs import JobSpec, JobStore, ShardSpec  # noqa: E402


def pct(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50_ms": round(statistics.median(values) * 1000, 1),
            "p90_ms": round(values[min(len(values) - 1, int(len(values) * 0.9))] * 1000, 1),
            "min_ms": round(values[0] * 1000, 1), "n": len(values)}


def run_job(world: JobWorld, request: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    answer = world.call("dispatch", request)
    if "job_id" not in answer:
        raise RuntimeError(answer)
    job = world.wait_final(answer["job_id"])
    return time.perf_counter() - t0, job


def bench_latency(world: JobWorld, rid: str, runs: int) -> dict:
    request = {"plugin": "noop", "inputs": {"retrieve": rid}, "options": {"force": True}}
    run_job(world, request)  # warm the containers
    times = []
    for _ in range(runs):
        elapsed, job = run_job(world, request)
        assert job["state"] == "succeeded", job
        times.append(elapsed)
    return {"dispatch_to_final": pct(times), "target_ms": 300}


def bench_wake(world: JobWorld, rid: str, runs: int) -> dict:
    # status long-polls only an unfinished job: one whose shard has not started yet
    jobs = JobStore(world.redis)
    job_id = jobs.create(JobSpec("noop", "1", "bench", {}, [ShardSpec("s0")]), shard_timeout_s=600)
    action, library = [], []
    for _ in range(runs):
        version = jobs.version(job_id)
        fired: dict[str, float] = {}

        def fire() -> None:
            time.sleep(0.5)
            fired["t"] = time.perf_counter()
            jobs.transition(job_id, "", event="note", data={"bench": True})

        t = threading.Thread(target=fire)
        t.start()
        # Long-polls are off by default (RADCLOUD_WATCH_SLOTS=0, docs/jobs.md): this measures a
        # deployment that turns them on (a direct invoke may set the setting per call).
        world.call("status", {"job_id": job_id, "wait": 10, "since": version, "watch_slots": 1})
        action.append(time.perf_counter() - fired["t"])
        t.join()
        version = jobs.version(job_id)
        t = threading.Thread(target=fire)
        t.start()
        jobs.wait(job_id, version, 10)
        library.append(time.perf_counter() - fired["t"])
        t.join()
    return {"status_action_wake": pct(action), "library_wake": pct(library), "target_ms": 250}


def bench_cache(world: JobWorld, rid: str, runs: int) -> dict:
    request = {"plugin": "dcm2png", "inputs": {"retrieve": rid}, "options": {"force": True}}
    run_job(world, request)  # warm
    misses = [run_job(world, request)[0] for _ in range(max(3, runs // 3))]
    hits = []
    for _ in range(runs):
        t0 = time.perf_counter()
        answer = world.call("dispatch", {"plugin": "dcm2png", "inputs": {"retrieve": rid}})
        hits.append(time.perf_counter() - t0)
        assert answer["cached"] is True, answer
    miss, hit = statistics.median(misses), statistics.median(hits)
    return {"miss": pct(misses), "hit": pct(hits), "speedup": round(miss / hit, 1),
            "target": "hit <= 50 ms, >= 50x"}


def bench_fanout(world: JobWorld, study: str, rid: str, runs: int) -> dict:
    """Steady state on both sides: the pool's containers for 8 parallel shards
    are not all warm after one job (the first job after a single warm-up took
    6.1 s, the next ones 3.1-3.2 s), so two warm-up jobs, then the median of
    ``runs``; the one-at-a-time side reuses one warm container throughout."""
    request = {"plugin": "dcm2png", "inputs": {"retrieve": rid}, "options": {"force": True}}
    for _ in range(2):
        run_job(world, request)
    parallels = []
    for _ in range(runs):
        elapsed, job = run_job(world, request)
        assert job["state"] == "succeeded" and job["shards_total"] == 8, job
        parallels.append(elapsed)
    series = [s["series_uid"] for s in job["shards"]]
    t0 = time.perf_counter()
    for uid in series:  # one shard at a time
        _, one = run_job(world, {"plugin": "dcm2png", "inputs": {"series": [uid]}, "options": {"force": True}})
        assert one["state"] == "succeeded", one
    sequential = time.perf_counter() - t0
    parallel = statistics.median(parallels)
    return {"series": 8, "instances": job["instances_total"], "parallel_s": round(parallel, 2),
            "parallel_runs_s": [round(x, 2) for x in parallels],
            "sequential_s": round(sequential, 2), "speedup": round(sequential / parallel, 2),
            "target": ">= 1.7x on 2 cores"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="latency,wake,cache,fanout")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fanout-slices", type=int, default=24, help="instances per series in the fan-out study")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="radcloud-bench-") as tmp:
        world = JobWorld.up(Path(tmp), shard_timeout_s=120)
        try:
            out: dict = {}
            study, _ = world.seed_study([5])
            rid = world.stage(study)
            if "latency" in wanted:
                out["latency"] = bench_latency(world, rid, args.runs)
            if "wake" in wanted:
                out["wake"] = bench_wake(world, rid, args.runs)
            if "cache" in wanted:
                out["cache"] = bench_cache(world, rid, args.runs)
            if "fanout" in wanted:
                big, _ = world.seed_study([args.fanout_slices] * 8, size=256)
                out["fanout"] = bench_fanout(world, big, world.stage(big, timeout_s=300), max(3, args.runs // 3))
            print(json.dumps(out, indent=1))
        finally:
            world.down()


if __name__ == "__main__":
    main()
