"""Synthetic series make one NIfTI volume of the right shape in the real dcm2niix (a subprocess)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radcloud.ops.samples import synthetic


@pytest.fixture(scope="module")
def plans():
    return synthetic.plan()


def _series(plans, description):
    return next(p for p in plans if p.series.description == description)


def _dcm2niix() -> str | None:
    bindir = str(Path(sys.executable).parent)
    return shutil.which("dcm2niix", path=os.pathsep.join([bindir, os.environ.get("PATH", "")]))


def _nifti_header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    header = path.read_bytes()[:348]
    assert struct.unpack("<i", header[:4])[0] == 348, "not a NIfTI-1 file"
    dims = struct.unpack("<8h", header[40:56])
    pixdim = struct.unpack("<8f", header[76:108])
    return dims[1:1 + dims[0]], pixdim[1:4]


def test_dcm2niix_makes_one_volume_of_the_right_shape(plans, tmp_path, require):
    binary = _dcm2niix()
    require(binary is not None, "dcm2niix not installed (a pinned dependency: make venv)")
    p = _series(plans, "AXIAL 2.5mm LUNG")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for ds in p.datasets():
        (tmp_path / "in" / f"{int(ds.InstanceNumber):04d}.dcm").write_bytes(synthetic.dataset_bytes(ds))
    done = subprocess.run([binary, "-z", "n", "-b", "n", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    volumes = list((tmp_path / "out").glob("*.nii"))
    assert len(volumes) == 1, done.stdout
    dims, pixdim = _nifti_header(volumes[0])
    assert dims[:3] == (512, 512, p.count) and all(d == 1 for d in dims[3:])
    assert np.allclose(pixdim, (0.78125, 0.78125, 2.5))
