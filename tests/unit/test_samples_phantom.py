"""The numeric phantoms: tissue values where the anatomy says, and fast enough to stream."""

from __future__ import annotations


import numpy as np
import pytest

from radcloud.ops.samples import phantom

SPACING = 0.78125


def _at(img: np.ndarray, x_mm: float, y_mm: float, spacing: float = SPACING) -> float:
    """Median of a 5x5 patch around a patient (x, y) point of a centred matrix."""
    rows, cols = img.shape
    col = int(round(x_mm / spacing + (cols - 1) / 2))
    row = int(round(y_mm / spacing + (rows - 1) / 2))
    return float(np.median(img[row - 2:row + 3, col - 2:col + 3]))


@pytest.fixture(scope="module")
def chest():
    return phantom.ct_slice(150.0, noise_hu=10.0, seed=7)   # lungs, ribs, spine


@pytest.mark.parametrize(("where", "x", "y", "low", "high"), [
    ("air outside the body", -190.0, -190.0, -1030.0, -970.0),
    ("right lung", -69.0, -5.0, -900.0, -700.0),
    ("left lung", 69.0, -5.0, -900.0, -700.0),
    ("subcutaneous fat", 153.0, 0.0, -150.0, -50.0),
    ("mediastinal soft tissue", 0.0, -60.0, 0.0, 80.0),
    ("vertebral body", 0.0, 72.0, 600.0, 800.0),
    ("posterior vertebral cortex", 0.0, 88.0, 1100.0, 1300.0),
])
def test_ct_chest_slice_has_tissue_classes_in_hu_ranges(chest, where, x, y, low, high):
    assert low <= _at(chest, x, y) <= high, where


def test_ct_abdomen_has_liver_and_no_lungs():
    img = phantom.ct_slice(-50.0)
    assert 50.0 <= _at(img, -65.0, 0.0) <= 70.0         # liver, patient right
    assert np.count_nonzero(img < -500) > 0.5 * img.size  # only the air around the body
    assert _at(img, 69.0, -5.0) > -200                    # no lung at this level


def test_ct_varies_along_z_and_is_air_outside_the_torso():
    assert not np.array_equal(phantom.ct_slice(150.0), phantom.ct_slice(-100.0))
    assert np.all(phantom.ct_slice(400.0) == phantom.HU_AIR)


def test_ct_noise_is_deterministic_per_seed():
    a = phantom.ct_slice(0.0, 64, 64, 6.25, noise_hu=10.0, seed=3)
    assert np.array_equal(a, phantom.ct_slice(0.0, 64, 64, 6.25, noise_hu=10.0, seed=3))
    assert not np.array_equal(a, phantom.ct_slice(0.0, 64, 64, 6.25, noise_hu=10.0, seed=4))


def test_ct_volume_of_100_slices():
    # Its speed is a benchmark's business (bench/seed_bench.py --generate-only),
    # not a timed test's: these machines are shared.
    zs = 250.0 - 5.0 * np.arange(100)
    volume = phantom.ct_volume(zs, noise_hu=10.0)
    assert volume.shape == (100, 512, 512) and volume.dtype == np.float32
    assert np.array_equal(volume[7], phantom.ct_slice(float(zs[7]), noise_hu=10.0, seed=7))


def test_scout_shows_lungs_darker_than_abdomen():
    scout = phantom.ct_projection(512, 512, fov_mm=500.0, z_top=300.0)
    assert scout.shape == (512, 512)
    row_at = lambda z: int((300.0 - z) / (500.0 / 512))   # noqa: E731
    col_right_lung = int((-69.0 + 250.0) / (500.0 / 512))
    assert scout[row_at(150.0), col_right_lung] < scout[row_at(-100.0), col_right_lung] - 100


def test_mr_contrast_differs_between_t1_and_t2():
    t1 = phantom.mr_slice(20.0, weighting="T1")
    t2 = phantom.mr_slice(20.0, weighting="T2")
    ventricle, white = (9.0, -8.0), (40.0, -40.0)
    spacing = 0.9375
    assert _at(t1, *ventricle, spacing) < _at(t1, *white, spacing)   # CSF dark on T1
    assert _at(t2, *ventricle, spacing) > _at(t2, *white, spacing)   # CSF bright on T2
    assert t1.shape == (256, 256)
    assert _at(t1, -115.0, -115.0, spacing) == 0.0                   # air
