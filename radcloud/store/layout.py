"""Where staged DICOM lands in the object store (see docs/storage-layout.md).

Two layouts, chosen per retrieve:

* ``uid`` (default): ``staged/{StudyUID}/{SeriesUID}/{SOPInstanceUID}.dcm``.
  Only UIDs in keys — no patient name, ID or birth date — so bucket
  listings, access logs and presigned URLs carry no patient attributes.
* ``chris``: ChRIS's ``SERVICES/PACS/{pacs}/...`` tree (oxidicom's
  ``pacs_file.rs``), so a ChRIS backend can register the files with
  ``register_pacs_series`` unchanged. It embeds patient attributes in keys,
  as ChRIS does; choose it only for a store that CUBE owns.

Every series has one manifest at ``staged/{StudyUID}/{SeriesUID}/manifest.json``
in both layouts (its ``prefix`` says where the instances are): for ``chris``
it must stay out of the series folder, since CUBE registers every file there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import seahash

from radcloud.core.errors import BadRequest
from radcloud.pacs.query import check_uid

LAYOUTS = ("uid", "chris")
STAGED_ROOT = "staged/"
MANIFEST = "manifest.json"
# Re-identification maps (radcloud.run.shard): hospital-side, admins only; never
# a dispatch input nor a result (radcloud.store.staged refuses keys under it).
DEID_MAPS_ROOT = "deid-maps/"
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._^=+@()\[\]-]")  # CUBE forbids commas; '/' would nest


def check_layout(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise BadRequest(f"layout must be one of {', '.join(LAYOUTS)}", field="layout")
    return layout


def manifest_key(study_uid: str, series_key: str) -> str:
    """``series_key`` is the SeriesInstanceUID, or the key a retrieve gave a
    series sharing its UID with another one Orthanc holds (:func:`radcloud.work.retrieve.plan`)."""
    return f"{STAGED_ROOT}{check_uid('StudyInstanceUID', study_uid)}/{check_uid('SeriesInstanceUID', series_key)}/{MANIFEST}"


def series_prefix(layout: str, tags: Mapping[str, Any], *, pacs_name: str = "radcloud") -> str:
    """The folder (ending in ``/``) holding one series' instances."""
    study = check_uid("StudyInstanceUID", tags["StudyInstanceUID"])
    series_key = check_uid("SeriesInstanceUID", tags.get("series_key") or tags["SeriesInstanceUID"])
    if layout == "uid":
        return f"{STAGED_ROOT}{study}/{series_key}/"
    patient = "-".join([_c(tags.get("PatientID"), "PatientID"), _c(tags.get("PatientName"), ""),
                        _c(tags.get("PatientBirthDate"), "")])
    study = "-".join([_c(tags.get("StudyDescription"), "StudyDescription"),
                      _c(tags.get("AccessionNumber"), "AccessionNumber"),
                      _c(tags.get("StudyDate"), "StudyDate")])
    number = _number(tags.get("SeriesNumber"), 5, "SeriesNumber")
    series = "-".join([number, _c(tags.get("SeriesDescription"), "SeriesDescription"),
                       series_hash(series_key)])
    return f"SERVICES/PACS/{_c(pacs_name, 'PACS')}/{patient}/{study}/{series}/"


def instance_key(layout: str, prefix: str, tags: Mapping[str, Any]) -> str:
    sop = check_uid("SOPInstanceUID", tags["SOPInstanceUID"])
    if layout == "uid":
        return f"{prefix}{sop}.dcm"
    return f"{prefix}{_number(tags.get('InstanceNumber'), 4, 'InstanceNumber')}-{sop}.dcm"


def series_hash(series_uid: str) -> str:
    """7 hex digits naming the series folder, as oxidicom and px-repack name it:
    the SeaHash of the UID in lower-case hex (Rust ``{:x}``, no zero padding)."""
    return format(seahash.hash(series_uid.encode("ascii")), "x")[:7]


def _c(value: Any, placeholder: str) -> str:
    """One sanitised path component; a missing tag becomes its placeholder word."""
    if value is None or not str(value).strip():
        return placeholder
    return _UNSAFE.sub("_", str(value).strip()).strip(" .") or "_"


def _number(value: Any, width: int, placeholder: str) -> str:
    try:
        return f"{int(str(value).strip()):0{width}d}"
    except (TypeError, ValueError):
        return placeholder
