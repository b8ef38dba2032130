"""Helpers for the per-plugin tests: run a plugin, real pydicom files, synthetic series.

Plugins run as the shard runner runs them: ``python plugins/<name>/<entry>.py
[options] inputdir outputdir`` in a subprocess. pydicom's bundled files are
copied from its package dir (never ``get_testdata_file``: it downloads).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[3]
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def run_plugin(name: str, entry: str, inputdir: Path | None, outputdir: Path, *options: str,
               timeout: float = 120) -> subprocess.CompletedProcess:
    outputdir.mkdir(parents=True, exist_ok=True)
    dirs = [str(outputdir)] if inputdir is None else [str(inputdir), str(outputdir)]
    return subprocess.run([sys.executable, str(REPO / "plugins" / name / entry), *options, *dirs],
                          capture_output=True, text=True, timeout=timeout)


def load_plugin_module(name: str, entry: str):
    """Import a plugin's entry script as a module (its functions, no CLI)."""
    path = REPO / "plugins" / name / entry
    spec = importlib.util.spec_from_file_location(f"plugin_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def copy_test_files(dest: Path, names: list[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(TEST_FILES / name, dest / name)
    return dest


def write_ct_series(dest: Path, count: int = 20, rows: int = 128, *, thickness: float = 5.0,
                    description: str = "AXIAL", patient: str = "DOE^JANE", mrn: str = "MRN0001",
                    accession: str = "ACC0001") -> list[Path]:
    """A small phantom CT series from radcloud.ops.samples.synthetic (real CT attributes)."""
    from radcloud.ops.samples.spec import PatientSpec, SeriesSpec, StudySpec
    from radcloud.ops.samples.synthetic import write_studies

    spec = (PatientSpec(patient, mrn, "19600101", "F", (
        StudySpec("CT", "CT CHEST", "20250102", "101500", accession, "CHEST", (
            SeriesSpec(description, "ct_axial", count, rows=rows, cols=rows, pixel_spacing=400.0 / rows,
                       slice_thickness=thickness, z_start=100.0),)),)),)
    # Flatten: write_studies nests under MRN/accession, and radcloud stages
    # inputs under opaque names, so nothing patient-like is in a path.
    staging = dest.parent / f".{dest.name}-nested"
    paths = []
    dest.mkdir(parents=True, exist_ok=True)
    for path in write_studies(staging, spec):
        paths.append(Path(shutil.move(str(path), dest / path.name)))
    shutil.rmtree(staging)
    return paths


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines of dicom3tools' IOD validator on one file (integration tests only: a process)."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
