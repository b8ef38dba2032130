"""The web viewer against the PNG gallery, in headless Chromium, through localwhisk with the real stack.

    .venv/bin/python bench/viewer_bench.py                 # 300 slices of 512², 3 openings each
    .venv/bin/python bench/viewer_bench.py --slices 100 --runs 5
    .venv/bin/python bench/viewer_bench.py --no-gallery    # the viewer only (no dcm2png job)

One 300-slice 512x512 CT series (radcloud.ops.samples' phantom) is staged as
retrieve stages it, and the deployed dcm2png plugin renders it to PNGs (the
Results page's gallery). bench/viewer_bench.mjs then, in Chromium with a
profile on disk (an HTTP cache and a code cache, as a clinician's browser):

* ``viewer``: opens ``ui/viewer?series=`` (dwv on the original DICOM, read
  from S3 through presigned URLs) — time to the first image drawn, from
  navigation start and from the moment the page asks the viewer action,
  and to the whole series loaded, in three cache states:
  ``cold`` (empty cache: dwv's module fetched on the way), ``after_search``
  (a browser that never opened the viewer, 3 s on the Search page first:
  what the pages fetch ahead at idle) and ``warm`` (the viewer opened
  before: the top-level figures); ``dwv_module.from_cache`` says whether the
  module came from the cache. Then, with the lung window set (window
  applied to the raw HU values at every draw), scrolls 100 slices one
  animation frame each: frames per second and the time of one draw.
* ``gallery``: opens ``ui/view?job=`` (the PNG path) — time to the first
  thumbnail drawn; then scrolls its slice viewer (a PNG fetched and drawn
  per slice, a window preset on the 8-bit greys) over the same 100 slices.

Targets (issue 19): first image ≤ 1 s; scrolling ≥ 30 frames/s. Prints one
JSON object, with the load average before and after; medians over
``--runs`` openings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from jobflow import JobWorld  # noqa: E402

USER, PASSWORD = "bench.viewer", "a long benchmark password"


def figures_of(viewer: dict, scenario: str) -> dict:
    """The viewer's figures of one scenario: ``warm`` is the top level, the others are nested."""
    return viewer if scenario == "warm" else viewer[scenario]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scroll", type=int, default=100, help="slices scrolled")
    parser.add_argument("--no-gallery", action="store_true",
                        help="skip the PNG gallery (and the dcm2png job it needs): the viewer's figures only")
    args = parser.parse_args()

    from radcloud.ops.samples import viewerdata
    from radcloud.store.storage import ObjectStore
    from radcloud.access.users import UserStore

    with tempfile.TemporaryDirectory(prefix="radcloud-viewer-bench-") as tmp:
        load_before = [round(x, 1) for x in os.getloadavg()]
        world = JobWorld.up(Path(tmp), shard_timeout_s=300)
        try:
            t0 = time.perf_counter()
            ct = viewerdata.ct_series(args.slices, args.rows, tag="BENCH")
            viewerdata.stage(ObjectStore.from_settings(world.endpoints.settings()), world.redis, ct)
            staged_s = time.perf_counter() - t0
            series = str(ct[0].SeriesInstanceUID)
            del ct
            UserStore(world.redis).add(USER, "admin", PASSWORD)  # sees the job dispatch ran as the system
            job, png_s = "", None
            if not args.no_gallery:
                t0 = time.perf_counter()
                job = world.call("dispatch", {"plugin": "dcm2png", "inputs": {"series": [series]}})["job_id"]
                final = world.wait_final(job, timeout_s=900)
                assert final["state"] == "succeeded", final
                png_s = round(time.perf_counter() - t0, 1)
            base = world.whisk.api_host.rstrip("/")
            env = {**os.environ, "RC_UI": f"{base}/api/v1/web/guest/radcloud/ui", "RC_USER": USER,
                   "RC_PASSWORD": PASSWORD, "RC_SERIES": series, "RC_JOB": job, "RC_RUNS": str(args.runs),
                   "RC_SCROLL": str(args.scroll), "HOME": tmp}
            proc = subprocess.run(["node", str(ROOT / "bench" / "viewer_bench.mjs")], env=env, capture_output=True,
                                  text=True, timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"viewer_bench.mjs failed:\n{proc.stderr[-3000:]}")
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            viewer, gallery = figures["viewer"], figures["gallery"]
            out = {
                "series": {"slices": args.slices, "rows": args.rows, "staged_s": round(staged_s, 1),
                           "dcm2png_job_s": png_s},
                "load_average": {"before": load_before, "after": [round(x, 1) for x in os.getloadavg()]},
                **figures,
                "targets": {
                    "viewer_first_image_le_1s": {k: figures_of(viewer, k)["first_image_from_navigation_ms"] <= 1000
                                                 for k in ("warm", "after_search", "cold")},
                    "viewer_scroll_ge_30fps": viewer["scroll"]["fps"] >= 30,
                },
            }
            if gallery:
                out["ratios"] = {
                    "first_image_gallery_over_viewer_warm": round(gallery["first_image_from_navigation_ms"]
                                                                  / viewer["first_image_from_navigation_ms"], 2),
                    "scroll_fps_viewer_over_gallery": round(viewer["scroll"]["fps"] / gallery["scroll"]["fps"], 2),
                }
            print(json.dumps(out, indent=1))
        finally:
            world.down()


if __name__ == "__main__":
    main()
