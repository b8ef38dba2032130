"""Dispatch's inputs: what a job names to run on, resolved to staged series.

Dispatch accepts four ways of naming inputs (:class:`ManifestStaging`):

* ``{"retrieve": "<id>"}`` — every series of a retrieve
  (:class:`radcloud.work.retrieves.Progress`); 409 while it still runs or if a
  series failed, naming it;
* ``{"series": ["1.2.3", ...]}`` — series UIDs, through the Redis index,
  else by finding ``manifests/*/<uid>.json``;
* ``{"prefixes": [...]}`` — a manifest key (``.json``), a ``studies/{study}/{series}/``
  folder of the ``uid`` layout, or any folder holding a ``manifest.json``;
* ``{"job": "<id>"}`` — the DICOM outputs of a finished job (its results
  manifest ``results/{job}/manifest.json``), one series per shard of that
  job: how a pipeline's step feeds the next (:mod:`radcloud.work.pipelines`).

Every manifest key *and* every instance key a manifest lists is checked by
:class:`radcloud.store.staged.InputAccess`, whichever way the input was
named. What a staging manifest holds, and who may read which key, is
:mod:`radcloud.store.staged`; this module reads retrieve progress, which is
tracked work, so it lives with dispatch.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from radcloud.core.errors import BadRequest, Conflict, NotFound
from radcloud.store.staged import (MANIFEST, MANIFESTS_ROOT, RESULTS_ROOT, STAGED_INDEX, InputAccess,
                                   StagedSeries, parse_manifest)
from radcloud.work.lifecycle import SERIES_OPEN, SUCCEEDED
from radcloud.work.retrieves import Progress

MAX_INPUTS = 1000


class ManifestStaging:
    """Resolves dispatch inputs to staged series (object store and Redis passed in)."""

    def __init__(self, store: Any, redis: Any = None, *, prefix: str = "radcloud") -> None:
        self.store, self.redis, self.prefix = store, redis, prefix

    def resolve(self, inputs: Mapping[str, Any], access: InputAccess | None = None) -> list[StagedSeries]:
        """The staged series ``inputs`` name, every key checked by ``access``
        (default: the system's, which refuses only re-identification maps)."""
        access = access or InputAccess.system()
        unknown = set(inputs) - {"prefixes", "series", "retrieve", "job"}
        if unknown:
            raise BadRequest(f"unknown input kind {sorted(unknown)[0]!r}; use prefixes, series, retrieve or job",
                             field="inputs")
        if inputs.get("job"):
            return self._job_outputs(str(inputs["job"]), access)
        keys: list[str] = []
        for prefix in _strings(inputs.get("prefixes"), "prefixes"):
            keys.append(_manifest_for_prefix(prefix))
        for uid in _strings(inputs.get("series"), "series"):
            keys.append(self._series_manifest(uid))
        if inputs.get("retrieve"):
            keys.extend(self._retrieve_manifests(str(inputs["retrieve"])))
        if len(keys) > MAX_INPUTS:
            raise BadRequest(f"{len(keys)} inputs exceed the limit of {MAX_INPUTS}", field="inputs")
        seen: dict[Any, StagedSeries] = {}
        for key in keys:
            series = self._load(access.check(key))  # checked before it is read: no existence leak
            for item in series.instances:  # a manifest (e.g. a plugin's output) must not point past it either
                access.check(item["key"])
            # Two series sharing a UID (Orthanc keeps them apart) are staged
            # under different prefixes: both are inputs, neither hides the other.
            seen.setdefault((series.series_uid, series.prefix) if series.series_uid else key, series)
        return list(seen.values())

    def _job_outputs(self, job_id: str, access: InputAccess) -> list[StagedSeries]:
        """A finished job's DICOM outputs as staged series (one per shard: its source series)."""
        key = access.check(f"{RESULTS_ROOT}{job_id}/{MANIFEST}")  # the job's owner (or privileged) only
        try:
            doc = self.store.get_json(key)
        except NotFound:
            raise NotFound(f"job {job_id!r} has no results manifest: name a finished job (a cached job's "
                           "results are under the job it names in results_of)", field="job") from None
        by_shard: dict[str, StagedSeries] = {}
        for out in doc.get("outputs") or []:
            if not (out["key"].lower().endswith(".dcm") or out.get("content_type") == "application/dicom"):
                continue
            shard = str(out.get("shard") or "")
            series = by_shard.setdefault(shard, StagedSeries(
                series_uid=str(out.get("series_uid") or ""), study_uid=str(out.get("study_uid") or ""),
                prefix=f"{doc.get('prefix') or f'{RESULTS_ROOT}{job_id}/'}{shard}/", instances=[]))
            series.instances.append({"key": access.check(out["key"]), "md5": str(out.get("md5") or ""),
                                     "size": int(out.get("size") or 0)})
        if not by_shard:
            raise BadRequest(f"job {job_id} produced no DICOM outputs to run a plugin on "
                             f"({len(doc.get('outputs') or [])} other output(s))", field="job")
        return [by_shard[k] for k in sorted(by_shard)]

    def _series_manifest(self, uid: str) -> str:
        if self.redis is not None:
            key = self.redis.get(f"{self.prefix}:{STAGED_INDEX}{uid}")
            if key:
                return key.decode() if isinstance(key, bytes) else key
        suffix = f"/{uid}.json"
        for info in self.store.list(MANIFESTS_ROOT):
            if info.key.endswith(suffix):
                return info.key
        raise NotFound(f"series {uid} is not staged; retrieve it first", field="series")

    def _retrieve_manifests(self, rid: str) -> list[str]:
        status = Progress(self.redis).status(rid)  # NotFound names the retrieve id
        # Series states (radcloud.work.lifecycle.SERIES), plus stalled, derived on read.
        running = [s["SeriesInstanceUID"] for s in status["series"] if s["state"] in SERIES_OPEN]
        if running:
            raise Conflict(f"retrieve {rid} is still staging {len(running)} of {status['series_total']} "
                           "series; dispatch when it has finished", field="retrieve", series=running[:10],
                           running=True)
        failed = [s["SeriesInstanceUID"] for s in status["series"]
                  if s["state"] != SUCCEEDED or not s.get("manifest")]
        if failed:
            raise Conflict(f"retrieve {rid}: {len(failed)} series were not staged completely; "
                           "rerun the retrieve to finish them", field="retrieve", series=failed[:10])
        if not status["series"]:
            raise NotFound(f"retrieve {rid!r} has staged nothing", field="retrieve")
        return [s["manifest"] for s in status["series"]]

    def _load(self, key: str) -> StagedSeries:
        try:
            doc = self.store.get_json(key)
        except NotFound:
            raise NotFound(f"no staging manifest at {key!r}; is the series retrieved?", field="inputs") from None
        if not isinstance(doc, dict):
            raise BadRequest(f"staging manifest {key!r} is not a JSON object", field="inputs")
        return parse_manifest(doc, "")




def _manifest_for_prefix(prefix: str) -> str:
    if prefix.endswith(".json"):
        return prefix
    parts = [p for p in prefix.split("/") if p]
    if len(parts) == 3 and parts[0] == "studies":  # the uid layout: studies/{study}/{series}/
        return f"{MANIFESTS_ROOT}{parts[1]}/{parts[2]}.json"
    return posixpath.join(prefix, MANIFEST)


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"inputs.{field} must be a list of strings", field=field)
    return value
