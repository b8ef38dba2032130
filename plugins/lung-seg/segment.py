"""Classical CT segmentation: body, right and left lung, bone (numpy + scipy).

Every step works on Hounsfield units and is chosen to stay within a 512 MB
action for a 100–200-slice 512² series: the HU volume is int16, masks are
bool, labels are 16-bit when they fit, and nothing is float64 over the
whole volume.

1. body: HU > ``body_hu`` (-500), largest 3D 6-connected component, holes
   filled slice by slice (the lungs are enclosed in 2D, not in 3D where they
   may reach the first or last slice);
2. lungs: air (HU < ``lung_hu``, -400) inside the body, 3D components;
   those of at least ``min_lung_ml`` are kept, at most the two largest
   (trachea, bowel gas and small pockets fall away); vessels are put back by
   filling holes slice by slice; left/right from each component's side of
   the body's midline in patient coordinates (+x is the patient's left),
   and a component crossing the midline (lungs joined through the trachea)
   is split voxel by voxel at the midline;
3. bone: HU > ``bone_hu`` (300) inside the body (contrast-filled vessels
   above 300 HU are included: a known limit of thresholding).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

STRUCTURE = ndimage.generate_binary_structure(3, 1)  # 6-connected
IN_PLANE = np.zeros((3, 3, 3), bool)
IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected within a slice only
SLAB = 8  # slices per pass for counts: bincount casts to int64


class Masks(NamedTuple):
    """Boolean masks (z, y, x) of one series; any may be empty."""

    body: np.ndarray
    right_lung: np.ndarray
    left_lung: np.ndarray
    bone: np.ndarray
    notes: list[str]


def label(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """``ndimage.label`` into 16-bit labels when they fit (half the memory of int32)."""
    try:
        return ndimage.label(mask, structure=structure, output=np.uint16)
    except RuntimeError:  # more than 65,535 components
        return ndimage.label(mask, structure=structure)


def sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels per label 0..n, a slab at a time."""
    out = np.zeros(n + 1, np.int64)
    for z in range(0, labels.shape[0], SLAB):
        out += np.bincount(labels[z:z + SLAB].ravel(), minlength=n + 1)
    return out


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill 2D holes of every slice in one labelling of the background.

    Background pieces touching a slice's edge are outside; the others are
    holes. One 3D labelling with an in-plane structure costs far less than
    a Python loop of ``binary_fill_holes`` over hundreds of slices.
    """
    if not mask.any():
        return mask
    background, n = label(~mask, IN_PLANE)
    outside = np.zeros(n + 1, bool)
    outside[0] = True  # label 0 is the mask itself
    for edge in (background[:, 0, :], background[:, -1, :], background[:, :, 0], background[:, :, -1]):
        outside[edge.ravel()] = True
    return mask | ~outside[background]


def body_mask(hu: np.ndarray, body_hu: float) -> np.ndarray:
    labels, n = label(hu > body_hu, STRUCTURE)
    if n == 0:
        return np.zeros(hu.shape, bool)
    counts = sizes(labels, n)
    counts[0] = 0
    keep = int(counts.argmax())
    box = ndimage.find_objects(labels, max_label=keep)[keep - 1]
    sub = labels[box] == keep
    del labels
    body = np.zeros(hu.shape, bool)
    body[box] = fill_holes_per_slice(sub)
    return body


def split_lungs(lungs: np.ndarray, x_mm: np.ndarray, midline_mm: float, voxel_ml: float,
                min_lung_ml: float, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Right and left lung from the air-in-body mask.

    ``x_mm`` is the patient x (mm) of every (row, column) of a slice; the
    patient's left is +x (DICOM LPS).
    """
    right, left = np.zeros(lungs.shape, bool), np.zeros(lungs.shape, bool)
    labels, n = label(lungs, STRUCTURE)
    if n == 0:
        notes.append("no air inside the body")
        return right, left
    counts = sizes(labels, n)
    counts[0] = 0
    order = [int(k) for k in np.argsort(counts)[::-1][:2] if counts[k] * voxel_ml >= min_lung_ml]
    if not order:
        notes.append(f"no air component of at least {min_lung_ml} mL inside the body")
        return right, left
    left_side = x_mm > midline_mm  # (rows, cols)
    boxes = ndimage.find_objects(labels, max_label=max(order))
    for k in order:
        box = boxes[k - 1]
        comp = labels[box] == k
        side = left_side[box[1], box[2]][None, :, :]
        on_left = int(np.count_nonzero(comp & side))
        share = on_left / max(int(np.count_nonzero(comp)), 1)
        if len(order) == 2 and (share > 0.9 or share < 0.1):
            (left if share >= 0.5 else right)[box] |= comp
        else:  # one component holds both lungs (or straddles): split at the midline
            if len(order) == 1:
                notes.append("lungs joined in one component: split at the body's midline")
            left[box] |= comp & side
            right[box] |= comp & ~side
    del labels
    return fill_holes_per_slice(right), fill_holes_per_slice(left)


def segment(hu: np.ndarray, x_mm: np.ndarray, voxel_mm: tuple[float, float, float], *,
            body_hu: float = -500.0, lung_hu: float = -400.0, bone_hu: float = 300.0,
            min_lung_ml: float = 5.0) -> Masks:
    """Body, right lung, left lung and bone of one HU volume (z, y, x).

    ``x_mm`` (rows, cols) is the patient x coordinate of each pixel, so the
    left/right split follows the image orientation, not the array layout.
    """
    notes: list[str] = []
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    body = body_mask(hu, body_hu)
    if not body.any():
        notes.append(f"no voxel above {body_hu} HU: no body found")
    cols = np.flatnonzero(body.any(axis=(0, 1))) if body.any() else np.array([])
    rows = np.flatnonzero(body.any(axis=(0, 2))) if body.any() else np.array([])
    if cols.size:
        cy, cx = int((rows[0] + rows[-1]) // 2), int((cols[0] + cols[-1]) // 2)
        midline = float(x_mm[cy, cx])  # centre of the body's bounding box
    else:
        midline = float(x_mm.mean())
    air = body & (hu < lung_hu)
    right, left = split_lungs(air, x_mm, midline, voxel_ml, min_lung_ml, notes)
    del air
    right &= body
    left &= body
    bone = body & (hu > bone_hu)
    return Masks(body=body, right_lung=right, left_lung=left, bone=bone, notes=notes)


def stats(hu: np.ndarray, mask: np.ndarray, voxel_ml: float) -> dict:
    """Volume (mL), voxel count, HU mean and SD of one mask, summed a slab at a time."""
    n, total, squares = 0, 0.0, 0.0
    for z in range(0, hu.shape[0], SLAB):
        values = hu[z:z + SLAB][mask[z:z + SLAB]].astype(np.float64)
        n += values.size
        total += float(values.sum())
        squares += float((values * values).sum())
    mean = total / n if n else None
    sd = float(np.sqrt(max(squares / n - mean * mean, 0.0))) if n else None
    return {"voxels": n, "volume_ml": round(n * voxel_ml, 3),
            "hu_mean": None if mean is None else round(mean, 2),
            "hu_sd": None if sd is None else round(sd, 2)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice coefficient of two boolean masks (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
