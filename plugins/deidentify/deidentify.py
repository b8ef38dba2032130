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
encapsulated documents; BurnedInAnnotation NO lets them through, and so
does ``--allowBurnedIn`` naming the SOP class (e.g. "Secondary Capture Image
Storage"): the shard runner sets it from the deployed descriptor's
``radcloud.deid.allow_burned_in`` list, never from the caller (docs/plugins.md).

Each file is written or named in ``file-reasons.json`` with why not (refused
and which rule, the PHI check and which attributes, unreadable and the reader's
message); the others are still de-identified (:mod:`radcloud.run.filereasons`).
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

from radcloud.run.filereasons import FileReasons, explain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_profile import Deidentifier, find_phi  # noqa: E402


# SOP classes whose pixels (or document) usually carry patient text (PS3.15 E.3.1).
_TEXT_PRONE = ("Ultrasound", "Secondary Capture", "VL ", "Video ", "Encapsulated")


def burned_in_reason(ds: pydicom.Dataset, allowed: frozenset[str] = frozenset()) -> str | None:
    """Why a file may carry burned-in patient text, or None if it may be de-identified."""
    flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    name = pydicom.uid.UID(str(ds.SOPClassUID)).name
    if flag:
        return None if flag == "NO" else f"BurnedInAnnotation is {flag}: its pixels carry text this plugin cannot clean"
    if name in allowed or str(ds.SOPClassUID) in allowed:
        return None
    if any(kind in name for kind in _TEXT_PRONE):
        return (f"{name} without BurnedInAnnotation: such images usually carry burned-in patient text; "
                f"set BurnedInAnnotation NO after checking, or ask an admin to allow this SOP class")
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PS3.15 Basic Profile de-identification")
    p.add_argument("--secretEnv", default="RADCLOUD_DEID_SECRET", help="environment variable holding the HMAC secret")
    p.add_argument("--mapDir", default="", help="hospital-side directory for the re-identification map")
    p.add_argument("--allowBurnedIn", default="", help="SOP class names or UIDs (comma-separated) allowed without "
                   "BurnedInAnnotation; set by the shard runner from the deployed descriptor only")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def run(inputdir: Path, outputdir: Path, secret: bytes, map_dir: Path | None,
        allowed: frozenset[str] = frozenset(), reasons: FileReasons | None = None) -> dict:
    deid = Deidentifier(secret)
    reasons = reasons or FileReasons("deidentify")
    summary = {"written": 0, "refused_burned_in": 0, "not_dicom": 0, "not_instance": 0, "failed_check": 0,
               "failed": 0, "patients": 0}
    files = sorted(p for p in inputdir.rglob("*") if p.is_file())
    reasons.inputs = len(files)
    for path in files:
        rel = path.relative_to(inputdir).as_posix()
        ds = reasons.dcmread(path, rel)
        if ds is None:
            summary["not_dicom"] += 1
            continue
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            summary["not_instance"] += 1  # not a storable composite instance
            reasons.skip(rel, "no SOPInstanceUID or SOPClassUID: not a storable DICOM instance")
            continue
        why = burned_in_reason(ds, allowed)
        if why:
            summary["refused_burned_in"] += 1
            reasons.skip(rel, f"refused: {why}")
            continue
        dest = None
        try:
            deid.apply(ds)
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            dest = outputdir / f"{ds.SOPInstanceUID}.dcm"  # a 2.25 UID the profile made: safe as a name
            ds.save_as(dest, enforce_file_format=True)
            left = find_phi(pydicom.dcmread(dest))  # verify what was written, not what we meant
        except Exception as exc:  # one odd file must not stop the others
            if dest is not None:
                dest.unlink(missing_ok=True)
            summary["failed"] += 1
            reasons.skip(rel, f"could not be de-identified: {explain(exc)}")
            continue
        if left:
            dest.unlink()
            summary["failed_check"] += 1
            reasons.skip(rel, f"failed the PHI check after de-identification, attributes {', '.join(left[:8])}; "
                              f"nothing of it was written")
            continue
        summary["written"] += 1
        reasons.ok()
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
    reasons.write(outputdir)
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
    allowed = frozenset(x.strip() for x in a.allowBurnedIn.split(",") if x.strip())
    summary = run(Path(a.inputdir), out, secret.encode(), map_dir, allowed)
    print(f"deidentify: {summary['written']} written, {summary['refused_burned_in']} refused (burned-in), "
          f"{summary['failed_check']} failed the PHI check, {summary['failed']} failed, "
          f"{summary['not_dicom']} not DICOM; reasons in file-reasons.json", file=sys.stderr)
    # Nothing written from files that were there is a failure (with every file's reason);
    # some written is success with warnings for the others.
    return 1 if not summary["written"] and any(v for k, v in summary.items() if k not in ("written", "patients",
                                                                                          "map_written")) else 0


if __name__ == "__main__":
    sys.exit(main())
