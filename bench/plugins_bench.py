"""Throughput of the five plugins, and dcm2png against med2image (ChRIS's pl-med2img).

    .venv/bin/python bench/plugins_bench.py                      # all plugins, 3 runs each
    .venv/bin/python bench/plugins_bench.py --plugins dcm2png --runs 5 \
        --med2image /tmp/med2image-venv/bin/med2image

Data: one 100-slice 512x512 CT series from radcloud.ops.samples (the series
stack.md's figures use; ChRIS measured med2image at 16.8 images/s on it).
Every plugin runs as the shard runner runs it, a fresh process
``python plugins/<name>/<entry> inputdir outputdir`` (so start-up counts,
as it does for med2image); ``--shard`` also runs dcm2png through
radcloud.run.shard.run_shard (bubblewrap sandbox, in-memory store) to show the
runner's overhead. Runs alternate between tools so machine load hits both;
the median is reported, with each tool's peak RSS against the 512 MB its
action gets. One JSON line per measurement.

med2image is not a radcloud dependency: install it into a separate venv
(it needs pydicom<3): ``python -m venv /tmp/med2image-venv &&
/tmp/med2image-venv/bin/pip install med2image==2.6.6 pydicom==2.4.4 scipy``.
It is looked up in --med2image, $MED2IMAGE, PATH, then that venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from radcloud.ops.samples.spec import retrieve_bench_spec
from radcloud.ops.samples.synthetic import write_studies

REPO = Path(__file__).resolve().parents[1]
ACTION_MB = 512  # memorySize of every plugin-<name> action: OpenWhisk's default cap
ENTRIES = {"dcm2png": "dcm2png.py", "dicom-tags": "dicom_tags.py", "dcm2niix": "dcm2niix_plugin.py",
           "deidentify": "deidentify.py", "segment-stats": "segment_stats.py"}
MED2IMAGE_VENV = "/tmp/med2image-venv/bin/med2image"


def find_med2image(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("MED2IMAGE"), shutil.which("med2image"), MED2IMAGE_VENV):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd``: (wall seconds, peak RSS in MB of that process, from its own rusage)."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            tail = log.read()[-500:].decode(errors="replace")
            raise RuntimeError(f"{cmd[1] if len(cmd) > 1 else cmd[0]} failed: {tail}")
    return elapsed, usage.ru_maxrss / 1024


def own_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def plugin_cmd(name: str, inp: Path, out: Path) -> list[str]:
    return [sys.executable, str(REPO / "plugins" / name / ENTRIES[name]), str(inp), str(out)]


def shard_run(inp: Path, work: Path) -> float:
    from radcloud.run.registry import Registry
    from radcloud.run.shard import run_shard
    from radcloud.store.storage import ObjectInfo

    class Store:  # in memory: measures the runner, not S3
        def __init__(self) -> None:
            self.objects = {f"in/{p.name}": p.read_bytes() for p in sorted(inp.glob("*.dcm"))}

        def get_to_file(self, key, path):
            Path(path).write_bytes(self.objects[key])

        def put_file(self, key, path, *, content_type=None):
            data = Path(path).read_bytes()
            self.objects[key] = data
            return ObjectInfo(key, len(data), "")

    class Reporter:
        def running(self, *a): pass
        def started(self, *a): pass
        def progress(self, *a): pass
        def log(self, *a): pass
        def cancelled(self): return False
        def finished(self, shard_id, outcome): self.outcome = outcome

    store, rep = Store(), Reporter()
    keys = sorted(store.objects)
    t0 = time.perf_counter()
    run_shard({"job_id": "bench", "shard_id": "bench-0", "plugin": "dcm2png", "inputs": keys,
               "input_prefix": "in/", "output_prefix": "out/"}, store=store, reporter=rep,
              registry=Registry(REPO / "plugins"), workdir=str(work))
    elapsed = time.perf_counter() - t0
    if rep.outcome["reason"] != "ok":
        raise RuntimeError(f"shard failed: {rep.outcome['message']}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plugins", default=",".join(ENTRIES), help="comma-separated plugin names")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--med2image", default=None)
    ap.add_argument("--shard", action="store_true", help="also time dcm2png through run_shard")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="radcloud-plugins-bench-"))
    try:
        paths = write_studies(work / "nested", retrieve_bench_spec(1, a.slices))
        inp = work / "ct"
        inp.mkdir()
        for p in paths:
            shutil.move(str(p), inp / p.name)
        n = len(paths)
        env = {**os.environ, "RADCLOUD_DEID_SECRET": "bench-secret-0123456789"}
        med2image = find_med2image(a.med2image)
        tools = [t for t in a.plugins.split(",") if t]
        if "dcm2png" in tools and med2image:
            tools.append("med2image")
        if a.shard and "dcm2png" in tools:
            tools.append("dcm2png-shard")
        times: dict[str, list[float]] = {t: [] for t in tools}
        peaks: dict[str, list[float]] = {t: [] for t in tools}
        for run in range(a.runs):
            for tool in tools:
                out = work / f"out-{tool}-{run}"
                out.mkdir()
                if tool == "med2image":
                    cmd = [med2image, "-i", str(sorted(inp.glob("*.dcm"))[0]), "-d", str(out), "-o", "slice.png",
                           "-s", "-1"]
                    elapsed, peak = timed(cmd)
                    times[tool].append(elapsed)
                    peaks[tool].append(peak)
                elif tool == "dcm2png-shard":
                    times[tool].append(shard_run(inp, out))
                else:
                    elapsed, peak = timed(plugin_cmd(tool, inp, out), env)
                    times[tool].append(elapsed)
                    peaks[tool].append(peak)
                shutil.rmtree(out, ignore_errors=True)
        results = {}
        for tool, samples in times.items():
            med = statistics.median(samples)
            results[tool] = {"bench": "plugins", "tool": tool, "images": n, "runs": len(samples),
                             "median_s": round(med, 3), "images_per_s": round(n / med, 1),
                             "series_per_s": round(1 / med, 3), "samples_s": [round(s, 3) for s in samples]}
            if peaks[tool]:  # the plugin actions get 512 MB (deploy/manifest.yaml): a bigger peak is killed
                # Linux carries the forking parent's RSS into the child's maxrss: below this, a floor.
                results[tool] |= {"peak_rss_MB": round(max(peaks[tool]), 1), "floor_MB": round(own_rss_mb(), 1),
                                  "action_memory_MB": ACTION_MB, "fits_action": max(peaks[tool]) < ACTION_MB}
            print(json.dumps(results[tool]))
        if "med2image" in results and "dcm2png" in results:
            # Runs alternate, so run k of each tool saw similar load: compare pairwise too.
            pairs = sorted(m / d for m, d in zip(times["med2image"], times["dcm2png"]))
            print(json.dumps({"bench": "plugins", "comparison": "dcm2png vs med2image",
                              "speedup": round(results["dcm2png"]["images_per_s"] /
                                               results["med2image"]["images_per_s"], 2),
                              "speedup_per_run_min_median_max": [round(pairs[0], 2),
                                                                 round(statistics.median(pairs), 2),
                                                                 round(pairs[-1], 2)],
                              "chris_reference_images_per_s": 16.8}))
        elif "dcm2png" in tools:
            print(json.dumps({"bench": "plugins", "note": "med2image not found; see the module docstring"}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
