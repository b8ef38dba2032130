"""Derived series: the rules every series radcloud writes into a PACS study follows, and how
such a series is told apart from the images a scanner made.

They serve the push to the PACS (:mod:`radcloud.results.derived`), the SEG and
SR writer (:mod:`radcloud.results.segsr`), plugins that write DICOM series
(``ct-resample``), search and retrieve (a pulled study leaves them out), the
staged list and the viewer (a "Result" badge) — one place, in the PACS
layer because search and retrieve need it:

* **UIDs** are fixed by (source series, plugin, plugin version, what) and all
  start with radcloud's root :data:`UID_ROOT`: a re-run of the same plugin
  version on the same series writes the same objects, a new version a new
  series (:func:`uid`); the push replaces the earlier run's series of the
  same slot (:func:`same_slot`).
* **Series number** is the source series' number times 100 plus the kind
  (1 pictures, 2 segmentation, 3 measurements, 4 images): pictures of series
  3 are 301, its segmentation 302, whatever the run (:func:`series_number`).
* **Description** names radcloud, the plugin, the kind and the source series,
  e.g. ``radcloud lung-seg segmentation of #3 CT chest`` (:func:`description`).
* **Manufacturer** is ``radcloud`` and ImageType ``DERIVED``; pictures
  reference their source (:func:`source_references`).
* **Date**: SeriesDate/SeriesTime say when the result was made
  (:func:`date_stamp`), so a PACS list shows it.
* :func:`is_derived` recognises such a series by the root of its
  SeriesInstanceUID, which every search answers (Orthanc's and a PACS's
  C-FIND alike) and which neither a renamed description nor another tool's
  text changes; search marks it, a pulled study skips it unless asked
  (:func:`radcloud.work.retrieve.plan`) and dispatch refuses to run on it
  unless asked (:class:`radcloud.work.dispatch.Dispatcher`).

Standard library only at import (query and retrieve import it); pydicom is
imported where a UID or a dataset is made.
"""

from __future__ import annotations

import posixpath
import re
from datetime import datetime
from collections.abc import Mapping
from typing import Any

MANUFACTURER = "radcloud"
PREFIX = "radcloud "  # every derived series' description starts with it (for people; not the marker)
# Every UID radcloud makes for a derived object starts with this root: pydicom's root (the one
# generate_uid uses) and one more arc. pydicom's own random UIDs add digits but never another
# dot, so none of them (nor any scanner's) starts with it. A site with its own registered root
# replaces it here; series written under an earlier root are then no longer recognised.
UID_ROOT = "1.2.826.0.1.3680043.8.498.72."
KINDS = {"pictures": 1, "segmentation": 2, "measurements": 3, "images": 4}
UNNUMBERED = 99       # stands in for a source series without a SeriesNumber
MAX_REFERENCES = 1000  # source instances a picture names (a series longer than this is named in part)
_FRAME = re.compile(r"-f(\d{4})$")  # dcm2png names frame f of a multi-frame file "<stem>-fNNNN.png"


def plugin_name(plugin: str) -> str:
    """``lung-seg`` from ``radcloud lung-seg`` or ``lung-seg``."""
    return plugin[len(PREFIX):] if plugin.startswith(PREFIX) else plugin


def uid(source_series: str, plugin: str, version: str, what: str) -> str:
    """A UID under :data:`UID_ROOT` fixed by the source series, the plugin, its version and ``what`` (e.g. ``"seg"``)."""
    from pydicom.uid import generate_uid

    return generate_uid(prefix=UID_ROOT, entropy_srcs=[source_series, plugin, version, what])


def positive_int(value: Any) -> int | None:
    try:
        n = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def series_number(source_number: Any, kind: str) -> int:
    """``source × 100 + kind``: 301 for pictures of series 3, 302 for its segmentation..."""
    return (positive_int(source_number) or UNNUMBERED) * 100 + KINDS[kind]


def description(plugin: str, kind: str, source_number: Any, source_description: Any = "") -> str:
    """``radcloud <plugin> <kind> of #<n> <source description>``, at most 64 characters (LO)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    n = positive_int(source_number)
    source = " ".join(p for p in (f"#{n}" if n else "", str(source_description or "").strip()) if p)
    return f"{PREFIX}{plugin_name(plugin)} {kind} of {source or 'an unnumbered series'}"[:64]


def is_derived(tags: Mapping[str, Any]) -> bool:
    """Whether a series (its tags as a search answers them) was written by radcloud.

    The root of its SeriesInstanceUID decides (:data:`UID_ROOT`): the unique
    key every series search answers, set by radcloud alone. Not the
    description (a user can rename a series, another tool can write the
    same words) nor Manufacturer (no C-FIND series key, and radcloud's
    synthetic sample studies are made by Manufacturer ``radcloud``).
    """
    return str(tags.get("SeriesInstanceUID") or "").startswith(UID_ROOT)


def same_slot(tags: Mapping[str, Any], series_uid: str, number: Any, text: Any) -> bool:
    """Whether the derived series ``tags`` holds the slot of a new series
    (``series_uid``, SeriesNumber ``number``, SeriesDescription ``text``): the
    same series, or radcloud's series of the same plugin, kind and source made
    by another run (another plugin version: another UID). The push deletes
    it before storing, so a re-run replaces, never piles up."""
    if not is_derived(tags):
        return False
    if tags.get("SeriesInstanceUID") == series_uid:
        return True
    return str(tags.get("SeriesNumber") or "").strip() == str(number or "").strip() and \
        str(tags.get("SeriesDescription") or "").strip() == str(text or "").strip()


def source_references(source_series: str, instances: list[tuple[str, str]], picture: str = "") -> dict[str, Any]:
    """ReferencedSeriesSequence and SourceImageSequence of a picture made from ``source_series``.

    ``instances`` are the source's ``(SOPClassUID, SOPInstanceUID)``. A
    picture named after one source instance (dcm2png writes
    ``<SOPInstanceUID>.png``, and ``<SOPInstanceUID>-fNNNN.png`` for frame
    NNNN counted from 1) names that instance (and frame) as its source image;
    any other picture (a montage, an overlay) names every instance.
    """
    from pydicom.dataset import Dataset

    def ref(sop_class: str, sop_uid: str, frame: int | None = None) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        if frame is not None:
            item.ReferencedFrameNumber = frame
        return item

    stem = posixpath.basename(picture).rsplit(".", 1)[0]
    frame = _FRAME.search(stem)
    stem = stem[:frame.start()] if frame else stem
    stem = stem[:-4] if stem.endswith(".dcm") else stem
    named = [i for i in instances if i[1] == stem]
    sources = [ref(*named[0], int(frame.group(1)) if frame else None)] if named else \
        [ref(*i) for i in instances[:MAX_REFERENCES]]
    series = Dataset()
    series.SeriesInstanceUID = source_series
    series.ReferencedInstanceSequence = [ref(*i) for i in instances[:MAX_REFERENCES]]
    return {"ReferencedSeriesSequence": [series], "SourceImageSequence": sources}


def date_stamp(ds: Any, now: datetime | None = None) -> Any:
    """Set SeriesDate/SeriesTime (and ContentDate/ContentTime when absent) of ``ds`` to when it was made."""
    now = now or datetime.now()
    day, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = day, time
    if not ds.get("ContentDate"):
        ds.ContentDate, ds.ContentTime = day, time
    return ds
