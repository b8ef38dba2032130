"""The web UI's call wrapper rides out 429/503 (tests/js/webui_api.test.mjs, run with node --test).

app.js runs in a vm context with a stub DOM and a scripted fetch: no server,
no npm packages, a fraction of a second.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "js"


def test_ui_api_wrapper_retries_a_busy_namespace():
    if shutil.which("node") is None:
        pytest.fail("node is not installed (the web UI's JS tests need Node 18+)")
    out = subprocess.run(["node", "--test", "--test-reporter=spec", "webui_api.test.mjs"], cwd=JS,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pass 6" in out.stdout and "fail 0" in out.stdout, out.stdout  # every case ran
