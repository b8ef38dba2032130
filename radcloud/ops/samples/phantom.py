"""Anatomy-like numeric phantoms for the synthetic sample studies.

A CT torso (Hounsfield units) and an MR head (arbitrary signal units), both
defined analytically in patient millimetres so any matrix size, pixel
spacing and slice position gives a consistent volume. Everything is
vectorised numpy on one slice at a time: a 512x512 CT slice costs a few
milliseconds, and callers can stream a series without holding the volume.

Coordinates follow DICOM's patient system (LPS): +x towards the patient's
left, +y posterior, +z superior. So the spine sits at positive y and the
first axial slice of a head-first scan has the largest z.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# Hounsfield units of the tissue classes (the unit tests check these ranges).
HU_AIR = -1000.0
HU_LUNG = -820.0
HU_FAT = -100.0
HU_SOFT = 40.0
HU_LIVER = 60.0
HU_BLOOD = 45.0
HU_CSF = 8.0
HU_CANCELLOUS = 700.0
HU_CORTICAL = 1200.0

# Craniocaudal landmarks of the torso phantom (mm, +z superior).
Z_LUNG_TOP, Z_LUNG_BOTTOM = 250.0, 20.0
Z_LIVER_TOP, Z_LIVER_BOTTOM = 60.0, -120.0
Z_KIDNEY_TOP, Z_KIDNEY_BOTTOM = -40.0, -160.0
Z_TORSO_TOP, Z_TORSO_BOTTOM = 300.0, -300.0


# Fixed vessel positions inside a lung, as fractions of its semi-axes.
_VESSELS = tuple(
    (0.8 * r * math.cos(t), 0.85 * r * math.sin(t))
    for r, t in zip(np.sqrt(np.random.default_rng(5).uniform(0.09, 0.9, 30)),
                    np.random.default_rng(6).uniform(0.0, 2 * math.pi, 30))
)


def _grid(rows: int, cols: int, pixel_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (mm) of a matrix centred on the isocentre."""
    x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2) * pixel_spacing
    y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2) * pixel_spacing
    return x[np.newaxis, :], y[:, np.newaxis]


def _fill(img: np.ndarray, x: np.ndarray, y: np.ndarray, cx: float, cy: float,
          ax: float, by: float, value: float) -> None:
    """Paint an axis-aligned ellipse, touching only its bounding box (speed)."""
    if ax <= 0 or by <= 0:
        return
    xs, ys = x[0], y[:, 0]
    c0, c1 = np.searchsorted(xs, (cx - ax, cx + ax))
    r0, r1 = np.searchsorted(ys, (cy - by, cy + by))
    if c0 >= c1 or r0 >= r1:
        return
    inside = ((xs[c0:c1] - cx) / ax) ** 2 + ((ys[r0:r1, np.newaxis] - cy) / by) ** 2 <= 1.0
    img[r0:r1, c0:c1][inside] = value


def _bump(z: float, top: float, bottom: float) -> float:
    """0 outside [bottom, top], rising smoothly to 1 mid-way: an organ's profile."""
    if not bottom < z < top:
        return 0.0
    t = (z - bottom) / (top - bottom)
    return math.sin(math.pi * t) ** 0.5


def ct_slice(z: float, rows: int = 512, cols: int = 512, pixel_spacing: float = 0.78125,
             *, noise_hu: float = 0.0, seed: int = 0) -> np.ndarray:
    """One axial CT slice of the torso phantom at height ``z`` (mm), in HU.

    Returns float32 ``(rows, cols)``. ``noise_hu`` adds deterministic
    Gaussian noise (seeded by ``seed``), as a real scanner's quantum noise.
    """
    x, y = _grid(rows, cols, pixel_spacing)
    img = np.full((rows, cols), HU_AIR, dtype=np.float32)
    if not Z_TORSO_BOTTOM <= z <= Z_TORSO_TOP:
        return _add_noise(img, noise_hu, seed)
    # The body outline narrows towards the shoulders and the pelvis.
    taper = 1.0 - 0.15 * (abs(z) / Z_TORSO_TOP) ** 2
    body_a, body_b = 165.0 * taper, 115.0 * taper
    _fill(img, x, y, 0, 0, body_a, body_b, HU_FAT)
    fat = 12.0 + 6.0 * math.cos(z / 90.0)            # subcutaneous fat thickness
    _fill(img, x, y, 0, 0, body_a - fat, body_b - fat, HU_SOFT)

    lung = _bump(z, Z_LUNG_TOP, Z_LUNG_BOTTOM)
    if lung:
        for side in (-1.0, 1.0):
            cx, a, b = side * 72.0 * taper, 55.0 * lung * taper, 80.0 * lung * taper
            _fill(img, x, y, cx, -5.0, a, b, HU_LUNG)
            # Vessels: blood-density dots that come and go along z, away from
            # the lung's centre (so a tissue probe there still reads lung).
            for k, (u, v) in enumerate(_VESSELS):
                radius = 1.2 + 2.5 * max(0.0, math.sin(z / (9.0 + k % 7) + k))
                _fill(img, x, y, cx + side * u * a, -5.0 + v * b, radius, radius, HU_BLOOD)
        heart = _bump(z, 140.0, 30.0)
        if heart:
            _fill(img, x, y, 20.0, -35.0, 55.0 * heart, 45.0 * heart, HU_BLOOD)
        # Ribs: small bony ovals just inside the body wall, none on the midline
        # (sternum in front, spine behind).
        for angle in np.linspace(0.0, 2 * math.pi, 16, endpoint=False):
            if abs(math.cos(angle)) < 0.3:
                continue
            rx = (body_a - fat - 10.0) * math.cos(angle)
            ry = (body_b - fat - 10.0) * math.sin(angle)
            _fill(img, x, y, rx, ry, 8.0, 6.0, HU_CORTICAL)
    liver = _bump(z, Z_LIVER_TOP, Z_LIVER_BOTTOM)
    if liver:
        _fill(img, x, y, -65.0, 0.0, 80.0 * liver, 70.0 * liver, HU_LIVER)
    kidney = _bump(z, Z_KIDNEY_TOP, Z_KIDNEY_BOTTOM)
    if kidney:
        for side in (-1.0, 1.0):
            _fill(img, x, y, side * 70.0, 55.0, 22.0 * kidney, 30.0 * kidney, 150.0)
    # Aorta in front of the spine all the way down.
    _fill(img, x, y, 12.0, 40.0, 12.0, 12.0, HU_BLOOD + 100.0)
    # Vertebra: cortical shell, cancellous core, CSF canal behind it.
    spine_y = 75.0 * taper
    _fill(img, x, y, 0.0, spine_y, 20.0, 17.0, HU_CORTICAL)
    _fill(img, x, y, 0.0, spine_y, 16.0, 13.0, HU_CANCELLOUS)
    _fill(img, x, y, 0.0, spine_y + 25.0, 13.0, 11.0, HU_CORTICAL)
    _fill(img, x, y, 0.0, spine_y + 25.0, 8.0, 7.0, HU_CSF)
    return _add_noise(img, noise_hu, seed)


def ct_volume(zs: np.ndarray | list[float], rows: int = 512, cols: int = 512,
              pixel_spacing: float = 0.78125, *, noise_hu: float = 0.0, seed: int = 0) -> np.ndarray:
    """Stack of :func:`ct_slice` at each ``z``: float32 ``(len(zs), rows, cols)``."""
    out = np.empty((len(zs), rows, cols), dtype=np.float32)
    for i, z in enumerate(zs):
        out[i] = ct_slice(float(z), rows, cols, pixel_spacing, noise_hu=noise_hu, seed=seed + i)
    return out


def ct_projection(rows: int = 512, cols: int = 512, *, fov_mm: float = 500.0,
                  z_top: float = 300.0) -> np.ndarray:
    """A coronal localiser (scout): mean HU along y of a coarse phantom.

    Returns float32 ``(rows, cols)``; row 0 is ``z_top``, rows step down by
    ``fov_mm / rows``, columns span ``fov_mm`` centred on x = 0. Built from
    a 128-wide phantom and stretched, because a scout is blurry anyway.
    """
    coarse = 128
    spacing = fov_mm / coarse
    zs = z_top - (np.arange(rows) + 0.5) * (fov_mm / rows)
    sample_z = zs[:: max(1, rows // 256)]
    proj = np.empty((len(sample_z), coarse), dtype=np.float32)
    for i, z in enumerate(sample_z):
        proj[i] = ct_slice(float(z), coarse, coarse, spacing).mean(axis=0)
    # Nearest-neighbour stretch to the target matrix.
    r_idx = np.minimum((np.arange(rows) * len(sample_z)) // rows, len(sample_z) - 1)
    c_idx = np.minimum((np.arange(cols) * coarse) // cols, coarse - 1)
    return proj[r_idx][:, c_idx]


# MR head: signal per tissue for each weighting (air, bone, fat, grey, white, CSF).
MR_CONTRAST = {
    "T1": {"air": 0.0, "bone": 60.0, "fat": 950.0, "grey": 520.0, "white": 760.0, "csf": 140.0},
    "T2": {"air": 0.0, "bone": 40.0, "fat": 620.0, "grey": 820.0, "white": 560.0, "csf": 1600.0},
}


def mr_slice(z: float, rows: int = 256, cols: int = 256, pixel_spacing: float = 0.9375,
             weighting: str = "T1", *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """One axial slice of the MR head phantom (z in mm, 0 = mid-brain).

    Returns float32 ``(rows, cols)`` of signal per :data:`MR_CONTRAST`.
    """
    c = MR_CONTRAST[weighting]
    x, y = _grid(rows, cols, pixel_spacing)
    img = np.full((rows, cols), c["air"], dtype=np.float32)
    head = _bump(z, 95.0, -75.0)
    if not head:
        return _add_noise(img, noise, seed)
    a, b = 75.0 * head, 92.0 * head
    _fill(img, x, y, 0, 0, a, b, c["fat"])  # scalp
    _fill(img, x, y, 0, 0, a - 5, b - 5, c["bone"])  # skull
    _fill(img, x, y, 0, 0, a - 11, b - 11, c["csf"])  # subarachnoid CSF
    _fill(img, x, y, 0, 0, a - 14, b - 14, c["grey"])  # cortex
    _fill(img, x, y, 0, 0, a - 22, b - 22, c["white"])  # white matter
    ventricles = _bump(z, 45.0, -5.0)
    if ventricles:
        for side in (-1.0, 1.0):
            _fill(img, x, y, side * 9.0, -8.0, 6.0 * ventricles, 24.0 * ventricles, c["csf"])
    # Deep grey nuclei either side of the ventricles.
    nuclei = _bump(z, 25.0, -15.0)
    if nuclei:
        for side in (-1.0, 1.0):
            _fill(img, x, y, side * 24.0, 0.0, 9.0 * nuclei, 14.0 * nuclei, c["grey"])
    return _add_noise(img, noise, seed)


def _add_noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Add Gaussian noise: a ``seed``-chosen window of one cached field.

    Drawing 512x512 normals per slice cost more than the anatomy itself;
    a shifted window of a fixed field looks the same and is deterministic.
    """
    if sigma > 0:
        rows, cols = img.shape
        field = _noise_field(rows, cols)
        r0 = (seed * 7919) % rows
        c0 = (seed * 104729 // rows) % cols
        img += field[r0:r0 + rows, c0:c0 + cols] * np.float32(sigma)
    return img


@functools.lru_cache(maxsize=8)
def _noise_field(rows: int, cols: int) -> np.ndarray:
    field = np.random.default_rng(20240229).standard_normal((2 * rows, 2 * cols), dtype=np.float32)
    field.flags.writeable = False
    return field
