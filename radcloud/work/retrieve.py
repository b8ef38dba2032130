"""Retrieve: stage DICOM series from Orthanc into the object store.

The pipeline for one series (:class:`Stager`), one instance at a time:

1. (remote source) C-MOVE the series into Orthanc, polling the job;
2. list the series' instances (one call) and what is already staged (one
   S3 listing: single-part ETags are MD5s);
3. per instance, on a reader thread: Orthanc's stored MD5 (attachment
   info); an object with the same key and MD5 is skipped; otherwise
   ``GET /instances/{id}/file`` is read ahead; on one of ``workers``
   uploader threads, ``put_stream`` with that MD5, which refuses
   mismatching bytes before the object becomes visible;
4. a manifest object per series (every instance's key, size, MD5, key tags),
   written last, from the store's own listing.

Memory is bounded by the read-ahead window (``workers * 2`` instances and
:data:`READ_AHEAD_WINDOW_BYTES`; an instance above :data:`READ_AHEAD_MAX_BYTES`
is streamed, minio buffering one :data:`STREAM_PART_BYTES` part), never by the
series or study. Transfer path, measured here: per-instance REST
GET streaming (see bench/retrieve_bench.py); the zip endpoint is CPU-bound
and C-GET needs a DICOM listener in the action.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import time
from collections.abc import Callable, Mapping
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from radcloud.pacs import derivedseries
from radcloud.store import layout as lay
from radcloud.pacs import query as q
from radcloud.pacs import search
from radcloud.api import models as api_models
from radcloud.api import validation as api
from radcloud.core.errors import BadRequest, Conflict, NotFound, RadcloudError, UpstreamError
from radcloud.pacs.orthanc import JobStillRunning, Orthanc
from radcloud.work.retrieves import Progress
from radcloud.work import lifecycle as L
from radcloud.store.storage import ObjectStore

log = logging.getLogger(__name__)

_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
MAX_SERIES = 500          # per retrieve: one activation each
ABORT_AFTER = 5           # consecutive upstream failures: the source is down, stop
PROGRESS_EVERY_S = 0.25   # progress writes are batched, not one per instance
READ_AHEAD_MAX_BYTES = 16 * 2**20     # instances read ahead into memory; a bigger one is streamed
READ_AHEAD_WINDOW_BYTES = 64 * 2**20  # all instances read ahead at once (one at least)
STREAM_PART_BYTES = 16 * 2**20        # the SDK's buffer per streamed upload (multipart above it)
_SERIES_TAGS = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "SeriesDate")
_STUDY_TAGS = ("StudyDate", "StudyTime", "StudyDescription", "AccessionNumber")
_PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


@dataclasses.dataclass(frozen=True)
class RetrieveRequest:
    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    modality: str | None = None
    layout: str = "uid"
    pacs_name: str = "radcloud"
    orthanc_series: tuple[str, ...] = ()   # Orthanc ids, as a local query answers them
    include_derived: bool = False          # a pulled study keeps radcloud's own result series


class Plan(list):
    """The series to stage (a list), and how many derived series of the studies were left out."""

    skipped_derived: int = 0


def parse_request(params: Mapping[str, Any]) -> RetrieveRequest:
    """Validate a retrieve before any PACS call. Raises BadRequest naming the field."""
    params = api.parse(api_models.RetrieveRequest, params).model_dump(exclude_unset=True)  # the shape
    studies = _uids(params.get("StudyInstanceUID"), "StudyInstanceUID")
    series = _uids(params.get("SeriesInstanceUID"), "SeriesInstanceUID")
    ids = params.get("orthanc_series") or []
    ids = ids if isinstance(ids, list) else [ids]
    if len(ids) > q.MAX_LIST or not all(isinstance(i, str) and _ORTHANC_ID.match(i) for i in ids):
        raise BadRequest(f"orthanc_series must be up to {q.MAX_LIST} Orthanc series ids", field="orthanc_series")
    if not studies and not series and not ids:
        raise BadRequest("give StudyInstanceUID, SeriesInstanceUID (one or a list) or orthanc_series",
                         field="StudyInstanceUID")
    modality = params.get("modality") or None
    if modality is not None:
        q.parse({"modality": modality})  # same rule as query
        if ids:
            raise BadRequest("orthanc_series names series already in Orthanc; drop modality", field="modality")
    layout = lay.check_layout(params.get("layout", "uid"))
    pacs_name = params.get("pacs_name") or modality or "radcloud"
    if not isinstance(pacs_name, str) or not q._NAME.match(pacs_name):
        raise BadRequest("pacs_name must be 1-64 letters, digits, '.', '_' or '-'", field="pacs_name")
    return RetrieveRequest(studies, series, modality, layout, pacs_name, tuple(dict.fromkeys(ids)),
                           bool(params.get("include_derived")))


def _uids(value: Any, field: str) -> tuple[str, ...]:
    if value in (None, "", []):
        return ()
    values = value if isinstance(value, list) else [value]
    q._match_string(field, "uid", values)  # validates each UID and the list size
    return tuple(dict.fromkeys(v.strip() for v in values))


def series_key(series: Mapping[str, Any]) -> str:
    """The name a retrieve tracks and stages a series under: its SeriesInstanceUID,
    unless another series Orthanc keeps apart shares that UID (see :func:`plan`)."""
    return series.get("series_key") or series["SeriesInstanceUID"]


def plan(req: RetrieveRequest, orthanc: Orthanc) -> Plan:
    """The series to stage: ``{StudyInstanceUID, SeriesInstanceUID, orthanc_id, total[, series_key]}``.

    A study pulled whole leaves out the series radcloud itself wrote into it
    (:func:`radcloud.derivedseries.is_derived`: results pushed to the PACS), unless
    ``include_derived``: they are results, not source images, and pulling
    them again would feed a plugin its own output. A series asked for by UID
    or Orthanc id is staged whatever it is. The count left out is
    ``skipped_derived``; a study with nothing else is a NotFound that says so.

    Series are told apart by Orthanc's id, not by SeriesInstanceUID: two
    series Orthanc keeps apart (different patients) may share a UID — test
    data and anonymisers that keep UIDs do this. Each such series gets a
    ``series_key`` of ``{uid}+{first 8 hex of its Orthanc id}`` under which it
    is tracked, staged and found, so neither is merged into the other and
    lost. Raises NotFound naming the UIDs the source does not know.
    """
    found: dict[str, dict[str, Any]] = {}
    skipped: set[str] = set()
    for field, uids in (("StudyInstanceUID", req.studies), ("SeriesInstanceUID", req.series)):
        if not uids:
            continue
        query = q.Query("series", {field: "\\".join(uids)}, limit=q.MAX_MATCHES, counts=False,
                        modality=req.modality)
        items = search.run(query, orthanc)["items"]
        missing = set(uids) - {item.get(field) for item in items}
        if missing:
            where = f"modality {req.modality}" if req.modality else "Orthanc"
            raise NotFound(f"{where} has no {field} {', '.join(sorted(missing))}", field=field)
        for item in items:
            orthanc_id = (item.get("orthanc") or {}).get("series")
            if field == "StudyInstanceUID" and item.get("derived") and not req.include_derived:
                skipped.add(orthanc_id or item["SeriesInstanceUID"])
                continue
            found.setdefault(orthanc_id or item["SeriesInstanceUID"], {
                "StudyInstanceUID": item["StudyInstanceUID"],
                "SeriesInstanceUID": item["SeriesInstanceUID"],
                "orthanc_id": orthanc_id,
                "total": item.get("NumberOfSeriesRelatedInstances") or 0,
            })
    for orthanc_id in req.orthanc_series:
        resource = orthanc.resource("Series", orthanc_id)  # NotFound names the id
        study = orthanc.resource("Study", resource["ParentStudy"])
        uid = resource["MainDicomTags"]["SeriesInstanceUID"]
        found.setdefault(orthanc_id, {"StudyInstanceUID": study["MainDicomTags"]["StudyInstanceUID"],
                                      "SeriesInstanceUID": uid, "orthanc_id": orthanc_id,
                                      "total": len(resource.get("Instances", []))})
    if not found and skipped:
        raise NotFound(f"the studies hold only radcloud's own results ({len(skipped)} derived series); "
                       "set include_derived to pull them", field="include_derived")
    if len(found) > MAX_SERIES:
        raise BadRequest(f"{len(found)} series is more than {MAX_SERIES} in one retrieve; split it",
                         field="StudyInstanceUID")
    series = Plan(found.values())
    series.skipped_derived = len(skipped - found.keys())
    _key_shared_uids(series, orthanc)
    return series


def _key_shared_uids(series: list[dict[str, Any]], orthanc: Orthanc) -> None:
    """Give every series whose UID Orthanc holds more than once its own ``series_key``.

    Orthanc is asked about all planned UIDs (one ``/tools/find`` per
    :data:`radcloud.pacs.query.MAX_LIST` UIDs), so a series retrieved alone is keyed
    the same way as when retrieved with its twin: the two never write the same
    objects. A UID unsafe in keys is left to fail its series with the reason.
    """
    uids = sorted({s["SeriesInstanceUID"] for s in series if s.get("orthanc_id") and _safe_uid(s)})
    holders: dict[str, set[str]] = {}
    for i in range(0, len(uids), q.MAX_LIST):
        chunk = uids[i:i + q.MAX_LIST]
        for res in orthanc.find("Series", {"SeriesInstanceUID": "\\".join(chunk)}, expand=True):
            uid = (res.get("MainDicomTags") or {}).get("SeriesInstanceUID")
            holders.setdefault(uid, set()).add(res["ID"])
    for item in series:
        oid = item.get("orthanc_id")
        if oid and len(holders.get(item["SeriesInstanceUID"], ())) > 1:
            item["series_key"] = f"{item['SeriesInstanceUID']}+{oid[:8]}"


def _safe_uid(series: Mapping[str, Any]) -> bool:
    try:
        q.check_uid("SeriesInstanceUID", series["SeriesInstanceUID"])
        return True
    except BadRequest:
        return False


@dataclasses.dataclass
class _Tally:
    done: int = 0
    nbytes: int = 0
    skipped: int = 0
    pending_done: int = 0
    pending_bytes: int = 0
    pending_skipped: int = 0
    flushed_at: float = 0.0
    upstream_streak: int = 0
    errors: list = dataclasses.field(default_factory=list)


class Stager:
    """Stages one series at a time; every dependency injected."""

    def __init__(self, orthanc: Orthanc, store: ObjectStore, progress: Progress | None = None, *,
                 layout: str = "uid", pacs_name: str = "radcloud", workers: int = 1,
                 clock: Callable[[], float] = time.monotonic, move_timeout_s: float = 50.0,
                 read_ahead_max_bytes: int = READ_AHEAD_MAX_BYTES,
                 read_ahead_window_bytes: int = READ_AHEAD_WINDOW_BYTES) -> None:
        self.orthanc = orthanc
        self.store = store
        self.progress = progress
        self.layout = lay.check_layout(layout)
        self.pacs_name = pacs_name
        self.workers = max(1, workers)
        self.clock = clock
        self.move_timeout_s = move_timeout_s
        self.read_ahead_max_bytes = read_ahead_max_bytes
        self.read_ahead_window_bytes = read_ahead_window_bytes

    def stage(self, rid: str, series: Mapping[str, Any], *, modality: str | None = None,
              start: int = 0, budget_s: float | None = None, move_job: str | None = None) -> dict[str, Any]:
        """Stage one series; returns ``{state, next, done, skipped, bytes, errors, manifest}``.

        ``next`` is set when the time budget ran out first: the index to continue
        from (the action re-invokes itself). A C-MOVE that Orthanc runs as a job
        and that outlives the budget answers ``state: moving`` with ``move_job``:
        the next activation waits for that job (``move_job=``) instead of moving
        again. Errors never escape: they end the series ``failed`` with the
        reason recorded, so a retrieve is never silently partial.
        """
        uid = series_key(series)
        t0 = self.clock()
        try:
            return self._stage(rid, series, modality, start, budget_s, t0, move_job)
        except RadcloudError as exc:
            reason = exc.message
        except Exception as exc:  # the guard: a series always gets an outcome
            log.exception("series staging crashed")
            reason = f"internal error: {type(exc).__name__}; see the activation logs"
        log.warning("series staging failed: %s", reason)
        try:
            self._update(rid, uid, state=L.FAILED, reason=reason)
        except RadcloudError:
            log.error("could not record the failure of a series")
        return {"state": L.FAILED, "next": None, "reason": reason}

    def _stage(self, rid: str, series: Mapping[str, Any], modality: str | None, start: int,
               budget_s: float | None, t0: float, move_job: str | None) -> dict[str, Any]:
        uid, study_uid = series_key(series), series["StudyInstanceUID"]
        orthanc_id = series.get("orthanc_id")
        if modality and start == 0:
            job = move_job
            if job is None:
                self._update(rid, uid, state="moving")
                job = self.orthanc.modality_move(modality, "Series", [
                    {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series["SeriesInstanceUID"]}])
            if job is not None:
                wait_s = self.move_timeout_s if budget_s is None else max(1.0, min(self.move_timeout_s, budget_s))
                try:
                    self.orthanc.wait_job(job, timeout_s=wait_s)
                except JobStillRunning:
                    if budget_s is None:
                        raise
                    return {"state": "moving", "next": 0, "move_job": job, "done": 0, "skipped": 0,
                            "bytes": 0, "errors": []}
            orthanc_id = None
        if not orthanc_id:
            ids = self.orthanc.find("Series", {"SeriesInstanceUID": series["SeriesInstanceUID"]}, expand=False)
            if not ids:
                raise NotFound(f"Orthanc has no series {uid}" + (f" after C-MOVE from {modality}"
                                                                   if modality else ""))
            if len(ids) > 1:  # never stage one and call the other done
                raise Conflict(f"Orthanc holds {len(ids)} series with SeriesInstanceUID {uid} "
                               f"(Orthanc ids {', '.join(ids)}); retrieve them by orthanc_series")
            orthanc_id = ids[0]
        tags = self._tags(orthanc_id)
        if series_key(series) != series["SeriesInstanceUID"]:
            tags["series_key"] = series_key(series)
        prefix = lay.series_prefix(self.layout, tags, pacs_name=self.pacs_name)
        instances = sorted(self.orthanc.series_instances(orthanc_id), key=_instance_order)
        self._update(rid, uid, state="staging", total=len(instances))
        staged = {info.key: info for info in self.store.list(prefix)}
        tally = _Tally(flushed_at=self.clock())
        index = self._transfer(rid, uid, instances, start, tally, t0, budget_s,
                               lambda inst: self._fetch(inst, tags, prefix, staged))
        self._flush(rid, uid, tally)
        if index < len(instances):
            return {"state": "staging", "next": index, "done": tally.done, "skipped": tally.skipped,
                    "bytes": tally.nbytes, "errors": tally.errors}
        return self._finish(rid, uid, study_uid, tags, prefix, instances, tally, orthanc_id)

    def _transfer(self, rid: str, uid: str, instances: list[dict], start: int, tally: _Tally,
                  t0: float, budget_s: float | None, fetch: Callable[[Any], dict]) -> int:
        """Stage ``instances[start:]``; return the index reached.

        One thread reads ahead from Orthanc while ``workers`` threads upload,
        so an upload never waits for Orthanc (measured: +14-20 % over workers
        that each fetch then upload). A sliding window of ``workers * 2``
        instances and ``read_ahead_window_bytes`` bounds what is held in
        memory; results are counted in order.
        The budget is checked only after the first instance, so every
        activation makes progress; five upstream failures in a row stop it.
        """
        window: deque[tuple[Future, int]] = deque()
        window_bytes = 0
        submitted = index = start
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(self.workers) as uploaders:
            while True:
                out_of_time = index > start and budget_s is not None and self.clock() - t0 > budget_s
                stop = out_of_time or tally.upstream_streak >= ABORT_AFTER
                while not stop and submitted < len(instances) and len(window) < self.workers * 2:
                    size = _held(instances[submitted], self.read_ahead_max_bytes)
                    if window and window_bytes + size > self.read_ahead_window_bytes:
                        break
                    future = uploaders.submit(self._upload, reader.submit(fetch, instances[submitted]))
                    window.append((future, size))
                    window_bytes += size
                    submitted += 1
                if not window:
                    break
                future, size = window.popleft()
                window_bytes -= size
                self._count(rid, uid, tally, future.result())
                index += 1
        if tally.upstream_streak >= ABORT_AFTER:
            self._flush(rid, uid, tally)
            raise UpstreamError(f"stopped after {ABORT_AFTER} failed instances in a row: "
                                f"{tally.errors[-1]['error']}")
        return index

    def _tags(self, orthanc_id: str) -> dict[str, Any]:
        resource = self.orthanc.resource("Series", orthanc_id)
        study = self.orthanc.resource("Study", resource["ParentStudy"])
        tags = dict(study.get("PatientMainDicomTags", {}))
        tags.update(study.get("MainDicomTags", {}))
        tags.update(resource.get("MainDicomTags", {}))
        return tags

    def _fetch(self, inst: Mapping[str, Any], tags: Mapping[str, Any], prefix: str,
               staged: Mapping[str, Any]) -> dict[str, Any]:
        """The reader's half: Orthanc's MD5, skip what is staged, read the file
        (up to ``read_ahead_max_bytes``; a bigger one is streamed by the uploader)."""
        itags = {**tags, **inst.get("MainDicomTags", {})}
        sop = itags.get("SOPInstanceUID") or inst["ID"]
        try:
            key = lay.instance_key(self.layout, prefix, itags)
            md5 = self.orthanc.instance_md5(inst["ID"])
            have = staged.get(key)
            if have is not None and have.md5 == md5:
                return {"skipped": True, "size": have.size}
            data = None
            if int(inst.get("FileSize") or 0) <= self.read_ahead_max_bytes:
                resp = self.orthanc.open_instance(inst["ID"])
                try:
                    data = resp.raw.read()
                finally:
                    resp.close()
            return {"upload": {"key": key, "md5": md5, "id": inst["ID"], "sop": sop, "data": data,
                               "size": inst.get("FileSize")}}
        except Exception as exc:
            return _failed(sop, exc)

    def _upload(self, fetched: Future) -> dict[str, Any]:
        """The uploaders' half: put what the reader fetched; the store checks its MD5."""
        result = fetched.result()
        if "upload" not in result:
            return result
        item = result["upload"]
        try:
            if item["data"] is not None:
                info = self.store.put_stream(item["key"], io.BytesIO(item["data"]), len(item["data"]),
                                             md5=item["md5"], content_type="application/dicom")
                return {"size": info.size}
            resp = self.orthanc.open_instance(item["id"])
            try:
                length = int(resp.headers.get("Content-Length") or item["size"])
                info = self.store.put_stream(item["key"], resp.raw, length, md5=item["md5"],
                                             content_type="application/dicom", part_size=STREAM_PART_BYTES)
            finally:
                resp.close()
            return {"size": info.size}
        except Exception as exc:
            return _failed(item["sop"], exc)

    def _count(self, rid: str, uid: str, tally: _Tally, result: Mapping[str, Any]) -> None:
        if "error" in result:
            tally.errors.append({k: v for k, v in result["error"].items() if k != "upstream"})
            tally.upstream_streak = tally.upstream_streak + 1 if result["error"]["upstream"] else 0
            return
        tally.upstream_streak = 0
        tally.done += 1
        tally.pending_done += 1
        if result.get("skipped"):
            tally.skipped += 1
            tally.pending_skipped += 1
        else:
            tally.nbytes += result["size"]
            tally.pending_bytes += result["size"]
        if self.clock() - tally.flushed_at >= PROGRESS_EVERY_S:
            self._flush(rid, uid, tally)

    def _flush(self, rid: str, uid: str, tally: _Tally) -> None:
        if self.progress is not None and (tally.pending_done or tally.pending_bytes):
            self.progress.advance(rid, uid, done=tally.pending_done, nbytes=tally.pending_bytes,
                                  skipped=tally.pending_skipped)
        tally.pending_done = tally.pending_bytes = tally.pending_skipped = 0
        tally.flushed_at = self.clock()

    def _finish(self, rid: str, uid: str, study_uid: str, tags: Mapping[str, Any], prefix: str,
                instances: list[dict], tally: _Tally, orthanc_id: str) -> dict[str, Any]:
        listed = {info.key: info for info in self.store.list(prefix)}
        objects, missing = [], 0
        for inst in instances:
            itags = {**tags, **inst.get("MainDicomTags", {})}
            key = lay.instance_key(self.layout, prefix, itags)
            info = listed.get(key)
            if info is None:
                missing += 1
                continue
            objects.append({"key": key, "size": info.size, "md5": info.md5,
                            "SOPInstanceUID": itags.get("SOPInstanceUID"),
                            "InstanceNumber": q.as_int(itags.get("InstanceNumber")),
                            "orthanc_id": inst["ID"]})
        complete = missing == 0 and not tally.errors
        manifest = {
            "version": 1, "retrieve_id": rid, "layout": self.layout, "prefix": prefix,
            "StudyInstanceUID": study_uid, "SeriesInstanceUID": tags.get("SeriesInstanceUID") or uid,
            "series_key": uid, "orthanc_id": orthanc_id,
            # Patient attributes too (the job's subject, radcloud.work.subject): the manifest sits
            # next to the DICOM files that carry them anyway.
            "tags": {k: tags.get(k) for k in _SERIES_TAGS + _STUDY_TAGS + _PATIENT_TAGS},
            "count": len(objects), "expected": len(instances),
            "bytes": sum(o["size"] for o in objects), "complete": complete, "instances": objects,
            "staged_at": time.time(),   # the staged list's age (GET retrieve/staged)
        }
        if self.layout == "chris":  # register_pacs_series needs these
            manifest["pacs_name"] = self.pacs_name
        mkey = lay.manifest_key(study_uid, uid)
        self.store.put_json(mkey, manifest)
        state = L.SUCCEEDED if complete else L.FAILED
        if complete and self.progress is not None:
            self.progress.staged(uid, mkey)
        fields: dict[str, Any] = {"state": state, "manifest": mkey, "errors": tally.errors}
        if not complete:
            fields["reason"] = (f"{missing} of {len(instances)} instances not staged; "
                                f"rerun the retrieve to finish")
        self._update(rid, uid, **fields)
        return {"state": state, "next": None, "done": tally.done, "skipped": tally.skipped,
                "bytes": tally.nbytes, "errors": tally.errors, "manifest": mkey}

    def _update(self, rid: str, uid: str, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(rid, uid, **fields)


def _held(inst: Mapping[str, Any], read_ahead_max: int) -> int:
    """Bytes an instance holds in memory while in the window: itself when read ahead, else one part."""
    size = int(inst.get("FileSize") or 0)
    return size if size <= read_ahead_max else min(size, STREAM_PART_BYTES)


def _failed(sop: str, exc: Exception) -> dict[str, Any]:
    """An instance's failure as counted: its own error, and whether the source looks down."""
    if isinstance(exc, RadcloudError):
        return {"error": {"SOPInstanceUID": sop, "error": exc.message,
                          "upstream": isinstance(exc, UpstreamError)}}
    # a connection dropped mid-stream (urllib3 errors)
    return {"error": {"SOPInstanceUID": sop, "upstream": True,
                      "error": f"transfer from Orthanc to S3 failed: {type(exc).__name__}"}}


def _instance_order(inst: Mapping[str, Any]) -> tuple:
    tags = inst.get("MainDicomTags", {})
    number = q.as_int(tags.get("InstanceNumber"))
    return (number if number is not None else 1 << 30, tags.get("SOPInstanceUID") or inst["ID"])
