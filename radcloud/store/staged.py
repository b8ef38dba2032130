"""Find staged series and their manifests, for dispatch.

Retrieve (:mod:`radcloud.pacs.retrieve`) writes one manifest object per staged
series at ``manifests/{StudyUID}/{SeriesUID}.json`` (:mod:`radcloud.store.layout`)
with every instance's key, size and MD5, ``prefix``, ``expected`` and
``complete``, and indexes it by series UID in Redis
(``radcloud:staged:series:{uid}`` -> manifest key). Dispatch accepts three
ways of naming inputs:

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

Who may name what (:class:`InputAccess`, the one check, applied to every
manifest key *and* every instance key a manifest lists, whichever way the
input was named): staged series are the hospital's PACS data, open to every
role that may dispatch; ``results/<job>/`` belongs to the job's owner (and
admins and services); ``deid-maps/`` to nobody. Another user's results and
a job that does not exist get the same 404, so job ids cannot be probed.

Manifest fields read (unknown ones ignored): ``SeriesInstanceUID``,
``StudyInstanceUID`` (or ``series_uid``/``study_uid``), ``prefix``,
``instances`` (``[{key, md5, size}]``), ``complete``, ``expected``.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Callable, Mapping
from typing import Any

from radcloud.pacs import derivedseries
from radcloud.work.dispatch import StagedSeries
from radcloud.core.errors import BadRequest, Conflict, Forbidden, NotFound
from radcloud.store.layout import DEID_MAPS_ROOT
from radcloud.work.lifecycle import SERIES_OPEN, SUCCEEDED

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFESTS_ROOT = "manifests/"
RESULTS_ROOT = "results/"
STAGED_INDEX = "staged:series:"
_DONE = {"complete", "completed", "staged", "succeeded", "done", "ok"}
MAX_INPUTS = 1000


class InputAccess:
    """Whether a caller may use a stored object as a plugin's input.

    ``job_owner(job_id)`` answers the owner's name, or None for no such job.
    ``privileged`` (admin, service, system) may use any job's results.
    """

    def __init__(self, caller: str, *, privileged: bool, job_owner: Callable[[str], str | None]) -> None:
        self.caller, self.privileged, self.job_owner = caller, privileged, job_owner
        self._owners: dict[str, str | None] = {}

    @classmethod
    def system(cls) -> "InputAccess":
        return cls("system", privileged=True, job_owner=lambda _job: None)

    def check(self, key: str) -> str:
        """``key`` if the caller may read it as an input.

        Raises:
            Forbidden: a re-identification map (for everyone).
            NotFound: results of a job that is not the caller's, or of no job
                at all (one answer for both).
        """
        path = posixpath.normpath("/" + key).lstrip("/")
        if path.startswith(DEID_MAPS_ROOT):
            # Re-identification maps are hospital-side: never a plugin's input.
            raise Forbidden("inputs may not name re-identification maps (deid-maps/)", field="inputs")
        if path.startswith(RESULTS_ROOT) and not self.privileged:
            job = path[len(RESULTS_ROOT):].split("/", 1)[0]
            if job not in self._owners:
                self._owners[job] = self.job_owner(job) if job else None
            if self._owners[job] != self.caller:
                raise NotFound(f"no results of yours at {key!r}: the job does not exist, has expired "
                               "or is another user's; name your own job's results", field="inputs")
        return key


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
        from radcloud.work.retrieves import Progress

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


MAX_LISTED = 300    # staged series read for one listing (one small GET each)


def list_studies(store: Any, *, now: float, redis: Any = None, prefix: str = "radcloud",
                 limit: int = MAX_LISTED) -> dict[str, Any]:
    """What is staged, by study: the Run page's inputs after a new login.

    Reads the staged series' manifests — found through Redis's staged index
    (``{prefix}:staged:series:*``, what retrieve writes once a series is
    complete), else by listing the store's ``manifests/`` — at most ``limit``
    of them, groups them by study, newest first: patient and study attributes (PHI: the
    answer goes to the caller and the audit trail names the patient IDs),
    each series with its manifest key (a dispatch input, ``{"prefixes":
    [key]}``), instance count, bytes and completeness; the study's size and
    age (``staged_at``, the newest manifest's time; None where the store
    does not say). Returns ``{"studies": [...], "truncated": bool}``.
    """
    if redis is not None:
        names = []
        for name in redis.scan_iter(match=f"{prefix}:{STAGED_INDEX}*", count=1000):
            names.append(name)
            if len(names) > limit:
                break
        values = redis.mget(names) if names else []
        keys = sorted({(v.decode() if isinstance(v, bytes) else v) for v in values if v})
        modified: dict[str, float | None] = {}
    else:
        infos = [i for i in store.list(MANIFESTS_ROOT) if i.key.endswith(".json")]
        infos.sort(key=lambda i: -(i.modified or 0))
        keys = [i.key for i in infos]
        modified = {i.key: i.modified for i in infos}
    truncated = len(keys) > limit
    studies: dict[str, dict[str, Any]] = {}
    for key in keys[:limit]:
        try:
            doc = store.get_json(key)
        except NotFound:
            continue   # deleted between the listing and the read
        if not isinstance(doc, dict):
            continue
        staged = parse_manifest(doc, "")
        when = doc.get("staged_at") or modified.get(key)
        tags = staged.tags
        study = studies.setdefault(staged.study_uid, {
            "StudyInstanceUID": staged.study_uid,
            **{k: str(tags.get(k) or "") for k in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate",
                                                   "StudyDescription", "AccessionNumber")},
            "series": [], "instances": 0, "bytes": 0, "staged_at": None})
        nbytes = int(doc.get("bytes") or sum(i["size"] for i in staged.instances))
        study["series"].append({
            "SeriesInstanceUID": staged.series_uid, "manifest": key,
            **{k: str(tags.get(k) or "") for k in ("SeriesNumber", "SeriesDescription", "Modality")},
            "derived": derivedseries.is_derived({"SeriesInstanceUID": staged.series_uid}),  # results: not run on by default
            "instances": len(staged.instances), "bytes": nbytes, "complete": staged.complete})
        study["instances"] += len(staged.instances)
        study["bytes"] += nbytes
        if isinstance(when, (int, float)) and (study["staged_at"] or 0) < when:
            study["staged_at"] = float(when)
    out = sorted(studies.values(), key=lambda s: -(s["staged_at"] or 0))
    for s in out:
        s["series"].sort(key=lambda x: (_as_int(x["SeriesNumber"]), x["SeriesDescription"]))
        s["age_s"] = round(now - s["staged_at"]) if s["staged_at"] else None
    return {"studies": out, "truncated": truncated}


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 30


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
                        expected=int(expected) if expected is not None else None,
                        tags=dict(doc.get("tags") or {}) if isinstance(doc.get("tags"), Mapping) else {})


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
