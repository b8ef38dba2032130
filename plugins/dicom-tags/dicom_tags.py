#!/usr/bin/env python3
"""dicom-tags: a per-series tag report with consistency checks.

ChRIS ds plugin: ``dicom_tags.py [options] inputdir outputdir``. Reads the
headers of every DICOM file under ``inputdir`` (pixels are not loaded),
groups them by series and writes:

* ``tags.json`` — per series: the attributes that are constant across the
  series (value) and those that vary (distinct-value count and range), slice
  geometry, and the consistency findings;
* ``series.csv`` — one row per series; ``instances.csv`` — one row per file.

Checks: missing/duplicate InstanceNumbers, slice positions projected on the
slice normal (spacing gaps with the number of slices that seem missing,
non-uniform spacing, duplicate positions), mixed orientations, mixed matrix
sizes, pixel spacings and transfer syntaxes, and header values that are not
what their VR says (``malformed_values``: real files carry NumberOfFrames
"1A"): such a file is still reported, the bad value named. A file that cannot
be read at all gets its reason in ``file-reasons.json``
(:mod:`radcloud.run.filereasons`); the rest of the series is still reported.

Patient-identifying attributes are left out of the report unless
``--includePHI`` is given, and are never printed: stdout/stderr carry
counts only.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom

from radcloud.run.filereasons import FileReasons, explain

PHI_KEYWORDS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
    "OtherPatientNames", "OtherPatientIDsSequence", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "MilitaryRank", "EthnicGroup", "PatientComments", "MedicalRecordLocator",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord", "RequestingPhysician", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "AccessionNumber", "StationName", "DeviceSerialNumber",
    "StudyID", "IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight", "AdmissionID",
    "RequestAttributesSequence", "ReferencedPatientSequence", "PersonName",
})
# Attributes worth reporting (besides everything constant). Order = CSV columns.
SERIES_COLUMNS = ["series", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
                  "Manufacturer", "ManufacturerModelName", "SOPClassUID", "Rows", "Columns",
                  "PixelSpacing", "SliceThickness", "spacing_mm", "instances", "frames", "issues"]
INSTANCE_COLUMNS = ["file", "series", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
                    "position_mm", "TransferSyntaxUID", "Rows", "Columns"]
SKIP_KEYWORDS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData", "SOPInstanceUID",
                 "InstanceNumber", "ImagePositionPatient", "SliceLocation", "ContentTime",
                 "AcquisitionTime", "InstanceCreationTime", "WindowCenter", "WindowWidth",
                 "LargestImagePixelValue", "SmallestImagePixelValue"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Per-series DICOM tag report and consistency checks")
    p.add_argument("--includePHI", action="store_true", help="keep patient-identifying attributes in the report")
    p.add_argument("--gapFactor", type=float, default=1.5,
                   help="a slice step larger than this times the median is a gap")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def _plain(value):
    """A JSON-able form of a data element value (sequences summarised)."""
    if isinstance(value, pydicom.sequence.Sequence):
        return f"<sequence of {len(value)} item(s)>"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, pydicom.multival.MultiValue):
        return [_plain(v) for v in value]
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.DSdecimal)):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return str(value)


def _header(ds: pydicom.Dataset, include_phi: bool) -> dict:
    out = {}
    for elem in ds:
        kw = elem.keyword
        if not kw or kw in SKIP_KEYWORDS or elem.tag.is_private:
            continue
        if kw in PHI_KEYWORDS and not include_phi:
            continue
        out[kw] = _plain(elem.value)
    return out


def _normal(iop) -> np.ndarray | None:
    if iop is None or len(iop) != 6:
        return None
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def check_series(instances: list[dict], gap_factor: float = 1.5) -> tuple[list[dict], dict]:
    """Consistency findings and geometry for one series' instance records."""
    issues: list[dict] = []
    numbers = [i["InstanceNumber"] for i in instances if i["InstanceNumber"] is not None]
    dupes = sorted(n for n, c in Counter(numbers).items() if c > 1)
    if dupes:
        issues.append({"check": "duplicate_instance_numbers", "numbers": dupes[:50]})
    if numbers:
        expected = set(range(min(numbers), max(numbers) + 1))
        missing = sorted(expected - set(numbers))
        if missing:
            issues.append({"check": "missing_instance_numbers", "numbers": missing[:200],
                           "count": len(missing)})
    orientations = Counter(i["orientation"] for i in instances if i["orientation"] is not None)
    if len(orientations) > 1:
        issues.append({"check": "mixed_orientations", "count": len(orientations)})
    for key, check in (("matrix", "mixed_matrix_sizes"), ("PixelSpacing", "mixed_pixel_spacing"),
                       ("TransferSyntaxUID", "mixed_transfer_syntaxes")):
        values = {json.dumps(i[key]) for i in instances}
        if len(values) > 1:
            issues.append({"check": check, "values": sorted(values)[:10]})
    geometry: dict = {}
    normal = _normal(json.loads(orientations.most_common(1)[0][0])) if orientations else None
    positioned = [i for i in instances if i["ImagePositionPatient"] is not None]
    if normal is not None and len(positioned) >= 2:
        for i in positioned:
            i["position_mm"] = round(float(np.dot(normal, i["ImagePositionPatient"])), 4)
        pos = np.sort(np.array([i["position_mm"] for i in positioned]))
        steps = np.diff(pos)
        dup = int(np.sum(steps < 1e-3))
        if dup:
            issues.append({"check": "duplicate_positions", "count": dup})
        steps = steps[steps >= 1e-3]
        if steps.size:
            median = float(np.median(steps))
            geometry = {"spacing_mm": round(median, 4), "extent_mm": round(float(pos[-1] - pos[0]), 3),
                        "min_step_mm": round(float(steps.min()), 4), "max_step_mm": round(float(steps.max()), 4)}
            gaps = [{"after_mm": round(float(pos[k]), 3), "step_mm": round(float(s), 3),
                     "missing_slices": int(round(s / median)) - 1}
                    for k, s in enumerate(np.diff(pos)) if s > gap_factor * median]
            if gaps:
                issues.append({"check": "spacing_gaps", "gaps": gaps[:50],
                               "missing_slices": sum(g["missing_slices"] for g in gaps)})
            elif steps.max() - steps.min() > max(0.01 * median, 1e-3):
                issues.append({"check": "non_uniform_spacing", "min_mm": geometry["min_step_mm"],
                               "max_mm": geometry["max_step_mm"]})
    return issues, geometry


def report(inputdir: Path, include_phi: bool = False, gap_factor: float = 1.5,
           reasons: FileReasons | None = None) -> dict:
    series: dict[str, dict] = {}
    skipped = 0
    files = sorted(p for p in inputdir.rglob("*") if p.is_file())
    reasons = reasons or FileReasons("dicom-tags")
    reasons.inputs = len(files)
    for path in files:
        rel = path.relative_to(inputdir).as_posix()
        ds = reasons.dcmread(path, rel, what="header", stop_before_pixels=True)
        if ds is None:
            skipped += 1
            continue
        try:
            header, inst = _header(ds, include_phi), _instance(ds, rel)
        except Exception as exc:  # one odd header must not lose the series report
            skipped += 1
            reasons.skip(rel, f"cannot report the header: {explain(exc)}")
            continue
        uid = str(ds.get("SeriesInstanceUID", "unknown"))
        s = series.setdefault(uid, {"headers": [], "instances": []})
        s["headers"].append(header)
        s["instances"].append(inst)
        reasons.ok()
    out = {"series": [], "skipped_files": skipped}
    for n, (uid, s) in enumerate(sorted(series.items(), key=lambda kv: _series_order(kv[1])), 1):
        s["instances"].sort(key=lambda i: (i["InstanceNumber"] is None, i["InstanceNumber"] or 0, i["file"]))
        issues, geometry = check_series(s["instances"], gap_factor)
        malformed = [{"file": i["file"], **m} for i in s["instances"] for m in i.pop("malformed")]
        if malformed:
            issues.append({"check": "malformed_values", "count": len(malformed), "values": malformed[:50]})
        constant, varying = {}, {}
        keys = set().union(*(h.keys() for h in s["headers"]))
        for key in sorted(keys):
            values = [json.dumps(h.get(key), sort_keys=True, default=str) for h in s["headers"]]
            distinct = set(values)
            if len(distinct) == 1:
                constant[key] = s["headers"][0].get(key)
            else:
                varying[key] = {"distinct": len(distinct), "missing": sum(1 for h in s["headers"] if key not in h)}
        for inst in s["instances"]:
            inst["series"] = n
        out["series"].append({"series": n, "instances": len(s["instances"]),
                              "frames": sum(i["frames"] for i in s["instances"]),
                              "geometry": geometry, "issues": issues, "constant": constant, "varying": varying,
                              "instance_list": s["instances"]})
    return out


def _instance(ds: pydicom.Dataset, rel: str) -> dict:
    """One file's record; a value that is not what its VR says is None plus a ``malformed`` note."""
    malformed: list[dict] = []

    def number(key: str, kind=float, count: int | None = None):
        raw = ds.get(key)
        if raw is None or raw == "":
            return None
        try:
            values = list(raw) if isinstance(raw, (list, tuple, pydicom.multival.MultiValue)) else [raw]
            if count is not None and len(values) != count:
                raise ValueError(f"{len(values)} values, {count} expected")
            out = [kind(float(str(v).strip())) if kind is int else kind(str(v).strip()) for v in values]
            return out if count is not None else out[0]
        except (TypeError, ValueError) as exc:
            malformed.append({"attribute": key, "value": str(raw)[:64], "why": explain(exc)})
            return None

    ipp, iop = number("ImagePositionPatient", count=3), number("ImageOrientationPatient", count=6)
    frames = number("NumberOfFrames", int)
    return {
        "file": rel,
        "InstanceNumber": number("InstanceNumber", int),
        "ImagePositionPatient": ipp,
        "SliceLocation": number("SliceLocation"),
        "orientation": json.dumps([round(v, 3) for v in iop]) if iop is not None else None,
        "TransferSyntaxUID": str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")),
        "Rows": number("Rows", int), "Columns": number("Columns", int),
        "matrix": [number("Rows", int), number("Columns", int)],
        "PixelSpacing": number("PixelSpacing", count=2),
        "frames": frames if frames and frames > 0 else 1, "position_mm": None,
        "malformed": _unique(malformed),
    }


def _unique(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for item in items:
        if item["attribute"] not in seen:
            seen.add(item["attribute"])
            out.append(item)
    return out


def _series_order(s: dict) -> tuple:
    h = s["headers"][0]
    try:
        number = int(float(str(h.get("SeriesNumber") or 0)))
    except ValueError:
        number = 0
    return (str(h.get("StudyInstanceUID", "")), number, str(h.get("SeriesInstanceUID", "")))


def write_outputs(rep: dict, outputdir: Path) -> None:
    (outputdir / "tags.json").write_text(json.dumps(rep, indent=1, default=str))
    with open(outputdir / "series.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, SERIES_COLUMNS)
        w.writeheader()
        for s in rep["series"]:
            row = {k: _cell(s["constant"].get(k)) for k in SERIES_COLUMNS}
            row.update(series=s["series"], instances=s["instances"], frames=s["frames"],
                       spacing_mm=s["geometry"].get("spacing_mm", ""),
                       issues=";".join(i["check"] for i in s["issues"]))
            w.writerow(row)
    with open(outputdir / "instances.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, INSTANCE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for s in rep["series"]:
            for inst in s["instance_list"]:
                w.writerow({k: _cell(inst.get(k)) for k in INSTANCE_COLUMNS})


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    reasons = FileReasons("dicom-tags")
    rep = report(Path(a.inputdir), a.includePHI, a.gapFactor, reasons)
    Path(a.outputdir).mkdir(parents=True, exist_ok=True)
    write_outputs(rep, Path(a.outputdir))
    reasons.write(Path(a.outputdir))
    n_issues = sum(len(s["issues"]) for s in rep["series"])
    print(f"dicom-tags: {len(rep['series'])} series, {sum(s['instances'] for s in rep['series'])} instances, "
          f"{n_issues} issue(s), {rep['skipped_files']} file(s) not reported", file=sys.stderr)
    return 0 if rep["series"] or not rep["skipped_files"] else 1


if __name__ == "__main__":
    sys.exit(main())
