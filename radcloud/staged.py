"""Find staged series and their manifests, for dispatch.

Retrieve writes one manifest object per staged series (instances with key,
size and MD5, key tags). Dispatch accepts three ways of naming inputs:

* ``{"prefixes": ["staged/<study>/<series>/", ...]}`` — the manifest is
  ``<prefix>manifest.json`` (or the key itself when it ends in ``.json``);
* ``{"series": ["1.2.3", ...]}`` — series UIDs, found through the index
  ``P:staged:series:{uid}`` (Redis string: the manifest key) when retrieve
  keeps one, else ``staged/*/<uid>/manifest.json`` by listing ``staged/``;
* ``{"retrieve": "<id>"}`` — the manifests a retrieve staged, from its
  Redis record ``P:retrieve:{id}`` (field ``manifests``: JSON list of keys,
  or ``series``: JSON list of UIDs).

Manifest fields read (tolerant, unknown ones ignored): ``series_uid`` /
``SeriesInstanceUID``, ``study_uid`` / ``StudyInstanceUID``, ``instances``
(``[{key, md5, size}]``), and completeness from ``complete`` (bool),
``status``/``state`` (``complete``, ``staged``, ``succeeded``, ``done``) or
``expected``/``n_instances`` compared with the instances listed.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Mapping
from typing import Any

from radcloud.dispatch import StagedSeries
from radcloud.errors import BadRequest, NotFound

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGED_ROOT = "staged/"
_DONE = {"complete", "completed", "staged", "succeeded", "done", "ok"}
MAX_INPUTS = 1000


class ManifestStaging:
    """Resolves dispatch inputs to staged series (object store and Redis passed in)."""

    def __init__(self, store: Any, redis: Any = None, *, prefix: str = "radcloud") -> None:
        self.store, self.redis, self.prefix = store, redis, prefix

    def resolve(self, inputs: Mapping[str, Any]) -> list[StagedSeries]:
        unknown = set(inputs) - {"prefixes", "series", "retrieve"}
        if unknown:
            raise BadRequest(f"unknown input kind {sorted(unknown)[0]!r}; use prefixes, series or retrieve",
                             field="inputs")
        keys: list[str] = []
        for prefix in _strings(inputs.get("prefixes"), "prefixes"):
            keys.append(prefix if prefix.endswith(".json") else posixpath.join(prefix, MANIFEST))
        for uid in _strings(inputs.get("series"), "series"):
            keys.append(self._series_manifest(uid))
        if inputs.get("retrieve"):
            keys.extend(self._retrieve_manifests(str(inputs["retrieve"])))
        if len(keys) > MAX_INPUTS:
            raise BadRequest(f"{len(keys)} inputs exceed the limit of {MAX_INPUTS}", field="inputs")
        seen: dict[str, StagedSeries] = {}
        for key in keys:
            series = self._load(key)
            seen.setdefault(series.series_uid or key, series)
        return list(seen.values())

    def _series_manifest(self, uid: str) -> str:
        if self.redis is not None:
            key = self.redis.get(f"{self.prefix}:staged:series:{uid}")
            if key:
                return key.decode() if isinstance(key, bytes) else key
        suffix = f"/{uid}/{MANIFEST}"
        for info in self.store.list(STAGED_ROOT):
            if info.key.endswith(suffix):
                return info.key
        raise NotFound(f"series {uid} is not staged; retrieve it first", field="series")

    def _retrieve_manifests(self, rid: str) -> list[str]:
        record = self.redis.hgetall(f"{self.prefix}:retrieve:{rid}") if self.redis is not None else {}
        record = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                  for k, v in (record or {}).items()}
        if not record:
            raise NotFound(f"retrieve {rid!r} does not exist (or has expired)", field="retrieve")
        if record.get("manifests"):
            return list(json.loads(record["manifests"]))
        if record.get("series"):
            return [self._series_manifest(uid) for uid in json.loads(record["series"])]
        raise NotFound(f"retrieve {rid!r} has staged nothing yet", field="retrieve")

    def _load(self, key: str) -> StagedSeries:
        try:
            doc = self.store.get_json(key)
        except NotFound:
            raise NotFound(f"no staging manifest at {key!r}; is the series retrieved?", field="inputs") from None
        if not isinstance(doc, dict):
            raise BadRequest(f"staging manifest {key!r} is not a JSON object", field="inputs")
        return parse_manifest(doc, posixpath.dirname(key) + "/")


def parse_manifest(doc: Mapping[str, Any], prefix: str) -> StagedSeries:
    instances = []
    for item in doc.get("instances") or []:
        key = item.get("key") or item.get("object")
        if key:
            instances.append({"key": key, "md5": str(item.get("md5") or ""), "size": int(item.get("size") or 0)})
    expected = doc.get("expected") or doc.get("n_instances") or doc.get("instances_expected")
    status = str(doc.get("status") or doc.get("state") or "").lower()
    if "complete" in doc:
        complete = bool(doc["complete"])
    elif status:
        complete = status in _DONE
    else:
        complete = expected is None or int(expected) == len(instances)
    if expected is not None and int(expected) != len(instances):
        complete = False
    return StagedSeries(series_uid=str(doc.get("series_uid") or doc.get("SeriesInstanceUID") or ""),
                        study_uid=str(doc.get("study_uid") or doc.get("StudyInstanceUID") or ""),
                        prefix=str(doc.get("prefix") or prefix), instances=instances, complete=complete,
                        expected=int(expected) if expected is not None else None)


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"inputs.{field} must be a list of strings", field=field)
    return value
