"""Benchmark localwhisk's runtime alone (no HTTP): warm overhead, cold starts, throughput.

    .venv/bin/python bench/localwhisk_runtime_bench.py [--warm 2000] [--cold 20]

Warm overhead is a blocking ``Runtime.run`` of an echo action against calling the
same ``main`` in-process; cold start is ``Runtime.run`` of a never-seen code digest,
with no stem cell (process start + import) and with one (prewarm) that has
finished starting (runs are spaced by 0.3 s, as cold starts are in practice). The issue's
end-to-end targets through the HTTP API are warm p50 <= 5 ms and cold <= 150 ms;
the runtime's share should stay well below. The numpy cases import numpy in the
action; the docker cases run it as a blackbox action of a mapped image (under
bubblewrap when it works here), without a stem cell and with one of the image's
own stem pool preloading numpy (``ImageSpec(preload=...)``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from localwhisk.runtime import SUCCESS, ActionCode, ImageSpec, Limits, Runtime

ECHO = "def main(args):\n    return args\n"
NUMPY = "import numpy\n\ndef main(args):\n    return {'sum': float(numpy.arange(10).sum())}\n"
PAYLOAD = {"name": "bench", "values": list(range(20))}


IMAGE = "bench/numpy-runtime"  # a docker (blackbox) action's image, mapped to this interpreter


def action(digest: str, code: str = ECHO, image: str | None = None) -> ActionCode:
    return ActionCode(fqn=f"/guest/bench/{digest}", version="0.0.1", kind="blackbox" if image else "python:3.11",
                      code=code, binary=False, digest=digest, image=image)


def call(rt: Runtime, act: ActionCode, value=PAYLOAD):
    out = rt.run(act, Limits(), value, activation_id="a", transaction_id="t", namespace="guest",
                 api_key=None, deadline_ms=0)
    assert out.status == SUCCESS, out.result
    return out


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def bench_warm(rt: Runtime, runs: int) -> dict:
    act = action("warm")
    call(rt, act)
    remote = [timed(lambda: call(rt, act)) for _ in range(runs)]
    scope: dict = {}
    exec(ECHO, scope)
    local = [timed(lambda: scope["main"](dict(PAYLOAD))) for _ in range(runs)]
    return {"warm_p50_ms": statistics.median(remote), "warm_p99_ms": pct(remote, 99),
            "inproc_p50_ms": statistics.median(local), "inproc_p99_ms": pct(local, 99),
            "overhead_p50_ms": statistics.median(remote) - statistics.median(local)}


def bench_cold(state: Path, runs: int, prewarm: int, code: str = ECHO, preload: tuple[str, ...] = (),
               image: ImageSpec | None = None) -> dict:
    """Cold starts of fresh digests; ``image`` set: a docker action of IMAGE mapped to that spec."""
    rt = Runtime(api_host="http://127.0.0.1:1", state_dir=state, prewarm=prewarm, max_containers=4,
                 preload=preload, images={IMAGE: image} if image else None)
    try:
        samples, inits = [], []
        for i in range(runs):
            deadline = time.monotonic() + 10
            pools = 2 if image else 1  # python kinds + the image
            while prewarm and rt.stats()["prewarm"] < prewarm * pools and time.monotonic() < deadline:
                time.sleep(0.01)
            # let a just-spawned stem cell finish starting; cold starts are spaced in practice
            time.sleep(1.0 if preload or (image and image.preload) else 0.3)
            act = action(f"cold{prewarm}-{i}", code, IMAGE if image else None)
            t0 = time.perf_counter()
            out = call(rt, act)
            samples.append((time.perf_counter() - t0) * 1000)
            inits.append(out.init_time_ms)
            rt.forget(act.fqn)
        return {"p50_ms": statistics.median(samples), "max_ms": max(samples),
                "init_p50_ms": statistics.median(inits)}
    finally:
        rt.shutdown()


def bench_throughput(rt: Runtime, clients: int, seconds: float = 2.0) -> float:
    acts = [action(f"tp{i}") for i in range(clients)]
    for act in acts:
        call(rt, act)
    end = time.monotonic() + seconds

    def client(act):
        n = 0
        while time.monotonic() < end:
            call(rt, act)
            n += 1
        return n

    with ThreadPoolExecutor(max_workers=clients) as ex:
        total = sum(ex.map(client, acts))
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--cold", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rt = Runtime(api_host="http://127.0.0.1:1", state_dir=root / "warm", prewarm=0, max_containers=8)
        try:
            warm = bench_warm(rt, args.warm)
            tput = {c: bench_throughput(rt, c) for c in (1, 2, 8)}
        finally:
            rt.shutdown()
        cold = bench_cold(root / "c0", args.cold, prewarm=0)
        stem = bench_cold(root / "c1", args.cold, prewarm=1)
        cold_np = bench_cold(root / "c2", max(3, args.cold // 4), prewarm=0, code=NUMPY)
        stem_np = bench_cold(root / "c3", max(3, args.cold // 4), prewarm=1, code=NUMPY)
        pre_np = bench_cold(root / "c4", max(3, args.cold // 4), prewarm=1, code=NUMPY, preload=("numpy",))
        docker_np = bench_cold(root / "c5", max(3, args.cold // 4), prewarm=0, code=NUMPY, image=ImageSpec())
        docker_pre = bench_cold(root / "c6", max(3, args.cold // 4), prewarm=1, code=NUMPY,
                                image=ImageSpec(preload=("numpy",)))
    print(f"warm run (n={args.warm}): p50 {warm['warm_p50_ms']:.3f} ms, p99 {warm['warm_p99_ms']:.3f} ms; "
          f"in-process p50 {warm['inproc_p50_ms'] * 1000:.1f} us, p99 {warm['inproc_p99_ms'] * 1000:.1f} us; "
          f"overhead p50 {warm['overhead_p50_ms']:.3f} ms")
    for label, c in (("cold, no stem cell", cold), ("cold, stem cell", stem),
                     ("cold numpy action, no stem cell", cold_np), ("cold numpy action, stem cell", stem_np),
                     ("cold numpy action, stem cell preloading numpy", pre_np),
                     ("cold numpy docker action, no stem cell", docker_np),
                     ("cold numpy docker action, image stem cell preloading numpy", docker_pre)):
        print(f"{label}: p50 {c['p50_ms']:.1f} ms (max {c['max_ms']:.1f}), init p50 {c['init_p50_ms']} ms")
    print("throughput (warm, distinct actions per client): "
          + ", ".join(f"{c} clients {r:.0f}/s" for c, r in tput.items()))


if __name__ == "__main__":
    main()
