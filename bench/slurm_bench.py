"""The Slurm executor's figures, on the real one-node cluster (everything started here, in a temp dir).

    .venv/bin/python bench/slurm_bench.py                      # everything, prints one JSON object
    .venv/bin/python bench/slurm_bench.py --only submit,visible --runs 10
    .venv/bin/python bench/slurm_bench.py --only visible --runs 20 --ab 3debe9b   # this runner vs 3debe9b's, in turns

Figures (issue 18):

* ``stack_up``: ``Stack.up`` of munge + slurmctld + slurmd + slurmrestd on a fresh state dir.
* ``submit``: slurmrestd submit -> the job RUNNING (slurmrestd polled every 20 ms), p50 — target <= 1 s.
* ``visible``: the job RUNNING in Slurm -> its shard ``running`` in radcloud's status (the
  runner on the node reports itself through the shard_report web action), p50 — target <= 1 s. Through the deployed
  dispatch action (localwhisk) with ``options.executor = slurm``.
* ``noop``: a no-op plugin on one series, dispatch -> final, on Slurm vs as an action (ratio).
* ``fanout``: dcm2png on 8 series, one job, on Slurm vs as actions (wall time ratio).
* ``heavy``: ct-resample on a 300-slice 512² CT series: seconds and peak memory run directly,
  and dispatch -> final on Slurm.
* ``nodefail``: slurmd and its job steps killed mid-job (a node crash) and started again:
  Slurm requeues the batch job (or fails it NODE_FAIL) once it finds it missing (~30-40 s).
* ``timeout``: a job past its time limit shows as TIMEOUT (Slurm checks limits every 30 s and
  counts whole minutes: this one takes 1-2 minutes, which is why it is here and not in the suite).
* ``timeout_now``: a running job set to ``TimeLimit=0`` (its end = its start, as the suite's test
  does): how long until slurmctld's next time-limit pass ends it TIMEOUT (0-30 s, whatever its phase).
* ``requeue``: ``scontrol requeue`` of a running radcloud shard (copy, 3 s), released at once
  (``StartTime=now``): requeue -> the second run RUNNING, and requeue -> the job final in radcloud
  (its outcome from the second run, attempt 2).

Run as root inside a private network namespace, as the tests are (Slurm needs a second
loopback address there): ``unshare --net bash -c 'ip link set lo up && ip addr add
127.0.0.2/8 dev lo && .venv/bin/python bench/slurm_bench.py'``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "plugins"))

from jobflow import JobWorld  # noqa: E402

from radcloud.work.slurmclient import SlurmClient  # noqa: E402
from radcloud.ops.stack import Ports, Stack  # noqa: E402
from radcloud.ops.stack.state import SLURM_SERVICES  # noqa: E402


def pct(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50_ms": round(statistics.median(values) * 1000, 1),
            "p90_ms": round(values[min(len(values) - 1, int(len(values) * 0.9))] * 1000, 1),
            "min_ms": round(values[0] * 1000, 1), "n": len(values)}


def wait_job(client: SlurmClient, job_id: int | str, states: set[str], every: float = 0.02,
             limit: float = 300) -> tuple[float, dict]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        job = client.jobs([job_id]).get(str(job_id)) or {}
        if job.get("job_state") in states:
            return time.perf_counter(), job
        time.sleep(every)
    raise TimeoutError(f"Slurm job {job_id} never reached {states}")


def bench_stack_up(tmp: Path) -> dict:
    stack = Stack(tmp / "up", Ports.ephemeral())
    t0 = time.perf_counter()
    stack.up(SLURM_SERVICES, install_missing=False)
    seconds = time.perf_counter() - t0
    stack.down()
    return {"seconds": round(seconds, 2), "services": list(SLURM_SERVICES)}


def bench_submit(client: SlurmClient, runs: int) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        job_id = client.submit("#!/bin/sh\nsleep 0.3\n", name="radcloud-bench", memory_mb=64, time_limit_min=1)
        t1, _ = wait_job(client, job_id, {"RUNNING", "COMPLETED"})
        times.append(t1 - t0)
        wait_job(client, job_id, {"COMPLETED"}, every=0.1)
    return {"submit_to_running": pct(times), "target_ms": 1000}


def dispatch(world: JobWorld, request: dict) -> str:
    answer = world.call("dispatch", request)
    if "job_id" not in answer:
        raise RuntimeError(answer)
    return answer["job_id"]


AB_RUNNER = """import os, runpy, sys
# slurm_bench --ab: the runner of this tree, or (mode "before") the radcloud of an earlier commit.
here = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("RADCLOUD_PLUGINS_DIR", {plugins!r})
if open(os.path.join(here, "mode")).read().strip() == "before":
    sys.path.insert(0, os.path.join(here, "before"))
runpy.run_module("radcloud.work.slurmjob", run_name="__main__", alter_sys=True)
"""


def ab_runner(tmp: Path, rev: str) -> Path:
    """A runner command's script that runs this tree's shard runner or ``rev``'s, as ``tmp/mode`` says:
    the two run in turns on one cluster, under the same load (the hospital side is this tree's)."""
    ab = tmp / "ab"
    (ab / "before").mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "radcloud"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(ab / "before")], input=archive.stdout, check=True)
    (ab / "mode").write_text("after")
    (ab / "runner.py").write_text(AB_RUNNER.format(plugins=str(ROOT / "plugins")))
    return ab


def bench_visible(world: JobWorld, client: SlurmClient, rid: str, runs: int, ab: Path | None = None) -> dict:
    """RUNNING in Slurm -> the shard running in radcloud; with ``ab``, this tree's runner and the earlier
    one in turns (one job each), each with its own figures and the ratio of their p50s."""
    if ab is None:
        return _visible(world, client, rid, runs)
    out: dict = {"modes": {}}
    for i in range(runs * 2):
        mode = ("before", "after")[i % 2]
        (ab / "mode").write_text(mode)
        one = _visible(world, client, rid, 1)
        got = out["modes"].setdefault(mode, {"times": [], "started_by_first_report": 0})
        got["times"].append(one.pop("seconds")[0])
        got["started_by_first_report"] += one["started_by_first_report"]
    for mode, got in out["modes"].items():
        got["running_to_status_visible"] = pct(got.pop("times"))
    m = out["modes"]
    out["after_over_before_p50"] = round(m["after"]["running_to_status_visible"]["p50_ms"]
                                         / m["before"]["running_to_status_visible"]["p50_ms"], 2)
    out["load_avg_1m"] = round(os.getloadavg()[0], 1)
    return out


def _visible(world: JobWorld, client: SlurmClient, rid: str, runs: int) -> dict:
    from radcloud.work.jobs import JobStore

    jobs = JobStore(world.redis)
    times, first_report = [], 0
    for _ in range(runs):
        job_id = dispatch(world, {"plugin": "noop", "inputs": {"retrieve": rid},
                                  "options": {"force": True, "executor": "slurm", "shard_by": "series"}})
        shard = jobs.get(job_id)["shards"][0]
        t_running, _ = wait_job(client, shard["activation_id"], {"RUNNING", "COMPLETED"}, every=0.01)
        while jobs.get(job_id)["shards"][0]["state"] in ("pending", "invoked"):
            time.sleep(0.01)
        times.append(time.perf_counter() - t_running)
        # Started by the runner's first report (before its downloads), which records n_inputs; else by a later one.
        first_report += "n_inputs" in jobs.get(job_id)["shards"][0]
        world.wait_final(job_id)
    return {"running_to_status_visible": pct(times), "seconds": [round(t, 3) for t in times], "target_ms": 1000,
            "started_by_first_report": first_report,
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "note": "the runner on the node reports itself through the shard_report web action, before fetching its "
                    "inputs: Python start + the runner's imports + one call"}


def run_job(world: JobWorld, request: dict, timeout_s: float = 600) -> tuple[float, dict]:
    t0 = time.perf_counter()
    job = world.wait_final(dispatch(world, request), timeout_s)
    return time.perf_counter() - t0, job


def bench_noop(world: JobWorld, rid: str, runs: int) -> dict:
    out = {}
    for executor in ("action", "slurm"):
        request = {"plugin": "noop", "inputs": {"retrieve": rid}, "options": {"force": True, "executor": executor}}
        run_job(world, request)  # warm
        times = []
        for _ in range(runs):
            elapsed, job = run_job(world, request)
            assert job["state"] == "succeeded", job
            times.append(elapsed)
        out[executor] = pct(times)
    out["slurm_over_action"] = round(out["slurm"]["p50_ms"] / out["action"]["p50_ms"], 2)
    return out


def bench_fanout(world: JobWorld, rid: str) -> dict:
    out = {}
    for executor in ("action", "slurm"):
        request = {"plugin": "dcm2png", "inputs": {"retrieve": rid}, "options": {"force": True, "executor": executor}}
        elapsed, job = run_job(world, request)
        assert job["state"] == "succeeded" and job["shards_total"] == 8, job
        out[f"{executor}_s"] = round(elapsed, 2)
    out["slurm_over_action"] = round(out["slurm_s"] / out["action_s"], 2)
    return out


def bench_heavy(world: JobWorld, tmp: Path, slices: int) -> dict:
    from plugin_helpers import write_ct_series

    ct = tmp / "heavy-ct"
    write_ct_series(ct, count=slices, rows=512, thickness=1.0)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "plugins" / "ct-resample" / "ct_resample.py"), str(ct),
                             str(tmp / "heavy-out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    direct_s = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, stderr[-500:]
    peak_mib = usage.ru_maxrss / 1024
    # The same series through the deployed path: staged in Orthanc -> S3 -> dispatch -> Slurm.
    import requests

    orthanc = world.endpoints.orthanc
    for path in sorted(ct.iterdir()):
        requests.post(orthanc.url + "/instances", data=path.read_bytes(), auth=orthanc.auth,
                      timeout=60).raise_for_status()
    import pydicom

    study = str(pydicom.dcmread(next(ct.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    rid = world.stage(study, timeout_s=600)
    on_slurm_s, job = run_job(world, {"plugin": "ct-resample", "inputs": {"retrieve": rid},
                                      "options": {"force": True}})
    assert job["state"] == "succeeded" and job["options"]["executor"] == "slurm", job
    return {"series": f"{slices} x 512 x 512", "direct_s": round(direct_s, 1),
            "direct_peak_mib": round(peak_mib),
            "dispatch_to_final_on_slurm_s": round(on_slurm_s, 1), "plugin_said": stdout.strip()[-200:]}


def bench_timeout(client: SlurmClient, stack: Stack) -> dict:
    from radcloud.ops.stack import slurm as stack_slurm
    from radcloud.work.slurmstate import status_of

    job_id = client.submit("#!/bin/sh\nsleep 600\n", name="radcloud-bench-timeout", memory_mb=64, time_limit_min=5)
    wait_job(client, job_id, {"RUNNING"})
    stack_slurm.scontrol(stack.state, "update", f"JobId={job_id}", "TimeLimit=1")
    t0 = time.perf_counter()
    t1, job = wait_job(client, job_id, {"TIMEOUT", "FAILED", "CANCELLED", "COMPLETED"}, every=0.5, limit=240)
    status = status_of(job)
    return {"slurm_state": job["job_state"], "radcloud": [status.phase, status.outcome, status.reason],
            "seconds_after_limit_set": round(t1 - t0, 1)}


def bench_timeout_now(client: SlurmClient, stack: Stack, runs: int) -> dict:
    from radcloud.ops.stack import slurm as stack_slurm

    waits = []
    for _ in range(runs):
        job_id = client.submit("#!/bin/sh\nsleep 600\n", name="radcloud-bench-timeout-now", memory_mb=64,
                               time_limit_min=5)
        wait_job(client, job_id, {"RUNNING"})
        stack_slurm.scontrol(stack.state, "update", f"JobId={job_id}", "TimeLimit=0")
        t0 = time.perf_counter()
        t1, job = wait_job(client, job_id, {"TIMEOUT", "FAILED", "CANCELLED", "COMPLETED"}, every=0.2, limit=90)
        assert job["job_state"] == "TIMEOUT", job["job_state"]
        waits.append(round(t1 - t0, 1))
    return {"seconds_after_limit_set": waits, "max": max(waits)}


def bench_requeue(world: JobWorld, client: SlurmClient, rid: str) -> dict:
    from radcloud.work.jobs import JobStore
    from radcloud.ops.stack import slurm as stack_slurm

    jobs = JobStore(world.redis)
    job_id = dispatch(world, {"plugin": "copy", "params": {"sleep": 3}, "inputs": {"retrieve": rid},
                              "options": {"force": True, "executor": "slurm"}})
    handle = jobs.get(job_id)["shards"][0]["activation_id"]
    wait_job(client, handle, {"RUNNING"})
    state = world.stack.state
    stack_slurm.scontrol(state, "update", f"JobId={handle}", "Requeue=1")
    t0 = time.perf_counter()
    stack_slurm.scontrol(state, "requeue", handle)
    wait_job(client, handle, {"PENDING"}, every=0.05)
    stack_slurm.scontrol(state, "update", f"JobId={handle}", "StartTime=now")
    t1, _ = wait_job(client, handle, {"RUNNING"}, every=0.05)
    job = world.wait_final(job_id)
    t2 = time.perf_counter()
    shard = job["shards"][0]
    return {"requeue_to_running_again_s": round(t1 - t0, 2), "requeue_to_final_s": round(t2 - t0, 2),
            "state": job["state"], "attempt": shard.get("attempt"), "requeued": shard.get("requeued")}


def bench_nodefail(world: JobWorld, client: SlurmClient, rid: str) -> dict:
    """slurmd killed mid-job with its job steps (a node crash), started again: what the shard ends as."""
    from radcloud.work.jobs import JobStore
    from radcloud.ops.stack import slurm as stack_slurm

    jobs = JobStore(world.redis)
    job_id = dispatch(world, {"plugin": "noop", "inputs": {"retrieve": rid},
                              "options": {"force": True, "executor": "slurm"}})
    handle = jobs.get(job_id)["shards"][0]["activation_id"]
    # A no-op is over in a second: hold the node with a long job first, then crash it.
    hold = client.submit("#!/bin/sh\nsleep 300\n", name="radcloud-bench-node", memory_mb=64, time_limit_min=10)
    world.wait_final(job_id)
    wait_job(client, hold, {"RUNNING"})
    t0 = time.perf_counter()
    world.stack.kill("slurmd")
    stack_slurm.kill_leftovers(world.stack.state)
    world.stack.start("slurmd")
    t1, job = wait_job(client, hold, {"NODE_FAIL", "FAILED", "PENDING", "CANCELLED", "COMPLETED"}, every=0.5, limit=240)
    client.cancel(hold)
    from radcloud.work.slurmstate import status_of

    status = status_of(job)
    return {"slurm_state": job["job_state"], "reason": job.get("state_reason"), "requeued": job.get("restart_cnt"),
            "radcloud": [status.phase, status.outcome, status.reason], "seconds": round(t1 - t0, 1),
            "noop_before": handle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="stack_up,submit,visible,noop,fanout,heavy,timeout")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--heavy-slices", type=int, default=300)
    parser.add_argument("--ab", metavar="REV", help="visible: this tree's shard runner and REV's in turns "
                        "(same cluster, same load), e.g. --ab 3debe9b")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="radcloud-slurm-bench-") as tmp:
        tmp_path = Path(tmp)
        if "stack_up" in wanted:
            out["stack_up"] = bench_stack_up(tmp_path)
        ab = ab_runner(tmp_path, args.ab) if args.ab else None
        runner = {"RADCLOUD_SLURM_RUNNER": f"{sys.executable} {ab / 'runner.py'}"} if ab else None
        world = JobWorld.up(tmp_path / "world", shard_timeout_s=120, slurm=True, extra_env=runner)
        try:
            client = SlurmClient.from_settings(world.endpoints.settings())
            if "submit" in wanted:
                out["submit"] = bench_submit(client, args.runs)
            if wanted & {"visible", "noop", "nodefail", "requeue"}:
                study, _ = world.seed_study([5])
                rid = world.stage(study)
                if "visible" in wanted:
                    out["visible"] = bench_visible(world, client, rid, max(3, args.runs // 2), ab)
                if "noop" in wanted:
                    out["noop"] = bench_noop(world, rid, max(3, args.runs // 2))
                if "nodefail" in wanted:
                    out["nodefail"] = bench_nodefail(world, client, rid)
                if "requeue" in wanted:
                    out["requeue"] = bench_requeue(world, client, rid)
            if "fanout" in wanted:
                big, _ = world.seed_study([24] * 8, size=256)
                out["fanout"] = bench_fanout(world, world.stage(big, timeout_s=300))
            if "heavy" in wanted:
                out["heavy"] = bench_heavy(world, tmp_path, args.heavy_slices)
            if "timeout" in wanted:
                out["timeout"] = bench_timeout(client, world.stack)
            if "timeout_now" in wanted:
                out["timeout_now"] = bench_timeout_now(client, world.stack, min(args.runs, 3))
            print(json.dumps(out, indent=1))
        finally:
            world.down()


if __name__ == "__main__":
    main()
