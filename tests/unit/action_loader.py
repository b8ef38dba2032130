"""Load an action's file the way the actionloop runtime does: by path, as its own module.

Shared by the tests that call ``main(args)`` in-process (tests/unit is on
pytest's pythonpath); a test never imports ``functions/`` as a package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_path(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_action(name: str) -> ModuleType:
    """``functions/<name>/__main__.py`` as module ``action_<name>``."""
    return load_path(ROOT / "functions" / name / "__main__.py", f"action_{name}")
