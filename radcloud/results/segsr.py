"""Standard result objects: DICOM SEG and TID 1500 SR with highdicom.

Plugins that produce masks or measurements write them as a DICOM
Segmentation (the mask) and a Comprehensive 3D SR holding a TID 1500
Measurement Report (volume, mean and SD of the attenuation per segment), both
in the source study as new series, so a PACS viewer overlays the mask on the
images and lists the measurements. Beside each segment's volumetric group
(TID 1411, referencing the SEG) the report holds a planar one (TID 1410): the
outline of the segment on the slice where it is largest, a closed POLYLINE on
that image, with its area and mean HU. OHIF (3.13) shows an SR's
measurements only through such image regions, and a measurement without one
stops it (``coords[0]`` of a volumetric group is undefined); both groups carry
the segment's tracking identifier and UID, so OHIF merges them into one
finding: the outline drawn on its slice, the volume and the slice's figures
beside it. Pictures (previews, overlays) stay
Secondary Capture (:mod:`radcloud.results.derived`).

The mask is a *label map*: one integer array (z, y, x) of segment numbers,
0 for background, segments mutually exclusive. highdicom takes it as it is
(``SegmentsOverlap`` NO) — a stack of one boolean layer per segment costs a
``sum`` over the stack in 64-bit integers to check overlap (about 210 MB for
100 slices of 512², what pushed an earlier lung-seg past its 512 MB action).
The SEG is BINARY (bit-packed, empty frames omitted): every viewer reads it.

Each segment carries coded concepts (SNOMED CT property category and type,
from DICOM CID 7150/7151/7166) — :data:`CATALOGUE` holds the ones radcloud
plugins use — plus the algorithm that made it and a tracking UID the SR
refers to. UIDs, series numbers and descriptions follow
:mod:`radcloud.pacs.derivedseries`: fixed by the source series, the algorithm and its
version, so a rerun on the same series produces the same objects (the PACS
replaces, never duplicates), numbered after the source series (302 is the
segmentation of series 3, 303 its measurements).

Usage (a plugin)::

    segments = [segsr.segment(1, "right_lung"), segsr.segment(2, "left_lung")]
    algo = segsr.Algorithm("radcloud lung-seg", "1.1.0")
    stats = segsr.label_stats(hu, labelmap, voxel_ml, [1, 2])
    rois = segsr.slice_rois(hu, labelmap, [1, 2])
    seg = segsr.segmentation(headers, labelmap, segments, algo, content_label="LUNGSEG", description="...")
    sr = segsr.measurement_report(seg, headers, segments, stats, algo, rois=rois)

``headers`` are the source datasets in the label map's slice order; their
pixel data may have been dropped (highdicom needs only their attributes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from radcloud.pacs import derivedseries

MANUFACTURER = derivedseries.MANUFACTURER
SLAB = 8  # slices per pass when summing: bincount works in float64/int64
MILLILITRE = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
SQUARE_MM = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")

# name: (segment label, property category, property type, display colour sRGB)
CATALOGUE: dict[str, tuple[str, hd.sr.CodedConcept, hd.sr.CodedConcept, tuple[int, int, int]]] = {
    "body": ("Body", codes.SCT.AnatomicalStructure, codes.SCT.EntireBody, (230, 190, 140)),
    "soft_tissue": ("Soft tissue", codes.SCT.Tissue, codes.SCT.SoftTissue, (230, 120, 100)),
    "right_lung": ("Right lung", codes.SCT.AnatomicalStructure,
                   hd.sr.CodedConcept("3341006", "SCT", "Right lung"), (60, 120, 255)),
    "left_lung": ("Left lung", codes.SCT.AnatomicalStructure,
                  hd.sr.CodedConcept("44029006", "SCT", "Left lung"), (60, 220, 120)),
    "lung": ("Lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung, (60, 160, 255)),
    "bone": ("Bone", codes.SCT.Tissue, codes.SCT.Bone, (255, 255, 255)),
    "air": ("Air", codes.SCT.Substance, codes.SCT.Air, (60, 120, 255)),
    "fat": ("Fat", codes.SCT.Tissue, codes.SCT.AdiposeTissue, (255, 220, 0)),
    "other_tissue": ("Other body tissue", codes.SCT.Tissue, codes.SCT.Tissue, (160, 160, 160)),
}


@dataclass(frozen=True)
class Segment:
    """One segment of a label map: its number in the map and how it is described."""

    number: int
    label: str
    category: hd.sr.CodedConcept
    property_type: hd.sr.CodedConcept
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Algorithm:
    """The plugin that made the segments (named in the SEG and each SR measurement)."""

    name: str
    version: str

    def uid(self, source_series: str, what: str) -> str:
        """A UID fixed by the source series, this algorithm and ``what``."""
        return derivedseries.uid(source_series, self.name, self.version, what)


def segment(number: int, name: str, label: str | None = None) -> Segment:
    """Segment ``number`` described by the :data:`CATALOGUE` entry ``name`` (label overridable)."""
    default, category, prop, rgb = CATALOGUE[name]
    return Segment(number, label or default, category, prop, rgb)


def label_stats(hu: np.ndarray, labelmap: np.ndarray, voxel_ml: float, numbers: list[int]) -> dict:
    """Per segment number: voxels, volume (mL), HU mean and SD (None when empty).

    The key ``"all"`` holds the same over every non-zero voxel (the union of
    the segments: e.g. the whole body when the segments tile it).

    One pass, a slab of slices at a time (bincount's float64 weights would
    otherwise be 8 bytes a voxel over the whole volume).
    """
    top = max(max(numbers, default=0), int(labelmap.max()) if labelmap.size else 0)
    counts, sums, squares = (np.zeros(top + 1) for _ in range(3))
    for z in range(0, labelmap.shape[0], SLAB):
        lab = labelmap[z:z + SLAB].ravel()
        values = hu[z:z + SLAB].ravel().astype(np.float64)
        counts += np.bincount(lab, minlength=top + 1)
        sums += np.bincount(lab, weights=values, minlength=top + 1)
        squares += np.bincount(lab, weights=values * values, minlength=top + 1)

    def one(n: float, total: float, square: float) -> dict:
        n = int(n)
        mean = total / n if n else None
        return {"voxels": n, "volume_ml": round(n * voxel_ml, 3),
                "hu_mean": None if mean is None else round(float(mean), 2),
                "hu_sd": None if mean is None else round(float(np.sqrt(max(square / n - mean * mean, 0.0))), 2)}

    out: dict = {k: one(counts[k], sums[k], squares[k]) for k in numbers}
    out["all"] = one(counts[1:].sum(), sums[1:].sum(), squares[1:].sum())
    return out


@dataclass(frozen=True)
class SliceROI:
    """A segment on the slice where it has the most pixels: what a planar ROI group reports.

    ``outline`` is the outer boundary of the segment's largest 4-connected
    piece on that slice, traced along pixel edges: (column, row) image
    coordinates of its corners (DICOM's: 0,0 is the top left corner of the
    first pixel), closed (the first point repeated last). ``pixels`` and
    ``hu_mean`` are of the segment's own pixels inside it (a hole, such as
    the lungs inside the body's soft tissue, is not counted).
    """

    index: int
    outline: np.ndarray
    pixels: int
    hu_mean: float


def slice_rois(hu: np.ndarray, labelmap: np.ndarray, numbers: list[int]) -> dict[int, SliceROI]:
    """Per non-empty segment number of ``numbers``: its :class:`SliceROI` (ties: the first slice).

    One pass over the label map counting pixels per slice, then one slice per segment.
    """
    top = max(max(numbers, default=0), int(labelmap.max()) if labelmap.size else 0)
    counts = np.stack([np.bincount(s.ravel(), minlength=top + 1) for s in labelmap]) if len(labelmap) else None
    out = {}
    for k in numbers:
        if counts is None or not counts[:, k].any():
            continue
        z = int(np.argmax(counts[:, k]))
        mask = labelmap[z] == k
        outline, inside = _outline(mask)
        within = inside & mask
        out[k] = SliceROI(z, outline, int(within.sum()), round(float(hu[z][within].astype(np.float64).mean()), 2))
    return out


_DX = np.array([1, 0, -1, 0])  # a step east, south, west, north (rows grow downwards)
_DY = np.array([0, 1, 0, -1])


def _outline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outer boundary of the largest 4-connected piece of ``mask`` (2-D) and the pixels it encloses.

    Every pixel edge between the mask and the rest is a step walked with the
    mask on its right (clockwise on screen); where two pieces touch at a
    corner the walk turns right, keeping them apart. The steps make closed
    loops: outer boundaries have a positive area, holes a negative one; the
    largest is the piece's outline (vertices where the direction changes).
    Loops are found with arrays (each step's successor, then each loop's
    smallest step by pointer doubling): a bony slice has thousands of them.
    Returns the (n, 2) closed polyline and a boolean mask of what it encloses.
    """
    rows, cols = mask.shape
    pad = np.pad(mask, 1)
    inner = pad[1:-1, 1:-1]
    xs, ys, ds = [], [], []
    for d, (outside, dx, dy) in enumerate(((pad[:-2, 1:-1], 0, 0), (pad[1:-1, 2:], 1, 0),
                                           (pad[2:, 1:-1], 1, 1), (pad[1:-1, :-2], 0, 1))):
        r, c = np.nonzero(inner & ~outside)
        xs.append(c + dx)
        ys.append(r + dy)
        ds.append(np.full(r.size, d))
    x, y, d = (np.concatenate(a).astype(np.int64) for a in (xs, ys, ds))
    if not x.size:
        raise ValueError("an empty mask has no outline")
    width = cols + 2
    start, end = y * width + x, (y + _DY[d]) * width + (x + _DX[d])
    # each step's successor: the step leaving its end corner, the right turn first where there are two
    order = np.lexsort((d, start))  # by corner, then direction
    sorted_start = start[order]
    first = np.searchsorted(sorted_start, end)
    two = (first + 1 < order.size) & (sorted_start[np.minimum(first + 1, order.size - 1)] == end)
    a, b = order[first], order[np.minimum(first + 1, order.size - 1)]
    right = (d + 1) % 4
    nxt = np.where(two & (d[b] == right), b, a)
    # each loop named by its smallest step (pointer doubling), its area from the steps' shoelace terms
    name, jump = np.arange(x.size), nxt.copy()
    for _ in range(int(np.ceil(np.log2(x.size))) + 1):
        name = np.minimum(name, name[jump])
        jump = jump[jump]
    terms = (x * (y + _DY[d]) - (x + _DX[d]) * y).astype(np.float64)
    area = np.bincount(name, weights=terms) / 2
    best = int(np.argmax(area))
    loop = [best]
    while (e := int(nxt[loop[-1]])) != best:
        loop.append(e)
    loop = np.array(loop)
    # the pixels enclosed: along each row, between pairs of the loop's vertical steps (even-odd)
    vertical = loop[(d[loop] == 1) | (d[loop] == 3)]
    vr, vx = np.minimum(y[vertical], y[vertical] + _DY[d[vertical]]), x[vertical]
    at = np.lexsort((vx, vr))
    vr, vx = vr[at], vx[at]
    inside = np.zeros((rows, cols + 1), np.int32)
    np.add.at(inside, (vr[::2], vx[::2]), 1)
    np.add.at(inside, (vr[1::2], vx[1::2]), -1)
    enclosed = np.cumsum(inside, axis=1)[:, :cols] > 0
    turns = loop[d[loop] != d[np.roll(loop, 1)]]
    corners = np.stack([x[turns], y[turns]], axis=1)
    return np.concatenate([corners, corners[:1]]).astype(np.float32), enclosed


# Type 2 attributes highdicom copies from the first source image (Patient and General Study
# modules): present but empty is valid DICOM, absent raises AttributeError inside highdicom.
_TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")


def _with_type2(source: list[Dataset]) -> list[Dataset]:
    """``source`` with the first header given the Type 2 attributes it lacks, empty (a copy if any)."""
    missing = [kw for kw in _TYPE2_COPIED if kw not in source[0]]
    if not missing:
        return source
    first = Dataset(dict(source[0]._dict))  # its own element dict (Dataset(ds) and copy.copy share it)
    if hasattr(source[0], "file_meta"):
        first.file_meta = source[0].file_meta
    for kw in missing:
        setattr(first, kw, "")
    return [first, *source[1:]]


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


def _copied_references(obj: Dataset) -> None:
    """Drop a Referenced Study Sequence copied from the source that the source left incomplete.

    highdicom carries the General Study module's Referenced Study Sequence
    (Type 3) over from the first source image; de-identified corpora (TCIA's
    among them) keep its Referenced SOP Instance UID but drop the class UID,
    which the SOP Instance Reference macro requires (Type 1): an invalid
    object for dciodvfy. An optional attribute we cannot complete is left out.
    """
    items = obj.get("ReferencedStudySequence")
    if items is not None and any("ReferencedSOPClassUID" not in i or "ReferencedSOPInstanceUID" not in i
                                 for i in items):
        del obj.ReferencedStudySequence


def segmentation(source: list[Dataset], labelmap: np.ndarray, segments: list[Segment], algorithm: Algorithm, *,
                 content_label: str, description: str, series_number: int | None = None) -> hd.seg.Segmentation:
    """A BINARY SEG of ``labelmap`` ((z, y, x) integers, one slice per ``source`` dataset).

    Every segment of ``segments`` is described, present or not; a value of
    the map that no segment describes is an error (highdicom raises
    ValueError). Segment numbers must be 1..len(segments). Type 2 patient
    and study attributes the source lacks are written empty. The series
    number and description follow :mod:`radcloud.pacs.derivedseries` unless
    ``series_number`` is given.
    """
    if labelmap.ndim != 3 or labelmap.shape[0] != len(source):
        raise ValueError(f"label map of shape {labelmap.shape} does not match {len(source)} source slice(s)")
    if labelmap.dtype.kind not in "ui":
        raise ValueError(f"label map must hold integers (segment numbers), not {labelmap.dtype}")
    source = _with_type2(source)
    series_uid = str(source[0].SeriesInstanceUID)
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, version=algorithm.version, family=codes.DCM.ImageProcessing)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.number, segment_label=s.label, segmented_property_category=s.category,
            segmented_property_type=s.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification, tracking_uid=algorithm.uid(series_uid, f"track-{s.number}"),
            tracking_id=s.label, display_color=hd.color.CIELabColor.from_rgb(*s.rgb))
        for s in sorted(segments, key=lambda s: s.number)]
    with warnings.catch_warnings():
        # highdicom's warnings quote attribute values (a patient's name among them): never in a log.
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=source, pixel_array=labelmap,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=algorithm.uid(series_uid, "seg-series"),
            series_number=series_number or derivedseries.series_number(source[0].get("SeriesNumber"), "segmentation"),
            sop_instance_uid=algorithm.uid(series_uid, "seg"), instance_number=1,
            manufacturer=MANUFACTURER, manufacturer_model_name=algorithm.name[:64],
            software_versions=algorithm.version, device_serial_number="1",
            content_label=content_label, content_description=description[:64],
            series_description=derivedseries.description(algorithm.name, "segmentation", source[0].get("SeriesNumber"),
                                                   source[0].get("SeriesDescription")))
    _deidentification(seg, source[0])
    _copied_references(seg)
    return seg


def measurement_report(seg: hd.seg.Segmentation, source: list[Dataset], segments: list[Segment],
                       stats: dict[int, dict], algorithm: Algorithm, *, rois: dict[int, SliceROI] | None = None,
                       series_number: int | None = None,
                       procedure: hd.sr.CodedConcept = codes.LN.CTUnspecifiedBodyRegion) -> hd.sr.Comprehensive3DSR:
    """TID 1500 report: volume (mL), mean and SD (HU) of each non-empty segment of ``seg``.

    One volumetric ROI group (TID 1411) per segment, referencing the segment
    of ``seg`` and the source series; then, for each segment in ``rois``
    (:func:`slice_rois`), one planar ROI group (TID 1410) with the same
    tracking identifier and UID: its outline on that source image (an image
    region, a closed POLYLINE), its area (mm², from the image's Pixel
    Spacing) and mean HU. Without ``rois`` OHIF cannot open the report (see
    the module's docstring). The evidence lists the source images and the SEG.
    """
    source = _with_type2(source)
    series_uid = str(source[0].SeriesInstanceUID)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.uid(series_uid, "device"), name=algorithm.name[:64],
            manufacturer_name=MANUFACTURER, model_name=algorithm.name[:64]))
    algo = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)
    groups, planar = [], []
    for s in sorted(segments, key=lambda s: s.number):
        st = stats.get(s.number) or {}
        if not st.get("voxels"):
            continue  # an empty segment has no volume to report (and no frame in the SEG)
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=st["volume_ml"], unit=MILLILITRE,
                                          algorithm_id=algo)]
        for value, derivation in ((st.get("hu_mean"), codes.SCT.Mean), (st.get("hu_sd"), codes.SCT.StandardDeviation)):
            if value is not None:
                measurements.append(hd.sr.Measurement(
                    name=codes.DCM.AttenuationCoefficient, value=value, unit=codes.UCUM.HounsfieldUnit,
                    derivation=derivation, algorithm_id=algo))
        tracking = hd.sr.TrackingIdentifier(uid=algorithm.uid(series_uid, f"track-{s.number}"), identifier=s.label)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=s.number,
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid)),
            finding_type=s.property_type, measurements=measurements))
        roi = (rois or {}).get(s.number)
        if roi is not None:
            planar.append(_planar_group(source[roi.index], roi, tracking, s, algo))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure, imaging_measurements=groups + planar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in segmentation(): warnings may quote patient attributes
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*source, seg], content=report,
            series_instance_uid=algorithm.uid(series_uid, "sr-series"),
            series_number=series_number or derivedseries.series_number(source[0].get("SeriesNumber"), "measurements"),
            sop_instance_uid=algorithm.uid(series_uid, "sr"), instance_number=1,
            manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
            series_description=derivedseries.description(algorithm.name, "measurements", source[0].get("SeriesNumber"),
                                                   source[0].get("SeriesDescription")))
    _deidentification(sr, source[0])
    _copied_references(sr)
    return sr


def _planar_group(image: Dataset, roi: SliceROI, tracking: hd.sr.TrackingIdentifier, s: Segment,
                  algo: hd.sr.AlgorithmIdentification) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 group of ``roi`` on ``image``: outline, area and mean HU, under the segment's tracking identifier."""
    dy, dx = (float(v) for v in image.PixelSpacing)
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Area, value=round(roi.pixels * dy * dx, 2), unit=SQUARE_MM, algorithm_id=algo),
        hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=roi.hu_mean, unit=codes.UCUM.HounsfieldUnit,
                          derivation=codes.SCT.Mean, algorithm_id=algo)]
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=roi.outline,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(image))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=s.property_type,
        measurements=measurements)
