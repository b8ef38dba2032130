"""Staged series: what a staging manifest says, who may read which key, what is staged.

Retrieve (:mod:`radcloud.work.retrieve`) writes one manifest object per staged
series at ``manifests/{StudyUID}/{SeriesUID}.json`` (:mod:`radcloud.store.layout`)
with every instance's key, size and MD5, ``prefix``, ``expected`` and
``complete``, and indexes it by series UID in Redis
(``radcloud:staged:series:{uid}`` -> manifest key). A manifest reads as a
:class:`StagedSeries` (:func:`parse_manifest`); dispatch's inputs resolve to
them in :mod:`radcloud.work.staging`.

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

import dataclasses
import posixpath
from collections.abc import Callable, Mapping
from typing import Any

from radcloud.pacs import derivedseries
from radcloud.core.errors import Forbidden, NotFound
from radcloud.store.layout import DEID_MAPS_ROOT

MANIFEST = "manifest.json"
MANIFESTS_ROOT = "manifests/"
RESULTS_ROOT = "results/"
STAGED_INDEX = "staged:series:"
_DONE = {"complete", "completed", "staged", "succeeded", "done", "ok"}


@dataclasses.dataclass
class StagedSeries:
    """One staged series as its manifest describes it (keys and digests, no data)."""

    series_uid: str
    study_uid: str
    prefix: str
    instances: list[dict[str, Any]]  # {"key", "md5", "size"}
    complete: bool = True
    expected: int | None = None
    # The manifest's DICOM attributes (patient, study, series): the job's subject
    # (radcloud.work.subject). PHI: never logged.
    tags: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)


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
