"""Fixtures for the per-plugin tests (helpers live in plugin_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_helpers import write_ct_series


@pytest.fixture
def ct_series(tmp_path) -> Path:
    write_ct_series(tmp_path / "ct")
    return tmp_path / "ct"
