"""Retrieve benchmark: Orthanc -> S3 staging against the bound and ChRIS's path, one run.

    .venv/bin/python bench/retrieve_bench.py [--series 5 --slices 100] [--pypx-bin DIR]

Starts the real stack + localwhisk in a temp dir (tests/e2e/jobflow.py),
seeds a CT study of ``series x slices`` 512x512 instances (default 500,
~263 MB) and measures, in the same run:

* out of Orthanc to /dev/null: per-instance ``GET /instances/{id}/file``
  (sequential), WADO-RS multipart (whole study and per series), dcmtk
  ``getscu`` C-GET (writes files: a transfer-path candidate);
* S3 ingest of the same objects from memory (minio SDK, 1 and 2 threads);
* the bound = min(fastest Orthanc read, faster of the 1- and 2-thread S3
  ingests), re-measured in every round;
* radcloud's pipeline (radcloud.work.retrieve.Stager) in a child process, with
  1 to 4 workers (the default, ``retrieve_workers``, is headlined), and on 1
  series vs the whole study: MB/s, instances/s, peak RSS (must not grow
  with study size);
* the deployed ``retrieve`` action through localwhisk (fan-out per series),
  wall time until the retrieve is ``succeeded``: the first call (cold: every
  action container starts) and the median of warm calls;
* where the CPU goes in a default-worker run: seconds of CPU used by Orthanc,
  SeaweedFS and the pipeline process (the machine has 2 cores; the sum
  over the wall time says how busy they were);
* ChRIS's path: dcmtk ``movescu`` per series into a ``storescp`` writing
  files, with and without TCP_NODELAY, and ``px-move`` (``--rounds`` runs,
  the median compared) when ``--pypx-bin`` points at a venv with pypx
  installed (not a radcloud dependency).

Prints one JSON object; ratios are computed against figures of this run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def mbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1) if seconds > 0 else 0.0


# -- child: one staging run, so its peak RSS is its own ---------------------------
def child_stage(args: argparse.Namespace) -> None:
    from radcloud.pacs.orthanc import Orthanc
    from radcloud.work.retrieves import Progress
    from radcloud.work.retrieve import Stager, parse_request, plan
    from radcloud.core.settings import Settings
    from radcloud.store.storage import ObjectStore

    settings = Settings.load(environ={**os.environ})
    orthanc, store = Orthanc.from_settings(settings), ObjectStore.from_settings(settings)
    progress = Progress.from_settings(settings)
    series = plan(parse_request({"StudyInstanceUID": args.study}), orthanc)[: args.series_limit or None]
    for s in series:
        store.delete_prefix(f"staged/{args.study}/{s['SeriesInstanceUID']}/")
    rid = progress.create(series, source="bench", layout="uid")
    stager = Stager(orthanc, store, progress, workers=args.workers)
    t0 = time.perf_counter()
    results = [stager.stage(rid, s) for s in series]
    seconds = time.perf_counter() - t0
    nbytes = sum(r.get("bytes", 0) for r in results)
    count = sum(r.get("done", 0) for r in results)
    print(json.dumps({"seconds": round(seconds, 3), "bytes": nbytes, "instances": count,
                      "states": sorted({r["state"] for r in results}),
                      "MBps": mbps(nbytes, seconds), "instances_per_s": round(count / seconds, 1),
                      "peak_rss_MB": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's RSS high-water mark. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over from the forking parent, which holds the study in memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(env: dict, study: str, workers: int, series_limit: int = 0, services_under: Path | None = None) -> dict:
    before = service_cpu_s(services_under) if services_under else {}
    r0 = os.times()
    out = subprocess.run([sys.executable, __file__, "--child", "--study", study, "--workers", str(workers),
                          "--series-limit", str(series_limit)], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=900, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if services_under:
        r1, after = os.times(), service_cpu_s(services_under)
        result["cpu_s"] = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
        # the child's whole life, interpreter start-up included (~0.4 s)
        result["cpu_s"]["pipeline"] = round(r1.children_user + r1.children_system
                                            - r0.children_user - r0.children_system, 2)
    return result


def service_cpu_s(root: Path) -> dict[str, float]:
    """CPU seconds used so far by this run's Orthanc and SeaweedFS (found by their state dir)."""
    names = {"Orthanc": "Orthanc", "weed": "SeaweedFS"}
    out = {label: 0.0 for label in names.values()}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        label = names.get(os.path.basename(argv[0].decode(errors="replace")))
        if label and str(root).encode() in b" ".join(argv):
            out[label] += (int(fields[11]) + int(fields[12])) / tick
    return out


# -- the bound ---------------------------------------------------------------------
def orthanc_reads(ep, study: str) -> dict:
    import requests

    s = requests.Session()
    s.auth = ep.auth
    s.headers["Accept-Encoding"] = "identity"
    series = s.post(ep.url + "/tools/find", json={"Level": "Series", "Expand": True,
                                                   "Query": {"StudyInstanceUID": study}}).json()
    ids = [i for se in series for i in se["Instances"]]
    out = {}
    t0, n = time.perf_counter(), 0
    for iid in ids:
        with s.get(f"{ep.url}/instances/{iid}/file", stream=True) as r:
            for block in r.iter_content(1 << 20):
                n += len(block)
    out["rest_per_instance_MBps"] = mbps(n, time.perf_counter() - t0)
    out["study_bytes"], out["instances"] = n, len(ids)
    t0 = time.perf_counter()
    with s.get(f"{ep.url}/dicom-web/studies/{study}", stream=True,
               headers={"Accept": 'multipart/related; type="application/dicom"'}) as r:
        m = sum(len(b) for b in r.iter_content(1 << 20))
    out["wado_study_MBps"] = mbps(m, time.perf_counter() - t0)
    t0, m = time.perf_counter(), 0
    for se in series:
        uid = se["MainDicomTags"]["SeriesInstanceUID"]
        with s.get(f"{ep.url}/dicom-web/studies/{study}/series/{uid}", stream=True,
                   headers={"Accept": 'multipart/related; type="application/dicom"'}) as r:
            m += sum(len(b) for b in r.iter_content(1 << 20))
    out["wado_series_MBps"] = mbps(m, time.perf_counter() - t0)
    t0 = time.perf_counter()
    md5s = [s.get(f"{ep.url}/instances/{i}/attachments/dicom/md5").text for i in ids]
    out["md5_lookup_ms_each"] = round((time.perf_counter() - t0) / len(md5s) * 1000, 2)
    return out, ids, s


class Ingest:
    """S3 ingest of the study's objects from memory (the S3 half of the bound)."""

    def __init__(self, settings, session, ep, ids: list[str]) -> None:
        from radcloud.store.storage import ObjectStore

        self.store = ObjectStore.from_settings(settings)
        self.blobs = [session.get(f"{ep.url}/instances/{i}/file").content for i in ids]
        self.total = sum(map(len, self.blobs))

    def run(self, threads: int) -> float:
        import io
        from concurrent.futures import ThreadPoolExecutor

        store = self.store
        store.delete_prefix("bench-ingest/")
        t0 = time.perf_counter()

        def put(k: int) -> None:
            data = self.blobs[k]
            store.client.put_object(store.bucket, f"bench-ingest/{k}.dcm", io.BytesIO(data), len(data),
                                    part_size=64 << 20)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, range(len(self.blobs))))
        seconds = time.perf_counter() - t0
        store.delete_prefix("bench-ingest/")
        return mbps(self.total, seconds)


def cget(ep, test_aet: str, study: str, tmp: Path) -> dict:
    if not shutil.which("getscu"):
        return {"getscu_MBps": None}
    out_dir = tmp / "cget"
    out_dir.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["getscu", "-aet", test_aet, "-aec", ep.aet, "--max-pdu", "131072", "-od", str(out_dir),
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                    "127.0.0.1", str(ep.dicom_port)], env={**os.environ, "TCP_NODELAY": "1"},
                   check=True, capture_output=True, timeout=600)
    seconds = time.perf_counter() - t0
    n = sum(p.stat().st_size for p in out_dir.iterdir())
    shutil.rmtree(out_dir)
    return {"getscu_MBps": mbps(n, seconds)}


# -- ChRIS's path ------------------------------------------------------------------
def chris_moves(ep, endpoints, study: str, series_uids: list[str], tmp: Path, *, nodelay: bool,
                pypx_bin: str | None = None) -> dict:
    out_dir = tmp / f"storescp-{nodelay}-{bool(pypx_bin)}"
    out_dir.mkdir()
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    scp = subprocess.Popen(["storescp", "-aet", endpoints.test_aet, "--max-pdu", "131072", "-od", str(out_dir),
                            str(endpoints.test_scp_port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        t0 = time.perf_counter()
        for uid in series_uids:
            if pypx_bin:
                cmd = [os.path.join(pypx_bin, "px-move"), "--aet", endpoints.test_aet, "--aec", ep.aet,
                       "--serverIP", "127.0.0.1", "--serverPort", str(ep.dicom_port),
                       "--StudyInstanceUID", study, "--SeriesInstanceUID", uid]
            else:
                cmd = ["movescu", "-S", "-aet", endpoints.test_aet, "-aec", ep.aet, "--move", endpoints.test_aet,
                       "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
                       "-k", f"SeriesInstanceUID={uid}", "127.0.0.1", str(ep.dicom_port)]
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        # movescu returns once every C-STORE was acknowledged: storescp has written the files.
        n = sum(p.stat().st_size for p in out_dir.iterdir())
        seconds = time.perf_counter() - t0
        return {"files": len(list(out_dir.iterdir())), "MBps": mbps(n, seconds),
                "instances_per_s": round(len(list(out_dir.iterdir())) / seconds, 1)}
    finally:
        scp.terminate()
        scp.wait(10)
        shutil.rmtree(out_dir, ignore_errors=True)


def action_retrieve(world, study: str, warm_runs: int = 3) -> dict:
    """The first call (cold containers), then the median of ``warm_runs`` calls."""
    cold = action_retrieve_once(world, study)
    warm = [action_retrieve_once(world, study) for _ in range(warm_runs)]
    median = sorted(warm, key=lambda r: r["MBps"])[len(warm) // 2]
    return {"cold": cold, "warm_median": median, "warm_MBps": [r["MBps"] for r in warm]}


def action_retrieve_once(world, study: str) -> dict:
    from radcloud.store.storage import ObjectStore

    store = ObjectStore.from_settings(world.endpoints.settings())
    store.delete_prefix(f"staged/{study}/")
    t0 = time.perf_counter()
    answer = world.call("retrieve", {"StudyInstanceUID": study})
    rid = answer["retrieve_id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        view = world.call("retrieve", {"retrieve_id": rid})
        if view["state"] in ("succeeded", "failed", "partial"):
            break
        time.sleep(0.25)  # each poll is an activation: polling faster steals CPU from staging
    seconds = time.perf_counter() - t0
    return {"state": view["state"], "seconds": round(seconds, 2), "MBps": mbps(view["bytes"], seconds),
            "instances_per_s": round(view["instances_done"] / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=5)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--pypx-bin", default=os.environ.get("RADCLOUD_BENCH_PYPX_BIN"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--study")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--series-limit", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        return child_stage(args)

    from jobflow import JobWorld

    from radcloud.ops.samples.seed import seed_orthanc
    from radcloud.ops.samples.spec import retrieve_bench_spec

    tmp = Path(tempfile.mkdtemp(prefix="radcloud-retrieve-bench-"))
    world = JobWorld.up(tmp)
    try:
        ep, endpoints = world.endpoints.orthanc, world.endpoints
        settings = endpoints.settings()
        t0 = time.perf_counter()
        seeded = seed_orthanc(settings, spec=retrieve_bench_spec(args.series, args.slices),
                              include_pydicom_files=False)
        report: dict = {"seed_s": round(time.perf_counter() - t0, 1), "instances": seeded.get("instances")}
        import requests
        study = requests.post(ep.url + "/tools/find", auth=ep.auth, json={
            "Level": "Study", "Expand": True, "Query": {"AccessionNumber": "RCBR000001"}}).json()[0]
        uid = study["MainDicomTags"]["StudyInstanceUID"]
        reads, ids, session = orthanc_reads(ep, uid)
        report["orthanc"] = reads
        ingest = Ingest(settings, session, ep, ids)
        report["s3"] = {"s3_ingest_1t_MBps": ingest.run(1), "s3_ingest_2t_MBps": ingest.run(2)}
        report["cget"] = cget(ep, endpoints.test_aet, uid, tmp)
        fastest_read = max(reads["rest_per_instance_MBps"], reads["wado_study_MBps"], reads["wado_series_MBps"])
        env = endpoints.env()
        # The machine is shared: alternate bound and pipeline, compare within each round.
        from radcloud.core.settings import Settings

        default_w = Settings.load(environ={}).retrieve_workers
        workers = sorted({1, 2, 3, 4, default_w})
        rounds = []
        for _ in range(args.rounds):
            # The bound is the faster ingest: the pipeline's workers are several uploaders.
            s3 = max(ingest.run(1), ingest.run(2))
            bound_r = min(fastest_read, s3)
            runs = {w: run_child(env, uid, w, services_under=tmp if w == default_w else None) for w in workers}
            rounds.append({"bound_MBps": bound_r,
                           **{f"pipeline_{w}w_MBps": runs[w]["MBps"] for w in workers},
                           **{f"ratio_{w}w": round(runs[w]["MBps"] / bound_r, 2) for w in workers},
                           "instances_per_s_default": runs[default_w]["instances_per_s"],
                           "peak_rss_MB_default": runs[default_w]["peak_rss_MB"],
                           "cpu_s_default": {**runs[default_w]["cpu_s"], "wall": runs[default_w]["seconds"]}})
        del ingest
        report["rounds"] = rounds
        med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
        bound = med("bound_MBps")
        report["bound_MBps"] = bound
        report["pipeline_default"] = {"workers": default_w, "MBps": med(f"pipeline_{default_w}w_MBps"),
                                      "instances_per_s": med("instances_per_s_default"),
                                      "peak_rss_MB": max(r["peak_rss_MB_default"] for r in rounds)}
        report["pipeline_one_series"] = run_child(env, uid, default_w, series_limit=1)
        report["rerun_noop"] = run_child_rerun(env, uid)
        report["action_localwhisk"] = action_retrieve(world, uid)
        series_uids = [requests.get(f"{ep.url}/series/{s}", auth=ep.auth).json()["MainDicomTags"]["SeriesInstanceUID"]
                       for s in study["Series"]]
        report["chris_movescu_tuned"] = chris_moves(ep, endpoints, uid, series_uids, tmp, nodelay=True)
        report["chris_movescu_shipped"] = chris_moves(ep, endpoints, uid, series_uids, tmp, nodelay=False)
        if args.pypx_bin:  # the figure the target names: a median, it varies run to run
            moves = [chris_moves(ep, endpoints, uid, series_uids, tmp, nodelay=True, pypx_bin=args.pypx_bin)
                     for _ in range(args.rounds)]
            report["chris_px_move_tuned"] = {**sorted(moves, key=lambda m: m["MBps"])[len(moves) // 2],
                                             "runs_MBps": [m["MBps"] for m in moves]}
        pipeline = report["pipeline_default"]["MBps"]
        chris_tuned = report.get("chris_px_move_tuned", report["chris_movescu_tuned"])["MBps"]
        report["ratios"] = {
            "pipeline_vs_bound_same_round": med(f"ratio_{default_w}w"),  # the default worker count
            "pipeline_vs_bound_by_workers": {w: med(f"ratio_{w}w") for w in workers},
            "pipeline_vs_chris_tuned": round(pipeline / chris_tuned, 2) if chris_tuned else None,
            "pipeline_vs_movescu_shipped": round(pipeline / report["chris_movescu_shipped"]["MBps"], 2),
            "action_warm_vs_bound": round(report["action_localwhisk"]["warm_median"]["MBps"] / bound, 2),
            "action_cold_vs_bound": round(report["action_localwhisk"]["cold"]["MBps"] / bound, 2),
            "action_warm_vs_chris_tuned": round(report["action_localwhisk"]["warm_median"]["MBps"] / chris_tuned, 2)
            if chris_tuned else None,
            "pipeline_vs_movescu_tuned": round(pipeline / report["chris_movescu_tuned"]["MBps"], 2),
            "rss_whole_study_vs_one_series": round(report["pipeline_default"]["peak_rss_MB"]
                                                   / report["pipeline_one_series"]["peak_rss_MB"], 2),
        }
        print(json.dumps(report, indent=1))
    finally:
        world.down()
        shutil.rmtree(tmp, ignore_errors=True)


def run_child_rerun(env: dict, study: str) -> dict:
    """A second staging of what is already staged: every instance skipped."""
    out = subprocess.run([sys.executable, "-c", (
        "import json,os,time,sys;sys.path.insert(0,%r)\n"
        "from radcloud.pacs.orthanc import Orthanc\nfrom radcloud.work.retrieve import Stager, parse_request, plan\n"
        "from radcloud.core.settings import Settings\nfrom radcloud.store.storage import ObjectStore\n"
        "s=Settings.load(environ=dict(os.environ));o=Orthanc.from_settings(s)\n"
        "series=plan(parse_request({'StudyInstanceUID': %r}), o);st=Stager(o, ObjectStore.from_settings(s))\n"
        "t=time.perf_counter();r=[st.stage('bench', x) for x in series];dt=time.perf_counter()-t\n"
        "print(json.dumps({'seconds': round(dt,3), 'skipped': sum(x.get('skipped',0) for x in r),"
        " 'bytes': sum(x.get('bytes',0) for x in r)}))") % (str(ROOT), study)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
