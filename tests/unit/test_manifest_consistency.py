"""deploy/manifest.yaml ↔ functions/ ↔ plugins/ ↔ Dockerfiles, and the actionloop contract.

Images cannot be built on these machines, so what can drift is checked
here: every action's code exists and defines ``main``; every plugin
directory has its ``plugin-<name>`` action (the generated block is up to
date) with an image named like its Dockerfile's tag and descriptor's
``dock_image``; every Dockerfile builds on the pinned OpenWhisk Python
runtime; limits are inside OpenWhisk's. That each action file runs under the
actionloop launcher (a subprocess) is tests/integration/local/test_action_contract.py.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from radcloud.ops import deploy
from radcloud.run import resources

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "openwhisk/action-python-v3.11"
RUNTIME_DOCKER = "${RADCLOUD_RUNTIME_IMAGE}"
ACTIONS = deploy.manifest_actions(deploy.load_manifest())


def _function_dir(spec: dict) -> Path:
    return (deploy.MANIFEST.parent / spec["function"]).resolve()  # as wskdeploy resolves it


def _from_lines(dockerfile: Path) -> list[str]:
    return [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_every_action_has_a_main_in_its_function_dir(name):
    main = _function_dir(ACTIONS[name]) / "__main__.py"
    assert main.is_file(), f"{name}: {main} missing"
    tree = ast.parse(main.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), f"{name}: no main()"


def test_every_function_dir_is_deployed():
    used = {_function_dir(spec).name for spec in ACTIONS.values()}
    dirs = {p.name for p in (ROOT / "functions").iterdir() if (p / "__main__.py").exists()}
    assert dirs - used == set(), "function dirs no action deploys"


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_limits_inside_openwhisk_defaults(name):
    limits = ACTIONS[name].get("limits") or {}
    assert resources.TIMEOUT_MS[0] <= limits.get("timeout", 60000) <= resources.TIMEOUT_MS[1]
    assert resources.MIN_ACTION_MEMORY_MB <= limits.get("memorySize", 256) <= resources.MAX_ACTION_MEMORY_MB
    # containers per action: within the default namespace cap (30), and below a small
    # invoker's pool (localwhisk's 8) so the capped actions always leave shards room
    assert 1 <= limits.get("instances", 1) <= 4


def test_watchers_and_dispatches_have_their_own_few_containers():
    """docs/jobs.md, "Watchers": status calls queue for their own warm containers instead
    of evicting shards'; a burst of dispatches cannot hold every container."""
    assert ACTIONS["status"]["limits"]["instances"] == 1  # long-polls are off (RADCLOUD_WATCH_SLOTS=0)
    assert ACTIONS["dispatch"]["limits"]["instances"] == 2


def test_python_actions_run_in_the_runtime_image_and_plugins_in_their_own():
    for name, spec in ACTIONS.items():
        if name.startswith("plugin-"):
            assert _function_dir(spec).name == "shard" and spec.get("web") is False, name
        else:
            assert spec["docker"] == RUNTIME_DOCKER, name


def test_plugin_actions_match_the_plugin_dirs():
    # The manifest's generated block must be what `radcloud deploy --write-plugins` writes now.
    in_manifest = {n: s for n, s in ACTIONS.items() if n.startswith("plugin-")}
    assert in_manifest == deploy.plugin_actions(ROOT / "plugins"), \
        "plugin actions out of date: run `radcloud deploy --write-plugins`"
    # A shard is the unit plugin-<name>; the action executor invokes it as <package>/<unit.action>.
    assert re.search(r'action=f"plugin-\{', (ROOT / "radcloud" / "work" / "dispatch.py").read_text()), \
        "dispatch no longer submits plugin-<name> units"
    assert re.search(r'f"\{self\.package\}/\{unit\.action\}"',
                     (ROOT / "radcloud" / "work" / "executors" / "action.py").read_text()), \
        "the action executor no longer invokes <package>/<unit action>"


@pytest.mark.parametrize("plugin", [p.name for p in deploy.plugin_dirs(ROOT / "plugins")])
def test_plugin_image_matches_dockerfile_tag_and_descriptor(plugin):
    directory = ROOT / "plugins" / plugin
    descriptor = json.loads((directory / "descriptor.json").read_text())
    image = ACTIONS[f"plugin-{plugin}"]["docker"].replace("${" + deploy.PLUGIN_PREFIX_VAR + "}",
                                                          deploy.LOCAL_PLUGIN_PREFIX)
    assert image == descriptor["dock_image"] == f"radcloud/pl-{plugin}:{descriptor['version']}"
    dockerfile = directory / "Dockerfile"
    assert dockerfile.is_file(), f"{plugin}: no Dockerfile"
    assert f"-t {image} " in dockerfile.read_text(), f"{plugin}: Dockerfile's build tag is not {image}"


@pytest.mark.parametrize("dockerfile", sorted(str(p.relative_to(ROOT)) for p in
                                              [ROOT / "deploy" / "runtime" / "Dockerfile",
                                               *(ROOT / "plugins").glob("*/Dockerfile")]))
def test_dockerfiles_build_on_the_pinned_openwhisk_python_runtime(dockerfile):
    froms = _from_lines(ROOT / dockerfile)
    assert froms, f"{dockerfile}: no FROM"
    image, _, tag = froms[-1].partition(":")
    assert image == BASE_IMAGE, f"{dockerfile}: final stage must be {BASE_IMAGE} (its actionloop proxy is the entry)"
    assert tag and tag != "latest", f"{dockerfile}: pin the base image tag (OpenWhisk re-pulls :latest)"
    assert "ENTRYPOINT" not in (ROOT / dockerfile).read_text(), f"{dockerfile}: keep the base image's entry point"


def test_all_dockerfiles_share_one_base_tag():
    tags = {_from_lines(p)[-1] for p in [ROOT / "deploy" / "runtime" / "Dockerfile",
                                        *(ROOT / "plugins").glob("*/Dockerfile")]}
    assert len(tags) == 1, tags
