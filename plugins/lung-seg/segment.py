"""Classical CT segmentation: body, right and left lung, bone (numpy + scipy).

Every step works on Hounsfield units and is chosen to stay within a 512 MB
action whatever the number of slices: every whole-volume array (the int16
HU volume, the uint8 label map, the 3D component labels, the masks) comes
from a :class:`Scratch` -- in the plugin, files in TMPDIR mapped into
memory, so the kernel pages them out to disk when the container's memory
is short instead of killing it -- and every operation on them runs a slab
of slices at a time, so what the process itself allocates is a few slabs.
The label map is the body mask turned into labels in place, 3D labels are
16-bit when they fit, lungs and bone are searched in the body's bounding
box, and nothing is float64 over the whole volume.

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

import tempfile
from typing import NamedTuple

import numpy as np

# scipy.ndimage is imported where a volume is segmented, not here: the plugin
# starts for every series of a study, most of which are not CT, and importing
# scipy is a third of its start-up CPU time (hence connectivity's structures).
from radcloud.run.connectivity import FACES as STRUCTURE
from radcloud.run.connectivity import IN_PLANE

SLAB = 8  # slices per pass for counts: bincount casts to int64
HOLE_SLAB = 32  # slices per hole-filling pass: its labelling is in-plane, so slabs are exact


BODY, RIGHT_LUNG, LEFT_LUNG, BONE = 1, 2, 3, 4  # label map values (1: the body less the others)


class Scratch:
    """Where whole-volume arrays live: memory (``folder`` None) or files under ``folder``, memory-mapped.

    A mapped file's pages are page cache: a container's memory cgroup
    counts them but reclaims them (writing them to disk) under pressure,
    where anonymous memory past the limit would be an OOM kill. Each file
    is unlinked from the start (:func:`tempfile.TemporaryFile`): it goes
    away with its array, even if the process is killed.
    """

    def __init__(self, folder: str | None = None) -> None:
        self.folder = folder

    def zeros(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        if self.folder is None or not int(np.prod(shape)):
            return np.zeros(shape, dtype)
        return np.memmap(tempfile.TemporaryFile(dir=self.folder), dtype=dtype, mode="w+", shape=shape)  # reads as 0


IN_MEMORY = Scratch()


class Result(NamedTuple):
    """The label map (z, y, x) uint8 of one series (values above) and notes."""

    labelmap: np.ndarray
    notes: list[str]


def label(mask: np.ndarray, structure: np.ndarray, scratch: Scratch = IN_MEMORY) -> tuple[np.ndarray, int]:
    """``ndimage.label`` into 16-bit labels when they fit (half the memory of int32), from ``scratch``."""
    from scipy import ndimage  # imported on use: see the top of this module

    out = scratch.zeros(mask.shape, np.uint16)
    try:
        return out, int(ndimage.label(mask, structure=structure, output=out))
    except RuntimeError:  # more than 65,535 components
        del out
        out = scratch.zeros(mask.shape, np.int32)
        return out, int(ndimage.label(mask, structure=structure, output=out))


def slabs(n: int, step: int = SLAB) -> range:
    return range(0, n, step)


def sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels per label 0..n, a slab at a time."""
    out = np.zeros(n + 1, np.int64)
    for z in range(0, labels.shape[0], SLAB):
        out += np.bincount(labels[z:z + SLAB].ravel(), minlength=n + 1)
    return out


def holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """The 2D holes of every slice of ``mask`` (a slab), in one labelling of the background.

    Background pieces touching a slice's edge are outside; the others are
    holes. One 3D labelling with an in-plane structure costs far less than
    a Python loop of ``binary_fill_holes`` over hundreds of slices.
    """
    background, n = label(~mask, IN_PLANE)
    outside = np.zeros(n + 1, bool)
    outside[0] = True  # label 0 is the mask itself
    for edge in (background[:, 0, :], background[:, -1, :], background[:, :, 0], background[:, :, -1]):
        outside[edge.ravel()] = True
    return ~outside[background]


def fill_holes_per_slice(mask: np.ndarray) -> None:
    """Fill the 2D holes of every slice of ``mask`` in place, a slab of slices at a time.

    In-plane holes do not depend on other slices, so slabs give the same
    result as the whole volume with temporaries of a slab's size.
    """
    for z in range(0, mask.shape[0], HOLE_SLAB):
        part = mask[z:z + HOLE_SLAB]
        if part.any():
            part |= holes_per_slice(part)


def body_mask(hu: np.ndarray, body_hu: float, scratch: Scratch = IN_MEMORY) -> np.ndarray:
    from scipy import ndimage  # imported on use: see the top of this module

    above = scratch.zeros(hu.shape, bool)
    for z in slabs(hu.shape[0]):
        np.greater(hu[z:z + SLAB], body_hu, out=above[z:z + SLAB])
    labels, n = label(above, STRUCTURE, scratch)
    del above
    body = scratch.zeros(hu.shape, bool)
    if n == 0:
        return body
    counts = sizes(labels, n)
    counts[0] = 0
    keep = int(counts.argmax())
    box = ndimage.find_objects(labels, max_label=keep)[keep - 1]
    for z in range(box[0].start, box[0].stop, SLAB):
        part = (slice(z, min(z + SLAB, box[0].stop)), box[1], box[2])
        np.equal(labels[part], keep, out=body[part])
    del labels
    fill_holes_per_slice(body)
    return body


def split_lungs(labelmap: np.ndarray, air: np.ndarray, x_mm: np.ndarray, midline_mm: float, voxel_ml: float,
                min_lung_ml: float, notes: list[str], scratch: Scratch = IN_MEMORY) -> None:
    """Write the right and left lung, from the air-in-body mask, into ``labelmap`` (same shape).

    ``x_mm`` is the patient x (mm) of every (row, column) of a slice of
    ``labelmap``; the patient's left is +x (DICOM LPS).
    """
    from scipy import ndimage  # imported on use: see the top of this module

    labels, n = label(air, STRUCTURE, scratch)
    if n == 0:
        notes.append("no air inside the body")
        return
    counts = sizes(labels, n)
    counts[0] = 0
    order = [int(k) for k in np.argsort(counts)[::-1][:2] if counts[k] * voxel_ml >= min_lung_ml]
    if not order:
        notes.append(f"no air component of at least {min_lung_ml} mL inside the body")
        return
    left_side = x_mm > midline_mm  # (rows, cols)
    boxes = ndimage.find_objects(labels, max_label=max(order))

    def parts(box: tuple[slice, ...]):  # the component's box, a slab of slices at a time
        for z in range(box[0].start, box[0].stop, SLAB):
            yield (slice(z, min(z + SLAB, box[0].stop)), box[1], box[2])

    for k in order:
        box = boxes[k - 1]
        side = left_side[box[1], box[2]][None, :, :]
        on_left = total = 0
        for part in parts(box):
            comp = labels[part] == k
            on_left += int(np.count_nonzero(comp & side))
            total += int(np.count_nonzero(comp))
        share = on_left / max(total, 1)
        whole = len(order) == 2 and (share > 0.9 or share < 0.1)
        if not whole and len(order) == 1:
            notes.append("lungs joined in one component: split at the body's midline")
        for part in parts(box):
            comp, out = labels[part] == k, labelmap[part]
            if whole:
                out[comp] = LEFT_LUNG if share >= 0.5 else RIGHT_LUNG
            else:  # one component holds both lungs (or straddles): split at the midline
                out[comp & side] = LEFT_LUNG
                out[comp & ~side] = RIGHT_LUNG
    del labels
    for z in range(0, labelmap.shape[0], HOLE_SLAB):  # vessels back into the lungs
        part = labelmap[z:z + HOLE_SLAB]
        for lung in (RIGHT_LUNG, LEFT_LUNG):
            m = part == lung
            if m.any():
                part[holes_per_slice(m) & (part == BODY)] = lung


def segment(hu: np.ndarray, x_mm: np.ndarray, voxel_mm: tuple[float, float, float], *,
            body_hu: float = -500.0, lung_hu: float = -400.0, bone_hu: float = 300.0,
            min_lung_ml: float = 5.0, scratch: Scratch = IN_MEMORY) -> Result:
    """The label map of one HU volume (z, y, x): body, right lung, left lung, bone.

    ``x_mm`` (rows, cols) is the patient x coordinate of each pixel, so the
    left/right split follows the image orientation, not the array layout.
    Lungs and bone are searched in the body's bounding box only. Whole-volume
    arrays (the label map returned among them) come from ``scratch``.
    """
    from scipy import ndimage  # imported on use: see the top of this module

    notes: list[str] = []
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    body = body_mask(hu, body_hu, scratch)
    labelmap = body.view(np.uint8)  # 1 in the body, 0 outside: the label map, without a copy
    del body
    found = ndimage.find_objects(labelmap)
    if not found:
        notes.append(f"no voxel above {body_hu} HU: no body found")
        return Result(labelmap, notes)
    box = found[0]
    midline = float(x_mm[(box[1].start + box[1].stop - 1) // 2, (box[2].start + box[2].stop - 1) // 2])
    lm, hb = labelmap[box], hu[box]
    air = scratch.zeros(lm.shape, bool)
    for z in range(0, lm.shape[0], SLAB):
        air[z:z + SLAB] = (lm[z:z + SLAB] == BODY) & (hb[z:z + SLAB] < lung_hu)
    split_lungs(lm, air, x_mm[box[1], box[2]], midline, voxel_ml, min_lung_ml, notes, scratch)
    del air
    for z in range(0, lm.shape[0], SLAB):  # bone last: it wins over the lungs' filled holes
        part = lm[z:z + SLAB]
        part[(part > 0) & (hb[z:z + SLAB] > bone_hu)] = BONE
    return Result(labelmap, notes)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice coefficient of two boolean masks (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
