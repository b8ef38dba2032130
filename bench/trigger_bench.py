"""Trigger benchmark: studies arriving in Orthanc -> radcloud-study-stable -> the rule's action.

Not a test: prints one JSON object. Starts Orthanc + Redis (radcloud.ops.stack, ephemeral
ports, Orthanc ``StableAge`` 1 s) and a localwhisk (``localwhisk.testing.Server``)
with the trigger, a rule and a tiny action standing for "create the pipeline job",
and runs the arrivals watcher (``arrivals_stable_age_s`` 1 s) in-process. Measures:

- ``stable_to_job``: one study at a time, from the moment Orthanc stored its last
  instance to the start of the rule's action (its activation ``start``): p50/p95,
  against the target StableAge + 1 s;
- ``burst``: ``--burst`` one-instance studies stored back to back: seconds from the
  last store until every study's action started, and studies routed per second;
- ``fire_vs_invoke``: the trigger's own cost: POST /triggers (202) -> the rule's
  action started, against a direct non-blocking invoke -> the action started
  (what a manual dispatch costs), p50 each and their ratio; and fires/s for a
  burst of ``--fires`` fires on one keep-alive connection.

    .venv/bin/python bench/trigger_bench.py [--studies 20] [--burst 100] [--fires 200]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

from localwhisk.testing import Conn, percentile as pct

ACTION = "def main(args):\n    return {'study_uid': args.get('study_uid'), 'n': args.get('n')}\n"
TRIGGER, RULE, NAME = "radcloud-study-stable", "route-arrivals", "arrived"


def starts(conn: Conn, since_ms: int, key: str = "study_uid") -> dict[object, int]:
    """``result[key] -> activation start (epoch ms)`` of the rule's action since ``since_ms``."""
    out: dict[object, int] = {}
    skip = 0
    while True:
        status, raw = conn.call("GET", f"/api/v1/namespaces/_/activations?name={NAME}&docs=true"
                                       f"&limit=200&skip={skip}&since={since_ms}")
        assert status == 200, raw
        page = json.loads(raw)
        for r in page:
            out[(r["response"]["result"] or {}).get(key)] = r["start"]
        if len(page) < 200:
            return out
        skip += 200


def wait_for(conn: Conn, since_ms: int, wanted: set, key: str = "study_uid", timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = starts(conn, since_ms, key)
        if wanted <= set(found):
            return found
        time.sleep(0.02)
    raise SystemExit(f"gave up: {len(wanted - set(found))} of {len(wanted)} never reached the action")


def studies(n: int) -> list[tuple[str, bytes]]:
    from pydicom.uid import generate_uid

    from radcloud.ops.samples.synthetic import dataset_bytes, generate_many_studies

    root, out = f"1.2.826.0.1.3680043.10.{secrets.randbelow(10**8)}.", []
    for ds in generate_many_studies(n, matrix=16):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(root), generate_uid(root)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(root)
        out.append((str(ds.StudyInstanceUID), dataset_bytes(ds)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--fires", type=int, default=200)
    args = parser.parse_args()

    os.environ["RADCLOUD_ORTHANC_STABLE_AGE"] = "1"
    from localwhisk.testing import Server
    from radcloud.core import redisclient
    from radcloud.arrivals.watch import Watcher, trigger_fire
    from radcloud.core.openwhisk import OpenWhisk
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.ops.stack import Ports, Stack
    from radcloud.ops.stack.install import find

    tmp = Path(tempfile.mkdtemp(prefix="trigger-bench-"))
    stack = Stack(tmp / "stack", Ports.ephemeral(), binaries=find(), timeout_s=60)
    endpoints = stack.up(("orthanc", "redis"), install_missing=False)
    settings = endpoints.settings()
    # Throughput, not the namespace's fire limit (OpenWhisk's 60/min, enforced by localwhisk): raised here.
    server = Server(tmp / "whisk", max_concurrent=120, extra_args=["--fires-per-minute", "1000000"])
    stop = threading.Event()
    try:
        api_host, auth = server.start()
        conn = Conn(api_host, auth)
        for path, body in ((f"actions/{NAME}", {"exec": {"kind": "python:3.11", "code": ACTION}}),
                           (f"triggers/{TRIGGER}", {}),
                           (f"rules/{RULE}", {"trigger": f"/_/{TRIGGER}", "action": f"/_/{NAME}"})):
            status, answer = conn.call("PUT", f"/api/v1/namespaces/_/{path}?overwrite=true", body)
            assert status == 200, answer
        conn.call("POST", f"/api/v1/namespaces/_/actions/{NAME}?blocking=true", {})  # warm

        orthanc = Orthanc.from_settings(settings)
        watcher = Watcher(orthanc, redisclient.client(settings, redisclient.PROGRESS),
                          trigger_fire(OpenWhisk(api_host, auth)), stable_age_s=1)
        watcher.cursor()
        threading.Thread(target=watcher.run, args=(stop,), kwargs={"poll_s": 0.1}, daemon=True).start()

        # 1. one study at a time: stored -> the rule's action started
        latencies = []
        for uid, data in studies(args.studies):
            orthanc.store_instance(data)
            stored_ms = time.time() * 1000
            found = wait_for(conn, int(stored_ms) - 1000, {uid})
            latencies.append((found[uid] - stored_ms) / 1000)

        # 2. a burst
        burst = studies(args.burst)
        t0_ms = int(time.time() * 1000)
        for _uid, data in burst:
            orthanc.store_instance(data)
        stored_ms = time.time() * 1000
        found = wait_for(conn, t0_ms - 1000, {u for u, _ in burst})
        first, last = min(found[u] for u, _ in burst), max(found[u] for u, _ in burst)
        stop.set()

        # 3. the trigger's own cost against a direct invoke (what a manual dispatch costs)
        def timed(path: str, n: int, tag: str) -> tuple[list[float], float]:
            sent, t0 = {}, time.perf_counter()
            since = int(time.time() * 1000) - 1000
            for i in range(n):
                sent[f"{tag}{i}"] = time.time() * 1000
                status, _ = conn.call("POST", path, {"n": f"{tag}{i}"})
                assert status == 202, status
            wall = time.perf_counter() - t0
            got = wait_for(conn, since, set(sent), key="n")
            return [got[k] - sent[k] for k in sent], n / wall

        fire_ms, fires_per_s = timed(f"/api/v1/namespaces/_/triggers/{TRIGGER}", args.fires, "f")
        invoke_ms, invokes_per_s = timed(f"/api/v1/namespaces/_/actions/{NAME}", args.fires, "i")
    finally:
        stop.set()
        server.stop()
        stack.down()

    out = {
        "stable_to_job_s": {"studies": len(latencies), "p50": round(statistics.median(latencies), 3),
                            "p95": round(pct(latencies, 95), 3), "stable_age_s": 1,
                            "target_p50_s": "<= StableAge + 1 = 2"},
        "burst": {"studies": args.burst, "all_started_after_last_store_s": round((last - stored_ms) / 1000, 3),
                  "routed_per_s": round(args.burst / max(0.001, (last - first) / 1000), 1)},
        "fire_vs_invoke": {"fire_to_action_start_p50_ms": round(statistics.median(fire_ms), 2),
                           "invoke_to_action_start_p50_ms": round(statistics.median(invoke_ms), 2),
                           "ratio": round(statistics.median(fire_ms) / max(0.01, statistics.median(invoke_ms)), 2),
                           "fires_per_s": round(fires_per_s, 1), "invokes_per_s": round(invokes_per_s, 1),
                           "n": args.fires},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
