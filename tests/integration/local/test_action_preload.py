"""What localwhisk's stem cells preload for radcloud's images (radcloud.ops.deploy.PRELOAD) against
what the actions need: a stem cell imports PRELOAD whatever action takes it, so a module no action
loads with stays out of it (a fresh interpreter: the test process has numpy loaded already)."""

from __future__ import annotations

import subprocess
import sys

from radcloud.ops import deploy


def test_no_action_needs_numpy_or_pydicom_to_load_and_stem_cells_do_not_preload_them():
    code = ("import importlib.util, pathlib, sys\n"
            "for path in sorted(pathlib.Path('functions').glob('*/__main__.py')):\n"
            "    spec = importlib.util.spec_from_file_location('main__', path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in ('numpy', 'pydicom') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=deploy.ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert not {"numpy", "pydicom"} & set(deploy.PRELOAD)
