#!/usr/bin/env python3
"""lung-seg: body, lungs (right/left) and bone on CT, as DICOM SEG + TID 1500 SR.

ChRIS ds plugin: ``lung_seg.py [options] inputdir outputdir``. Per CT series
under ``inputdir`` (segmentation in :mod:`segment`, the DICOM objects by
:mod:`radcloud.results.segsr`):

- ``seg/series-NNN.dcm``: a BINARY Segmentation of four mutually exclusive
  segments (1 soft tissue = the body less lungs and bone, 2 right lung,
  3 left lung, 4 bone) referencing every source image, in the source study;
- ``sr/series-NNN.dcm``: a Comprehensive 3D SR with a TID 1500 Measurement
  Report: volume (mL), mean and SD (HU) per segment, referencing the SEG,
  and its outline, area and mean HU on the slice where it is largest;
- ``preview/series-NNN.png``: axial slices at 25/50/75 % with the segments
  in colour (a picture: pushed to a PACS as Secondary Capture);
- ``lung-seg.json``: per series the measurements (``Body`` is the whole
  body, the union of the four segments) and notes, and every file or
  series not segmented with its reason (the files also in
  ``file-reasons.json``, the list every plugin writes for the runner).

Files and series it cannot use (not DICOM, no pixels, not CT, colour,
multi-frame, localizers, missing geometry, undecodable pixels, a slice of
another size...) are listed with a reason and the run still succeeds: exit
0 whenever the inputs were read, even if none was CT. Logs carry counts and
volumes only, never patient attributes.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

import segment
from radcloud.run import ctslices
from radcloud.run.filereasons import FileReasons, explain

VERSION = "1.2.0"
# radcloud.results.segsr (highdicom) and scipy (segment.py) are imported when a CT
# series is segmented, not at start: the plugin starts for every series of a study,
# most of which are not CT, and those imports are half of its start-up CPU time.


@functools.cache
def dicom_segments() -> tuple:
    """The SEG's algorithm and its segments (:mod:`radcloud.results.segsr`), made on first use."""
    from radcloud.results import segsr

    algorithm = segsr.Algorithm("radcloud lung-seg", VERSION)
    # The values of segment.segment's label map: the body less the others, the lungs, bone.
    segments = [segsr.segment(segment.BODY, "soft_tissue"), segsr.segment(segment.RIGHT_LUNG, "right_lung"),
                segsr.segment(segment.LEFT_LUNG, "left_lung"), segsr.segment(segment.BONE, "bone")]
    return algorithm, segments



def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CT body, lungs and bone as DICOM SEG + SR")
    p.add_argument("--bodyHU", type=float, default=-500.0, help="HU above which a voxel may be body")
    p.add_argument("--lungHU", type=float, default=-400.0, help="HU below which a voxel inside the body is air")
    p.add_argument("--boneHU", type=float, default=300.0, help="HU above which a voxel inside the body is bone")
    p.add_argument("--minLungMl", type=float, default=5.0, help="smallest air component kept as lung (mL)")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def file_reason(ds: Dataset) -> str | None:
    """Why one file cannot be a slice of a CT volume a SEG can reference, or None."""
    return ctslices.slice_reason(ds, "lung-seg segments CT only", ct_image_only=True,
                                 geometry=(*ctslices.GEOMETRY, "FrameOfReferenceUID"),
                                 needs_geometry="the slice cannot be placed in space (a SEG needs it)")


def load_volume(inputdir: Path, items: list[tuple[str, Dataset]], skipped: list[dict],
                scratch: segment.Scratch = segment.IN_MEMORY) -> tuple[np.ndarray, list[Dataset]]:
    """The HU volume (int16, z y x, from ``scratch``) and the headers of the slices decoded."""
    rows, cols = int(items[0][1].Rows), int(items[0][1].Columns)
    vol = scratch.zeros((len(items), rows, cols), np.int16)
    headers: list[Dataset] = []
    for rel, header in items:
        try:
            ds = pydicom.dcmread(inputdir / rel)
            arr = ds.pixel_array
        except MemoryError:
            raise
        except Exception as exc:  # any decoder failure is this file's, not the run's
            skipped.append({"path": rel, "reason": f"pixel data not decodable: {explain(exc)}"})
            continue
        hu = arr.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
        vol[len(headers)] = np.clip(hu, -32768, 32767)
        headers.append(header)
        del ds, arr, hu
    return vol[:len(headers)], headers


def x_coordinates(ds: Dataset) -> np.ndarray:
    """Patient x (mm, + = patient's left) of every pixel of a slice."""
    iop = [float(v) for v in ds.ImageOrientationPatient]
    dy, dx = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
    r = np.arange(int(ds.Rows), dtype=np.float32)[:, None]
    c = np.arange(int(ds.Columns), dtype=np.float32)[None, :]
    return float(ds.ImagePositionPatient[0]) + c * dx * iop[0] + r * dy * iop[3]


def voxel_size(headers: list[Dataset]) -> tuple[float, float, float]:
    iop = [float(v) for v in headers[0].ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    pos = [float(np.dot(normal, np.array(h.ImagePositionPatient, float))) for h in headers]
    dz = float(np.median(np.diff(pos))) if len(pos) > 1 else 0.0
    if dz <= 0:
        dz = float(headers[0].get("SpacingBetweenSlices") or headers[0].get("SliceThickness") or 1.0)
    dy, dx = (float(v) for v in headers[0].PixelSpacing)
    return dz, dy, dx


def preview(hu: np.ndarray, labelmap: np.ndarray) -> Image.Image:
    """Axial slices at 25/50/75 % in a lung window, segments blended in their colours."""
    picks = sorted({int(round(f * (hu.shape[0] - 1))) for f in (0.25, 0.5, 0.75)})
    tiles = []
    for k in picks:
        grey = np.clip((hu[k].astype(np.float32) + 1000.0) / 1400.0 * 255.0, 0, 255)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        for s in dicom_segments()[1]:
            m = labelmap[k] == s.number
            weight = 0.15 if s.number == 1 else 0.45
            rgb[m] = (1 - weight) * rgb[m] + weight * np.array(s.rgb, np.float32)
        tiles.append(rgb.astype(np.uint8))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def run(inputdir: Path, outputdir: Path, *, body_hu: float = -500.0, lung_hu: float = -400.0,
        bone_hu: float = 300.0, min_lung_ml: float = 5.0, scratch_dir: str | None = None) -> dict:
    """Segment every CT series under ``inputdir`` into ``outputdir``.

    Whole-volume arrays live in memory-mapped files under ``scratch_dir``
    (default TMPDIR; about 6 bytes a voxel at most, 470 MB of disk for 300
    slices of 512²): the memory the process needs does not grow with the
    number of slices but for the SEG it writes (1 bit a voxel of each
    segment's non-empty frames) and the slices' headers.
    """
    scratch = segment.Scratch(scratch_dir or tempfile.gettempdir())
    skipped: list[dict] = []
    result: dict = {"plugin": "lung-seg", "version": VERSION, "series": [],
                    "skipped": skipped, "skipped_series": []}
    found = ctslices.scan(inputdir, skipped, file_reason)
    number, processed = 0, 0
    for _uid, items in sorted(found.items(), key=lambda kv: int(kv[1][0][1].get("SeriesNumber", 0) or 0)):
        number += 1
        t0 = time.perf_counter()
        try:
            hu, headers = load_volume(inputdir, ctslices.ordered(items, skipped)[0], skipped, scratch)
            if not headers:
                result["skipped_series"].append({"series": number, "reason": "no decodable CT slice"})
                continue
            used = len(headers)
            voxel = voxel_size(headers)
            labelmap, notes = segment.segment(hu, x_coordinates(headers[0]), voxel, body_hu=body_hu,
                                              lung_hu=lung_hu, bone_hu=bone_hu, min_lung_ml=min_lung_ml,
                                              scratch=scratch)
            voxel_ml = float(np.prod(voxel)) / 1000.0
            from radcloud.results import segsr  # on use: see dicom_segments

            algorithm, segments = dicom_segments()
            numbers = segsr.label_stats(hu, labelmap, voxel_ml, [s.number for s in segments])
            rois = segsr.slice_rois(hu, labelmap, [s.number for s in segments])
            stats = {"Body": numbers["all"], **{s.label: numbers[s.number] for s in segments}}
            entry = {"series": number, "slices": len(headers), "voxel_mm": [round(v, 4) for v in voxel],
                     "segments": stats, "notes": notes}
            for sub in ("seg", "sr", "preview"):
                (outputdir / sub).mkdir(parents=True, exist_ok=True)
            preview(hu, labelmap).save(outputdir / "preview" / f"series-{number:03d}.png", compress_level=1)
            del hu
            seg = segsr.segmentation(headers, labelmap, segments, algorithm,
                                     content_label="LUNGSEG",
                                     description="body, lungs and bone (HU thresholds, components)")
            del labelmap
            seg.save_as(outputdir / "seg" / f"series-{number:03d}.dcm", enforce_file_format=True)
            sr = segsr.measurement_report(seg, headers, segments, numbers, algorithm, rois=rois)
            sr.save_as(outputdir / "sr" / f"series-{number:03d}.dcm", enforce_file_format=True)
            del seg, sr
            entry["outputs"] = {"seg": f"seg/series-{number:03d}.dcm", "sr": f"sr/series-{number:03d}.dcm",
                                "preview": f"preview/series-{number:03d}.png"}
        except MemoryError:
            raise  # the shard runner reports it as oom
        except Exception as exc:  # one series' failure must not lose the others
            why = f"segmentation failed: {explain(exc)}"
            result["skipped_series"].append({"series": number, "reason": why})
            named = {s["path"] for s in skipped}
            skipped.extend({"path": rel, "reason": f"series {number}: {why}"} for rel, _ in items if rel not in named)
            print(f"series {number}: not segmented: {why}", file=sys.stderr)
            continue
        processed += used
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        result["series"].append(entry)
        print(f"series {number}: {entry['slices']} slices, lungs "
              f"{stats['Right lung']['volume_ml']:.0f}+{stats['Left lung']['volume_ml']:.0f} mL, "
              f"{entry['seconds']} s", file=sys.stderr)
    (outputdir / "lung-seg.json").write_text(json.dumps(result, indent=1))
    # The runner's per-file account (radcloud.run.filereasons): every input segmented or named with why not.
    reasons = FileReasons("lung-seg", inputs=sum(1 for p in inputdir.rglob("*") if p.is_file()))
    reasons.ok(processed)
    for s in skipped:
        reasons.skip(s["path"], s["reason"])
    reasons.write(outputdir)
    print(f"lung-seg: {len(result['series'])} series segmented, {len(skipped)} file(s) and "
          f"{len(result['skipped_series'])} series skipped (reasons in lung-seg.json)", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    # pydicom's and highdicom's warnings quote attribute values (a patient's
    # name among them): they never reach the job's log.
    warnings.simplefilter("ignore")
    out = Path(a.outputdir)
    out.mkdir(parents=True, exist_ok=True)
    run(Path(a.inputdir), out, body_hu=a.bodyHU, lung_hu=a.lungHU, bone_hu=a.boneHU, min_lung_ml=a.minLungMl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
