"""Series thumbnails for the search page, from Orthanc's own preview of each series' middle image.

A clinician picks series by what they look like as much as by their
description. ``GET query/previews?StudyInstanceUID=`` answers, for every
series of one study Orthanc holds, a small thumbnail of the series' middle
image: Orthanc renders it (``/instances/{id}/preview``, its window), Pillow
shrinks it to :data:`THUMB_PX` and it travels as a ``data:`` URL in the JSON
answer — a few kB each, well under OpenWhisk's 1 MB result, and the page
needs no second credential to show it (an ``<img>`` cannot send the Bearer
header). One request per study, audited like a search (``query:previews``).

A series Orthanc cannot render (an SR, a SEG, an encapsulated PDF, a codec
it lacks) gets no thumbnail and the reason in words; the others still come.
Remote PACS series (C-FIND answers) have no Orthanc copy yet: no thumbnails.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

from radcloud.core.errors import RadcloudError
from radcloud.pacs.orthanc import Orthanc
from radcloud.pacs.query import check_uid

log = logging.getLogger(__name__)

THUMB_PX = 96
MAX_SERIES = 60     # thumbnails per answer (two Orthanc calls each)
NOT_IMAGES = ("SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG")  # no pixels to preview


def study_previews(orthanc: Orthanc, study_uid: str, *, px: int = THUMB_PX) -> dict[str, Any]:
    """``{StudyInstanceUID, series: [{SeriesInstanceUID, orthanc_series, thumbnail | why}], truncated}``."""
    check_uid("StudyInstanceUID", study_uid)
    found = orthanc.find("Series", {"StudyInstanceUID": study_uid}, expand=True)
    out = []
    for series in found[:MAX_SERIES]:
        tags = series.get("MainDicomTags") or {}
        item = {"SeriesInstanceUID": tags.get("SeriesInstanceUID"), "orthanc_series": series["ID"]}
        if tags.get("Modality") in NOT_IMAGES:
            item["why"] = f"a {tags['Modality']} series holds no image"
        else:
            try:
                item["thumbnail"] = _thumbnail(orthanc, series["ID"], px)
            except (RadcloudError, OSError, ValueError) as exc:
                # Orthanc could not render it (codec, SEG...): say so; never a patient attribute.
                item["why"] = "Orthanc could not draw this series"
                log.info("no preview for series %s: %s", series["ID"], type(exc).__name__)
        out.append(item)
    return {"StudyInstanceUID": study_uid, "series": out, "truncated": len(found) > MAX_SERIES}


def _thumbnail(orthanc: Orthanc, series_id: str, px: int) -> str:
    from PIL import Image

    instances = orthanc.series_instances(series_id)
    if not instances:
        raise ValueError("no instance")
    instances.sort(key=lambda i: _int((i.get("MainDicomTags") or {}).get("InstanceNumber")))
    middle = instances[len(instances) // 2]["ID"]
    with Image.open(io.BytesIO(orthanc.preview(middle))) as img:
        img.thumbnail((px, px))
        img = img.convert("L") if img.mode in ("I", "I;16", "F", "LA", "P") else img
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 1 << 30
