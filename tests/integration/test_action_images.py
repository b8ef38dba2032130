"""Actions under localwhisk see what their image holds, nothing more of the checkout.

The images are mapped as ``radcloud deploy --local`` maps them
(:func:`radcloud.ops.deploy.local_images`): each laid out from its
Dockerfile. An action importing the operator tooling (``radcloud.ops``) or the
local runner fails here at run time as it would on a real OpenWhisk; the
runtime library imports, and a plugin image holds its own plugin only.
Run under bubblewrap where it works (``--sandbox auto``), as a stack does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from localwhisk.testing import Server
from radcloud.ops import deploy

pytestmark = pytest.mark.integration

RUNTIME = deploy.LOCAL_RUNTIME_IMAGE
PLUGIN = "radcloud/pl-dcm2png:1.0.0"

PROBE = """import importlib, os
def main(args):
    seen = {}
    for name in args["modules"]:
        try:
            importlib.import_module(name)
            seen[name] = "imported"
        except ImportError as exc:
            seen[name] = f"{type(exc).__name__}: {exc}"
    return {"modules": seen, "plugins": sorted(os.listdir(os.environ["RADCLOUD_PLUGINS_DIR"]))}
"""

# What a plugin's own process sees: the shard runner starts it with registry.python_argv
# and the sandbox's environment (radcloud.run.sandbox.run), as it runs a real plugin.
PLUGIN_PROCESS = """import tempfile
from radcloud.run import registry, sandbox
def main(args):
    argv = [*registry.python_argv(), "-c", "import radcloud.run.ctslices, radcloud.ops"]
    with tempfile.TemporaryDirectory() as scratch:
        result = sandbox.run(argv, cwd=scratch, env={}, limits=sandbox.Limits(timeout_s=60), read_only=[],
                             writable=[scratch])
    return {"exit_code": result.exit_code, "tail": result.tail[-400:]}
"""

USES_OPS = """from radcloud.ops import deploy
def main(args):
    return {"manifest": str(deploy.MANIFEST)}
"""


@pytest.fixture(scope="module")
def whisk(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("action-images")
    images = {name: spec for name, spec in deploy.local_images({}).items() if name in (RUNTIME, PLUGIN)}
    assert set(images) == {RUNTIME, PLUGIN}
    path = tmp / "images.json"
    path.write_text(json.dumps(images))
    with Server(tmp / "state", extra_args=["--images-file", str(path), "--prewarm", "0"]) as server:
        for name, image, code in (("probe", RUNTIME, PROBE), ("plugin-probe", PLUGIN, PROBE),
                                  ("uses-ops", RUNTIME, USES_OPS), ("plugin-process", PLUGIN, PLUGIN_PROCESS)):
            body = {"exec": {"kind": "blackbox", "image": image, "code": code}}
            status, resp = server.client.request("PUT", f"/api/v1/namespaces/_/actions/{name}", body)
            assert status == 200, resp
        yield server


def test_an_action_importing_the_operator_tooling_fails_as_on_openwhisk(whisk):
    status, record = whisk.invoke("uses-ops", result=False)
    assert status == 502 and record["response"]["status"] == "action developer error", record
    logs = "\n".join(record.get("logs") or []) + json.dumps(record["response"]["result"])
    assert "No module named 'radcloud.ops'" in logs, record


def test_the_runtime_image_imports_the_library_but_not_the_tooling_nor_the_runner(whisk):
    status, result = whisk.invoke("probe", {"modules": ["radcloud.api.action", "radcloud.work.dispatch",
                                                        "radcloud.ops", "radcloud.ops.cli.main", "localwhisk"]})
    assert status == 200, result
    assert result["modules"] == {
        "radcloud.api.action": "imported", "radcloud.work.dispatch": "imported",
        "radcloud.ops": "ModuleNotFoundError: No module named 'radcloud.ops'",
        "radcloud.ops.cli.main": "ModuleNotFoundError: No module named 'radcloud.ops'",
        "localwhisk": "ModuleNotFoundError: No module named 'localwhisk'"}
    assert "dcm2png" in result["plugins"] and "lung-seg" in result["plugins"]  # the runtime holds every plugin


def test_a_plugin_image_holds_its_own_plugin_only(whisk):
    status, result = whisk.invoke("plugin-probe", {"modules": ["radcloud.run.shard", "radcloud.ops"]})
    assert status == 200, result
    assert result["plugins"] == ["dcm2png"]
    assert result["modules"]["radcloud.run.shard"] == "imported"
    assert result["modules"]["radcloud.ops"].startswith("ModuleNotFoundError")


def test_a_plugins_own_process_imports_from_the_image_too(whisk):
    status, result = whisk.invoke("plugin-process")
    assert status == 200, result
    assert result["exit_code"] == 1 and "No module named 'radcloud.ops'" in result["tail"], result


NAMES = """from radcloud.run.registry import Registry
def main(args):
    registry = Registry()
    return {"names": registry.names(), "broken": registry.broken}
"""


def test_a_plugins_folder_of_links_under_tmp_is_whole_inside_the_sandbox(tmp_path):
    # The test worlds' plugins folder links to the checkout's plugins (tests/e2e/plugins/dcm2png ->
    # ../../../plugins/dcm2png), and CI clones under /tmp, which the sandbox replaces by the
    # container's own: the link targets must be bound back too, or every linked plugin is missing
    # ("no plugin named 'dcm2png' (available: flaky, noop)", seen in a fresh-clone CI run).
    assert str(tmp_path).startswith("/tmp/")
    shipped = tmp_path / "checkout" / "plugins"
    shutil.copytree(deploy.ROOT / "plugins" / "dcm2png", shipped / "dcm2png")
    linked = tmp_path / "checkout" / "tests" / "plugins"
    linked.mkdir(parents=True)
    (linked / "dcm2png").symlink_to(Path("../../plugins/dcm2png"), target_is_directory=True)
    images = {RUNTIME: deploy.local_images({}, plugins_dir=linked)[RUNTIME]}
    (tmp_path / "images.json").write_text(json.dumps(images))
    with Server(tmp_path / "state", extra_args=["--images-file", str(tmp_path / "images.json"),
                                                 "--prewarm", "0"]) as server:
        body = {"exec": {"kind": "blackbox", "image": RUNTIME, "code": NAMES}}
        status, resp = server.client.request("PUT", "/api/v1/namespaces/_/actions/names", body)
        assert status == 200, resp
        status, result = server.invoke("names")
    assert status == 200, result
    assert result == {"names": ["dcm2png"], "broken": {}}
