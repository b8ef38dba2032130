"""The standard result objects of lung-seg: a DICOM SEG and a TID 1500 SR (highdicom).

The SEG is BINARY, one segment per structure (body, right lung, left lung,
bone; segments overlap, as anatomy does), references every source image
frame by frame, and lives in the source study as a new series. The SR is a
Comprehensive 3D SR holding a TID 1500 Measurement Report: per segment a
volumetric ROI group (TID 1411) that references the segment of the SEG and
its source series, with the volume in mL and the mean and standard deviation
of the attenuation in HU.

UIDs are derived from the source series UID, so rerunning the plugin on the
same series gives the same objects (the PACS replaces, never duplicates).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

VERSION = "1.0.0"
MANUFACTURER = "radcloud"
MODEL = "lung-seg"

# segment number: (label, category, property type, display colour as sRGB)
SEGMENTS = {
    1: ("Body", codes.SCT.AnatomicalStructure, codes.SCT.EntireBody, (230, 190, 140)),
    2: ("Right lung", codes.SCT.Organ, hd.sr.CodedConcept("3341006", "SCT", "Right lung"), (60, 120, 255)),
    3: ("Left lung", codes.SCT.Organ, hd.sr.CodedConcept("44029006", "SCT", "Left lung"), (60, 220, 120)),
    4: ("Bone", codes.SCT.Tissue, codes.SCT.Bone, (255, 255, 255)),
}
ALGORITHM = hd.AlgorithmIdentificationSequence(
    name="radcloud lung-seg", version=VERSION,
    family=codes.DCM.ImageProcessing)
MILLILITRE = hd.sr.CodedConcept("mL", "UCUM", "milliliter")


def _uid(source_series: str, what: str) -> str:
    return generate_uid(entropy_srcs=[source_series, "lung-seg", VERSION, what])


def _deidentification(obj: Dataset, source: Dataset) -> None:
    """Carry the source's de-identification method into ``obj``.

    highdicom copies Patient Identity Removed but not the method, which the
    Patient module then requires (Type 1C); public de-identified corpora
    sometimes omit it in their own files, so we say it is not recorded.
    """
    if str(obj.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    for kw in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if kw in source:
            setattr(obj, kw, source.data_element(kw).value)
    if "DeidentificationMethod" not in obj and "DeidentificationMethodCodeSequence" not in obj:
        obj.DeidentificationMethod = "not recorded in the source images"


def segmentation(source: list[Dataset], masks: list[np.ndarray], series_number: int) -> hd.seg.Segmentation:
    """A BINARY SEG of ``masks`` (one (z, y, x) bool array per entry of SEGMENTS).

    The masks are moved into one (frames, rows, cols, segments) array and
    ``masks`` is emptied, so the caller's copies can be freed before
    highdicom encodes (which holds its own working copies).

    ``source`` are the series' datasets in the masks' slice order (pixel data
    may have been dropped: highdicom needs only their attributes).
    """
    series_uid = str(source[0].SeriesInstanceUID)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ALGORITHM, tracking_uid=_uid(series_uid, f"track-{number}"),
            tracking_id=label, display_color=hd.color.CIELabColor.from_rgb(*rgb))
        for number, (label, category, prop, rgb) in SEGMENTS.items()]
    stack = np.empty((*masks[0].shape, len(masks)), np.uint8)
    for k in range(len(masks)):
        stack[..., k] = masks[k]
    masks.clear()
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=_uid(series_uid, "seg-series"), series_number=series_number,
        sop_instance_uid=_uid(series_uid, "seg"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL, software_versions=VERSION,
        device_serial_number="1", content_label="LUNGSEG",
        content_description="body, lungs and bone (HU thresholds, components)",
        series_description="radcloud lung-seg SEG")
    _deidentification(seg, source[0])
    return seg


def measurement_report(seg: hd.seg.Segmentation, source: list[Dataset], stats: dict[str, dict],
                       series_number: int) -> hd.sr.Comprehensive3DSR:
    """TID 1500 report: volume (mL), mean and SD (HU) of each non-empty segment of ``seg``."""
    series_uid = str(source[0].SeriesInstanceUID)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(series_uid, "device"), name="radcloud lung-seg", manufacturer_name=MANUFACTURER,
            model_name=MODEL))
    groups = []
    algorithm = hd.sr.AlgorithmIdentification(name="radcloud lung-seg", version=VERSION)
    for number, (label, _category, prop, _rgb) in SEGMENTS.items():
        s = stats[label]
        if not s["voxels"]:
            continue
        measurements = [
            hd.sr.Measurement(name=codes.SCT.Volume, value=s["volume_ml"],
                              unit=MILLILITRE, algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=s["hu_mean"],
                              unit=codes.UCUM.HounsfieldUnit, derivation=codes.SCT.Mean,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=s["hu_sd"],
                              unit=codes.UCUM.HounsfieldUnit, derivation=codes.SCT.StandardDeviation,
                              algorithm_id=algorithm),
        ]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(series_uid, f"track-{number}"),
                                                          identifier=label),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid)),
            finding_type=prop, measurements=measurements))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source, seg], content=report,
        series_instance_uid=_uid(series_uid, "sr-series"), series_number=series_number,
        sop_instance_uid=_uid(series_uid, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description="radcloud lung-seg measurements")
    _deidentification(sr, source[0])
    return sr
