"""The real-file corpus: public DICOM nobody here wrote, installed from PyPI (never in git).

Two packages, both dev dependencies (pyproject ``[dev]``, pinned in
constraints.txt): pydicom's own test files (``pydicom/data/test_files``, in
the pydicom wheel) and ``pydicom-data`` (the ``data_store`` package: the
larger files pydicom's tests download). Files are read from the installed
packages by path, never through ``get_testdata_file`` (it may download).

:data:`CORPUS` is a subset chosen to cover every kind the issue names at a
bounded cost (one file per kind, ~15 Orthanc series): each entry says what it
covers. :data:`MIXED` puts a truncated slice into a good series. :data:`TWIN` is stored a second time with another PatientID, as an
anonymiser that keeps UIDs leaves it: Orthanc keeps the two apart though they
share every UID — the silent-loss case of retrieve, on a real file. There is no DICOM
SEG on PyPI in a package we could find (highdicom's wheel ships no test
data; pylibjpeg-data is not on PyPI): SEG is not covered by this corpus. pydicom-data's 120-frame colour cine
(``color3d_jpeg_baseline.dcm``) is left out for cost — its plugin shards alone
took ~50 s under load — and is run instead by
tests/unit/plugins/test_dcm2png.py in a capped address space.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

# file -> what it covers
CORPUS: dict[str, str] = {
    "CT_small.dcm": "CT, explicit VR little endian",
    "693_J2KR.dcm": "real head CT (CQ500), 512x512, JPEG 2000 lossless; one series with 693_UNCI.dcm",
    "693_UNCI.dcm": "the same slice as 693_J2KR.dcm (same position, instance 21), uncompressed, its own SOP Instance UID",
    "RG1_J2KR.dcm": "large CR (2.1k x 1.8k, 7 MB decoded), JPEG 2000 lossless, MONOCHROME1",
    "emri_small_jpeg_ls_lossless.dcm": "multi-frame enhanced MR (10 frames), JPEG-LS lossless",
    "SC_rgb_rle_2frame.dcm": "colour RGB, RLE lossless, 2 frames",
    "SC_rgb_jpeg_dcmtk.dcm": "colour JPEG baseline (YBR_FULL_422); joins SC_rgb_rle_2frame.dcm's series",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": "US, JPEG lossless (process 14 SV1)",
    "MR_small_bigendian.dcm": "MR, explicit VR big endian",
    "US1_J2KR.dcm": "colour US, JPEG 2000 (YBR_RCT)",
    "OBXXXX1A_2frame.dcm": "multi-frame US, palette colour",
    "badVR.dcm": "odd header: NumberOfFrames '1A' (RT dose)",
    "bad_sequence.dcm": "non-conformant UIDs (64-char hex digests), JPEG lossless CT",
    "JPEG-lossy.dcm": "JPEG extended with a misplaced marker segment (undecodable)",
    "test-SR.dcm": "structured report, no pixel data",
    "image_dfl.dcm": "deflated explicit VR little endian",
}


# Stored again under another PatientID (same Study/Series/SOP Instance UIDs).
TWIN = ("CT_small.dcm", "TWIN^PATIENT", "TWIN0001")
# One bad file among good ones: pydicom's truncated MR slice, stored with a SOP Instance
# UID of its own so that it joins MR_small_bigendian.dcm's series (same patient, study
# and series) instead of being dropped by Orthanc as a copy of it.
MIXED = ("MR_truncated.dcm", "MR_small_bigendian.dcm")


def path(name: str) -> Path:
    """Where an installed package keeps ``name`` (pydicom's files, then pydicom-data's)."""
    mine = PYDICOM_FILES / name
    if mine.is_file():
        return mine
    try:
        import data_store  # pydicom-data
    except ImportError as exc:  # a dev dependency: `make venv` installs it
        raise RuntimeError("pydicom-data is not installed (pip install -c constraints.txt -e '.[ops,plugins,dev]')") from exc
    theirs = Path(data_store.__file__).parent / "data" / name
    if not theirs.is_file():
        raise RuntimeError(f"{name} is in neither pydicom's test files nor pydicom-data")
    return theirs
