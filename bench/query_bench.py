"""Query benchmark: the query web action through localwhisk vs ChRIS's pypx, one run.

    .venv/bin/python bench/query_bench.py [--studies 1000] [--runs 200] [--pypx-bin DIR]

Starts the real stack + localwhisk (tests/e2e/jobflow.py), seeds an Orthanc
with ``--studies`` small studies (radcloud.ops.samples archive_bench_spec) and
times the same search — one patient's studies by MRN, with series/instance
counts — done by:

* the ``query`` web action through localwhisk (GET, bearer token, one
  keep-alive connection): p50/p99 (an MRN search goes straight to the
  patient; a second search, by name and date range, shows the
  ``/tools/find`` path, whose cost grows with the archive);
* the same action invoked blocking through the OpenWhisk REST API;
* the library in-process (radcloud.pacs.search.run), the floor under both;
* pypx ``px-find`` (one process per query, dcmtk findscu: STUDY then
  SERIES level, as ChRIS's pfdcm runs it) and ``pypx.find()`` in-process,
  from a separate venv given by ``--pypx-bin`` (pypx is not a radcloud
  dependency: it pins old libraries). TCP_NODELAY is set for findscu,
  which only makes the baselines faster.

Prints one JSON object with the ratios against the pypx figures of this run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def stats(values: list[float]) -> dict:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(round(len(values) * 0.99)) - 1)]
    return {"p50_ms": round(statistics.median(values) * 1000, 2), "p99_ms": round(p99 * 1000, 2),
            "n": len(values)}


PYPX_INPROCESS = r"""
import asyncio, importlib, json, sys, time
import pypx
find_mod = importlib.import_module("pypx.find")
cfg = json.loads(sys.argv[1])
parser = find_mod.parser_setup("bench")
times = []
for _ in range(cfg["runs"]):
    args = vars(find_mod.parser_interpret(parser, cfg["argv"]))
    t = time.perf_counter()
    out = asyncio.run(pypx.find(args))
    times.append(time.perf_counter() - t)
studies = len(out.get("data", []))
print(json.dumps({"times": times, "studies": studies}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--pypx-runs", type=int, default=20)
    ap.add_argument("--pypx-bin", default=os.environ.get("RADCLOUD_BENCH_PYPX_BIN"))
    args = ap.parse_args()

    from jobflow import JobWorld

    from radcloud.pacs import query as q
    from radcloud.pacs import search
    from radcloud.access.auth import issue_token
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.ops.samples.seed import seed_orthanc
    from radcloud.ops.samples.spec import archive_bench_spec
    from radcloud.core.settings import Settings
    from radcloud.access.users import UserStore

    tmp = Path(tempfile.mkdtemp(prefix="radcloud-query-bench-"))
    world = JobWorld.up(tmp)
    try:
        endpoints, ep = world.endpoints, world.endpoints.orthanc
        settings = Settings.load(environ=world.env)
        t0 = time.perf_counter()
        seed_orthanc(settings, spec=archive_bench_spec(args.studies), include_pydicom_files=False, workers=4)
        time.sleep(8)  # let Orthanc finish its post-ingest work (StableAge 5 s) before timing
        orthanc = Orthanc.from_settings(settings)
        report: dict = {"seed_s": round(time.perf_counter() - t0, 1),
                        "studies_in_orthanc": len(orthanc.find("Study", {}, expand=False))}
        mrn = "RCQ000123"
        search_params = {"PatientID": mrn}

        # library in-process
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            answer = search.run(q.parse(search_params), orthanc)
            times.append(time.perf_counter() - t)
        report["library"] = stats(times)
        report["studies_found"] = answer["total"]

        # web action through localwhisk
        user = UserStore(world.redis).add("bench-clinician", "clinician", password="bench-password-123")
        token = issue_token(settings, user)
        u = urlparse(world.whisk.api_host)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=70)
        path = "/api/v1/web/guest/radcloud/query.http?" + urlencode(search_params)
        headers = {"Authorization": f"Bearer {token}"}
        times = []
        for k in range(args.runs + 5):
            t = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if k >= 5:  # the first calls start the action's container
                times.append(time.perf_counter() - t)
        assert resp.status == 200, (resp.status, body[:300])
        assert json.loads(body)["total"] == report["studies_found"]
        report["web_action"] = stats(times)

        # A search Orthanc must answer with /tools/find (no MRN): its cost grows with the archive.
        find_params = {"PatientName": "*^*", "StudyDate": "20240101-20240331", "limit": 20}
        find_path = "/api/v1/web/guest/radcloud/query.http?" + urlencode(find_params)
        times = []
        for _ in range(min(args.runs, 100)):
            t = time.perf_counter()
            conn.request("GET", find_path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            times.append(time.perf_counter() - t)
        assert resp.status == 200, (resp.status, body[:300])
        report["web_action_find_path"] = {**stats(times), "search": find_params,
                                          "studies_found": json.loads(body)["total"]}

        # blocking invoke through the REST API
        times = []
        for _ in range(min(args.runs, 100)):
            t = time.perf_counter()
            status, body = world.whisk.invoke("radcloud/query", search_params)
            times.append(time.perf_counter() - t)
        report["invoke_action"] = stats(times)

        if args.pypx_bin:
            argv = ["--aet", endpoints.test_aet, "--aec", ep.aet, "--serverIP", "127.0.0.1",
                    "--serverPort", str(ep.dicom_port), "--PatientID", mrn]
            env = {**os.environ, "TCP_NODELAY": "1", "PATH": f"{args.pypx_bin}:{os.environ['PATH']}"}
            times = []
            for _ in range(args.pypx_runs):
                t = time.perf_counter()
                subprocess.run([os.path.join(args.pypx_bin, "px-find"), *argv, "--json"], env=env, check=True,
                               capture_output=True, timeout=120)
                times.append(time.perf_counter() - t)
            report["px_find_cli"] = stats(times)
            out = subprocess.run([os.path.join(args.pypx_bin, "python"), "-c", PYPX_INPROCESS,
                                  json.dumps({"runs": args.pypx_runs + 2, "argv": argv})],
                                 env=env, check=True, capture_output=True, text=True, timeout=600)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            report["pypx_find_inprocess"] = stats(result["times"][2:])
            report["pypx_studies_found"] = result["studies"]
            web = report["web_action"]["p50_ms"]
            report["ratios"] = {
                "px_find_over_web_p50": round(report["px_find_cli"]["p50_ms"] / web, 1),
                "pypx_find_over_web_p50": round(report["pypx_find_inprocess"]["p50_ms"] / web, 1),
            }
        else:
            report["pypx"] = "not measured: pass --pypx-bin DIR (a venv with `pip install pypx`)"
        print(json.dumps(report, indent=1))
    finally:
        world.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
