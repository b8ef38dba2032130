"""Derived series: what radcloud writes into a PACS study, and how it is told apart.

One place for the rules every radcloud-made series follows — the pictures
:func:`push` wraps as Secondary Capture here, the SEG and SR of
:mod:`radcloud.segsr`, the CT volumes plugins write:

* **UIDs** are fixed by (source series, plugin, plugin version, what): a
  re-run of the same plugin version on the same series writes the same
  objects, so the PACS replaces them instead of piling up copies; a new
  version writes a new series (:func:`uid`).
* **Series number** is the source series' number times 100 plus the kind
  (1 pictures, 2 segmentation, 3 measurements, 4 images): pictures of series
  3 are 301, its segmentation 302, whatever the run (:func:`series_number`).
* **Description** names radcloud, the plugin, the kind and the source series,
  e.g. ``radcloud lung-seg segmentation of #3 CT chest`` (:func:`description`).
* **Manufacturer** is ``radcloud`` and ImageType ``DERIVED``; pictures
  reference their source (ReferencedSeriesSequence, SourceImageSequence).
* :func:`is_derived` recognises such a series by its description, which
  every search answers, so search marks it and a pulled study skips it
  unless asked
  (:func:`radcloud.retrieve.plan`).

Push (:func:`push`): a job's image outputs (PNG/JPEG) become one Secondary
Capture series per source series in the *same* study (same Study Instance
UID and patient module, copied from the PACS's own record of the study), so
a PACS viewer shows them next to the original images. DICOM outputs that
already are Secondary Capture, Segmentation or Structured Report objects of
the same study (e.g. ``lung-seg``'s SEG and SR) are stored as they are.
Outputs of a de-identified run belong to no hospital study and are never
pushed.

This module is imported by query and retrieve for :func:`is_derived`, so
numpy, Pillow and pydicom are imported where they are used, not at import.
Patient attributes are copied, never logged.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

MANUFACTURER = "radcloud"
PREFIX = "radcloud "  # every derived series' description starts with it
KINDS = {"pictures": 1, "segmentation": 2, "measurements": 3, "images": 4}
UNNUMBERED = 99       # stands in for a source series without a SeriesNumber
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
# Stored as they are: the SC family (prefix), SEG, and the SR family (TID 1500 reports are
# Comprehensive 3D SR, 1.2.840.10008.5.1.4.1.1.88.34) — never converted to Secondary Capture.
PUSHABLE_DICOM = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.")
MAX_PUSH = 1000
MAX_REFERENCES = 1000  # source instances a picture names (a series longer than this is named in part)
# Study/patient attributes copied from the PACS so the series files under the right study.
_STUDY_TAGS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
               "ReferringPhysicianName", "StudyDescription")
_PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
_FRAME = re.compile(r"-f(\d{4})$")  # dcm2png names frame f of a multi-frame file "<stem>-fNNNN.png"


# -- the rules --------------------------------------------------------------
def plugin_name(plugin: str) -> str:
    """``lung-seg`` from ``radcloud lung-seg`` or ``lung-seg``."""
    return plugin[len(PREFIX):] if plugin.startswith(PREFIX) else plugin


def uid(source_series: str, plugin: str, version: str, what: str) -> str:
    """A UID fixed by the source series, the plugin, its version and ``what`` (e.g. ``"seg"``)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[source_series, plugin, version, what])


def _number(value: Any) -> int | None:
    try:
        n = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def series_number(source_number: Any, kind: str) -> int:
    """``source × 100 + kind``: 301 for pictures of series 3, 302 for its segmentation..."""
    return (_number(source_number) or UNNUMBERED) * 100 + KINDS[kind]


def description(plugin: str, kind: str, source_number: Any, source_description: Any = "") -> str:
    """``radcloud <plugin> <kind> of #<n> <source description>``, at most 64 characters (LO)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    n = _number(source_number)
    source = " ".join(p for p in (f"#{n}" if n else "", str(source_description or "").strip()) if p)
    return f"{PREFIX}{plugin_name(plugin)} {kind} of {source or 'an unnumbered series'}"[:64]


def is_derived(tags: Mapping[str, Any]) -> bool:
    """Whether a series (its tags as a search answers them) was written by radcloud.

    The description decides: every PACS answers SeriesDescription to a
    series C-FIND, while Manufacturer is no series-level key (and radcloud's
    own synthetic sample studies are made by Manufacturer ``radcloud``).
    """
    return str(tags.get("SeriesDescription") or "").startswith(PREFIX)


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


# -- push to the PACS -------------------------------------------------------
class Pacs(Protocol):
    def study_tags(self, study_uid: str) -> dict[str, str]: ...
    def series(self, series_uid: str) -> dict[str, Any]: ...
    def store(self, data: bytes) -> dict[str, Any]: ...


class OrthancPacs:
    """:class:`Pacs` over :class:`radcloud.orthanc.Orthanc`."""

    def __init__(self, orthanc: Any) -> None:
        self.orthanc = orthanc

    def study_tags(self, study_uid: str) -> dict[str, str]:
        found = self.orthanc.find("Study", {"StudyInstanceUID": study_uid}, expand=True)
        if not found:
            return {}
        study = found[0]
        return {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}

    def series(self, series_uid: str) -> dict[str, Any]:
        """The source series' number, description and ``(SOPClassUID, SOPInstanceUID)`` of its instances.

        Two calls: the series (expanded) and its instances; the SOP class is
        Orthanc's metadata of the first instance (a series holds one class).
        """
        found = self.orthanc.find("Series", {"SeriesInstanceUID": series_uid}, expand=True) if series_uid else []
        if not found:
            return {"instances": []}
        tags = found[0].get("MainDicomTags", {})
        instances = self.orthanc.series_instances(found[0]["ID"])
        sop_class = self.orthanc.metadata("Instance", instances[0]["ID"], "SopClassUid") if instances else ""
        rows = [((i.get("MainDicomTags") or {}).get("SOPInstanceUID", ""),
                 _number((i.get("MainDicomTags") or {}).get("InstanceNumber")) or 0) for i in instances]
        rows.sort(key=lambda r: (r[1], r[0]))
        return {"SeriesNumber": tags.get("SeriesNumber"), "SeriesDescription": tags.get("SeriesDescription"),
                "instances": [(sop_class, sop) for sop, _ in rows if sop]}

    def store(self, data: bytes) -> dict[str, Any]:
        return self.orthanc.store_instance(data)  # POST /instances: Orthanc's C-STORE over REST


def secondary_capture(image: Any, *, study: dict[str, str], series_uid: str, plugin: str,
                      number: int, series_number: int, sop_uid: str | None = None,
                      series_description: str | None = None, references: dict[str, Any] | None = None,
                      version: str = "") -> Any:
    """One Secondary Capture instance (a pydicom Dataset) from a Pillow image (8-bit grey or RGB)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    img = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    pixels = np.asarray(img, dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SC_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for tag in _PATIENT_TAGS + _STUDY_TAGS:
        setattr(ds, tag, study.get(tag, ""))
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.Modality = "OT"
    ds.Manufacturer = MANUFACTURER
    if version:
        ds.SoftwareVersions = version[:64]
    # Type 2C, present and empty: a picture of results has no laterality nor patient orientation of its
    # own, and dicom3tools' dciodvfy cannot evaluate the conditions, so it requires them.
    ds.Laterality = ""
    ds.PatientOrientation = ""
    ds.ConversionType = "WSD"
    ds.SeriesDescription = (series_description or f"{PREFIX}{plugin}")[:64]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for keyword, value in (references or {}).items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if pixels.ndim == 2 else "RGB"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def to_bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def push(job: dict[str, Any], manifest: dict[str, Any], *, store: Any, pacs: Pacs) -> dict[str, Any]:
    """Store the job's image/DICOM outputs into the PACS; returns what was stored.

    Pictures of one source series become one Secondary Capture series with
    the UIDs, number and description of :func:`uid`, :func:`series_number`
    and :func:`description`, so pushing the same results again stores the
    same instances (the PACS keeps one copy).
    """
    import pydicom
    from PIL import Image

    if (job.get("options") or {}).get("deidentify"):
        return {"series_uid": "", "instances": 0, "skipped": "de-identified outputs are not pushed"}
    plugin = job.get("plugin") or manifest.get("plugin") or ""
    version = str(job.get("plugin_version") or manifest.get("plugin_version") or "")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for out in manifest.get("outputs", []):
        name = out["name"].lower()
        if "thumb" in name or "montage" in name:
            continue  # previews, not results
        if out.get("image") or name.endswith(".dcm"):
            groups.setdefault((out.get("study_uid") or "", out.get("series_uid") or ""), []).append(out)
    stored, series_uids = 0, []
    for (study_uid, source_uid), outs in sorted(groups.items()):
        if not study_uid:
            continue
        study = pacs.study_tags(study_uid) or {"StudyInstanceUID": study_uid}
        study["StudyInstanceUID"] = study_uid
        source = pacs.series(source_uid) if any(o.get("image") for o in outs) else {"instances": []}
        origin = source_uid or study_uid
        series_uid = uid(origin, plugin, version, "pictures-series")
        number = 0
        for out in sorted(outs, key=lambda o: o["name"])[:MAX_PUSH]:
            with tempfile.NamedTemporaryFile() as tmp:
                store.get_to_file(out["key"], tmp.name)
                if out.get("image"):
                    number += 1
                    refs = source_references(source_uid, source["instances"], out["name"]) \
                        if source_uid and source["instances"] else None
                    with Image.open(tmp.name) as img:
                        ds = secondary_capture(
                            img, study=study, series_uid=series_uid, plugin=plugin, number=number,
                            series_number=series_number(source.get("SeriesNumber"), "pictures"),
                            sop_uid=uid(origin, plugin, version, f"picture:{out['name']}"),
                            series_description=description(plugin, "pictures", source.get("SeriesNumber"),
                                                           source.get("SeriesDescription")),
                            references=refs, version=version)
                    pacs.store(to_bytes(ds))
                    stored += 1
                else:
                    ds = pydicom.dcmread(tmp.name, stop_before_pixels=False)
                    if ds.get("StudyInstanceUID") != study_uid or \
                            not str(ds.get("SOPClassUID", "")).startswith(PUSHABLE_DICOM):
                        continue
                    with open(tmp.name, "rb") as fh:
                        pacs.store(fh.read())
                    stored += 1
        if number:
            series_uids.append(series_uid)
    log.info("job %s: %d instance(s) pushed to the PACS in %d series", job.get("id"), stored, len(series_uids))
    return {"series_uid": ",".join(series_uids), "instances": stored}
