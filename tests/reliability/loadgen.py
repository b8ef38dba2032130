"""Load generators shared by tests/load/ (short, CI) and bench/load_bench.py (the full 30 s).

``query_load``: N clients, each a thread with its own HTTP session, GET the
query web action with a token in a closed loop: a warm-up until every client
has had two answers, then a measured window of two thirds of the duration.
Every answer is recorded: nothing is lost if every request got a 200 with
the expected total. ``job_load``: N jobs dispatched at once, each followed
until final by ``watchers`` web clients (the status action, as the web UI
watches: offer to long-poll, then wait ``poll_after_ms``), or with
``watchers=0`` by reading the job store directly (no activation at all: the
baseline). It reports how long each shard waited to start (shard
``started_at`` - job ``created_at``) and every watcher that did not get the
final answer, and per action (:func:`action_profile`) how many activations
were cold starts and how long they queued for a container. Memory is the resident set of the localwhisk server and every
process under it (its action containers), sampled from /proc. Every HTTP
call goes through radcloud's retrying client (radcloud.core.retry).
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from radcloud.core import retry
from radcloud.work.jobs import JobStore

FINAL = ("succeeded", "failed", "partial", "cancelled")


def tree_rss_mb(pid: int) -> float:
    """Resident MB of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@contextlib.contextmanager
def ticking(world: Any, every_s: float = 1.0) -> Iterator[None]:
    """Reconcile every ``every_s`` meanwhile, as a deployment's alarm trigger does
    (docs/jobs.md, "Never stuck"): a shard OpenWhisk was too busy to take stays
    pending until reconcile submits it again, and nothing else here would."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            try:
                world.tick()
            except Exception:  # noqa: BLE001 - the next tick retries, as the alarm's would
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)  # a tick still waiting out a full namespace ends on its own (daemon)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


WARM_LIMIT_S = 120.0  # a warm-up longer than this is a failure of its own ("warmed" false)


def query_load(world: Any, *, clients: int = 50, duration_s: float = 30.0, query: str,
               expect_total: int) -> dict[str, Any]:
    url = f"{world.whisk.api_host}/api/v1/web/guest/radcloud/query"
    headers = {"Authorization": f"Bearer {world.tokens['clinician']}"}
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]
    rss = {"start": tree_rss_mb(world.whisk.proc.pid)}

    answered = [0] * clients

    def client(me: int) -> None:
        session = retry.session(budget_s=60)
        start.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                resp = session.get(f"{url}?{query}", headers=headers, timeout=60)
                ok = resp.status_code == 200 and resp.json().get("total") == expect_total
                why = "" if ok else f"{resp.status_code} {resp.text[:120]}"
            except (requests.RequestException, ValueError) as exc:
                why = type(exc).__name__
            elapsed = time.perf_counter() - t0
            with lock:
                (failures.append(why) if why else latencies.append(elapsed))
                answered[me] += 1
        session.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.monotonic()
    stop_at[0] = float("inf")  # until the measured window after the warm-up ends
    start.wait()
    # "Warm" is once every client has had two answers: all the containers 50
    # concurrent clients need are up by then. A fixed delay is not enough on a
    # busy machine, where containers are still being started a few seconds in
    # and their memory would read as a leak; nor is a fixed total duration (at
    # load 17 a run took 11.8 s and had not warmed, so the memory check meant
    # nothing). The warm-up takes what it takes (up to WARM_LIMIT_S); the
    # measured window after it is always two thirds of duration_s.
    time.sleep(duration_s / 3)
    while min(answered) < 2 and time.monotonic() < t_start + WARM_LIMIT_S:
        time.sleep(0.1)
    rss["warm"] = tree_rss_mb(world.whisk.proc.pid)
    warm_s = time.monotonic() - t_start
    stop_at[0] = time.monotonic() + duration_s * 2 / 3
    for t in threads:
        t.join(duration_s + 90)
    rss["end"] = tree_rss_mb(world.whisk.proc.pid)
    wall = time.monotonic() - t_start
    return {"clients": clients, "duration_s": round(wall, 1), "requests": len(latencies) + len(failures),
            "ok": len(latencies), "failures": failures[:20], "n_failures": len(failures),
            "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
            "rss_mb": {k: round(v, 1) for k, v in rss.items()}, "warm_s": round(warm_s, 1),
            "warmed": min(answered) >= 2,
            "stuck_threads": sum(t.is_alive() for t in threads)}


def job_load(world: Any, rid: str, *, jobs: int = 20, plugin: str = "copy", params: dict | None = None,
             watchers: int | None = None, dispatchers: int | None = None, timeout_s: float = 240) -> dict[str, Any]:
    """Dispatch ``jobs`` (through ``dispatchers`` concurrent clients, default one per
    job: all at once) and follow them to the end.

    ``watchers`` (default: one per job) web clients watch the jobs round-robin
    through the status action; 0 watches by reading Redis (no activations).
    All at once is what used to deadlock a small invoker (every container held
    by a dispatch whose shard invokes waited for one); dispatch's
    ``limits.instances`` keeps containers for the shards (docs/jobs.md,
    "Simultaneous dispatches").
    """
    dispatchers = jobs if dispatchers is None else dispatchers
    watchers = jobs if watchers is None else watchers
    busy0 = world.busy_answers
    t0 = time.monotonic()
    since_ms = int(time.time() * 1000)
    rss0 = tree_rss_mb(world.whisk.proc.pid)
    ids: list[str] = []
    errors: list[str] = []

    answers: dict[int, dict] = {}
    calls = [0]
    latencies: list[float] = []  # each status call as the watcher saw it (queued + run + 429s waited out)
    lock = threading.Lock()
    followers: list[threading.Thread] = []

    def watch(n: int, job_id: str) -> None:
        try:
            answers[n] = _watch_web(world, job_id, timeout_s, calls, lock, latencies)
        except Exception as exc:  # a lost answer: recorded, never a dead thread nobody sees
            errors.append(f"watcher {n} of {job_id}: {type(exc).__name__}: {exc}"[:300])

    def dispatch(i: int) -> None:
        status, _h, body = world.web("dispatch", method="POST", token=world.tokens["researcher"],
                                     body={"plugin": plugin, "params": {**(params or {}), "prefix": f"j{i}-"},
                                           "inputs": {"retrieve": rid}, "options": {"force": True}})
        if status != 200:
            errors.append(f"dispatch: {status} {body}")
            return
        ids.append(body["job_id"])
        # Its watchers start as soon as the job exists, as a user's page would.
        for n in range(i, watchers, jobs):
            t = threading.Thread(target=watch, args=(n, body["job_id"]))
            with lock:
                followers.append(t)
            t.start()

    todo = list(range(jobs))

    def dispatcher() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            dispatch(i)

    threads = [threading.Thread(target=dispatcher) for _ in range(min(dispatchers, jobs))]
    with ticking(world):
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        dispatched = time.monotonic() - t0
        store = JobStore(world.redis)
        finals = {j: _watch_store(store, j, timeout_s) for j in ids}
        for t in followers:
            t.join(timeout_s + 30)
    wall = time.monotonic() - t0
    lost = [n for n in range(watchers) if answers.get(n, {}).get("state") not in FINAL]
    states: dict[str, int] = {}
    for job in finals.values():
        states[job["state"]] = states.get(job["state"], 0) + 1
    durations = [float(j["finished_at"]) - float(j["created_at"]) for j in finals.values()
                 if j.get("finished_at") and j.get("created_at")]
    starts = [float(s["started_at"]) - float(j["created_at"]) for j in finals.values() for s in j["shards"]
              if s.get("started_at") and j.get("created_at")]
    return {"jobs": jobs, "watchers": watchers, "dispatched": len(ids),
            "final": sum(j["state"] in FINAL for j in finals.values()), "states": states,
            "lost_answers": len(lost), "status_calls": calls[0], "busy_retried": world.busy_answers - busy0,
            "status_p50_ms": round(percentile(latencies, 50) * 1000) if latencies else None,
            "status_p90_ms": round(percentile(latencies, 90) * 1000) if latencies else None,
            "errors": errors[:10],
            "dispatch_s": round(dispatched, 2), "wall_s": round(wall, 1),
            "job_p50_s": round(percentile(durations, 50), 2) if durations else None,
            "job_p99_s": round(percentile(durations, 99), 2) if durations else None,
            "shards_started": len(starts),
            "shard_start_p50_s": round(percentile(starts, 50), 3) if starts else None,
            "shard_start_p90_s": round(percentile(starts, 90), 3) if starts else None,
            "shard_start_mean_s": round(statistics.fmean(starts), 3) if starts else None,
            "actions": action_profile(world, since_ms),
            "finals": finals, "rss_mb": {"start": round(rss0, 1), "end": round(tree_rss_mb(world.whisk.proc.pid), 1)}}


def action_profile(world: Any, since_ms: int) -> dict[str, dict[str, Any]]:
    """Per action, the activations OpenWhisk kept since ``since_ms``: how many, how many
    cold starts, and p50 of waitTime (queued for a container), initTime and duration (ms).

    As deployed, successful blocking activations (web actions: status, dispatch)
    leave no record (docs/deploy.md); what is left is the shards and finalisers,
    whose cold starts and waits show whether anything took their containers.
    """
    user, _, key = world.whisk.auth.partition(":")
    records: list[dict] = []
    while True:
        resp = requests.get(f"{world.whisk.api_host}/api/v1/namespaces/_/activations", auth=(user, key),
                            params={"since": since_ms, "docs": "true", "limit": 200, "skip": len(records)},
                            timeout=30)
        resp.raise_for_status()
        page = resp.json()
        records += page
        if len(page) < 200:
            break
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({r["name"] for r in records}):
        mine = [r for r in records if r["name"] == name]
        ann = [{a["key"]: a["value"] for a in r.get("annotations", [])} for r in mine]
        inits = [a["initTime"] for a in ann if "initTime" in a]
        out[name] = {"n": len(mine), "cold": len(inits),
                     "wait_p50_ms": percentile([a.get("waitTime", 0) for a in ann], 50),
                     "init_p50_ms": percentile(inits, 50) if inits else None,
                     "duration_p50_ms": percentile([r.get("duration", 0) for r in mine], 50)}
    return out


def _watch_web(world: Any, job_id: str, timeout_s: float, calls: list[int], lock: threading.Lock,
               latencies: list[float]) -> dict:
    """Follow a job through the status web action as the web UI does; the final answer.

    Each watcher opens its page within 2 s of the job's start (independent
    people, not threads released at the same instant).
    """
    time.sleep(random.uniform(0, 2.0))
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    query = ""
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        status, _h, body = world.web("status", path=f"/{job_id}", query=query, token=world.tokens["researcher"])
        with lock:
            calls[0] += 1
            latencies.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"status answered {status}: {str(body)[:200]}")
        job = body
        if job["state"] in FINAL:
            return job
        time.sleep(float(job.get("poll_after_ms") or 0) / 1000 * random.uniform(0.8, 1.2))
        query = f"wait=20&since={job['version']}"
    raise TimeoutError(f"job {job_id} still {job.get('state')} after {timeout_s} s")


def _watch_store(store: JobStore, job_id: str, timeout_s: float) -> dict:
    """Wait for a job to be final by reading the job store (no activation): the baseline's way."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = store.get(job_id)
        if job["state"] in FINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.2)
