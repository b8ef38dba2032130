"""Measure sample generation and Orthanc seeding speed.

    set -a; . .radcloud/env; set +a          # RADCLOUD_ORTHANC_* of a running stack
    .venv/bin/python bench/seed_bench.py --spec default --workers 1,4 --reset
    .venv/bin/python bench/seed_bench.py --spec archive:1000      # query-benchmark archive
    .venv/bin/python bench/seed_bench.py --spec retrieve           # 500-instance 512² CT study
    .venv/bin/python bench/seed_bench.py --generate-only

``--reset`` deletes the spec's own studies (found by their UIDs) before
each timed seed, so every worker count uploads everything; without it a
second seed measures the idempotent no-op. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import requests

from radcloud.ops.samples.seed import seed_orthanc
from radcloud.ops.samples.spec import DEFAULT_SPEC, Spec, archive_bench_spec, retrieve_bench_spec
from radcloud.ops.samples.synthetic import dataset_bytes, generate_studies, plan
from radcloud.core.settings import Settings


def parse_spec(text: str) -> Spec:
    if text == "default":
        return DEFAULT_SPEC
    if text == "retrieve":
        return retrieve_bench_spec()
    if text.startswith("archive:"):
        return archive_bench_spec(int(text.split(":", 1)[1]))
    raise SystemExit(f"--spec {text!r}: use default, retrieve or archive:N")


def generate_only(spec: Spec) -> dict:
    # CPU seconds too: on a shared machine wall time mostly measures the neighbours.
    started, cpu_started = time.perf_counter(), time.process_time()
    count = size = 0
    for ds in generate_studies(spec):
        size += len(dataset_bytes(ds))
        count += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"run": "generate", "instances": count, "mb": round(size / 1e6, 1),
            "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "instances_per_s": round(count / seconds, 1), "instances_per_cpu_s": round(count / cpu, 1)}


def reset(settings: Settings, spec: Spec) -> None:
    auth = (settings.orthanc_user, settings.orthanc_password.reveal())
    for study_uid in {p.study_uid for p in plan(spec)}:
        found = requests.post(f"{settings.orthanc_url}/tools/lookup", data=study_uid, auth=auth, timeout=30)
        for item in found.json() if found.ok else []:
            if item.get("Type") == "Study":
                requests.delete(f"{settings.orthanc_url}/studies/{item['ID']}", auth=auth, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="default")
    parser.add_argument("--workers", default="4", help="comma-separated thread counts")
    parser.add_argument("--reset", action="store_true", help="delete the spec's studies before each seed")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--no-pydicom-files", action="store_true")
    args = parser.parse_args(argv)
    spec = parse_spec(args.spec)
    if args.generate_only:
        print(json.dumps(generate_only(spec)), flush=True)
        return 0
    settings = Settings.load()
    for workers in (int(w) for w in args.workers.split(",")):
        if args.reset:
            reset(settings, spec)
        report = seed_orthanc(settings, workers=workers, spec=spec,
                              include_pydicom_files=not args.no_pydicom_files)
        rate = report["instances"] / report["seconds"] if report["seconds"] else 0.0
        print(json.dumps({"run": "seed", "spec": args.spec, "workers": workers, **report,
                          "instances_per_s": round(rate, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
