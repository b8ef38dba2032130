"""deploy/manifest.yaml ↔ functions/ ↔ plugins/ ↔ Dockerfiles, and the actionloop contract.

Images cannot be built on these machines, so what can drift is checked
here: every action's code exists and defines ``main``; every plugin
directory has its ``plugin-<name>`` action (the generated block is up to
date) with an image named like its Dockerfile's tag and descriptor's
``dock_image``; every Dockerfile builds on the pinned OpenWhisk Python
runtime; limits are inside OpenWhisk's; and each action file, run by the
actionloop launcher (the contract of OpenWhisk's Python runtime) in a
subprocess, answers a JSON object for invalid input without any I/O.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from radcloud import deploy, resources

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "openwhisk/action-python-v3.11"
RUNTIME_DOCKER = "${RADCLOUD_RUNTIME_IMAGE}"
ACTIONS = deploy.manifest_actions(deploy.load_manifest())
LAUNCHER = ROOT / "localwhisk" / "runtime" / "launcher.py"


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
    assert re.search(r'f"\{[\w.]*package\}/plugin-\{', (ROOT / "radcloud" / "dispatch.py").read_text()), \
        "dispatch no longer invokes <package>/plugin-<name>"


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


# -- the actionloop contract ---------------------------------------------------------------
# Inputs each action must refuse before touching a service (a 4xx answer, or the ui's 405).
INVALID_INPUT = {
    "query": {"level": "bogus"}, "retrieve": {}, "retrieve-series": {}, "login": {},
    "audit": {"limit": "x"}, "ui": {}, "dispatch": {"plugin": "no-such-plugin", "inputs": {"series": ["1.2"]}},
    "status": {"op": "bogus"}, "results": {}, "plugin-*": {},
}
# Unroutable settings: an action that tried a service anyway would fail, not hang.
ENV = {"RADCLOUD_REDIS_URL": "redis://127.0.0.1:1/0", "RADCLOUD_ORTHANC_URL": "http://127.0.0.1:1",
       "RADCLOUD_S3_ENDPOINT": "127.0.0.1:1", "RADCLOUD_S3_ACCESS_KEY": "k", "RADCLOUD_S3_SECRET_KEY": "s",
       "RADCLOUD_OW_API_HOST": "http://127.0.0.1:1", "RADCLOUD_OW_API_KEY": "u:k"}


def run_under_launcher(function_dir: Path, value: dict, workdir: Path) -> tuple[dict, object, str]:
    """Init + one run through the actionloop launcher; returns (ack, result, stderr tail)."""
    for p in function_dir.iterdir():  # as the zip is unpacked: __main__.py becomes main__.py
        if p.is_file():
            shutil.copy(p, workdir / ("main__.py" if p.name == "__main__.py" else p.name))
    r, w = os.pipe()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "__OW_WAIT_FOR_ACK": "1", **ENV}
    proc = subprocess.Popen([sys.executable, "-u", str(LAUNCHER), str(w)], cwd=workdir, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(w,), env=env)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as results:
            proc.stdin.write(json.dumps({"init": {"main": "main", "env": {}}}).encode() + b"\n")
            proc.stdin.flush()
            ack = json.loads(results.readline() or b"null")
            proc.stdin.write(json.dumps({"value": value, "activation_id": "a0", "deadline": "0"}).encode() + b"\n")
            proc.stdin.flush()
            line = results.readline()
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return ack, json.loads(line) if line else None, proc.stderr.read().decode(errors="replace")[-500:]


@pytest.fixture(scope="module")
def contract_runs(tmp_path_factory):
    jobs = {}
    for name, spec in ACTIONS.items():
        key = "plugin-*" if name.startswith("plugin-") else name
        if key in jobs.values() and key == "plugin-*":
            continue  # every plugin action has the same body
        jobs[name] = key
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_under_launcher, _function_dir(ACTIONS[name]), INVALID_INPUT.get(key, {}),
                                     tmp_path_factory.mktemp(name))
                   for name, key in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.timeout(180)
def test_each_action_file_runs_under_the_actionloop_contract(contract_runs):
    for name, (ack, result, stderr) in contract_runs.items():
        assert ack == {"ok": True}, f"{name}: init failed: {stderr}"
        assert isinstance(result, dict), f"{name}: answered {result!r}: {stderr}"
        status = result.get("statusCode") or (result.get("error") or {}).get("statusCode")
        # An action added without a case here still has to answer a dict; listed ones a refusal.
        if name in INVALID_INPUT or name.startswith("plugin-"):
            assert status in (400, 404, 405), f"{name}: {result}"
