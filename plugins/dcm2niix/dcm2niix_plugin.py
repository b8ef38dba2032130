#!/usr/bin/env python3
"""dcm2niix: DICOM → NIfTI + BIDS JSON sidecars with Chris Rorden's dcm2niix.

ChRIS ds plugin: ``dcm2niix_plugin.py [options] inputdir outputdir``. Runs
the ``dcm2niix`` binary shipped in the PyPI wheel (found next to this
interpreter, in the ``dcm2niix`` package, or on PATH) over ``inputdir`` with
BIDS sidecars on and BIDS anonymisation on (``-b y -ba y``), then checks
each NIfTI header and writes ``dcm2niix.json`` (file, dimensions, voxel size,
sidecar) so callers need not parse NIfTI.

Before dcm2niix sees them, files are screened with pydicom: a file that is
not DICOM or has no pixel data is named with that reason; a file in any
transfer syntax other than plain little endian (JPEG baseline/extended,
16-bit JPEG, deflate, big endian — which dcm2niix's own decoders refuse) is
decoded by pydicom/pylibjpeg and handed over uncompressed, so its reason, if
it cannot be decoded, is the decoder's own. Reasons go to
``file-reasons.json`` (:mod:`radcloud.run.filereasons`).

Output names come from ``--filename`` (dcm2niix's ``-f``); tokens that put
patient attributes into file names (%n name, %i ID, %f folder, %k
accession...) are refused. dcm2niix's own log is echoed with input paths
only (radcloud stages inputs under opaque names).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radcloud.run.filereasons import FileReasons, explain

# %a coil %b base %c comments %d description %e echo %f folder %g acc.# %i ID %j series UID
# %k study UID %l procedure %m manufacturer %n name %o media ID %p protocol %r instance
# %s series # %t time %u acquisition # %v vendor %x study ID %y/%z sequence
PHI_TOKENS = set("fgiklnotx")
MAX_LOG_LINES = 200


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DICOM to NIfTI with BIDS sidecars (dcm2niix)")
    p.add_argument("--filename", default="%s_%d", help="dcm2niix -f format (no patient tokens)")
    p.add_argument("--noCompress", action="store_true", help="write .nii instead of .nii.gz")
    p.add_argument("--merge", action="store_true", help="merge 2D slices of a series regardless of echo/time")
    p.add_argument("inputdir")
    p.add_argument("outputdir")
    return p


def find_binary() -> str:
    """The dcm2niix executable: beside sys.executable, the wheel's package, then PATH."""
    beside = Path(sys.executable).parent / "dcm2niix"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    try:
        import dcm2niix  # the PyPI wheel keeps the binary in its package dir

        packaged = Path(dcm2niix.__file__).parent / "dcm2niix"
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return str(packaged)
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if not found:
        raise FileNotFoundError("the dcm2niix binary is not installed (pip install dcm2niix)")
    return found


def check_format(fmt: str) -> str:
    tokens = set(re.findall(r"%([a-zA-Z])", fmt))
    bad = sorted(t for t in tokens if t.lower() in PHI_TOKENS)
    if bad:
        raise ValueError(f"--filename tokens {', '.join('%' + t for t in bad)} would put patient "
                         "attributes in file names")
    if "/" in fmt or fmt.startswith("."):
        raise ValueError("--filename must be a plain name")
    return fmt


def nifti_header(path: Path) -> dict:
    """dim and pixdim from a NIfTI-1 header (.nii or .nii.gz)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read(348)
    if len(raw) < 348:
        raise ValueError(f"{path.name}: truncated NIfTI header")
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", raw[:4])[0] != 348:
        raise ValueError(f"{path.name}: not a NIfTI-1 file")
    dim = struct.unpack(endian + "8h", raw[40:56])
    pixdim = struct.unpack(endian + "8f", raw[76:108])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    n = dim[0]
    return {"dim": list(dim[1:n + 1]), "voxel_mm": [round(v, 6) for v in pixdim[1:min(n, 3) + 1]],
            "datatype": datatype, "magic": raw[344:348].rstrip(b"\x00").decode("ascii", "replace")}


def prepare(inputdir: Path, staging: Path, reasons: FileReasons) -> dict[str, str]:
    """Put what dcm2niix can convert under ``staging``; returns staged path -> input name.

    Plain little-endian files are linked as they are; others are decoded by
    pydicom and written uncompressed. Every other file gets its reason.
    """
    staged: dict[str, str] = {}
    files = sorted(p for p in inputdir.rglob("*") if p.is_file())
    reasons.inputs = len(files)
    for n, path in enumerate(files):
        rel = path.relative_to(inputdir).as_posix()
        dest = staging / f"{n:06d}.dcm"
        ds = reasons.dcmread(path, rel, defer_size="64 KB")
        if ds is None:
            continue
        if "PixelData" not in ds:
            reasons.skip(rel, "no pixel data: dcm2niix converts images only")
            continue
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        short = _short_pixels(ds) if ts is not None and not ts.is_compressed else None
        if short:  # dcm2niix would drop the whole series for one such slice
            reasons.skip(rel, short)
            continue
        if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            dest.symlink_to(path.resolve())
        else:
            try:
                _little_endian(pydicom.dcmread(path, force=True)).save_as(dest, enforce_file_format=False)
            except Exception as exc:
                reasons.skip(rel, f"cannot decode the pixel data ({ts.name if ts else 'no transfer syntax'}): "
                                  f"{explain(exc)}")
                dest.unlink(missing_ok=True)
                continue
        staged[str(dest)] = rel
    return staged


def _short_pixels(ds: pydicom.Dataset) -> str | None:
    """Why an uncompressed file's pixel data cannot be what its header says (truncated), or None."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(float(str(ds.get("NumberOfFrames", 1) or 1)))
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
        length = ds.get_item("PixelData").length
    except (AttributeError, KeyError, TypeError, ValueError):
        return None  # left to the decoder, whose message then is the reason
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if length is None or length == 0xFFFFFFFF or length >= expected:
        return None
    return (f"the pixel data holds {length} bytes where Rows x Columns x frames declare {expected}: "
            f"the file is truncated or its header is wrong")


def _little_endian(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The dataset as uncompressed Explicit VR Little Endian (pixels decoded by pydicom)."""
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is not None and ts.is_compressed:
        ds.decompress()  # decodes with pylibjpeg; YBR becomes RGB
        return ds
    arr = ds.pixel_array  # big endian, deflated or no transfer syntax: decode, then re-encode
    if ds.get("PhotometricInterpretation") in ("YBR_FULL", "YBR_FULL_422"):
        ds.PhotometricInterpretation = "RGB"  # pixel_array converted it
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        ds.PlanarConfiguration = 0
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)  # even length, as DICOM requires (dcm2niix crashes otherwise)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True)
    return ds


def convert(inputdir: Path, outputdir: Path, fmt: str = "%s_%d", compress: bool = True,
            merge: bool = False, reasons: FileReasons | None = None) -> dict:
    reasons = reasons or FileReasons("dcm2niix")
    with tempfile.TemporaryDirectory(prefix="dcm2niix-in-") as tmp:
        staged = prepare(inputdir, Path(tmp), reasons)
        cmd = [find_binary(), "-b", "y", "-ba", "y", "-z", "y" if compress else "n", "-f", check_format(fmt),
               "-m", "y" if merge else "n", "-o", str(outputdir), tmp]
        if staged:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
            code, lines = proc.returncode, (proc.stdout + proc.stderr).splitlines()
        else:
            code, lines = 2, ["no file to convert"]
        for line in lines[:MAX_LOG_LINES]:
            for dest, rel in staged.items():  # the user knows the inputs by their names, not ours
                line = line.replace(dest, rel)
            print(line, file=sys.stderr)
    volumes = []
    for nii in sorted(outputdir.glob("*.nii*")):
        stem = nii.name[:-7] if nii.name.endswith(".nii.gz") else nii.name[:-4]
        sidecar = outputdir / f"{stem}.json"
        entry = {"nifti": nii.name, **nifti_header(nii),
                 "sidecar": sidecar.name if sidecar.is_file() else None}
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            entry.update(modality=meta.get("Modality"), series_description=meta.get("SeriesDescription"),
                         bids_guess=meta.get("BidsGuess"))
        volumes.append(entry)
    _attribute(staged, lines, code, bool(volumes), reasons)
    index = {"exit_code": code, "volumes": volumes, "command": ["dcm2niix", *cmd[1:-3]]}
    (outputdir / "dcm2niix.json").write_text(json.dumps(index, indent=1))
    reasons.write(outputdir)
    return index


_TROUBLE = re.compile(r"^(Error|Illegal|Skipping|Unsupported|Unable to decode)", re.I)


def _exit_meaning(code: int) -> str:
    """dcm2niix's exit without an error line: a crash named by its signal, else its documented code."""
    signum = -code if code < 0 else code - 256 if code > 128 and 256 - code < 64 else 0
    signum = abs(signum)
    if signum:
        import signal
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return (f"dcm2niix crashed ({name}) on this set of files; convert the series in smaller parts "
                f"or report the files to dcm2niix")
    return {1: "dcm2niix failed (exit 1, unspecified error) without an error line",
            2: "dcm2niix found no DICOM images it could convert", 4: "dcm2niix found a corrupt DICOM file",
            8: "dcm2niix converted only part of the input",
            10: "dcm2niix found incomplete volumes (missing slices or frames)"
            }.get(code, f"dcm2niix exited {code} without an error line")


def _attribute(staged: dict[str, str], lines: list[str], code: int, made: bool, reasons: FileReasons) -> None:
    """Files dcm2niix named in an error line get that line; the rest count as converted
    when it made a volume, else each gets its first error (dcm2niix names few files)."""
    trouble = [line for line in lines if _TROUBLE.match(line.strip())]
    named = {}
    for line in trouble:
        for dest, rel in staged.items():
            if dest in line and rel not in named:
                named[rel] = line.replace(dest, rel).strip()
    first = next((t for t in trouble), _exit_meaning(code))
    for rel in staged.values():
        if rel in named:
            reasons.skip(rel, f"dcm2niix: {named[rel]}")
        elif made:
            reasons.ok()
        else:
            reasons.skip(rel, f"dcm2niix made no volume (exit {code}): {first.strip()}")


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        check_format(a.filename)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    out = Path(a.outputdir)
    out.mkdir(parents=True, exist_ok=True)
    index = convert(Path(a.inputdir), out, a.filename, not a.noCompress, a.merge)
    print(f"dcm2niix: {len(index['volumes'])} volume(s), exit {index['exit_code']}", file=sys.stderr)
    # No volume at all is a failed shard (with every file's reason); volumes with some
    # files left out (dcm2niix's exit 8, partial success) is success with warnings.
    return 0 if index["volumes"] else (index["exit_code"] or 1)


if __name__ == "__main__":
    sys.exit(main())
