"""localwhisk benchmark: warm/cold invoke latency and throughput through real HTTP.

Not a test: prints figures. Starts a server (``localwhisk.testing.Server``,
a subprocess on 127.0.0.1 with the real runtime), deploys a no-op action and measures

- warm invoke (blocking, result=true) p50/p99 over one keep-alive connection,
  against an in-process call of the same ``main`` (the overhead localwhisk adds);
- cold start: the first invoke after each code update (a new container: init + run);
- cold start of a docker action importing numpy, its image mapped by ``--images-file``
  with ``preload: [numpy]`` (the way radcloud's actions run), so its stem cells have
  numpy imported already;
- throughput with 1, 2 and 8 concurrent clients, each on its own connection.

Targets (issue 3): warm p50 <= 5 ms, cold <= 150 ms, >= 300 invokes/s on 2 cores.

    .venv/bin/python bench/localwhisk_bench.py [--warm 500] [--cold 20] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time

from localwhisk.testing import Conn, Server, percentile as pct

CODE = "def main(args):\n    return {'ok': True, 'n': args.get('n', 0)}\n"
NUMPY = "import numpy\n\ndef main(args):\n    return {'sum': float(numpy.arange(10).sum())}\n"
IMAGE = "bench/numpy-runtime:1"


def put(conn: Conn, name: str, code: str, image: str | None = None) -> None:
    exec_ = {"kind": "blackbox", "image": image, "code": code} if image else {"kind": "python:3.11", "code": code}
    status, body = conn.call("PUT", f"/api/v1/namespaces/_/actions/{name}?overwrite=true", {"exec": exec_})
    assert status == 200, body


INVOKE = "/api/v1/namespaces/_/actions/{}?blocking=true&result=true"


def warm(conn: Conn, n: int) -> list[float]:
    put(conn, "noop", CODE)
    for _ in range(20):  # warm up: container started, caches hot
        conn.call("POST", INVOKE.format("noop"), {})
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        status, _ = conn.call("POST", INVOKE.format("noop"), {"n": i})
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    return times


def in_process(n: int) -> list[float]:
    scope: dict = {}
    exec(CODE, scope)
    main = scope["main"]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        main({"n": i})
        times.append((time.perf_counter() - t0) * 1000)
    return times


def cold(conn: Conn, n: int, code: str = CODE, image: str | None = None,
         pause: float = 0.3) -> tuple[list[float], list[float]]:
    """Wall time of the first invoke after an update, and the activation's initTime."""
    walls, inits = [], []
    for i in range(n):
        put(conn, "coldie", code + f"# version {i}\n", image)
        time.sleep(pause)  # let the pool top up its prewarmed stem cells, as between real deploys
        t0 = time.perf_counter()
        status, body = conn.call("POST", "/api/v1/namespaces/_/actions/coldie?blocking=true", {})
        walls.append((time.perf_counter() - t0) * 1000)
        assert status == 200, body
        ann = {a["key"]: a["value"] for a in json.loads(body)["annotations"]}
        if "initTime" in ann:
            inits.append(ann["initTime"])
    return walls, inits


def throughput(api_host: str, auth: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = Conn(api_host, auth)
        while time.monotonic() < stop:
            status, _ = conn.call("POST", INVOKE.format("noop"), {})
            assert status == 200
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", type=int, default=500)
    ap.add_argument("--cold", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--max-containers", type=int, default=8)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="lw-bench-")
    images = os.path.join(tmp.name, "images.json")
    with open(images, "w") as f:
        json.dump({IMAGE.split(":")[0]: {"preload": ["numpy"]}}, f)
    with tmp, Server(os.path.join(tmp.name, "state"),
                     extra_args=["--max-containers", str(args.max_containers), "--images-file", images]) as server:
        conn = Conn(server.api_host, server.auth)
        w = warm(conn, args.warm)
        local = in_process(args.warm)
        c_wall, c_init = cold(conn, args.cold)
        # 1 s between: a stem cell importing numpy takes ~0.5 s to be ready on a loaded box
        d_wall, d_init = cold(conn, max(3, args.cold // 4), NUMPY, IMAGE, pause=1.0)
        rates = {n: throughput(server.api_host, server.auth, n, args.seconds) for n in (1, 2, 8)}
    print(f"cpus: {os.cpu_count()}  (server: uvicorn, {args.max_containers} containers max)")
    print(f"warm invoke  p50 {pct(w, 50):6.2f} ms  p99 {pct(w, 99):6.2f} ms  mean {statistics.mean(w):6.2f} ms"
          f"   target p50 <= 5 ms: {'OK' if pct(w, 50) <= 5 else 'MISSED'}")
    print(f"in-process   p50 {pct(local, 50) * 1000:6.2f} us  p99 {pct(local, 99) * 1000:6.2f} us"
          f"   -> HTTP+runtime overhead p50 {pct(w, 50) - pct(local, 50):.2f} ms"
          f" ({pct(w, 50) / max(pct(local, 50), 1e-6):.0f}x)")
    init_p50 = f"{pct(c_init, 50):.0f} ms" if c_init else "n/a"
    print(f"cold start   p50 {pct(c_wall, 50):6.2f} ms  max {max(c_wall):6.2f} ms  (initTime p50 {init_p50})"
          f"   target <= 150 ms: {'OK' if pct(c_wall, 50) <= 150 else 'MISSED'}")
    d_init_p50 = f"{pct(d_init, 50):.0f} ms" if d_init else "n/a"
    print(f"cold docker  p50 {pct(d_wall, 50):6.2f} ms  max {max(d_wall):6.2f} ms  (initTime p50 {d_init_p50};"
          f" numpy action, image stem cell preloading numpy)")
    for n, r in rates.items():
        print(f"throughput   {n} client(s): {r:7.0f} invokes/s  ({r / rates[1]:.2f}x of 1 client)")
    print(f"target >= 300 invokes/s: {'OK' if max(rates.values()) >= 300 else 'MISSED'}")


if __name__ == "__main__":
    main()
