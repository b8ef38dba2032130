"""The result cache: the same analysis on the same data is not computed twice.

Key = sha256 over a canonical JSON of the plugin name and version, the
validated parameters (defaults filled, so ``{}`` and ``{"x": default}`` are
the same run) and the sorted MD5s of every input instance, as the staging
manifests record them. Content digests, not object keys or UIDs: the same
images staged twice hit; a re-acquired series with the same UIDs does not.

Invalidation is by construction: a new plugin version is a new key.
``force: true`` in dispatch skips the lookup (and the new run overwrites
the entry). A hit is only served while the job it points at still exists
and succeeded; otherwise the entry is dropped.

Redis keys: ``P:cache:{key}`` -> the id of the job whose results answer it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from radcloud.work.jobs import JOB_TTL_S, JobStore, JobSpec
from radcloud.work.lifecycle import SUCCEEDED

log = logging.getLogger(__name__)


def cache_key(plugin: str, version: str, params: Mapping[str, Any], input_md5s: Iterable[str]) -> str:
    """The hex sha256 identifying one analysis of one set of images."""
    canonical = json.dumps(
        {"plugin": plugin, "version": version, "params": dict(params),
         "inputs": sorted(str(m).lower() for m in input_md5s)},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResultCache:
    """Cache entries in Redis, checked against the job store."""

    def __init__(self, redis: Any, jobs: JobStore, *, prefix: str = "radcloud", ttl_s: int = JOB_TTL_S) -> None:
        self.r = redis
        self.jobs = jobs
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, key: str) -> str:
        return f"{self.prefix}:cache:{key}"

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The succeeded job answering ``key``, or None."""
        job_id = self.r.get(self._key(key))
        if not job_id:
            return None
        raw = self.r.hgetall(self.jobs.key(job_id))
        if raw.get("state") != SUCCEEDED:
            # Its job expired or was retried into another state: not an answer any more.
            self.r.delete(self._key(key))
            return None
        return raw

    def put(self, key: str, job_id: str) -> None:
        self.r.set(self._key(key), job_id, ex=self.ttl_s)

    def forget(self, key: str) -> None:
        self.r.delete(self._key(key))

    def serve(self, key: str, spec: JobSpec) -> str | None:
        """On a hit, create a job that is already ``succeeded`` and points at the earlier results.

        Nothing is copied: the new job's ``results_of`` and ``output_prefix``
        name the original job's outputs. Returns the new job id or None on a miss.
        """
        origin = self.lookup(key)
        if origin is None:
            return None
        now = self.jobs.clock()
        extra = {
            "cached": 1, "results_of": origin["id"], "output_prefix": origin.get("output_prefix", ""),
            "shards_done": origin.get("shards_total", 0), "shards_total": origin.get("shards_total", 0),
            "shards_succeeded": origin.get("shards_total", 0),
            "instances_total": origin.get("instances_total", 0),
            "instances_done": origin.get("instances_total", 0),
            "started_at": now, "finished_at": now, "reason": f"cache hit: results of {origin['id']}",
        }
        job_id = self.jobs.create(JobSpec(plugin=spec.plugin, plugin_version=spec.plugin_version,
                                          owner=spec.owner, params=spec.params, shards=[],
                                          options=spec.options, priority=spec.priority, cache_key=key,
                                          subject=spec.subject),
                                  state=SUCCEEDED, extra=extra)
        log.info("job %s served from cache (results of %s)", job_id, origin["id"])
        return job_id
