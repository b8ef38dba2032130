"""The official OpenWhisk JavaScript client (npm ``openwhisk``) drives localwhisk (tests/js).

``node_modules`` comes from ``scripts/install-node-deps.sh`` (``make node-deps``:
``cd tests/js && npm ci``), which CI runs before the network is cut off.
Outside CI a missing install is done here with ``npm install``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

JS = Path(__file__).resolve().parents[2] / "js"


def ensure_client() -> None:
    if (JS / "node_modules" / "openwhisk").is_dir():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("tests/js/node_modules is missing: run `make node-deps` "
                    "(scripts/install-node-deps.sh: cd tests/js && npm ci) before the tests")
    subprocess.run(["npm", "ci" if (JS / "package-lock.json").exists() else "install", "--no-audit", "--no-fund",
                    "--loglevel=error"], cwd=JS, check=True, timeout=300)


def test_openwhisk_js_client(whisk):
    if shutil.which("node") is None:
        pytest.fail("node is not installed (the JS client test needs Node 18+)")
    ensure_client()
    env = {**os.environ, "LOCALWHISK_APIHOST": whisk.api_host, "LOCALWHISK_AUTH": whisk.auth}
    out = subprocess.run(["node", "--test", "--test-reporter=spec", "openwhisk_client.test.mjs"], cwd=JS, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pass 6" in out.stdout and "fail 0" in out.stdout, out.stdout  # all six node:test cases ran
