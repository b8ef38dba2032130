"""Who and what a job is about: the patient, study and series of its inputs.

A clinician must see, on every page that shows a patient's results, whose
images they are (name, MRN, birth date), which study (date, description)
and which series — the wrong-patient check every PACS viewer offers. The
staging manifests carry these DICOM attributes (:mod:`radcloud.work.retrieve`);
at dispatch :func:`from_series` condenses them into a job's ``subject``,
kept in the job's Redis record and answered by ``status`` and ``results``
to the job's owner only.

PHI rule (docs/security.md): the subject is never logged, never put in an
action's parameters or activation record, never in an error message. It
lives where the job lives and expires with it.

Shape::

    {"patients": [{"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}],
     "studies":  [{"StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber"}],
     "series":   [{"SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality"}]}

Jobs dispatched before subjects were recorded have none; the UI says
"Patient not recorded".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY = ("StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber")
SERIES = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality")
MAX_SERIES = 50     # a job's record stays small; the count says how many there were


def _pick(tags: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    return {k: str(tags[k]) for k in names if tags.get(k) not in (None, "")}


def from_series(series: Iterable[Any]) -> dict[str, Any] | None:
    """The subject of staged series (objects with ``tags``, ``study_uid``,
    ``series_uid``); None when no manifest recorded a patient or study."""
    patients: dict[tuple[str, str], dict[str, str]] = {}
    studies: dict[str, dict[str, str]] = {}
    out_series: list[dict[str, str]] = []
    total = 0
    for s in series:
        tags = {**(getattr(s, "tags", None) or {}), "StudyInstanceUID": s.study_uid,
                "SeriesInstanceUID": s.series_uid}
        patient = _pick(tags, PATIENT)
        if patient:
            patients.setdefault((patient.get("PatientID", ""), patient.get("PatientName", "")), patient)
        study = _pick(tags, STUDY)
        if s.study_uid and s.study_uid not in studies:
            studies[s.study_uid] = study
        total += 1
        if len(out_series) < MAX_SERIES:
            out_series.append(_pick(tags, SERIES))
    if not patients and not any(len(v) > 1 for v in studies.values()):
        return None
    out_series.sort(key=lambda x: (_int(x.get("SeriesNumber")), x.get("SeriesDescription", "")))
    return {"patients": list(patients.values()), "studies": list(studies.values()),
            "series": out_series, "series_total": total}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 30
