"""plugins/dcm2png on pydicom's real files (several transfer syntaxes) and a phantom CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from plugin_helpers import TEST_FILES, copy_test_files, load_plugin_module, run_plugin

d2p = load_plugin_module("dcm2png", "dcm2png.py")

REAL = ["CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_rle_2frame.dcm", "examples_palette.dcm", "JPGExtended.dcm"]


def test_real_files_in_every_transfer_syntax(tmp_path):
    inp = copy_test_files(tmp_path / "in", REAL + ["rtplan.dcm"])
    (inp / "notes.txt").write_text("not dicom")
    proc = run_plugin("dcm2png", "dcm2png.py", inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "out" / "dcm2png.json").read_text())
    pngs = {i["png"] for i in index["images"]}
    assert {"CT_small.png", "MR_small_jp2klossless.png", "MR_small_jpeg_ls_lossless.png", "MR_small_RLE.png",
            "SC_rgb_rle_2frame-f0001.png", "SC_rgb_rle_2frame-f0002.png", "examples_palette.png"} <= pngs
    assert {s["file"]: s["why"] for s in index["skipped"]} == {"rtplan.dcm": "no pixel data",
                                                                "notes.txt": "not DICOM"}
    # the lossless compressed MR decodes to the same image as the uncompressed one
    ref = np.asarray(Image.open(tmp_path / "out" / "MR_small.png"))
    for name in ("MR_small_jp2klossless", "MR_small_jpeg_ls_lossless", "MR_small_RLE", "MR_small_bigendian"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), ref), name
    rgb = Image.open(tmp_path / "out" / "SC_rgb_jpeg_dcmtk.png")
    assert rgb.mode == "RGB"
    # pydicom's SC_rgb files are colour bars: the top-left is red after YBR→RGB
    r, g, b = np.asarray(rgb)[5, 5]
    assert r > 200 and g < 60 and b < 60
    assert (tmp_path / "out" / "montage").is_dir() and index["montages"]
    assert "DOE" not in proc.stderr + proc.stdout


def test_window_from_tags_matches_dicom_formula():
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    img = d2p.gray_to_uint8(ds.pixel_array, ds, None, None)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    x = ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    expected = np.clip(np.rint(((x - (c - 0.5)) / (w - 1) + 0.5) * 255), 0, 255)
    assert np.array_equal(img, expected.astype(np.uint8))


def test_ct_hounsfield_window_override_and_rescale():
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = d2p.gray_to_uint8(ds.pixel_array, ds, 40.0, 400.0)
    assert img[hu <= -160.5].max(initial=0) == 0 and img[hu > 239.5].min(initial=255) == 255


def test_monochrome1_is_inverted():
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    normal = d2p.gray_to_uint8(ds.pixel_array, ds, 40.0, 400.0)
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(d2p.gray_to_uint8(ds.pixel_array, ds, 40.0, 400.0), 255 - normal)


def test_sigmoid_and_linear_exact():
    v = np.array([-1000.0, 40.0, 1000.0])
    assert list(d2p.window_lut(v, 40, 400, "SIGMOID")) == [0, 128, 255]
    assert list(d2p.window_lut(v, 40, 400, "LINEAR_EXACT")) == [0, 128, 255]


def test_phantom_series_montage_in_slice_order(ct_series, tmp_path):
    proc = run_plugin("dcm2png", "dcm2png.py", ct_series, tmp_path / "out", "--thumbnailSize", "32")
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "out" / "dcm2png.json").read_text())
    assert len(index["images"]) == 20 and len(index["thumbnails"]) == 20
    montage = Image.open(tmp_path / "out" / index["montages"][0])
    assert montage.size == (5 * 32, 4 * 32)
    png = Image.open(tmp_path / "out" / index["images"][0]["png"])
    assert png.size == (128, 128) and png.mode == "L"
    assert "DOE" not in proc.stderr + proc.stdout and "MRN0001" not in json.dumps(index)


@pytest.mark.parametrize("args", [["--wc", "40"]])
def test_half_a_window_is_refused(tmp_path, args):
    proc = run_plugin("dcm2png", "dcm2png.py", tmp_path, tmp_path / "out", *args)
    assert proc.returncode == 2 and "--ww" in proc.stderr


def test_voi_lut_sequence_is_used_before_window_tags():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    arr = ds.pixel_array
    lut = Dataset()
    # a step LUT: stored values below 600 → 0, the rest → 4095 (12-bit output)
    lut.LUTDescriptor = [4096, 0, 12]
    lut.LUTData = [0] * 600 + [4095] * (4096 - 600)
    ds.VOILUTSequence = Sequence([lut])
    img = d2p.gray_to_uint8(arr, ds, None, None)
    assert set(np.unique(img)) <= {0, 255}
    assert np.array_equal(img == 255, arr >= 600)


def test_bad_files_get_the_decoders_own_reason_and_the_rest_are_converted(tmp_path):
    inp = copy_test_files(tmp_path / "in", ["badVR.dcm", "MR_truncated.dcm", "JPEG-lossy.dcm", "MR_small.dcm"])
    proc = run_plugin("dcm2png", "dcm2png.py", inp, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    reasons = json.loads((tmp_path / "out" / "file-reasons.json").read_text())
    assert reasons["inputs"] == 4 and reasons["processed"] == 1
    why = {r["file"]: r["reason"] for r in reasons["not_processed"]}
    assert "NumberOfFrames '1A' is not a valid number" in why["badVR.dcm"]
    assert "truncated" in why["MR_truncated.dcm"]
    assert "misplaced marker segment" in why["JPEG-lossy.dcm"]
    for reason in why.values():  # each line of the log names the file and the same reason
        assert f"skipped {next(f for f, r in why.items() if r == reason)}: {reason}" in proc.stderr
    assert (tmp_path / "out" / "MR_small.png").is_file()


def test_long_colour_cine_is_decoded_one_frame_at_a_time(tmp_path, require):
    """pydicom-data's 120-frame colour JPEG cine (6 MB compressed, 110 MB decoded) fits
    in an address space of 450 MB: frames are decoded and written one at a time."""
    import importlib.util

    # A dev dependency: missing fails under CI=true, skips elsewhere (tests/conftest.py).
    require(importlib.util.find_spec("data_store") is not None, "pydicom-data is a dev dependency: make venv")
    import data_store
    import resource
    import shutil
    import subprocess
    import sys

    from plugin_helpers import REPO

    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(Path(data_store.__file__).parent / "data" / "color3d_jpeg_baseline.dcm", inp)
    limit = 450 * 2**20
    proc = subprocess.run([sys.executable, str(REPO / "plugins/dcm2png/dcm2png.py"), str(inp), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "out" / "dcm2png.json").read_text())
    assert len(index["images"]) == 120 and not index["skipped"]
    assert Image.open(tmp_path / "out" / "color3d_jpeg_baseline-f0120.png").mode == "RGB"
