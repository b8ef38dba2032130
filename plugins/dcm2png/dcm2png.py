#!/usr/bin/env python3
"""dcm2png: DICOM → PNG slices with DICOM windowing, thumbnails and montages.

ChRIS ds plugin: ``dcm2png.py [options] inputdir outputdir``.

Every DICOM file under ``inputdir`` (any transfer syntax pydicom and
pylibjpeg decode: JPEG baseline/lossless/LS, JPEG 2000, RLE) becomes one PNG
per frame under ``outputdir`` (the input's relative path, ``.png``), plus
``thumbnails/`` and one ``montage/series-NNN.png`` per series, and
``dcm2png.json`` listing what was written. Greyscale goes through the
modality LUT (rescale slope/intercept or a Modality LUT Sequence), then the
VOI: ``--wc/--ww`` if given, else the file's VOI LUT Sequence or Window
Centre/Width (first value; LINEAR, LINEAR_EXACT, SIGMOID), else the 0.5-99.5
percentile range; MONOCHROME1 is inverted. Colour (RGB, YBR converted to
RGB, palette colour) is written as RGB.

Frames are decoded one at a time (pydicom's ``iter_pixels`` reading the
file), so a long colour cine needs one frame's memory, not the clip's. A file
that cannot be converted is listed with the reader's or decoder's own reason
(``file-reasons.json``, see :mod:`radcloud.run.filereasons`); the rest go on.

Speed: windowing is a uint8 lookup table indexed by the stored value, so a
512x512 slice costs one table build and one gather; PNGs use zlib level 1.
Never prints patient attributes: messages name files by relative path.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, iter_pixels

from radcloud.run.filereasons import FileReasons, explain

MONTAGE_MAX = 64  # thumbnails per montage, evenly sampled over the series


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DICOM to PNG with proper windowing")
    p.add_argument("--wc", type=float, default=None, help="window centre override (HU for CT)")
    p.add_argument("--ww", type=float, default=None, help="window width override")
    p.add_argument("--thumbnailSize", type=int, default=128, help="thumbnail edge in px; 0 = none")
    p.add_argument("--noMontage", action="store_true", help="skip the per-series montage")
    p.add_argument("--compressLevel", type=int, default=1, help="PNG zlib level 0-9")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def window_lut(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing of ``values`` onto 0..255 (float in, uint8 out)."""
    function = (function or "LINEAR").upper()
    width = max(width, 1.0 if function == "LINEAR" else 1e-6)
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        out = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _first(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return float(value[0]) if len(value) else None
    return float(value)


def gray_to_uint8(arr: np.ndarray, ds: pydicom.Dataset, wc: float | None, ww: float | None) -> np.ndarray:
    """Stored values → display uint8 (modality LUT, VOI, MONOCHROME1 inversion)."""
    has_modality_seq = "ModalityLUTSequence" in ds
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if has_modality_seq:
        arr, slope, intercept = apply_modality_lut(arr, ds), 1.0, 0.0
    center, width = wc, ww
    function = str(ds.get("VOILUTFunction", "LINEAR"))
    if center is None or width is None:
        if "VOILUTSequence" in ds and center is None and width is None:
            rescaled = arr if has_modality_seq else arr * slope + intercept
            if float(slope).is_integer() and float(intercept).is_integer():
                rescaled = rescaled.astype(np.int64)  # a VOI LUT is indexed by integers
            voi = apply_voi_lut(rescaled, ds, index=0)
            out = _minmax(voi)
            return 255 - out if ds.get("PhotometricInterpretation") == "MONOCHROME1" else out
        center = center if center is not None else _first(ds.get("WindowCenter"))
        width = width if width is not None else _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        sample = arr[::4, ::4] if arr.ndim == 2 else arr
        lo, hi = np.percentile(sample, (0.5, 99.5)) * slope + intercept
        center, width, function = (lo + hi) / 2, max(hi - lo, 1.0), "LINEAR_EXACT"
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo <= 1 << 20:
            table = window_lut(np.arange(lo, hi + 1, dtype=np.float64) * slope + intercept,
                               center, width, function)
            out = table[arr.astype(np.int64, copy=False) - lo] if lo else table[arr]
        else:
            out = window_lut(arr * slope + intercept, center, width, function)
    else:
        out = window_lut(arr.astype(np.float64) * slope + intercept, center, width, function)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = 255 - out
    return out


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros(arr.shape, np.uint8) if hi <= lo else ((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_image(frame: np.ndarray, ds: pydicom.Dataset, wc: float | None, ww: float | None) -> np.ndarray:
    """One decoded frame → a display image (uint8 H×W or H×W×3)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        return rgb if rgb.dtype == np.uint8 else _minmax(rgb)
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:  # pydicom 3 converts YBR_* to RGB by default
        return frame if frame.dtype == np.uint8 else _minmax(frame)
    return gray_to_uint8(frame, ds, wc, ww)


def _sort_key(ds: pydicom.Dataset, rel: str) -> tuple:
    try:
        ipp = ds.get("ImagePositionPatient")
        z = float(ipp[2]) if ipp is not None and len(ipp) == 3 else 0.0
    except (TypeError, ValueError):
        z = 0.0  # a malformed position only costs the montage order
    return (_int(ds.get("InstanceNumber")), -z, rel)


def montage(thumbs: list[np.ndarray], size: int) -> Image.Image:
    if len(thumbs) > MONTAGE_MAX:
        idx = np.linspace(0, len(thumbs) - 1, MONTAGE_MAX).round().astype(int)
        thumbs = [thumbs[i] for i in idx]
    cols = math.ceil(math.sqrt(len(thumbs)))
    rows = math.ceil(len(thumbs) / cols)
    sheet = Image.new("RGB", (cols * size, rows * size))
    for i, t in enumerate(thumbs):
        img = Image.fromarray(t).convert("RGB")
        x, y = (i % cols) * size + (size - img.width) // 2, (i // cols) * size + (size - img.height) // 2
        sheet.paste(img, (x, y))
    return sheet


def convert(inputdir: Path, outputdir: Path, *, wc: float | None = None, ww: float | None = None,
            thumbnail_size: int = 128, make_montage: bool = True, compress_level: int = 1) -> dict:
    """Convert every DICOM file under ``inputdir``; returns the index written as dcm2png.json."""
    files = sorted(p for p in inputdir.rglob("*") if p.is_file())
    series: dict[str, list[tuple[tuple, np.ndarray]]] = {}
    series_no: dict[str, int] = {}
    index = {"images": [], "thumbnails": [], "montages": [], "skipped": []}
    reasons = FileReasons("dcm2png", len(files))
    t0 = time.perf_counter()
    for n, path in enumerate(files, 1):
        rel = path.relative_to(inputdir).as_posix()
        try:
            # Pixel data stays on disk (deferred) and is decoded frame by frame below.
            ds = pydicom.dcmread(path, defer_size="64 KB")
        except InvalidDicomError:
            _skip(index, reasons, rel, "not DICOM")
            continue
        except Exception as exc:
            _skip(index, reasons, rel, f"cannot read the DICOM header: {explain(exc)}")
            continue
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            _skip(index, reasons, rel, "no pixel data")
            continue
        stem = Path(rel).with_suffix("") if Path(rel).suffix.lower() in (".dcm", ".dicom") else Path(rel)
        uid = str(ds.get("SeriesInstanceUID", "unknown"))
        written: list[dict] = []
        try:
            n_frames = _frames(ds)
            for f, frame in enumerate(iter_pixels(_pixel_source(path, ds)), 1):
                img = to_image(frame, ds, wc, ww)
                name = f"{stem}.png" if n_frames == 1 else f"{stem}-f{f:04d}.png"
                dest = outputdir / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(dest, compress_level=compress_level)
                written.append({"png": name, "source": rel, "frame": f, "img": img})
        except Exception as exc:  # one bad file must not stop the series
            for item in written:  # a half-converted file is not a result
                (outputdir / item["png"]).unlink(missing_ok=True)
            _skip(index, reasons, rel, f"cannot decode the pixel data: {_why(exc, ds)}")
            continue
        series_no.setdefault(uid, len(series_no) + 1)
        reasons.ok()
        for item in written:
            img, name, f = item.pop("img"), item["png"], item["frame"]
            index["images"].append({**item, "instance": _int(ds.get("InstanceNumber")), "series": series_no[uid]})
            if thumbnail_size > 0:
                thumb = Image.fromarray(img)
                thumb.thumbnail((thumbnail_size, thumbnail_size), Image.Resampling.BILINEAR)
                tname = f"thumbnails/{name}"
                (outputdir / tname).parent.mkdir(parents=True, exist_ok=True)
                thumb.save(outputdir / tname, compress_level=compress_level)
                index["thumbnails"].append(tname)
                series.setdefault(uid, []).append(((*_sort_key(ds, rel), f), np.asarray(thumb)))
        if n % 25 == 0:
            print(f"converted {n}/{len(files)} files", flush=True)
    if make_montage and thumbnail_size > 0:
        for uid, items in series.items():
            items.sort(key=lambda item: item[0])
            name = f"montage/series-{series_no[uid]:03d}.png"
            (outputdir / name).parent.mkdir(parents=True, exist_ok=True)
            montage([t for _, t in items], thumbnail_size).save(outputdir / name, compress_level=compress_level)
            index["montages"].append(name)
    index["seconds"] = round(time.perf_counter() - t0, 3)
    (outputdir / "dcm2png.json").write_text(json.dumps(index, indent=1))
    reasons.write(outputdir)
    return index


def _skip(index: dict, reasons: FileReasons, rel: str, why: str) -> None:
    index["skipped"].append({"file": rel, "why": why})
    reasons.skip(rel, why)


def _int(value) -> int:
    """A header number, 0 when absent or malformed (real files carry "1A", "", "3.0")."""
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return 0


# The Image Pixel attributes a decoder reads as integers (IS/US).
_PIXEL_NUMBERS = ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                  "PixelRepresentation", "PlanarConfiguration")


def _pixel_source(path: Path, ds: pydicom.Dataset):
    """What to decode frame by frame: the file itself (one frame in memory at a time),
    or the whole dataset when the file cannot be streamed (deflated, no transfer syntax)."""
    ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    if not ts or ts.is_deflated:
        full = pydicom.dcmread(path, force=True)
        if not ts:
            full.file_meta.TransferSyntaxUID = full.original_encoding and (
                pydicom.uid.ImplicitVRLittleEndian if full.is_implicit_VR else pydicom.uid.ExplicitVRLittleEndian)
        return full
    return path


def _why(exc: Exception, ds: pydicom.Dataset) -> str:
    """The decoder's reason, made specific where its message is generic."""
    bad = [f"{k} {str(ds.get(k))!r}" for k in _PIXEL_NUMBERS if k in ds and _int(ds.get(k)) == 0
           and str(ds.get(k)).strip() not in ("0",)]
    if isinstance(exc, ValueError) and bad:
        return f"the header's {', '.join(bad)} is not a valid number, so the pixel data cannot be laid out"
    if isinstance(exc, ValueError) and "cannot reshape" in str(exc):
        return (f"the pixel data is shorter than Rows x Columns x frames declare: the file is truncated or "
                f"its header is wrong ({explain(exc)})")
    return explain(exc)


def _frames(ds: pydicom.Dataset) -> int:
    n = _int(ds.get("NumberOfFrames", 1))
    return n if n > 0 else 1


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if (a.wc is None) != (a.ww is None):
        print("--wc and --ww go together", file=sys.stderr)
        return 2
    Path(a.outputdir).mkdir(parents=True, exist_ok=True)
    index = convert(Path(a.inputdir), Path(a.outputdir), wc=a.wc, ww=a.ww, thumbnail_size=a.thumbnailSize,
                    make_montage=not a.noMontage, compress_level=a.compressLevel)
    print(f"dcm2png: {len(index['images'])} images, {len(index['skipped'])} skipped, "
          f"{index['seconds']} s", file=sys.stderr)
    return 0 if index["images"] or not index["skipped"] else 1


if __name__ == "__main__":
    sys.exit(main())
