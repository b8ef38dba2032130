"""radcloud.ops.deploy: plugin actions from descriptors, the generated manifest block, local image map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from radcloud.ops import deploy
from radcloud.core.errors import ConfigError

MANIFEST = """project:
  name: radcloud
  packages:
    radcloud:
      actions:
        query:
          function: ../functions/query
          docker: ${RADCLOUD_RUNTIME_IMAGE}
        # hand-written comment stays
        # --- plugins (generated
        # --- end plugins
      sequences: {}
"""


def _plugin(root: Path, name: str, **descriptor) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "descriptor.json").write_text(json.dumps({"name": name, "version": "2.1.0", **descriptor}))
    return d


def test_plugin_action_limits_come_from_the_descriptor_clamped_to_openwhisk(tmp_path):
    small = _plugin(tmp_path, "small", max_memory_limit="300Mi", radcloud={"timeout_s": 60})
    big = _plugin(tmp_path, "big", max_memory_limit="4Gi", radcloud={"timeout_s": 3600})
    name, spec = deploy.plugin_action(small)
    assert name == "plugin-small"
    assert spec["docker"] == "${RADCLOUD_PLUGIN_IMAGE_PREFIX}pl-small:2.1.0"
    assert spec["limits"] == {"timeout": 90000, "memorySize": 300}  # the shard's margin on top
    assert deploy.plugin_action(big)[1]["limits"] == {"timeout": 300000, "memorySize": 512}
    assert spec["function"] == "../functions/shard" and spec["web"] is False


def test_a_version_that_cannot_be_an_image_tag_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="image tag"):
        deploy.plugin_action(_plugin(tmp_path, "x", version="1.0 beta"))


def test_dirs_without_a_descriptor_are_not_plugins(tmp_path):
    _plugin(tmp_path, "real")
    (tmp_path / "wip").mkdir()
    assert [p.name for p in deploy.plugin_dirs(tmp_path)] == ["real"]


def test_write_plugin_actions_rewrites_only_the_generated_block_and_is_idempotent(tmp_path):
    plugins = tmp_path / "plugins"
    _plugin(plugins, "alpha")
    _plugin(plugins, "beta", max_memory_limit="256Mi")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    assert deploy.write_plugin_actions(manifest, plugins) == ["plugin-alpha", "plugin-beta"]
    once = manifest.read_text()
    assert "# hand-written comment stays" in once
    actions = deploy.manifest_actions(yaml.safe_load(once))
    assert set(actions) == {"query", "plugin-alpha", "plugin-beta"}
    assert actions["plugin-beta"] == deploy.plugin_action(plugins / "beta")[1]
    deploy.write_plugin_actions(manifest, plugins)
    assert manifest.read_text() == once


def test_write_plugin_actions_needs_the_markers(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("project: {}\n")
    with pytest.raises(ConfigError, match="generated plugins block"):
        deploy.write_plugin_actions(manifest, tmp_path)


def test_local_images_cover_every_image_of_the_real_manifest():
    env = {"RADCLOUD_TOKEN_SECRET": "x" * 40}
    images = deploy.local_images(env, python="/venv/bin/python")
    doc = deploy.load_manifest()
    wanted = deploy.images(doc, deploy.local_image_env({}))
    assert set(images) == set(wanted) and deploy.LOCAL_RUNTIME_IMAGE in images
    assert all(i.startswith("radcloud/") for i in images)
    spec = images[deploy.LOCAL_RUNTIME_IMAGE]
    assert spec["python"] == "/venv/bin/python" and spec["isolated"]
    assert spec["pythonpath"][0] == "{root}/opt/radcloud" and str(deploy.ROOT) not in spec["pythonpath"]
    assert spec["env"]["RADCLOUD_TOKEN_SECRET"] == "x" * 40


def test_resolved_manifest_has_absolute_existing_function_paths():
    doc = deploy.resolved_manifest()
    for name, spec in deploy.manifest_actions(doc).items():
        path = Path(spec["function"])
        assert path.is_absolute() and (path / "__main__.py").exists(), name


def test_local_images_preload_importable_modules():
    import importlib.util

    from radcloud.ops.deploy import PRELOAD

    spec = next(iter(deploy.local_images({"RADCLOUD_RUNTIME_IMAGE": "rc/runtime:1"}).values()))
    assert spec["preload"] == list(PRELOAD)
    for module in PRELOAD:
        assert importlib.util.find_spec(module) is not None, module


def test_a_plugins_dir_adds_its_plugin_actions_and_their_images(tmp_path):
    _plugin(tmp_path, "fixture", max_memory_limit="300Mi")
    _plugin(tmp_path, "dcm2png", version="9.9.9")  # same name as a manifest plugin: replaces it
    doc = deploy.resolved_manifest(plugins_dir=tmp_path)
    actions = deploy.manifest_actions(doc)
    assert set(deploy.manifest_actions(deploy.load_manifest())) | {"plugin-fixture"} == set(actions)
    assert actions["plugin-fixture"]["limits"]["memorySize"] == 300
    assert actions["plugin-dcm2png"]["docker"].endswith("pl-dcm2png:9.9.9")
    assert Path(actions["plugin-fixture"]["function"]) == deploy.ROOT / "functions" / "shard"
    images = deploy.local_images({}, plugins_dir=tmp_path)
    assert {"radcloud/pl-fixture:2.1.0", "radcloud/pl-dcm2png:9.9.9"} <= set(images)
    assert all(spec["env"]["RADCLOUD_PLUGINS_DIR"] == "{root}/opt/radcloud/plugins" for spec in images.values())
    # the fixture plugin has no Dockerfile: its image is laid out like every plugin's here
    assert [str(tmp_path / "fixture"), "/opt/radcloud/plugins/fixture"] in images["radcloud/pl-fixture:2.1.0"]["files"]
    assert [str(tmp_path), "/opt/radcloud/plugins"] in images[deploy.LOCAL_RUNTIME_IMAGE]["files"]
    assert all(spec["preload"] == list(deploy.PRELOAD) for spec in images.values())


def test_only_the_runtime_image_is_prewarmed_unless_plugins_are_asked_for():
    """Plugin images get their stem cells after their first cold start (OpenWhisk prewarms no
    blackbox image): a stack's localwhisk started one per plugin image, ~1 CPU s each, mostly unused."""
    env = {"RADCLOUD_RUNTIME_IMAGE": "rc/runtime:1"}
    images = deploy.local_images(env)
    assert [name for name, spec in images.items() if spec["prewarm"]] == ["rc/runtime:1"]
    assert len(images) > 5
    assert all(spec["prewarm"] for spec in deploy.local_images(env, prewarm_plugins=True).values())


def test_with_plugin_actions_leaves_the_given_manifest_alone(tmp_path):
    _plugin(tmp_path, "fixture")
    doc = deploy.load_manifest()
    before = json.dumps(doc, sort_keys=True)
    assert "plugin-fixture" in deploy.manifest_actions(deploy.with_plugin_actions(doc, tmp_path))
    assert json.dumps(doc, sort_keys=True) == before


def test_without_a_plugins_dir_actions_see_the_checkouts_plugins():
    images = deploy.local_images({"RADCLOUD_PLUGINS_DIR": "/elsewhere"})
    assert {spec["env"]["RADCLOUD_PLUGINS_DIR"] for spec in images.values()} == {"{root}/opt/radcloud/plugins"}
    assert [str(deploy.ROOT / "plugins"), "/opt/radcloud/plugins"] in images[deploy.LOCAL_RUNTIME_IMAGE]["files"]


def test_with_a_cluster_reconcile_runs_every_minute_unless_the_deployment_says():
    assert deploy.reconcile_cron({}) == "*/5 * * * *"
    assert deploy.reconcile_cron({"RADCLOUD_SLURM_URL": "https://slurm.example:6820"}) == "* * * * *"
    assert deploy.reconcile_cron({"RADCLOUD_SLURM_URL": "https://x", "RADCLOUD_RECONCILE_CRON": "*/2 * * * *"}) == \
        "*/2 * * * *"
