#!/usr/bin/env python3
"""deidentify: DICOM PS3.15 Basic Application Confidentiality Profile.

ChRIS ds plugin: ``deidentify.py [options] inputdir outputdir``. Every DICOM
file under ``inputdir`` is de-identified (see ``deid_profile.py`` for the
rules) and written to ``outputdir/<new SOP Instance UID>.dcm``; then every
output is re-read and checked with ``find_phi`` — a file that fails the
check is deleted and the run fails. ``deidentify.json`` lists counts only.

The HMAC secret comes from the environment variable named by
``--secretEnv`` (default ``RADCLOUD_DEID_SECRET``, ≥ 16 bytes): the same
secret gives the same pseudonyms, UIDs and date shifts, so series
de-identified on different days still line up. The re-identification map
(original Patient ID, pseudonym, date shift, UID pairs) is written only to
``--mapDir``, a hospital-side directory that must not be inside
``outputdir``; it never enters the output. Files whose pixels may carry
burned-in text are refused: the profile requires cleaning pixel data, which
this plugin does not do. That is BurnedInAnnotation YES, and — when the
attribute is absent — the kinds of image where text is usually burned in
(ultrasound, secondary captures, visible-light photographs and video) and
encapsulated documents; BurnedInAnnotation NO lets them through.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pydicom
import pydicom.uid
from pydicom.errors import InvalidDicomError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_profile import Deidentifier, find_phi  # noqa: E402


# SOP classes whose pixels (or document) usually carry patient text (PS3.15 E.3.1).
_TEXT_PRONE = ("Ultrasound", "Secondary Capture", "VL ", "Video ", "Encapsulated")


def may_have_burned_in_text(ds: pydicom.Dataset) -> bool:
    flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if flag:
        return flag != "NO"
    name = pydicom.uid.UID(str(ds.SOPClassUID)).name
    return any(kind in name for kind in _TEXT_PRONE)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PS3.15 Basic Profile de-identification")
    p.add_argument("--secretEnv", default="RADCLOUD_DEID_SECRET", help="environment variable holding the HMAC secret")
    p.add_argument("--mapDir", default="", help="hospital-side directory for the re-identification map")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def run(inputdir: Path, outputdir: Path, secret: bytes, map_dir: Path | None) -> dict:
    deid = Deidentifier(secret)
    summary = {"written": 0, "refused_burned_in": 0, "not_dicom": 0, "not_instance": 0, "failed_check": 0,
               "patients": 0}
    for path in sorted(p for p in inputdir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            summary["not_dicom"] += 1
            continue
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            summary["not_instance"] += 1  # not a storable composite instance
            continue
        if may_have_burned_in_text(ds):
            summary["refused_burned_in"] += 1
            continue
        deid.apply(ds)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        dest = outputdir / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(dest, enforce_file_format=True)
        if find_phi(pydicom.dcmread(dest)):  # verify what was written, not what we meant
            dest.unlink()
            summary["failed_check"] += 1
            continue
        summary["written"] += 1
    summary["patients"] = len(deid.patients)
    if map_dir is not None:
        map_dir.mkdir(parents=True, exist_ok=True)
        entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "patients": [{"patient_id": pid, **info} for pid, info in deid.patients.items()],
                 "uids": deid.uids}
        target = map_dir / f"reid-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}.json"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        summary["map_written"] = True
    (outputdir / "deidentify.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    secret = os.environ.get(a.secretEnv, "")
    if len(secret.encode()) < 16:
        print(f"set {a.secretEnv} to a secret of at least 16 bytes (kept hospital-side)", file=sys.stderr)
        return 2
    out = Path(a.outputdir).resolve()
    map_dir = Path(a.mapDir).resolve() if a.mapDir else None
    if map_dir is not None and (map_dir == out or map_dir.is_relative_to(out)):
        print("--mapDir must not be inside the output dir: the map re-identifies patients", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    summary = run(Path(a.inputdir), out, secret.encode(), map_dir)
    print(f"deidentify: {summary['written']} written, {summary['refused_burned_in']} refused (burned-in), "
          f"{summary['failed_check']} failed the PHI check, {summary['not_dicom']} not DICOM", file=sys.stderr)
    return 1 if summary["failed_check"] or (not summary["written"] and summary["refused_burned_in"]) else 0


if __name__ == "__main__":
    sys.exit(main())
