"""The query model: validate a search, run it on Orthanc, normalise the answers.

A search is validated completely before any PACS call (:func:`parse`): an
unknown field, a bad date or UID, an unsafe wildcard or a bad level is a
400 naming the field. It then runs on one of three sources:

* the local Orthanc through ``/tools/find`` with expansion — one round trip
  per level involved (studies, then the series of the matched studies for
  counts and modalities), never one call per study;
* a remote DICOM modality *through* Orthanc (C-FIND, ``/modalities/{m}/query``);
* optionally QIDO-RS on Orthanc's DICOMweb plugin (study level).

Answers are normalised: DICOM keywords as names, ISO dates (``2025-03-14``)
and times (``09:30:12``), lists for multi-valued fields, the Orthanc ids
needed to retrieve, a stable order, then ``offset``/``limit``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from radcloud.core.errors import BadRequest

LEVELS = ("patient", "study", "series", "instance")
_LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}

# field -> (level it belongs to, kind). Kinds decide validation and matching.
FIELDS: dict[str, tuple[str, str]] = {
    "PatientID": ("patient", "id"),
    "PatientName": ("patient", "text"),
    "PatientBirthDate": ("patient", "date"),
    "PatientSex": ("patient", "sex"),
    "StudyInstanceUID": ("study", "uid"),
    "StudyDate": ("study", "date"),
    "StudyTime": ("study", "time"),
    "AccessionNumber": ("study", "id"),
    "StudyDescription": ("study", "text"),
    "ModalitiesInStudy": ("study", "modality"),
    "SeriesInstanceUID": ("series", "uid"),
    "SeriesDate": ("series", "date"),
    "SeriesDescription": ("series", "text"),
    "Modality": ("series", "modality"),
    "BodyPartExamined": ("series", "text"),
    "SOPInstanceUID": ("instance", "uid"),
}
# Kinds that may hold several values (OR-ed) and kinds that allow * and ?.
_LIST_KINDS = {"id", "uid", "modality"}
_WILDCARD_KINDS = {"text", "id"}
CONTROL_KEYS = {"level", "limit", "offset", "counts", "modality", "source", "recent"}
SOURCES = ("orthanc", "dicomweb")

MAX_LIST = 100          # values in one list (multi-MRN, UIDs)
MAX_WILDCARDS = 8       # * and ? in one value: more is a scan, not a search
MAX_MATCHES = 5000      # matches fetched before ordering and paging

# A UID as far as safety needs, not DICOM's grammar (digits and dots, no
# leading zeros, 64 characters): Orthanc accepts and holds non-conformant
# UIDs (hex digests, leading zeros, letters) and anything it holds must be
# retrievable. A UID becomes one object-key component and one file name, so
# it may not hold '/', '\\', spaces, wildcards or control characters, nor be
# '.' or '..'; its length is bounded so keys stay far below S3's 1024 bytes.
MAX_UID = 128
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")
_SAFE_TEXT = re.compile(r"^[^\\\x00-\x1f\x7f]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclasses.dataclass(frozen=True)
class Query:
    """A validated search. ``filters`` hold DICOM C-FIND matching strings."""

    level: str
    filters: dict[str, str]
    limit: int
    offset: int = 0
    counts: bool = True
    modality: str | None = None   # a remote modality reached through Orthanc
    source: str = "orthanc"
    # Studies newest-received first (Orthanc's LastUpdate of the study: when an instance of it last
    # arrived), not newest StudyDate: what the PACS got lately, whatever date the scan carries.
    recent: bool = False

    @property
    def orthanc_level(self) -> str:
        return self.level.capitalize()


def parse(params: Mapping[str, Any], *, max_limit: int = 1000) -> Query:
    """Validate caller input into a :class:`Query`.

    Raises:
        BadRequest: naming the offending field.
    """
    level = params.get("level", "study")
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise BadRequest(f"level must be one of {', '.join(LEVELS)}", field="level")
    level = level.lower()
    limit = _int(params.get("limit", min(100, max_limit)), "limit", 1, max_limit)
    offset = _int(params.get("offset", 0), "offset", 0, MAX_MATCHES)
    counts, recent = (_bool(params.get(name, default), name) for name, default in (("counts", True),
                                                                                   ("recent", False)))
    modality = params.get("modality")
    if modality is not None and (not isinstance(modality, str) or not _NAME.match(modality)):
        raise BadRequest("modality must be the name of a modality registered in Orthanc", field="modality")
    source = params.get("source", "orthanc")
    if source not in SOURCES:
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}", field="source")
    if source == "dicomweb" and level != "study":
        raise BadRequest("source dicomweb supports level study only", field="source")
    if recent and (level != "study" or modality or source != "orthanc"):
        raise BadRequest("recent lists the studies radcloud's own Orthanc received last: level study, "
                         "no modality, source orthanc", field="recent")

    filters: dict[str, str] = {}
    for key, value in params.items():
        if key in CONTROL_KEYS or key.startswith("_"):
            continue
        if key not in FIELDS:
            raise BadRequest(f"unknown query field {key!r}; known: {', '.join(sorted(FIELDS))}", field=key)
        if value is None or value == "" or value == []:
            continue
        field_level, kind = FIELDS[key]
        if key == "Modality" and level in ("patient", "study"):
            key, field_level = "ModalitiesInStudy", "study"
        if _LEVEL_RANK[field_level] > _LEVEL_RANK[level]:
            raise BadRequest(f"{key} is a {field_level}-level field; use level={field_level} "
                             f"or a finer level", field=key)
        filters[key] = _match_string(key, kind, value)
    return Query(level, filters, limit, offset, counts, modality, source, recent)


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):  # from a GET query string
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", field=name)
    return value


def iso_received(last_update: Any) -> str | None:
    """Orthanc's ``LastUpdate`` (UTC, ``YYYYMMDDTHHMMSS``) as ISO 8601 (``...Z``), None if absent or odd."""
    text = str(last_update or "")
    if not re.fullmatch(r"\d{8}T\d{6}", text):
        return None
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[9:11]}:{text[11:13]}:{text[13:15]}Z"


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"{name} must be an integer", field=name)
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", field=name) from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}", field=name)
    return number


def _match_string(key: str, kind: str, value: Any) -> str:
    """One DICOM matching string: lists joined with ``\\``, ranges ``A-B``."""
    if isinstance(value, (list, tuple)):
        if kind not in _LIST_KINDS:
            raise BadRequest(f"{key} takes one value, not a list", field=key)
        if not 1 <= len(value) <= MAX_LIST:
            raise BadRequest(f"{key} takes 1 to {MAX_LIST} values", field=key)
        return "\\".join(_one(key, kind, v) for v in value)
    if kind in ("date", "time") and isinstance(value, Mapping):
        unknown = set(value) - {"from", "to"}
        if unknown or not value:
            raise BadRequest(f"{key} range takes 'from' and/or 'to'", field=key)
        return _range(key, kind, value.get("from") or "", value.get("to") or "")
    return _one(key, kind, value)


def _one(key: str, kind: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", field=key)
    value = value.strip()
    if not value:
        raise BadRequest(f"{key} must not be empty", field=key)
    if not _SAFE_TEXT.match(value):
        raise BadRequest(f"{key} contains a backslash or control character", field=key)
    if len(value) > (MAX_UID if kind == "uid" else 64) and kind != "text":
        raise BadRequest(f"{key} is longer than {MAX_UID if kind == 'uid' else 64} characters", field=key)
    wildcards = value.count("*") + value.count("?")
    if wildcards and kind not in _WILDCARD_KINDS:
        raise BadRequest(f"{key} does not accept wildcards", field=key)
    if wildcards > MAX_WILDCARDS or (wildcards and not value.strip("*?")):
        raise BadRequest(f"{key} wildcard is unsafe: use at most {MAX_WILDCARDS} wildcards and "
                         f"at least one other character (omit the field to match all)", field=key)
    if kind == "uid":
        return check_uid(key, value)
    elif kind == "date":
        if _DATE.match(value):
            return _date(key, value)
        if value.count("-") != 1:
            raise BadRequest(f"{key} range must be YYYYMMDD-YYYYMMDD (either end may be open) "
                             f"or {{'from': ..., 'to': ...}}", field=key)
        start, _, end = value.partition("-")
        return _range(key, kind, start, end)
    elif kind == "time":
        if "-" in value:
            start, _, end = value.partition("-")
            return _range(key, kind, start, end)
        return _time(key, value)
    elif kind == "sex":
        if value.upper() not in ("M", "F", "O"):
            raise BadRequest(f"{key} must be M, F or O", field=key)
        return value.upper()
    elif kind == "modality":
        if not _MODALITY.match(value.upper()):
            raise BadRequest(f"{key} must be a DICOM modality code such as CT or MR", field=key)
        return value.upper()
    return value


def check_uid(key: str, value: Any) -> str:
    """The one UID check (query, retrieve, object keys): what safety needs.

    Returns the UID stripped of DICOM padding. Raises BadRequest naming the
    field and what is wrong, never "not a DICOM UID": a UID Orthanc holds is
    accepted whatever its grammar, as long as it is safe in a key.
    """
    text = str(value).strip().rstrip("\x00").strip() if value is not None else ""
    if not text:
        raise BadRequest(f"{key} must not be empty", field=key)
    if len(text) > MAX_UID:
        raise BadRequest(f"{key} is longer than {MAX_UID} characters", field=key)
    if not _UID.match(text):
        raise BadRequest(f"{key} {text[:80]!r} holds characters unsafe in object keys and file names: "
                         f"use letters, digits, '.', '_', '+' and '-', starting with a letter or digit",
                         field=key)
    return text


def _range(key: str, kind: str, start: str, end: str) -> str:
    parse_one = _date if kind == "date" else _time
    low = parse_one(key, start) if start else ""
    high = parse_one(key, end) if end else ""
    if not low and not high:
        raise BadRequest(f"{key} range needs a start or an end", field=key)
    if low and high and low > high:
        raise BadRequest(f"{key} range starts after it ends", field=key)
    return f"{low}-{high}"


def _date(key: str, text: str) -> str:
    match = _DATE.match(text.strip())
    if not match:
        raise BadRequest(f"{key} must be a date YYYYMMDD or YYYY-MM-DD, or a range", field=key)
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise BadRequest(f"{key} is not a calendar date", field=key) from None
    return match[1] + match[2] + match[3]


def _time(key: str, text: str) -> str:
    match = _TIME.match(text.strip())
    if not match:
        raise BadRequest(f"{key} must be a time HHMMSS or HH:MM:SS, or a range", field=key)
    hh, mm, ss = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    if hh > 23 or mm > 59 or ss > 60:
        raise BadRequest(f"{key} is not a time of day", field=key)
    return "".join(part for part in match.groups()[:3] if part)


# -- normalisation ---------------------------------------------------------
def iso_date(value: str | None) -> str | None:
    if value and len(value) >= 8 and value[:8].isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return value or None


def iso_time(value: str | None) -> str | None:
    if value and len(value) >= 4 and value[:4].isdigit():
        text = f"{value[:2]}:{value[2:4]}"
        return text + (f":{value[4:6]}" if len(value) >= 6 else ":00")
    return value or None


def as_list(value: str | list | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in str(value).split("\\") if v]


def as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription")
SERIES_KEYS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDate", "SeriesDescription", "Modality",
               "BodyPartExamined")
INSTANCE_KEYS = ("SOPInstanceUID", "InstanceNumber")


def normalise(tags: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Pick ``keys`` from a tag map; dates ISO, times HH:MM:SS, numbers int."""
    out: dict[str, Any] = {}
    for key in keys:
        value = tags.get(key)
        if key.endswith("Date"):
            out[key] = iso_date(value)
        elif key.endswith("Time"):
            out[key] = iso_time(value)
        elif key in ("SeriesNumber", "InstanceNumber"):
            out[key] = as_int(value)
        else:
            out[key] = value if value not in ("", None) else None
    return out


def sort_key(level: str, item: Mapping[str, Any]) -> tuple:
    """Stable order: newest study first, then series/instance number, then UID."""
    def neg(text: str | None) -> str:
        # Descending on ISO strings without reversing the whole sort;
        # a missing value sorts last.
        if not text:
            return chr(0x10FFFF)
        return "".join(chr(0x10FFFE - ord(c)) for c in text)
    study = (neg(item.get("StudyDate")), neg(item.get("StudyTime")), item.get("StudyInstanceUID") or "")
    if level == "patient":
        return (item.get("PatientID") or "", item.get("orthanc_id") or "")
    if level == "study":
        return study
    series = (item.get("SeriesNumber") if item.get("SeriesNumber") is not None else 1 << 30,
              item.get("SeriesInstanceUID") or "")
    if level == "series":
        return study + series
    number = item.get("InstanceNumber")
    return study + series + (number if number is not None else 1 << 30, item.get("SOPInstanceUID") or "")


def page(query: Query, items: list[dict], truncated: bool = False) -> dict[str, Any]:
    """Order (newest received first for ``recent``), then slice; the answer names the total so the caller can page."""
    items.sort(key=lambda item: sort_key(query.level, item))
    if query.recent:  # stable: equal times keep the study order
        items.sort(key=lambda item: item.get("received_at") or "", reverse=True)
    return {
        "level": query.level,
        "source": query.modality and f"modality:{query.modality}" or query.source,
        "total": len(items),
        "truncated": truncated,
        "offset": query.offset,
        "limit": query.limit,
        "items": items[query.offset:query.offset + query.limit],
    }
