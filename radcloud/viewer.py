"""What the web viewer opens: a staged series' instances as presigned URLs.

The viewer page (``webui/static/viewer.js``, on dwv from npm) reads the
original DICOM instances itself, straight from the object store: this
module answers *which* objects and signs a short-lived GET URL for each,
never the pixels. An OpenWhisk result is capped at 1 MB, so proxying a CT
series through an action is impossible; a presigned URL per instance keeps
every answer small (~0.5 kB an instance, 1000 instances a page at most)
and lets the browser fetch the slices in parallel from S3.

    Viewer(store, staging, ttl_s).series(uid, access)   # one staged series
    Viewer(store, staging, ttl_s).study(uid, access)    # its study's staged series

Who may open what is :class:`radcloud.staged.InputAccess`, the one check of
staged data (dispatch uses it too): staged series are open to every role,
re-identification maps to nobody. The action (``functions/viewer``) records
every answer in the audit trail (who viewed which study and series).
"""

from __future__ import annotations

import logging
from typing import Any

from radcloud.errors import NotFound
from radcloud.layout import MANIFEST, STAGED_ROOT
from radcloud.query import check_uid
from radcloud.staged import InputAccess, parse_manifest

log = logging.getLogger(__name__)

PAGE_MAX = 1000  # instances per answer: 1000 presigned URLs are ~500 kB, under OpenWhisk's 1 MB
_TAGS = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined", "StudyDate", "StudyDescription")


class Viewer:
    """Signs URLs of staged series for the viewer (object store and staging passed in)."""

    def __init__(self, store: Any, staging: Any, ttl_s: int) -> None:
        self.store, self.staging, self.ttl_s = store, staging, int(ttl_s)

    def series(self, series_uid: str, access: InputAccess | None = None, *,
               offset: int = 0, limit: int = PAGE_MAX) -> dict[str, Any]:
        """One staged series: its UIDs, a few series tags and a page of instance URLs.

        Raises:
            NotFound: the series is not staged (retrieve it first).
            BadRequest: not a UID.
        """
        check_uid("SeriesInstanceUID", series_uid)
        staged = self.staging.resolve({"series": [series_uid]}, access)[0]
        limit = max(1, min(int(limit), PAGE_MAX))
        page = staged.instances[offset:offset + limit]
        doc = self._manifest(staged)
        end = offset + len(page)
        return {
            "StudyInstanceUID": staged.study_uid, "SeriesInstanceUID": staged.series_uid,
            "tags": {k: v for k, v in (doc.get("tags") or {}).items() if k in _TAGS and v not in (None, "")},
            "count": len(staged.instances), "complete": staged.complete, "offset": offset,
            "next_offset": end if end < len(staged.instances) else None,
            "url_ttl_s": self.ttl_s,
            "instances": [{"url": self.store.presign_get(i["key"], self.ttl_s), "size": i["size"]} for i in page],
        }

    def study(self, study_uid: str, access: InputAccess | None = None) -> dict[str, Any]:
        """The staged series of one study, each with the URL of its middle
        instance (the viewer draws the series' thumbnail from it).

        Raises:
            NotFound: nothing of the study is staged.
        """
        check_uid("StudyInstanceUID", study_uid)
        access = access or InputAccess.system()
        series = []
        for info in self.store.list(f"{STAGED_ROOT}{study_uid}/"):
            if not info.key.endswith("/" + MANIFEST):
                continue
            doc = self.store.get_json(access.check(info.key))
            staged = parse_manifest(doc, "")
            if not staged.instances:
                continue
            middle = staged.instances[len(staged.instances) // 2]["key"]
            series.append({
                "SeriesInstanceUID": staged.series_uid, "count": len(staged.instances),
                "complete": staged.complete,
                "tags": {k: v for k, v in (doc.get("tags") or {}).items() if k in _TAGS and v not in (None, "")},
                "thumbnail_url": self.store.presign_get(access.check(middle), self.ttl_s),
            })
        if not series:
            raise NotFound(f"nothing of study {study_uid} is staged; retrieve it first (Pull page)",
                           field="StudyInstanceUID")
        series.sort(key=lambda s: (_number(s["tags"].get("SeriesNumber")), s["SeriesInstanceUID"]))
        return {"StudyInstanceUID": study_uid, "series": series, "url_ttl_s": self.ttl_s}

    def _manifest(self, staged: Any) -> dict[str, Any]:
        from radcloud import layout

        try:
            doc = self.store.get_json(layout.manifest_key(staged.study_uid, staged.series_uid))
        except NotFound:
            return {}
        return doc if isinstance(doc, dict) else {}


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 30
