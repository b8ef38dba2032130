"""A CT series with a DICOM SEG and a TID 1500 SR of it, staged as retrieve stages: viewer tests and bench.

The CT is :mod:`radcloud.ops.samples.synthetic`'s phantom; the SEG (highdicom)
marks one box of voxels, so a test knows where the overlay must show and
where it must not; the SR (highdicom, TID 1500) measures that segment's
volume and mean HU. :func:`stage` writes instances and the manifest where
:mod:`radcloud.work.retrieve` writes them (``staged/{study}/{series}/``) and
indexes the series in Redis, so the viewer action finds it as it would a
pulled series.
"""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from radcloud.store import layout
from radcloud.ops.samples.spec import PatientSpec, SeriesSpec, StudySpec
from radcloud.ops.samples.synthetic import dataset_bytes, plan


@dataclasses.dataclass(frozen=True)
class Box:
    """Voxels ``[z0:z1, r0:r1, c0:c1]`` (slice indices in instance order)."""

    z0: int
    z1: int
    r0: int
    r1: int
    c0: int
    c1: int


def ct_series(count: int = 20, rows: int = 128, *, tag: str = "VIEWER") -> list[Dataset]:
    """``count`` axial CT slices of ``rows`` x ``rows`` (the phantom), in instance order."""
    spec = (PatientSpec(f"TEST^{tag}", f"RCV{abs(hash(tag)) % 10**6:06d}", "19700101", "O", (
        StudySpec("CT", f"CT {tag}", "20250101", "120000", f"RCV{count:04d}{rows:04d}", "CHEST", (
            SeriesSpec(f"AXIAL {tag}", "ct_axial", count, rows, rows, 400.0 / rows, 2.5, z_start=100.0),
        )),
    )),)
    return list(plan(spec)[0].datasets())


def seg_of(ct: list[Dataset], box: Box) -> Dataset:
    """A binary DICOM SEG of ``ct`` with one segment (a soft-tissue box), highdicom-written."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.zeros((len(ct), int(ct[0].Rows), int(ct[0].Columns)), dtype=bool)
    mask[box.z0:box.z1, box.r0:box.r1, box.c0:box.c1] = True
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    return hd.seg.Segmentation(
        source_images=ct, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=90,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="radcloud",
        manufacturer_model_name="viewer test", software_versions="1", device_serial_number="1",
        series_description="SEG of the test box")


def sr_of(ct: list[Dataset], seg: Dataset, volume_ml: float, mean_hu: float) -> Dataset:
    """A TID 1500 measurement report of segment 1 of ``seg``: its volume and mean HU."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    region = hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                     segment_number=1, source_series=hd.sr.SourceSeriesForSegmentation(
                                         ct[0].SeriesInstanceUID))
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Volume, value=volume_ml, unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter")),
        hd.sr.Measurement(name=hd.sr.CodedConcept("112031", "DCM", "Attenuation Coefficient"), value=mean_hu,
                          unit=hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"),
                          derivation=codes.SCT.Mean),
    ]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="Lesion", uid=hd.UID()),
        referenced_segment=region, finding_type=codes.SCT.Neoplasm, measurements=measurements)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(), procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(
        evidence=ct + [seg], content=report[0], series_number=91, series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="radcloud",
        series_description="Measurements of the test box")


def stage(store: Any, redis: Any, datasets: list[Dataset], *, prefix: str = "radcloud") -> str:
    """Write one series as retrieve stages it; returns its manifest key."""
    first = datasets[0]
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    folder = layout.series_prefix("uid", {"StudyInstanceUID": study, "SeriesInstanceUID": series})

    def put(ds: Dataset) -> dict[str, Any]:
        data = ds_bytes(ds)
        key = layout.instance_key("uid", folder, {"SOPInstanceUID": str(ds.SOPInstanceUID)})
        info = store.put_bytes(key, data, content_type="application/dicom")
        return {"key": key, "size": len(data), "md5": info.md5, "SOPInstanceUID": str(ds.SOPInstanceUID),
                "InstanceNumber": int(getattr(ds, "InstanceNumber", 0) or 0)}

    # a few writes at once, as retrieve stages (a long series is thousands of small PUTs)
    with ThreadPoolExecutor(8) as pool:
        instances = list(pool.map(put, datasets))
    tags = {k: str(getattr(first, k, "") or "") or None for k in ("Modality", "SeriesNumber", "SeriesDescription")}
    manifest = {"version": 1, "layout": "uid", "prefix": folder, "StudyInstanceUID": study,
                "SeriesInstanceUID": series, "series_key": series, "tags": tags, "count": len(instances),
                "expected": len(instances), "complete": True, "instances": instances}
    key = layout.manifest_key(study, series)
    store.put_json(key, manifest)
    if redis is not None:
        redis.set(f"{prefix}:staged:series:{series}", key)
    return key


def ds_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes of a pydicom or highdicom dataset."""
    if hasattr(ds, "file_meta") and getattr(ds.file_meta, "TransferSyntaxUID", None):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()
    return dataset_bytes(ds)
