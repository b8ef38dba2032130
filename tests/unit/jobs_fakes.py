"""In-memory collaborators for the job-side unit tests (dispatch, status, results)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
from pathlib import Path
from typing import Any

from radcloud.core.errors import NotFound
from radcloud.store.storage import ObjectInfo

FIXTURE_PLUGINS = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"


class MemStore:
    """The slice of radcloud.store.storage.ObjectStore that jobs, results and shards use."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.types: dict[str, str] = {}
        self.lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        with self.lock:
            self.objects[key], self.types[key] = data, content_type
        return ObjectInfo(key, len(data), hashlib.md5(data).hexdigest(), content_type)

    def put_file(self, key: str, path: str, *, content_type: str | None = None) -> ObjectInfo:
        return self.put_bytes(key, Path(path).read_bytes(), content_type=content_type or "application/octet-stream")

    def put_json(self, key: str, obj: Any) -> ObjectInfo:
        return self.put_bytes(key, json.dumps(obj).encode(), content_type="application/json")

    def get_json(self, key: str) -> Any:
        if key not in self.objects:
            raise NotFound(f"no object {key!r}")
        return json.loads(self.objects[key])

    def get_to_file(self, key: str, path: str) -> None:
        if key not in self.objects:
            raise NotFound(f"no object {key!r}")
        Path(path).write_bytes(self.objects[key])

    def stat(self, key: str) -> ObjectInfo | None:
        data = self.objects.get(key)
        return None if data is None else ObjectInfo(key, len(data), hashlib.md5(data).hexdigest())

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [ObjectInfo(k, len(v), hashlib.md5(v).hexdigest()) for k, v in sorted(self.objects.items())
                if k.startswith(prefix)]

    def open(self, key: str) -> Any:
        if key not in self.objects:
            raise NotFound(f"no object {key!r}")
        return io.BytesIO(self.objects[key])

    def presign_get(self, key: str, ttl_s: int) -> str:
        return f"http://s3.invalid/{key}?ttl={ttl_s}"


def stage_series(store: MemStore, study: str, series: str, n: int, *, complete: bool = True,
                 payload: bytes = b"DICM", redis: Any = None, ext: str = ".dcm",
                 tags: dict[str, Any] | None = None) -> str:
    """Write n fake instances and a manifest the way radcloud.work.retrieve does; returns the prefix."""
    prefix = f"studies/{study}/{series}/"
    instances = []
    for i in range(n):
        data = payload + f"{series}-{i}".encode()
        key = f"{prefix}{series}.{i}{ext}"
        store.put_bytes(key, data)
        instances.append({"key": key, "md5": hashlib.md5(data).hexdigest(), "size": len(data)})
    mkey = f"manifests/{study}/{series}.json"
    store.put_json(mkey, {"version": 1, "prefix": prefix, "StudyInstanceUID": study,
                          "SeriesInstanceUID": series, "expected": n, "count": n,
                          "instances": instances, "complete": complete, **({"tags": tags} if tags else {})})
    if redis is not None:
        redis.set(f"radcloud:staged:series:{series}", mkey)
    return prefix


class FakeInvoker:
    """Records invokes; optionally runs each shard (inline or on a thread) like OpenWhisk would."""

    def __init__(self, runner=None, *, threaded: bool = False, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.records: dict[str, dict[str, Any] | None] = {}
        self.runner, self.threaded, self.fail = runner, threaded, fail or set()
        self.threads: list[threading.Thread] = []
        self._ids = itertools.count(1)

    def invoke(self, action: str, params: dict[str, Any], *, blocking: bool = False) -> dict[str, Any]:
        if params.get("shard_id") in self.fail:
            raise ConnectionError("controller down")
        self.calls.append((action, params))
        aid = f"{next(self._ids):032x}"
        self.records[aid] = None
        if self.runner is not None:
            if self.threaded:
                t = threading.Thread(target=self._run, args=(aid, params))
                self.threads.append(t)
                t.start()
            else:
                self._run(aid, params)
        return {"activationId": aid}

    def _run(self, aid: str, params: dict[str, Any]) -> None:
        result = self.runner(params, aid)
        self.records[aid] = {"response": {"status": "success", "result": result}}

    def activation(self, aid: str) -> dict[str, Any] | None:
        self.lookups = getattr(self, "lookups", 0) + 1
        return self.records.get(aid)

    def join(self, timeout: float = 30) -> None:
        for t in self.threads:
            t.join(timeout)


def job_wiring(redis: Any, store: Any, registry: Any, *, use_bwrap: bool | None = None) -> Any:
    """Jobs end to end in this process: the job store, result cache, results and the one
    finaliser on ``redis`` and ``store``, and ``runner(params, activation_id)``, which runs
    a shard as the plugin action would (what an invoker fake calls)."""
    from types import SimpleNamespace

    from radcloud.run.shard import run_shard
    from radcloud.work.cache import ResultCache
    from radcloud.work.jobresults import Results
    from radcloud.work.jobs import JobStore
    from radcloud.work.reporter import Finaliser, RedisShardReporter

    jobs = JobStore(redis)
    cache = ResultCache(redis, jobs)
    results = Results(store, redis, jobs)
    finaliser = Finaliser(jobs, results=results, cache=cache)

    def runner(params: dict[str, Any], activation_id: str) -> Any:
        reporter = RedisShardReporter(jobs, params["job_id"], finaliser=finaliser, activation_id=activation_id)
        return run_shard(params, store=store, reporter=reporter, registry=registry, use_bwrap=use_bwrap)

    return SimpleNamespace(jobs=jobs, cache=cache, results=results, finaliser=finaliser, runner=runner)
