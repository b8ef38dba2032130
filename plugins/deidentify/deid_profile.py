"""The PS3.15 Basic Application Level Confidentiality Profile as data and code.

``basic_profile.json`` holds Table E.1-1's Basic Profile column (attribute
tag → action code). This module applies it to a pydicom Dataset and checks
a result (:func:`find_phi`). Policy for the codes:

* ``X`` and the ``X/…`` choices: remove — except dates (shifted, see below)
  and ``X/Z/U*`` sequences, which are kept and cleaned item by item so
  references stay valid with remapped UIDs;
* ``Z``, ``Z/D``: zero-length value; ``D``: a dummy value of the VR;
* ``U``: a consistent replacement UID, ``2.25.<HMAC-SHA256(secret, uid)
  as a 128-bit integer>`` (≤ 44 characters), the same everywhere the
  original appears and across runs with the same secret;
* every DA/DT value that is kept is shifted by a per-patient number of
  days (Retain Longitudinal Temporal Information with Modified Dates
  option); Patient's Birth Date is emptied;
* Patient's Name and Patient ID become one pseudonym ``RC-<hex>`` derived
  from the original Patient ID with the secret;
* all private attributes, curves (50xx) and overlay data/comments (60xx)
  are removed, recursively.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

PROFILE = json.loads((Path(__file__).with_name("basic_profile.json")).read_text())
ACTIONS: dict[int, str] = {int(a["tag"], 16): a["action"] for a in PROFILE["attributes"]}
MASKED = [(int(m["group"], 16), int(m["element"], 16), int(m["group_mask"], 16), int(m["element_mask"], 16))
          for m in PROFILE["masked"]]
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = 0x00100010, 0x00100020, 0x00100030
PSEUDONYM_RE = re.compile(r"^RC-[0-9A-F]{16}$")
DUMMY_TEXT = "ANONYMIZED"
DUMMIES = {"AE": "ANONYMIZED", "AS": "000Y", "CS": "ANONYMIZED", "DS": "0", "IS": "0", "LO": DUMMY_TEXT,
           "LT": DUMMY_TEXT, "SH": DUMMY_TEXT, "ST": DUMMY_TEXT, "UT": DUMMY_TEXT, "UC": DUMMY_TEXT,
           "PN": DUMMY_TEXT, "TM": "000000", "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0,
           "SV": 0, "UV": 0, "UR": ""}
METHOD = "radcloud: PS3.15 Basic Profile, dates shifted, HMAC UIDs"  # LO: <= 64
SHIFT_MIN_DAYS, SHIFT_SPAN_DAYS = 30, 3650


def masked(tag: BaseTag) -> bool:
    return any((tag.group & gm) == g and (tag.element & em) == e for g, e, gm, em in MASKED)


class Deidentifier:
    """Applies the profile with one secret; remembers every mapping it made."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the de-identification secret must be at least 16 bytes")
        self._secret = secret
        self.uids: dict[str, str] = {}
        self.patients: dict[str, dict] = {}

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self._secret, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        original = str(original).strip()
        if original not in self.uids:
            self.uids[original] = "2.25." + str(int.from_bytes(self._mac("uid", original)[:16], "big"))
        return self.uids[original]

    def patient(self, patient_id: str) -> dict:
        if patient_id not in self.patients:
            mac = self._mac("patient", patient_id)
            shift = SHIFT_MIN_DAYS + int.from_bytes(mac[16:20], "big") % SHIFT_SPAN_DAYS
            self.patients[patient_id] = {"pseudonym": "RC-" + mac[:8].hex().upper(), "shift_days": -shift}
        return self.patients[patient_id]

    # -- the dataset walk ---------------------------------------------------
    def apply(self, ds: Dataset) -> dict:
        """De-identify ``ds`` in place; returns the patient mapping used."""
        who = self.patient(str(ds.get("PatientID", "")) or "<none>")
        self._walk(ds, who["shift_days"])
        for tag in (PATIENT_NAME, PATIENT_ID):
            ds[tag] = DataElement(tag, "PN" if tag == PATIENT_NAME else "LO", who["pseudonym"])
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        ds.DeidentificationMethod = METHOD
        codes = []
        for value, meaning in (("113100", "Basic Application Confidentiality Profile"),
                               ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(codes)
        if "SOPInstanceUID" in ds and hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return who

    def _walk(self, ds: Dataset, shift_days: int) -> None:
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private or masked(tag):
                del ds[tag]
                continue
            action = ACTIONS.get(int(tag))
            if tag == BIRTH_DATE:
                elem.value = ""
            elif elem.VR in ("DA", "DT") and action != "X":
                elem.value = shift_value(elem.value, elem.VR, shift_days)
            elif action is None:
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._walk(item, shift_days)
                elif elem.VR == "PN" and elem.value not in (None, ""):
                    elem.value = DUMMY_TEXT  # a person name the table misses is still PHI
            elif action == "U":
                elem.value = self._remap(elem.value)
            elif action == "X/Z/U*":
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._walk(item, shift_days)
                elif elem.VR == "UI":
                    elem.value = self._remap(elem.value)
                else:
                    del ds[tag]
            elif action.startswith("X"):
                del ds[tag]
            elif action in ("Z", "Z/D"):
                elem.value = Sequence() if elem.VR == "SQ" else (b"" if elem.VR in ("OB", "OW", "UN") else "")
            elif action == "D":
                if elem.VR == "SQ":
                    elem.value = Sequence()
                elif elem.VR == "UI":
                    elem.value = self._remap(elem.value)
                else:
                    elem.value = DUMMIES.get(elem.VR, b"" if elem.VR in ("OB", "OW", "UN") else "")

    def _remap(self, value):
        if value in (None, ""):
            return value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return [self.uid(v) for v in value]
        return self.uid(value)


def shift_value(value, vr: str, days: int):
    """Shift DA ('YYYYMMDD', ranges, multi-values) or DT by ``days``; unparsable → ''."""
    if value in (None, ""):
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [shift_value(v, vr, days) for v in value]
    text = str(value)
    if "-" in text and vr == "DA":
        return "-".join(shift_value(part, vr, days) if part else "" for part in text.split("-"))
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return ""
    return day.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")


def find_phi(ds: Dataset) -> list[str]:
    """Tags (``'(gggg,eeee)'``, with a path for nested ones) that still hold PHI.

    Independent of the original: it checks the output against the profile's
    rules, so a test can run it over every file a plugin wrote.
    """
    found: list[str] = []
    if ds.get("PatientIdentityRemoved") != "YES":
        found.append("(0012,0062)")
    dates_ok = ds.get("LongitudinalTemporalInformationModified") == "MODIFIED"
    _check(ds, found, "", dates_ok)
    return found


def _check(ds: Dataset, found: list[str], path: str, dates_ok: bool) -> None:
    for elem in ds:
        tag, name = elem.tag, f"{path}({elem.tag.group:04X},{elem.tag.element:04X})"
        if tag.is_private or masked(tag):
            found.append(name)
            continue
        action = ACTIONS.get(int(tag))
        value = elem.value
        empty = value in (None, "", b"") or (elem.VR == "SQ" and len(value) == 0)
        if tag in (PATIENT_NAME, PATIENT_ID):
            if not PSEUDONYM_RE.match(str(value or "")):
                found.append(name)
        elif tag == BIRTH_DATE:
            if not empty:
                found.append(name)
        elif elem.VR in ("DA", "DT") and action != "X":
            if not empty and not dates_ok:
                found.append(name)
        elif elem.VR == "SQ":
            if action is not None and action != "X/Z/U*" and not empty:
                found.append(name)
            else:
                for i, item in enumerate(value):
                    _check(item, found, f"{name}[{i}]", dates_ok)
        elif action is None:
            if elem.VR == "PN" and not empty and str(value) not in (DUMMY_TEXT,):
                found.append(name)  # any person name outside the table is suspect
        elif action == "U" or (action == "X/Z/U*" and elem.VR == "UI"):
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            if any(v and not str(v).startswith("2.25.") for v in values):
                found.append(name)
        elif action == "D":
            if not empty and value != DUMMIES.get(elem.VR) and not str(value).startswith("2.25."):
                found.append(name)
        elif not empty:  # X, Z and the X/… choices
            found.append(name)
