"""``localwhisk deploy`` as a command against a running server (credentials from its .wskprops)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

MANIFEST = """
packages:
  clidemo:
    inputs:
      greeting: ${GREETING}
    actions:
      hello:
        function: hello.py
        runtime: python:3.11
        web: true
      bundle:
        function: bundle
        runtime: python:3.11
    sequences:
      both:
        actions: hello, bundle
"""


def deploy(whisk, manifest, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "localwhisk.cli", "deploy", "-m", str(manifest),
                           "--state-dir", str(whisk.state_dir), *extra],
                          capture_output=True, text=True, timeout=60, env=env)


def test_deploy_manifest_then_invoke(whisk, tmp_path):
    (tmp_path / "hello.py").write_text("def main(a):\n    return {'msg': a['greeting'] + ' ' + a.get('who', '?')}\n")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "__main__.py").write_text("def main(a):\n    return {'bundled': a['msg']}\n")
    (tmp_path / "manifest.yaml").write_text(MANIFEST)
    out = deploy(whisk, tmp_path / "manifest.yaml", "--param", "who", "cli",
                 env={**os.environ, "GREETING": "hello"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Deployment completed successfully." in out.stdout
    status, result = whisk.invoke("clidemo/both", {"who": "world"})
    # package input greeting from $GREETING; the invoke payload reaches the first component only
    assert status == 200 and result == {"bundled": "hello world"}
    code, _, body = whisk.web("clidemo/hello.json")
    assert code == 200 and b"hello cli" in body  # --param became a package parameter


def test_deploy_fails_with_wskdeploy_error(whisk, tmp_path):
    (tmp_path / "manifest.yaml").write_text(MANIFEST.replace("runtime: python:3.11\n        web", "runtime: cobol:1\n        web"))
    (tmp_path / "hello.py").write_text("def main(a):\n    return {}\n")
    (tmp_path / "bundle").mkdir()
    out = deploy(whisk, tmp_path / "manifest.yaml")
    assert out.returncode == 1
    assert "Invalid or missing runtime [cobol:1] specified in manifest for the action [hello]." in out.stderr
