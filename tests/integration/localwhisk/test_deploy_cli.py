"""``localwhisk deploy`` as a command against a running server (credentials from its .wskprops)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


REPO_MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "manifest.yaml"


def test_deploy_the_repos_own_manifest(whisk, tmp_path):
    """deploy/manifest.yaml as it is, from another working directory: its ``../functions/...``
    paths resolve against the manifest's folder (as wskdeploy does), $RADCLOUD_* fill the inputs."""
    text = REPO_MANIFEST.read_text()
    env = {**os.environ, **{var: f"dummy-{var.lower()}" for var in re.findall(r"\$\{(RADCLOUD_\w+)\}", text)},
           "RADCLOUD_RUNTIME_IMAGE": "radcloud/runtime:test", "RADCLOUD_PLUGIN_IMAGE_PREFIX": "radcloud/",
           "RADCLOUD_RECONCILE_CRON": "0 3 * * *"}  # the alarm feed refuses a schedule it cannot read
    out = subprocess.run([sys.executable, "-m", "localwhisk.cli", "deploy", "-m", str(REPO_MANIFEST),
                          "--state-dir", str(whisk.state_dir)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Deployment completed successfully." in out.stdout
    assert "Feed [/whisk.system/alarms/alarm] for trigger [radcloud-reconcile] has been successfully deployed." \
        in out.stdout

    package = yaml.safe_load(text)["project"]["packages"]["radcloud"]
    status, listed = whisk.client.request("GET", "/api/v1/namespaces/_/actions?limit=200")
    assert status == 200
    deployed = {a["name"]: a for a in listed if a["namespace"] == "guest/radcloud"}
    assert set(deployed) == set(package["actions"]) | set(package["sequences"])
    assert {"query", "retrieve", "dispatch", "pull-and-run"} <= set(deployed)

    status, query = whisk.client.request("GET", "/api/v1/namespaces/_/actions/radcloud/query")
    assert status == 200 and query["exec"]["kind"] == "blackbox"
    assert query["exec"]["image"] == "radcloud/runtime:test" and query["exec"]["binary"] is True  # a zipped dir
    status, seq = whisk.client.request("GET", "/api/v1/namespaces/_/actions/radcloud/pull-and-run")
    components = [f"/guest/radcloud/{a.strip()}" for a in package["sequences"]["pull-and-run"]["actions"].split(",")]
    assert status == 200 and seq["exec"] == {"kind": "sequence", "components": components}
    status, pkg = whisk.client.request("GET", "/api/v1/namespaces/_/packages/radcloud")
    params = {p["key"]: p["value"] for p in pkg["parameters"]}
    assert params["orthanc_url"] == "dummy-radcloud_orthanc_url"
    assert params["redis_url"] == "dummy-radcloud_redis_url"
