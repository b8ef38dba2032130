"""What the web viewer opens: a staged series' instances as presigned URLs.

The viewer page (``webui/static/viewer.js``, on dwv from npm) reads the
original DICOM instances itself, straight from the object store: this
module answers *which* objects and signs a short-lived GET URL for each,
never the pixels. An OpenWhisk result is capped at 1 MB, so proxying a CT
series through an action is impossible; a presigned URL per instance keeps
every answer small (~0.5 kB an instance; a page holds at most 1000 of them
and 600 kB of URLs, the client asks for the next page)
and lets the browser fetch the slices in parallel from S3.

    Viewer(store, staging, ttl_s).series(uid, access)   # one staged series
    Viewer(store, staging, ttl_s).study(uid, access)    # its study's staged series
    Viewer(store, staging, ttl_s).job(manifest)         # a job's DICOM SEG + SR, and their source
    Viewer(store, staging, ttl_s).seg(uid, access)      # a SEG series pulled from the PACS, the same

A job's results are read from its result manifest (:mod:`radcloud.work.jobresults`):
its ``.dcm`` outputs are told apart by the SOP Class UID in their first
kilobytes (a ranged read, not a download); the SEG goes to the browser as a
URL (dwv draws it over the source series, placed by its frame of reference)
and the SR is read here, with highdicom, into the rows of the measurements
table (TID 1500: one row per measurement of each segment).

A SEG that comes back from the PACS (pushed there by a job, or made by any
other system, then pulled like any series) is opened by its own series
UID: the source series is the one its Referenced Series Sequence names
(it must be staged too), and the measurements are those of the study's
staged SRs whose evidence lists the SEG instance.

Who may open what is :class:`radcloud.store.staged.InputAccess`, the one check of
staged data (dispatch uses it too): staged series are open to every role,
re-identification maps to nobody. The action (``functions/viewer``) records
every answer in the audit trail (who viewed which study and series).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from radcloud.core.errors import BadRequest, NotFound
from radcloud.pacs import derivedseries
from radcloud.store.layout import MANIFEST, STAGED_ROOT
from radcloud.pacs.query import check_uid
from radcloud.store.staged import InputAccess, parse_manifest

log = logging.getLogger(__name__)

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",  # Enhanced, Comprehensive
                        "1.2.840.10008.5.1.4.1.1.88.34"})                                 # Comprehensive 3D
HEAD_BYTES = 4096      # the file meta and the start of the dataset: enough for the SOP Class UID
# A SEG's Referenced Series Sequence (0008,1115) lists every source instance (~120 bytes each) and
# comes before the functional groups and pixels: 1 MB holds it for thousands of slices.
SEG_HEAD_BYTES = 2**20
SR_MAX_BYTES = 16 * 2**20
SEG_FILES_MAX = 50     # instances of one SEG series overlaid (each is a file the browser reads)
PROBE_MAX = 50         # .dcm outputs looked at per job (a SEG/SR job has a few; a de-identified series hundreds)
_UNITS = {"[hnsf'U]": "HU", "mm2": "mm²"}
PAGE_MAX = 1000  # instances per answer at most
# ... and at most this much of their URLs: OpenWhisk caps a result at 1 MB. A presigned URL is ~0.5 kB
# with static keys (1000 fit), ~1.5 kB with temporary credentials (X-Amz-Security-Token): the page
# is cut by size then, and the client asks for the next one (next_offset) as for a long series.
PAGE_BYTES = 600 * 1024
_TAGS = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "StudyDate", "StudyDescription")


class Viewer:
    """Signs URLs of staged series for the viewer (object store and staging passed in)."""

    def __init__(self, store: Any, staging: Any, ttl_s: int, *,
                 subject_of: Callable[[list[Any]], dict[str, Any] | None] | None = None) -> None:
        # subject_of: whose images staged series are (radcloud.work.subject.from_series, wired by the
        # action: the work layer sits above this one).
        self.store, self.staging, self.ttl_s = store, staging, int(ttl_s)
        self.subject_of = subject_of

    def series(self, series_uid: str, access: InputAccess | None = None, *,
               offset: int = 0, limit: int = PAGE_MAX) -> dict[str, Any]:
        """One staged series: its UIDs, whose images they are (``subject``, as a
        job's: :mod:`radcloud.work.subject`, for the viewer's identity header), a
        few series tags and a page of instance URLs.

        Raises:
            NotFound: the series is not staged (retrieve it first).
            BadRequest: not a UID.
        """
        check_uid("SeriesInstanceUID", series_uid)
        staged = self.staging.resolve({"series": [series_uid]}, access)[0]
        page, next_offset = self._page(staged.instances, offset, limit)
        return {
            "StudyInstanceUID": staged.study_uid, "SeriesInstanceUID": staged.series_uid,
            # PHI, as the staged DICOM itself: never logged
            "subject": self.subject_of([staged]) if self.subject_of else None,
            # the manifest's tags, read once by resolve (not a second GET of the manifest)
            "tags": {k: v for k, v in staged.tags.items() if k in _TAGS and v not in (None, "")},
            "count": len(staged.instances), "complete": staged.complete, "offset": offset,
            "next_offset": next_offset, "url_ttl_s": self.ttl_s, "instances": page,
        }

    def _page(self, objects: list[dict[str, Any]], offset: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """``objects`` (staged instances or job outputs: ``key``, ``size``) from ``offset`` as
        presigned URLs: at most ``limit`` (≤ :data:`PAGE_MAX`) and :data:`PAGE_BYTES` of URLs,
        one at least; and the offset of the next page (None: this is the last)."""
        limit = max(1, min(int(limit), PAGE_MAX))
        page, used = [], 0
        for obj in objects[offset:offset + limit]:
            url = self.store.presign_get(obj["key"], self.ttl_s)
            used += len(url) + 32  # the entry's JSON around it
            if page and used > PAGE_BYTES:
                break
            page.append({"url": url, "size": obj.get("size")})
        end = offset + len(page)
        return page, (end if end < len(objects) else None)

    def study(self, study_uid: str, access: InputAccess | None = None) -> dict[str, Any]:
        """The staged series of one study, each with the URL of its middle
        instance (the viewer draws the series' thumbnail from it).

        Raises:
            NotFound: nothing of the study is staged.
        """
        check_uid("StudyInstanceUID", study_uid)
        access = access or InputAccess.system()
        series = []
        for staged, doc in self._study_series(study_uid, access):
            middle = staged.instances[len(staged.instances) // 2]["key"]
            series.append({
                "SeriesInstanceUID": staged.series_uid, "count": len(staged.instances),
                "complete": staged.complete,
                "tags": {k: v for k, v in (doc.get("tags") or {}).items() if k in _TAGS and v not in (None, "")},
                "derived": derivedseries.is_derived({"SeriesInstanceUID": staged.series_uid}),
                "thumbnail_url": self.store.presign_get(access.check(middle), self.ttl_s),
            })
        if not series:
            raise NotFound(f"nothing of study {study_uid} is staged; retrieve it first (Pull page)",
                           field="StudyInstanceUID")
        series.sort(key=lambda s: (_number(s["tags"].get("SeriesNumber")), s["SeriesInstanceUID"]))
        return {"StudyInstanceUID": study_uid, "series": series, "url_ttl_s": self.ttl_s}

    def job(self, manifest: dict[str, Any], series_uid: str | None = None, *,
            offset: int = 0, limit: int = PAGE_MAX) -> dict[str, Any]:
        """A job's segmentation and measurements over their source series.

        ``manifest`` is the job's result manifest; ``series_uid`` picks one
        source series when the job ran on several (default: the first with a
        SEG). The source series must be staged for the viewer to show it.
        A job without a segmentation answers its DICOM images instead, a page
        of them from ``offset`` (``images.next_offset``, as :meth:`series`).
        """
        dicom = [o for o in manifest.get("outputs") or []
                 if str(o.get("name", "")).lower().endswith(".dcm") or o.get("content_type") == "application/dicom"]
        segs, srs, classes = [], [], {}
        for out in dicom[:PROBE_MAX]:
            sop_class = classes[out["key"]] = self._sop_class(out["key"])
            if sop_class == SEG_CLASS:
                segs.append(out)
            elif sop_class in SR_CLASSES:
                srs.append(out)
        sources = list(dict.fromkeys(o.get("series_uid") for o in segs + srs if o.get("series_uid")))
        chosen = series_uid if series_uid in sources else (sources[0] if sources else None)
        chosen_segs = sorted((o for o in segs if o.get("series_uid") == chosen), key=lambda o: o["name"])
        seg = chosen_segs[0] if chosen_segs else None
        rows = [row for o in srs if o.get("series_uid") == chosen for row in self._sr_rows(o)]
        study = next((o.get("study_uid") for o in segs + srs if o.get("series_uid") == chosen), "")
        answer = {
            "job_id": manifest.get("job_id"), "sources": sources,
            "source": {"SeriesInstanceUID": chosen, "StudyInstanceUID": study} if chosen else None,
            "segmentation": _segmentation({"name": seg["name"]}, [
                self.store.presign_get(o["key"], self.ttl_s) for o in chosen_segs]) if seg else None,
            "measurements": rows, "url_ttl_s": self.ttl_s,
        }
        if chosen is None:  # no segmentation: the job's own DICOM images, if it wrote any (a result series)
            images = _images(dicom, classes)
            if images:
                page, next_offset = self._page(images, offset, limit)
                answer["images"] = {"count": len(images), "offset": offset, "next_offset": next_offset,
                                    "instances": page}
        return answer

    def seg(self, series_uid: str, access: InputAccess | None = None) -> dict[str, Any]:
        """A staged DICOM SEG series (pulled from the PACS) over its source series, with its measurements.

        The answer has the shape of :meth:`job`'s: ``source`` (the series the
        SEG's Referenced Series Sequence names), ``segmentation`` (the SEG
        instance's URL) and ``measurements`` (the rows of every staged SR of
        the study whose evidence lists that SEG instance).

        Raises:
            NotFound: the SEG series, or its source series, is not staged (pull it).
            BadRequest: the series is not a Segmentation, or names no source series.
        """
        check_uid("SeriesInstanceUID", series_uid)
        access = access or InputAccess.system()
        staged = self.staging.resolve({"series": [series_uid]}, access)[0]
        if not staged.instances:
            raise NotFound(f"series {series_uid} is staged without any instance; pull it again", field="SeriesInstanceUID")
        # A SEG series may hold several instances (a file per segment, or frames split across files):
        # every one is overlaid. The first names the source series; SRs citing any of them are shown.
        keys = [access.check(i["key"]) for i in staged.instances[:SEG_FILES_MAX]]
        key = keys[0]
        head = self._head(key, SEG_HEAD_BYTES, ["SOPClassUID", "SOPInstanceUID", "ReferencedSeriesSequence"])
        sop_class = "" if head is None else str(head.file_meta.get("MediaStorageSOPClassUID") or head.get("SOPClassUID") or "")
        if sop_class != SEG_CLASS:
            raise BadRequest(f"series {series_uid} is not a DICOM Segmentation (SOP class {sop_class or 'unreadable'}); "
                             "open it as a series (viewer/series)", field="SeriesInstanceUID")
        refs = [str(item.get("SeriesInstanceUID", "")) for item in head.get("ReferencedSeriesSequence") or []]
        if not any(refs):
            raise BadRequest(f"the Segmentation {series_uid} names no source series (Referenced Series Sequence): "
                             "there are no images to show it on", field="SeriesInstanceUID")
        source_uid = next(r for r in refs if r)
        try:
            source = self.staging.resolve({"series": [source_uid]}, access)[0]
        except NotFound:
            raise NotFound(f"the images this Segmentation was made on (series {source_uid}) are not staged: pull "
                           "its study from the PACS (Search, then Pull) and open the Segmentation again",
                           field="SeriesInstanceUID") from None
        seg_sops = {str(head.get("SOPInstanceUID", ""))} | {
            str(getattr(self._head(k, HEAD_BYTES, ["SOPInstanceUID"]), "SOPInstanceUID", "")) for k in keys[1:]}
        rows = [row for ds in self._srs_citing(staged.study_uid, seg_sops - {""}, access) for row in sr_rows(ds)]
        return {
            "sources": [source.series_uid],
            "source": {"SeriesInstanceUID": source.series_uid, "StudyInstanceUID": source.study_uid},
            "segmentation": _segmentation(
                {"SeriesInstanceUID": series_uid, "name": f"SEG {staged.tags.get('SeriesNumber') or ''}".strip()},
                [self.store.presign_get(k, self.ttl_s) for k in keys]),
            "measurements": rows, "url_ttl_s": self.ttl_s,
        }

    def _study_series(self, study_uid: str, access: InputAccess) -> Any:
        """(staged series, its manifest) of every staged series of a study that has instances."""
        for info in self.store.list(f"{STAGED_ROOT}{study_uid}/"):
            if not info.key.endswith("/" + MANIFEST):
                continue
            doc = self.store.get_json(access.check(info.key))
            staged = parse_manifest(doc, "")
            if staged.instances:
                yield staged, doc

    def _srs_citing(self, study_uid: str, sop_uids: set[str], access: InputAccess) -> list[Any]:
        """The study's staged SR instances whose evidence lists one of ``sop_uids``."""
        found = []
        for staged, _ in self._study_series(study_uid, access):
            if str(staged.tags.get("Modality", "")).upper() != "SR":
                continue
            for inst in staged.instances[:PROBE_MAX]:
                ds = self._sr(access.check(inst["key"]), inst.get("size"), staged.series_uid)
                if ds is not None and sop_uids & _evidence(ds):
                    found.append(ds)
        return found

    def _read(self, key: str, limit: int) -> bytes:
        """The first ``limit`` bytes of an object (a ranged read where the store streams)."""
        stream = self.store.open(key)
        try:
            return stream.read(limit)
        finally:
            stream.close()
            getattr(stream, "release_conn", lambda: None)()

    def _head(self, key: str, limit: int, tags: list[str]) -> Any:
        """``tags`` of the DICOM object at ``key``, parsed from its first ``limit`` bytes; None if not DICOM."""
        import pydicom

        try:  # a truncated read is fine: pydicom stops at the end of what it was given
            return pydicom.dcmread(io.BytesIO(self._read(key, limit)), stop_before_pixels=True, specific_tags=tags)
        except Exception:  # not DICOM, or no file meta: not an object the viewer can show
            return None

    def _sop_class(self, key: str) -> str:
        ds = self._head(key, HEAD_BYTES, ["SOPClassUID"])
        return "" if ds is None else str(ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID") or "")

    def _sr_rows(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        """The SR's TID 1500 measurements as table rows; [] for an SR without any."""
        ds = self._sr(out["key"], out.get("size"), out.get("name"))
        return sr_rows(ds) if ds is not None else []

    def _sr(self, key: str, size: Any, name: Any) -> Any:
        import pydicom

        if int(size or 0) > SR_MAX_BYTES:
            log.warning("SR %s is over %d bytes: its measurements are not shown", name, SR_MAX_BYTES)
            return None
        try:
            return pydicom.dcmread(io.BytesIO(self._read(key, SR_MAX_BYTES + 1)))
        except Exception as exc:  # a broken object in the study must not hide the overlay
            log.info("SR %s not readable (%s): its measurements are not shown", name, type(exc).__name__)
            return None


def sr_rows(ds: Any) -> list[dict[str, Any]]:
    """One row per measurement of a TID 1500 report: segment, measurement, value, unit.

    ``segment`` is the measurement group's tracking identifier (the segment's
    label in radcloud's reports); a derivation (mean, standard deviation)
    is part of the measurement's name, and so is "on one slice" for a planar
    group's (TID 1410: radcloud's give a segment's area and mean HU on the
    slice where it is largest, the outline OHIF draws). Rows of one segment
    are together: its volumetric group's, then its planar group's, segments
    in the order the report first names them.
    """
    import highdicom as hd

    try:
        report = hd.sr.Comprehensive3DSR.from_dataset(ds) if ds.SOPClassUID.endswith(".34") else \
            hd.sr.ComprehensiveSR.from_dataset(ds) if ds.SOPClassUID.endswith(".33") else hd.sr.EnhancedSR.from_dataset(ds)
        groups = [(g, False) for g in report.content.get_volumetric_roi_measurement_groups()] + \
            [(g, True) for g in report.content.get_planar_roi_measurement_groups()]
    except (ValueError, AttributeError, TypeError) as exc:  # an SR that is not a TID 1500 measurement report
        log.info("SR is not a TID 1500 measurement report (%s): no rows", type(exc).__name__)
        return []
    rows = []
    for group, planar in groups:
        for m in group.get_measurements():
            qualifiers = ([m.derivation.meaning.lower()] if m.derivation is not None else []) + \
                (["on one slice"] if planar else [])
            name = m.name.meaning + (f" ({', '.join(qualifiers)})" if qualifiers else "")
            rows.append({"segment": str(group.tracking_identifier or ""), "name": name,
                         "value": round(float(m.value), 1), "unit": _UNITS.get(m.unit.value, m.unit.value)})
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row["segment"], i)
    return sorted(rows, key=lambda row: first[row["segment"]])  # stable: each group's order kept


def _images(dicom: list[dict[str, Any]], classes: dict[str, str]) -> list[dict[str, Any]]:
    """The DICOM outputs that are images (not SEG, not SR, readable), in name order.

    Only the first :data:`PROBE_MAX` outputs were read; the others take the
    class of the first one read in their folder (a plugin writes one kind of
    object per folder: ``seg/``, ``sr/``, a series of images...).
    """
    folder_class: dict[str, str] = {}
    for out in dicom:
        if out["key"] in classes:
            folder_class.setdefault(out["key"].rsplit("/", 1)[0], classes[out["key"]])
    found = []
    for out in dicom:
        sop_class = classes.get(out["key"]) or folder_class.get(out["key"].rsplit("/", 1)[0], "")
        if sop_class and sop_class != SEG_CLASS and sop_class not in SR_CLASSES:
            found.append(out)
    return sorted(found, key=lambda o: str(o.get("name", "")))


def _evidence(ds: Any) -> set[str]:
    """The SOP Instance UIDs an SR cites as evidence (the objects it measured)."""
    uids = set()
    for kw in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(kw) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                uids.update(str(sop.get("ReferencedSOPInstanceUID", "")) for sop in series.get("ReferencedSOPSequence") or [])
    return uids


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 30


def _segmentation(described: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    """The ``segmentation`` of an answer: every instance's URL (``urls``), ``url`` the first (older pages)."""
    return {**described, "url": urls[0], "urls": urls, "count": len(urls)}
