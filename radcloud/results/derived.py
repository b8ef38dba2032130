"""Results back into the PACS: a job's pictures and DICOM outputs as derived series.

Push (:func:`push`): a job's image outputs (PNG/JPEG) become one Secondary
Capture series per source series in the *same* study (same Study Instance
UID and patient module, copied from the PACS's own record of the study), so
a PACS viewer shows them next to the original images. Their UIDs, number,
description and source references follow the rules of
:mod:`radcloud.pacs.derivedseries` (fixed UIDs: pushing a rerun's results
stores the same instances) and a push first deletes radcloud's series of
the same slot that an earlier run stored (:meth:`Pacs.replace`): Orthanc keeps
the first copy of an instance it already holds, so without it a re-run with
other parameters would leave the old pixels under the same UIDs, and a new
plugin version would pile a second series next to the first. DICOM outputs that already are Secondary
Capture, Segmentation or Structured Report objects of the same study (e.g.
``lung-seg``'s SEG and SR) are stored as they are. Outputs of a
de-identified run belong to no hospital study and are never pushed.

numpy, Pillow and pydicom are imported where they are used.
Patient attributes are copied, never logged.
"""

from __future__ import annotations

import io
import logging
import tempfile
from typing import Any, Protocol

from radcloud.pacs.derivedseries import (MANUFACTURER, PREFIX, date_stamp, description, positive_int, same_slot,
                                         series_number, source_references, uid)

log = logging.getLogger(__name__)

SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
# Stored as they are: the SC family (prefix), SEG, and the SR family (TID 1500 reports are
# Comprehensive 3D SR, 1.2.840.10008.5.1.4.1.1.88.34) — never converted to Secondary Capture.
PUSHABLE_DICOM = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.")
MAX_PUSH = 1000
# Study/patient attributes copied from the PACS so the series files under the right study.
_STUDY_TAGS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
               "ReferringPhysicianName", "StudyDescription")
_PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


# -- push to the PACS -------------------------------------------------------
class Pacs(Protocol):
    def study_tags(self, study_uid: str) -> dict[str, str]: ...
    def series(self, series_uid: str) -> dict[str, Any]: ...
    def store(self, data: bytes) -> dict[str, Any]: ...
    def replace(self, study_uid: str, series_uid: str, number: Any, text: Any) -> int: ...


class OrthancPacs:
    """:class:`Pacs` over :class:`radcloud.pacs.orthanc.Orthanc`."""

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
                 positive_int((i.get("MainDicomTags") or {}).get("InstanceNumber")) or 0) for i in instances]
        rows.sort(key=lambda r: (r[1], r[0]))
        return {"SeriesNumber": tags.get("SeriesNumber"), "SeriesDescription": tags.get("SeriesDescription"),
                "instances": [(sop_class, sop) for sop, _ in rows if sop]}

    def store(self, data: bytes) -> dict[str, Any]:
        return self.orthanc.store_instance(data)  # POST /instances: Orthanc's C-STORE over REST

    def replace(self, study_uid: str, series_uid: str, number: Any, text: Any) -> int:
        """Delete the study's radcloud series in the slot of the series about to be stored
        (:func:`radcloud.pacs.derivedseries.same_slot`); returns how many. Never a scanner's series."""
        found = self.orthanc.find("Series", {"StudyInstanceUID": study_uid}, expand=True)
        gone = 0
        for s in found:
            if same_slot(s.get("MainDicomTags") or {}, series_uid, number, text):
                self.orthanc.delete("Series", s["ID"])
                gone += 1
        return gone


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
    date_stamp(ds)
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
    and :func:`description`. Before the first instance of each series the
    PACS deletes radcloud's series of the same slot (:meth:`Pacs.replace`):
    the same series from an earlier run, or another version's, so the study
    holds this run's results once.
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
    stored, series_uids, replaced = 0, [], 0
    cleared: set[str] = set()  # series whose earlier copies this push deleted (once each)

    def clear(study_uid: str, series_uid: str, number: Any, text: Any) -> None:
        nonlocal replaced
        if series_uid and series_uid not in cleared:
            cleared.add(series_uid)
            replaced += pacs.replace(study_uid, series_uid, number, text)
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
                    if number == 1:
                        clear(study_uid, series_uid, series_number(source.get("SeriesNumber"), "pictures"),
                              description(plugin, "pictures", source.get("SeriesNumber"),
                                          source.get("SeriesDescription")))
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
                    clear(study_uid, str(ds.get("SeriesInstanceUID") or ""), ds.get("SeriesNumber"),
                          ds.get("SeriesDescription"))
                    with open(tmp.name, "rb") as fh:
                        pacs.store(fh.read())
                    stored += 1
        if number:
            series_uids.append(series_uid)
    log.info("job %s: %d instance(s) pushed to the PACS in %d series (%d earlier series replaced)",
             job.get("id"), stored, len(series_uids), replaced)
    return {"series_uid": ",".join(series_uids), "instances": stored, "replaced": replaced}
