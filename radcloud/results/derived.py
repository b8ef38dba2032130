"""Results back into the PACS: image outputs as a derived DICOM series.

A job's image outputs (PNG/JPEG) are wrapped as Secondary Capture
instances — one new series per source series, in the *same* study (same
Study Instance UID and patient module, copied from the PACS's own record
of the study), SeriesDescription ``radcloud <plugin>`` — so a PACS viewer
shows them next to the original images. DICOM outputs that already are
Secondary Capture, Segmentation or Structured Report objects of the same
study (e.g. ``segment-stats``' mask, ``lung-seg``'s SEG and SR) are stored
as they are. Outputs of a de-identified
run belong to no hospital study and are never pushed.

Patient attributes are copied, never logged.
"""

from __future__ import annotations

import io
import logging
import tempfile
from typing import Any, Protocol

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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


class Pacs(Protocol):
    def study_tags(self, study_uid: str) -> dict[str, str]: ...
    def store(self, data: bytes) -> dict[str, Any]: ...


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

    def store(self, data: bytes) -> dict[str, Any]:
        # POST /instances is Orthanc's C-STORE over REST.
        return self.orthanc._request("POST", "/instances", data=data).json()


def secondary_capture(image: Any, *, study: dict[str, str], series_uid: str, plugin: str,
                      number: int, series_number: int) -> Dataset:
    """One Secondary Capture instance from a Pillow image (8-bit grey or RGB)."""
    img = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    pixels = np.asarray(img, dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
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
    # Type 2C, present and empty: a picture of results has no laterality nor patient orientation of its
    # own, and dicom3tools' dciodvfy cannot evaluate the conditions, so it requires them.
    ds.Laterality = ""
    ds.PatientOrientation = ""
    ds.ConversionType = "WSD"
    ds.SeriesDescription = f"radcloud {plugin}"[:64]
    ds.ImageType = ["DERIVED", "SECONDARY"]
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


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def push(job: dict[str, Any], manifest: dict[str, Any], *, store: Any, pacs: Pacs) -> dict[str, Any]:
    """Store the job's image/DICOM outputs into the PACS; returns what was stored."""
    from PIL import Image

    if (job.get("options") or {}).get("deidentify"):
        return {"series_uid": "", "instances": 0, "skipped": "de-identified outputs are not pushed"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for out in manifest.get("outputs", []):
        name = out["name"].lower()
        if "thumb" in name or "montage" in name:
            continue  # previews, not results
        if out.get("image") or name.endswith(".dcm"):
            groups.setdefault((out.get("study_uid") or "", out.get("series_uid") or ""), []).append(out)
    stored, series_uids = 0, []
    for n, ((study_uid, _src), outs) in enumerate(sorted(groups.items())):
        if not study_uid:
            continue
        study = pacs.study_tags(study_uid) or {"StudyInstanceUID": study_uid}
        study["StudyInstanceUID"] = study_uid
        series_uid = generate_uid()
        number = 0
        for out in outs[:MAX_PUSH]:
            with tempfile.NamedTemporaryFile() as tmp:
                store.get_to_file(out["key"], tmp.name)
                if out.get("image"):
                    number += 1
                    with Image.open(tmp.name) as img:
                        ds = secondary_capture(img, study=study, series_uid=series_uid,
                                               plugin=job.get("plugin", ""), number=number,
                                               series_number=9000 + n)
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
