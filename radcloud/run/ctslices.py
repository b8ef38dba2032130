"""CT volumes for plugins: which input files are slices of one, grouped by series, in order along the normal.

Plugins that work on a whole CT volume (``lung-seg``, ``ct-resample``) read
their inputs through :func:`scan` then :func:`ordered`. A file that cannot be
a slice is not an error: it gets one reason in ``skipped`` (``{"path",
"reason"}``, as :mod:`radcloud.run.filereasons` reports them) and the others
go on. Headers only: :func:`scan` drops the pixels, a plugin reads them per
series, one slice at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radcloud.run.filereasons import explain

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage (single-frame)
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

Slices = list[tuple[str, Dataset]]  # (path relative to the input dir, header)


def slice_reason(ds: Dataset, works_on: str, *, geometry: Sequence[str] = GEOMETRY,
                 needs_geometry: str = "the slice cannot be placed in space",
                 ct_image_only: bool = False) -> str | None:
    """Why ``ds`` cannot be a slice of a CT volume, or None.

    ``works_on`` ends the reason for another modality (``"lung-seg segments
    CT only"``); ``needs_geometry`` ends the one for missing ``geometry``;
    ``ct_image_only`` refuses every SOP class but CT Image Storage.
    """
    if not any(k in ds for k in PIXELS):
        return "no pixel data"
    modality = str(ds.get("Modality", "") or "none")
    if modality != "CT":
        return f"modality {modality}: {works_on}"
    if ct_image_only and str(ds.get("SOPClassUID", "")) != CT_IMAGE:
        return "not a (single-frame) CT Image Storage instance (enhanced/multi-frame CT is not supported)"
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return "colour pixels: not a CT attenuation image"
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return "multi-frame: not a single CT slice"
    if "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        return "localizer (scout) image"
    missing = [k for k in geometry if k not in ds or ds.data_element(k).value in (None, "")]
    if missing:
        return f"missing {', '.join(missing)}: {needs_geometry}"
    return None


def scan(inputdir: Path, skipped: list[dict], reason: Callable[[Dataset], str | None]) -> dict[str, Slices]:
    """Slice headers (no pixels) grouped by series; every file ``reason`` refuses lands in ``skipped``."""
    series: dict[str, Slices] = defaultdict(list)
    for path in sorted(p for p in inputdir.rglob("*") if p.is_file()):
        rel = str(path.relative_to(inputdir))
        try:  # large values (the pixels) stay on disk until asked for
            ds = pydicom.dcmread(path, defer_size="64 KB")
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
            skipped.append({"path": rel, "reason": f"not readable as DICOM: {explain(exc)}"})
            continue
        why = reason(ds)
        if why:
            skipped.append({"path": rel, "reason": why})
            continue
        for kw in PIXELS:
            if kw in ds:
                delattr(ds, kw)  # headers only: the pixels are read per series, one slice at a time
        series[str(ds.get("SeriesInstanceUID", "") or "unknown")].append((rel, ds))
    return series


def ordered(items: Slices, skipped: list[dict]) -> tuple[Slices, np.ndarray]:
    """The slices sharing the commonest matrix and orientation, one per position, along the normal; the normal."""
    def key(ds: Dataset) -> tuple:
        return int(ds.Rows), int(ds.Columns), tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
    common = Counter(key(ds) for _, ds in items).most_common(1)[0][0]
    normal = np.cross(np.array(common[2][:3]), np.array(common[2][3:]))
    kept: dict[float, tuple[str, Dataset]] = {}
    for rel, ds in items:
        if key(ds) != common:
            skipped.append({"path": rel, "reason": "matrix or orientation differs from the rest of its series"})
            continue
        pos = round(float(np.dot(normal, np.array(ds.ImagePositionPatient, float))), 3)
        if pos in kept:
            skipped.append({"path": rel, "reason": "duplicate slice position in its series"})
            continue
        kept[pos] = (rel, ds)
    return [kept[p] for p in sorted(kept)], normal
