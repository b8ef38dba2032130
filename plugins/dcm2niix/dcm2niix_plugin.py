#!/usr/bin/env python3
"""dcm2niix: DICOM → NIfTI + BIDS JSON sidecars with Chris Rorden's dcm2niix.

ChRIS ds plugin: ``dcm2niix_plugin.py [options] inputdir outputdir``. Runs
the ``dcm2niix`` binary shipped in the PyPI wheel (found next to this
interpreter, in the ``dcm2niix`` package, or on PATH) over ``inputdir`` with
BIDS sidecars on and BIDS anonymisation on (``-b y -ba y``), then checks
each NIfTI header and writes ``dcm2niix.json`` (file, dimensions, voxel size,
sidecar) so callers need not parse NIfTI.

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
from pathlib import Path

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


def convert(inputdir: Path, outputdir: Path, fmt: str = "%s_%d", compress: bool = True,
            merge: bool = False) -> dict:
    cmd = [find_binary(), "-b", "y", "-ba", "y", "-z", "y" if compress else "n", "-f", check_format(fmt),
           "-m", "y" if merge else "n", "-o", str(outputdir), str(inputdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    for line in (proc.stdout + proc.stderr).splitlines()[:MAX_LOG_LINES]:
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
    index = {"exit_code": proc.returncode, "volumes": volumes, "command": ["dcm2niix", *cmd[1:-3]]}
    (outputdir / "dcm2niix.json").write_text(json.dumps(index, indent=1))
    return index


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
    # dcm2niix exits 2 when it found no DICOM: that is a failed shard too.
    return 0 if index["exit_code"] == 0 and index["volumes"] else (index["exit_code"] or 1)


if __name__ == "__main__":
    sys.exit(main())
