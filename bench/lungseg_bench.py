"""lung-seg's memory against the number of slices, under the memory limit its action gets.

    .venv/bin/python bench/lungseg_bench.py                       # 100, 300, 500 slices of 512²
    .venv/bin/python bench/lungseg_bench.py --slices 270,600 --baseline f88e5de

Each run is the plugin as the shard runner starts it (``python
plugins/lung-seg/lung_seg.py inputdir outputdir``, a fresh process) inside
a memory cgroup with the action's limit (``limits.memory`` of
``plugin-lung-seg``, 512 MB), made by localwhisk's own limiter
(:mod:`localwhisk.runtime.memory`: what a deployed container gets here, as
OpenWhisk's ``docker run --memory``). TMPDIR is on disk, as an action's
/tmp is. Measured per run: the exit (an OOM kill shows as ``oom``), the
cgroup's peak (page cache included: the kernel fills the limit with cache
and reclaims it), the peak of the processes' own (anonymous) memory,
sampled every 20 ms, and the wall time.

The same series run through ``--baseline`` (a git commit; default
f88e5de, lung-seg 1.1.0 as it landed with the whole volume in memory),
checked out into a temporary folder, so before and after share one
machine and one run. Data: the synthetic chest phantom of
:mod:`radcloud.ops.samples.viewerdata` (512² slices, 2.5 mm apart), written
once per size.

One JSON line per run, then a table. Needs a writable memory cgroup
(root); elsewhere the limiter falls back to polling RSS and says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "lung-seg"
FILES = ("lung_seg.py", "segment.py")


def write_ct(folder: Path, slices: int, rows: int) -> None:
    from radcloud.ops.samples import viewerdata

    folder.mkdir(parents=True)
    for i, ds in enumerate(viewerdata.ct_series(slices, rows, tag=f"BENCH{slices}")):
        (folder / f"{i:04d}.dcm").write_bytes(viewerdata.ds_bytes(ds))


# The baseline's imports of radcloud as they were before the package was regrouped (issue 17).
MOVED = {"from radcloud import segsr": "from radcloud.results import segsr",
         "from radcloud.filereasons import": "from radcloud.run.filereasons import"}


def baseline_plugin(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    for name in FILES:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:plugins/lung-seg/{name}"],
                              capture_output=True, text=True, check=True).stdout
        for old, new in MOVED.items():
            text = text.replace(old, new)
        (into / name).write_text(text)
    return into


def anon_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run_one(limiter, plugin: Path, inp: Path, work: Path, limit_mb: int, cid: str) -> dict:
    out, tmp = work / "out", work / "tmp"
    out.mkdir(parents=True)
    tmp.mkdir()
    box = limiter.box(cid)
    box.set_limit(limit_mb << 20)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{plugin}:{REPO}", "TMPDIR": str(tmp), "HOME": str(work)}
    argv = box.wrap([sys.executable, str(plugin / "lung_seg.py"), str(inp), str(out)])
    anon_peak, done = 0, threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    box.started(proc.pid)

    def sample() -> None:
        nonlocal anon_peak
        while not done.is_set():
            pids = box.pids() if hasattr(box, "pids") else [proc.pid]
            anon_peak = max(anon_peak, anon_bytes(pids))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    oom = box.oom_kills()
    peak = box.peak()
    box.remove()
    segmented = (out / "seg" / "series-001.dcm").is_file()
    return {"exit": "oom" if oom else proc.returncode, "segmented": segmented,
            "cgroup_peak_mib": round(peak / 2**20, 1) if peak else None,
            "anon_peak_mib": round(anon_peak / 2**20, 1), "seconds": round(seconds, 2),
            "stderr": "" if proc.returncode == 0 else err[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", default="100,300,500")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--limit-mb", type=int, default=512, help="the action's memory limit")
    ap.add_argument("--baseline", default="f88e5de", help="git commit of the code to compare with ('' for none)")
    a = ap.parse_args()
    from localwhisk.runtime.memory import detect

    limiter = detect()
    print(json.dumps({"limiter": limiter.kind, "reason": limiter.reason}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lungseg-bench-", dir=str(REPO / "artifacts")
                                     if (REPO / "artifacts").is_dir() else None) as d:
        base = Path(d)
        versions = {"now": PLUGIN}
        if a.baseline:
            versions[a.baseline] = baseline_plugin(a.baseline, base / "baseline")
        for n in (int(s) for s in a.slices.split(",")):
            inp = base / f"ct{n}"
            write_ct(inp, n, a.rows)
            for k, (name, plugin) in enumerate(versions.items()):
                record = {"slices": n, "rows": a.rows, "code": name, "limit_mb": a.limit_mb,
                          **run_one(limiter, plugin, inp, base / f"run{n}-{k}", a.limit_mb, f"c{n}{k}")}
                print(json.dumps(record), flush=True)
                rows.append(record)
    limiter.close()
    print(f"\n{'slices':>6} {'code':>8} {'exit':>5} {'cgroup peak':>12} {'own (anon) peak':>16} {'seconds':>8}")
    for r in rows:
        print(f"{r['slices']:>6} {r['code']:>8} {str(r['exit']):>5} {r['cgroup_peak_mib'] or '-':>9} MiB "
              f"{r['anon_peak_mib']:>12} MiB {r['seconds']:>8}")


if __name__ == "__main__":
    main()
