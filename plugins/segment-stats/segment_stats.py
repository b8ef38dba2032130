#!/usr/bin/env python3
"""segment-stats: body mask and density classes on CT, with volumes in mL.

ChRIS ds plugin: ``segment_stats.py [options] inputdir outputdir``. For each
CT series under ``inputdir`` (slices sorted along the slice normal):

1. body mask: HU > ``--bodyThreshold`` (-500), largest 3D connected
   component, holes filled slice by slice (so the lungs are inside);
2. density classes inside the body: air/lung < -400, fat -200..-30,
   soft tissue -30..150, bone > 300 HU (the gaps are left unlabelled);
3. connected components per class (6-connected), volumes in mL from
   PixelSpacing × slice spacing (positions, else SpacingBetweenSlices, else
   SliceThickness), HU mean/std per class;
4. outputs: ``measurements.json``; ``overlay/series-NNN.png`` (axial slices
   at 25/50/75 % with the classes in colour); ``seg/series-NNN.dcm``, a DICOM
   Segmentation of the label map (segments 1 air/lung, 2 fat, 3 soft
   tissue, 4 bone, 5 other body, SNOMED CT coded) referencing every source
   slice, and ``sr/series-NNN.dcm``, a TID 1500 measurement report (volume,
   HU mean and SD per segment) referencing it — both in the source study,
   new series, written by :mod:`radcloud.results.segsr`, ready to push to the PACS.
   (Up to 1.0.0 the label map was a multi-frame Secondary Capture under
   ``labels/``; the SEG replaces it.)

Each input file is measured or named in ``file-reasons.json`` with why not
(not CT, no pixels, a multi-frame file, a slice that does not decode or does
not match the series' matrix, a series that could not be measured), see
:mod:`radcloud.run.filereasons`; the other series still get their measurements.

Logs carry counts and volumes only, never patient attributes.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from radcloud.run.connectivity import FACES as STRUCTURE
from radcloud.run.connectivity import IN_PLANE
from radcloud.run.filereasons import FileReasons, explain

VERSION = "1.1.0"

CLASSES = {  # label: (name, low HU (inclusive), high HU (exclusive), overlay RGB)
    1: ("air_lung", -np.inf, -400.0, (60, 120, 255)),
    2: ("fat", -200.0, -30.0, (255, 220, 0)),
    3: ("soft_tissue", -30.0, 150.0, (230, 60, 60)),
    4: ("bone", 300.0, np.inf, (255, 255, 255)),
}
OTHER_BODY = 5
# What a SEG needs of every source slice to place its frames.
GEOMETRY = ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
STATS_SLAB = 8  # slices per pass when summing HU: bounds the float64 temporaries
# scipy.ndimage and radcloud.results.segsr (highdicom) are imported when a CT series is
# measured, not at start: the plugin starts for every series of a study, most of which
# are not CT, and those imports are half of its start-up CPU time (hence the
# structures of radcloud.run.connectivity).


@functools.cache
def dicom_segments() -> tuple:
    """The SEG's algorithm and its segments (:mod:`radcloud.results.segsr`), made on first use."""
    from radcloud.results import segsr

    algorithm = segsr.Algorithm("radcloud segment-stats", VERSION)
    segments = [segsr.segment(1, "air", "Air/lung"), segsr.segment(2, "fat"), segsr.segment(3, "soft_tissue"),
                segsr.segment(4, "bone"), segsr.segment(OTHER_BODY, "other_tissue")]
    return algorithm, segments


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CT body mask, density classes and volumes")
    p.add_argument("--bodyThreshold", type=float, default=-500.0, help="HU above which a voxel may be body")
    p.add_argument("--minComponentMl", type=float, default=0.1, help="components smaller than this are not listed")
    p.add_argument("--noDicom", action="store_true", help="skip the DICOM SEG and SR")
    # Accepted for jobs made for 1.0.0 (it chose the Secondary Capture's encoding); no effect.
    p.add_argument("--uncompressedDicom", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def load_series(inputdir: Path, reasons: FileReasons | None = None) -> dict[str, list[Dataset]]:
    """CT slices grouped by series; every other file gets its reason."""
    reasons = reasons or FileReasons("segment-stats")
    files = sorted(p for p in inputdir.rglob("*") if p.is_file())
    reasons.inputs = len(files)
    series: dict[str, list[Dataset]] = defaultdict(list)
    for path in files:
        rel = path.relative_to(inputdir).as_posix()
        ds = reasons.dcmread(path, rel)
        if ds is None:
            continue
        modality = str(ds.get("Modality", "") or "none")
        if "PixelData" not in ds:
            reasons.skip(rel, "no pixel data")
        elif modality != "CT":
            reasons.skip(rel, f"modality {modality}: segment-stats measures CT (Hounsfield units) only")
        elif _int(ds.get("NumberOfFrames", 1)) != 1:
            reasons.skip(rel, f"multi-frame CT ({ds.get('NumberOfFrames')!s} frames): segment-stats reads "
                              f"one slice per file")
        else:
            ds.radcloud_rel = rel  # a plain attribute, not a DICOM element: names the file in reasons
            series[str(ds.get("SeriesInstanceUID", "unknown"))].append(ds)
    return series


def _int(value) -> int:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return -1


def volume(slices: list[Dataset], reasons: FileReasons | None = None
           ) -> tuple[np.ndarray, tuple[float, float, float], list[Dataset]]:
    """HU volume (z, y, x) as float32, voxel size (dz, dy, dx) mm, sorted slices.

    A slice whose matrix differs from the series' most common one, or whose
    pixels do not decode, is left out with its reason. Each slice's pixel
    data is dropped once it is in the volume: keeping the encoded bytes and
    pydicom's cached array too would triple the footprint.
    """
    reasons = reasons or FileReasons("segment-stats")
    shapes = defaultdict(int)
    for s in slices:
        shapes[(_int(s.get("Rows")), _int(s.get("Columns")))] += 1
    shape = max(shapes, key=shapes.get)
    kept = []
    for s in slices:
        if (_int(s.get("Rows")), _int(s.get("Columns"))) != shape:
            reasons.skip(_rel(s), f"matrix {s.get('Rows')}x{s.get('Columns')} differs from the series' "
                                  f"{shape[0]}x{shape[1]}")
            continue
        try:
            arr = s.pixel_array
            if arr.shape != shape:
                raise ValueError(f"decoded shape {arr.shape} is not Rows x Columns {shape}")
            s.radcloud_hu = arr * float(s.get("RescaleSlope", 1) or 1) + float(s.get("RescaleIntercept", 0) or 0)
            del arr, s.PixelData  # also clears pydicom's cached array
            kept.append(s)
        except Exception as exc:
            reasons.skip(_rel(s), f"cannot decode the pixel data: {explain(exc)}")
    if not kept:
        raise ValueError("no slice of the series could be decoded")
    slices = kept
    iop = slices[0].get("ImageOrientationPatient")
    try:
        normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float)) if iop is not None and len(iop) == 6 else None
        positions = [float(np.dot(normal, np.array(s.ImagePositionPatient, float))) for s in slices] \
            if normal is not None and all("ImagePositionPatient" in s for s in slices) else None
    except (TypeError, ValueError):
        positions = None  # malformed geometry: fall back to instance order and the thickness
    if positions is not None:
        order = np.argsort(positions, kind="stable")
        slices = [slices[i] for i in order]
        steps = np.diff(np.sort(positions))
        dz = float(np.median(np.abs(steps))) if len(steps) else 0.0
    else:
        slices = sorted(slices, key=lambda s: _int(s.get("InstanceNumber", 0)))
        dz = 0.0
    if dz <= 0:
        dz = float(slices[0].get("SpacingBetweenSlices") or slices[0].get("SliceThickness") or 1.0)
    dy, dx = (float(v) for v in slices[0].get("PixelSpacing", [1.0, 1.0]))
    vol = np.empty((len(slices), *shape), np.float32)
    for k, s in enumerate(slices):
        vol[k] = s.radcloud_hu
        del s.radcloud_hu
    return vol, (dz, dy, dx), slices


def _rel(ds: Dataset) -> str:
    return getattr(ds, "radcloud_rel", "?")


def _label(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """``ndimage.label`` into 16-bit labels when they fit (half the memory of int32)."""
    from scipy import ndimage  # on use: see the note above dicom_segments

    try:
        return ndimage.label(mask, structure=structure, output=np.uint16)
    except RuntimeError:  # more than 65,535 components
        return ndimage.label(mask, structure=structure)


def _sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels per label 0..n, a slab at a time (bincount casts its input to int64)."""
    sizes = np.zeros(n + 1, np.int64)
    for z in range(0, labels.shape[0], STATS_SLAB):
        sizes += np.bincount(labels[z:z + STATS_SLAB].ravel(), minlength=n + 1)
    return sizes


def body_mask(hu: np.ndarray, threshold: float) -> np.ndarray:
    from scipy import ndimage  # on use: see the note above dicom_segments

    candidate = hu > threshold
    labels, n = _label(candidate, STRUCTURE)
    if n == 0:
        return candidate
    sizes = _sizes(labels, n)
    sizes[0] = 0
    keep = int(sizes.argmax())
    box = ndimage.find_objects(labels, max_label=keep)[keep - 1]
    sub = labels[box] == keep
    del labels, candidate  # int32 over the whole volume: free it before the next labelling
    # Fill holes slice by slice (lungs and bowel gas are enclosed in 2D, not
    # in 3D where they reach the first/last slice), all slices in one
    # labelling of the body's bounding box: background pieces touching a
    # slice's edge are outside, the others are holes.
    background, nb = _label(~sub, IN_PLANE)
    outside = np.zeros(nb + 1, bool)
    outside[0] = True  # label 0 is the body itself; it stays as it is
    for edge in (background[:, 0, :], background[:, -1, :], background[:, :, 0], background[:, :, -1]):
        outside[edge.ravel()] = True
    body = np.zeros(hu.shape, bool)
    body[box] = sub | ~outside[background]
    return body


def classify(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    labels = np.zeros(hu.shape, np.uint8)
    labels[body] = OTHER_BODY
    for label, (_name, lo, hi, _rgb) in CLASSES.items():
        labels[body & (hu >= lo) & (hu < hi)] = label
    return labels


def measure(hu: np.ndarray, body: np.ndarray, labels: np.ndarray, voxel_mm: tuple[float, float, float],
            min_component_ml: float) -> dict:
    from scipy import ndimage  # on use: see the note above dicom_segments

    voxel_ml = voxel_mm[0] * voxel_mm[1] * voxel_mm[2] / 1000.0
    box = ndimage.find_objects(body.astype(np.uint8))
    box = box[0] if box else tuple(slice(0, 0) for _ in hu.shape)
    # Counts, sums and sums of squares of every class, a slab of slices at a
    # time: float64 copies of the whole box would be 16 bytes a voxel.
    counts, sums, squares = (np.zeros(OTHER_BODY + 1) for _ in range(3))
    z0, z1 = box[0].start or 0, box[0].stop if box[0].stop is not None else 0
    for z in range(z0, z1, STATS_SLAB):
        slab = (slice(z, min(z + STATS_SLAB, z1)), *box[1:])
        lab, values = labels[slab].ravel(), hu[slab].ravel().astype(np.float64)
        counts += np.bincount(lab, minlength=OTHER_BODY + 1)
        sums += np.bincount(lab, weights=values, minlength=OTHER_BODY + 1)
        squares += np.bincount(lab, weights=values * values, minlength=OTHER_BODY + 1)
    body_voxels = int(counts[1:].sum())
    out = {"voxel_mm": [round(v, 6) for v in voxel_mm], "voxel_ml": voxel_ml, "shape": list(hu.shape),
           "body": {"volume_ml": round(body_voxels * voxel_ml, 3), "voxels": body_voxels,
                    "hu_mean": round(float(sums[1:].sum() / body_voxels), 2) if body_voxels else None},
           "classes": {}}
    cropped = labels[box]
    for label, (name, lo, hi, _rgb) in CLASSES.items():
        n = int(counts[label])
        comps, count = _label(cropped == label, STRUCTURE)
        sizes = _sizes(comps, count)[1:] if count else np.array([], int)
        big = sorted((int(v) for v in sizes if v * voxel_ml >= min_component_ml), reverse=True)
        mean = sums[label] / n if n else None
        out["classes"][name] = {
            "label": label, "hu_range": [None if np.isinf(lo) else lo, None if np.isinf(hi) else hi],
            "volume_ml": round(n * voxel_ml, 3), "voxels": n,
            "fraction_of_body": round(n / body_voxels, 5) if body_voxels else 0.0,
            "hu_mean": round(float(mean), 2) if n else None,
            "hu_std": round(float(np.sqrt(max(squares[label] / n - mean * mean, 0.0))), 2) if n else None,
            "components": int(count), "components_listed": len(big),
            "largest_components_ml": [round(v * voxel_ml, 3) for v in big[:10]],
        }
    return out


def overlay(hu: np.ndarray, labels: np.ndarray) -> Image.Image:
    from scipy import ndimage  # on use: see the note above dicom_segments

    picks = sorted({int(round(f * (hu.shape[0] - 1))) for f in (0.25, 0.5, 0.75)})
    tiles = []
    for k in picks:
        gray = np.clip((hu[k] + 1000.0) / 2000.0 * 255.0, 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
        for label, (_n, _lo, _hi, colour) in CLASSES.items():
            m = labels[k] == label
            rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour, np.float32)
        edge = labels[k] > 0
        edge = edge & ~ndimage.binary_erosion(edge)
        rgb[edge] = (0, 255, 0)
        tiles.append(rgb.astype(np.uint8))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def seg_geometry_missing(source: list[Dataset]) -> str | None:
    """Why a DICOM SEG cannot place frames on these slices, or None."""
    missing = sorted({k for s in source for k in GEOMETRY if k not in s or s.data_element(k).value in (None, "")})
    return (f"the slices lack {', '.join(missing)}: a DICOM SEG cannot place its frames "
            f"(measurements.json and the overlay are still written)") if missing else None


def write_seg_sr(labels: np.ndarray, stats: dict, source: list[Dataset], number: int,
                 outputdir: Path, rois: dict | None = None) -> dict[str, str]:
    """The label map as a DICOM SEG, its ``segsr.label_stats`` and ``segsr.slice_rois`` as a TID 1500 SR; their paths."""
    from radcloud.results import segsr  # on use: see the note above dicom_segments

    algorithm, segments = dicom_segments()
    seg = segsr.segmentation(source, labels, segments, algorithm,
                             content_label="DENSITY", description="air/lung, fat, soft tissue, bone by HU")
    paths = {"seg": f"seg/series-{number:03d}.dcm", "sr": f"sr/series-{number:03d}.dcm"}
    (outputdir / "seg").mkdir(parents=True, exist_ok=True)
    seg.save_as(outputdir / paths["seg"], enforce_file_format=True)
    sr = segsr.measurement_report(seg, source, segments, stats, algorithm, rois=rois)
    (outputdir / "sr").mkdir(parents=True, exist_ok=True)
    sr.save_as(outputdir / paths["sr"], enforce_file_format=True)
    return paths


def run(inputdir: Path, outputdir: Path, body_threshold: float = -500.0, min_component_ml: float = 0.1,
        write_dicom: bool = True, reasons: FileReasons | None = None) -> dict:
    reasons = reasons or FileReasons("segment-stats")
    ct = load_series(inputdir, reasons)
    result = {"series": [], "ct_series": len(ct), "skipped_files": len(reasons.not_processed)}
    number = 0
    for uid, slices in sorted(ct.items(), key=lambda kv: _int(kv[1][0].get("SeriesNumber", 0))):
        number += 1
        t0 = time.perf_counter()
        try:
            m = _one_series(slices, number, outputdir, body_threshold, min_component_ml, write_dicom, reasons)
        except Exception as exc:  # one series that cannot be measured must not lose the others
            for s in slices:
                if not any(r["file"] == _rel(s) for r in reasons.not_processed):
                    reasons.skip(_rel(s), f"series {number} could not be measured: {explain(exc)}")
            continue
        m["seconds"] = round(time.perf_counter() - t0, 3)
        result["series"].append(m)
        print(f"series {number}: {m['slices']} slices, body {m['body']['volume_ml']:.1f} mL, "
              f"{m['seconds']} s", file=sys.stderr)
    result["skipped_files"] = len(reasons.not_processed)
    result["other_modality_files"] = sum(r["reason"].startswith("modality ") for r in reasons.not_processed)
    (outputdir / "measurements.json").write_text(json.dumps(result, indent=1))
    reasons.write(outputdir)
    return result


def _one_series(slices: list[Dataset], number: int, outputdir: Path, body_threshold: float,
                min_component_ml: float, write_dicom: bool, reasons: FileReasons) -> dict:
    hu, voxel, slices = volume(slices, reasons)
    body = body_mask(hu, body_threshold)
    labels = classify(hu, body)
    m = measure(hu, body, labels, voxel, min_component_ml)
    m.update(series=number, slices=len(slices), modality="CT")
    (outputdir / "overlay").mkdir(parents=True, exist_ok=True)
    overlay(hu, labels).save(outputdir / "overlay" / f"series-{number:03d}.png", compress_level=1)
    m["overlay"] = f"overlay/series-{number:03d}.png"
    why_not = seg_geometry_missing(slices) if write_dicom else None
    if write_dicom and not why_not:
        from radcloud.results import segsr  # on use: see the note above dicom_segments

        numbers = [s.number for s in dicom_segments()[1]]
        stats = segsr.label_stats(hu, labels, float(np.prod(voxel)) / 1000.0, numbers)
        rois = segsr.slice_rois(hu, labels, numbers)
        del hu, body  # float32 HU: freed before highdicom encodes (~100 MB on 100 slices of 512²)
        try:
            m.update(write_seg_sr(labels, stats, slices, number, outputdir, rois))
        except MemoryError:
            raise
        except Exception as exc:  # the measurements stand without their DICOM form: say why
            why_not = explain(exc)
    if why_not:
        m["dicom_not_written"] = why_not
        print(f"series {number}: no SEG/SR: {why_not}", file=sys.stderr)
    reasons.ok(len(slices))
    return m


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    out = Path(a.outputdir)
    out.mkdir(parents=True, exist_ok=True)
    result = run(Path(a.inputdir), out, a.bodyThreshold, a.minComponentMl, not a.noDicom)
    if not result["series"] and not result["ct_series"] and \
            0 < result["skipped_files"] == result["other_modality_files"]:
        # Not an error: a study mixes modalities, and a non-CT series has no HU to measure.
        print(f"segment-stats: no CT series in the input; {result['skipped_files']} file(s) not processed, "
              f"reasons in file-reasons.json", file=sys.stderr)
        return 0
    if not result["series"]:
        print(f"segment-stats: no CT series could be measured; {result['skipped_files']} file(s) not processed, "
              f"reasons in file-reasons.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
