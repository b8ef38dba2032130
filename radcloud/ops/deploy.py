"""Deploying radcloud's OpenWhisk entities: plugin actions, the local image map, the deployer.

``deploy/manifest.yaml`` is the single source of truth. This module:

* derives the ``plugin-<name>`` action entries from ``plugins/*/descriptor.json``
  (:func:`plugin_actions`) — ``radcloud deploy --write-plugins`` writes them into
  the manifest, and a unit test keeps manifest and plugin dirs equal;
* maps every Docker image the manifest names to what its Dockerfile puts in
  it (:func:`local_images`, :mod:`radcloud.ops.imageviews`), so localwhisk runs
  the actions with the venv's Python and nothing of the checkout the image
  does not hold (there is no Docker here);
* deploys the manifest onto any OpenWhisk API host through the wskdeploy-
  compatible deployer, run as ``python -m localwhisk.cli deploy`` in a
  subprocess — radcloud never imports localwhisk (:func:`deploy`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from radcloud.core.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "manifest.yaml"
PACKAGE = "radcloud"
RUNTIME_IMAGE_VAR = "RADCLOUD_RUNTIME_IMAGE"
PLUGIN_PREFIX_VAR = "RADCLOUD_PLUGIN_IMAGE_PREFIX"
RECONCILE_CRON_VAR = "RADCLOUD_RECONCILE_CRON"  # the radcloud-reconcile alarm trigger's schedule
DEFAULT_RECONCILE_CRON = "*/5 * * * *"
# With an HPC cluster: what only Slurm knows (why a job waits, a job that ended without
# reporting) reaches radcloud through reconcile, so it runs every minute (docs/deploy.md).
SLURM_RECONCILE_CRON = "* * * * *"


def reconcile_cron(env: Mapping[str, str]) -> str:
    """The radcloud-reconcile alarm's schedule: the deployment's, else by whether it has a cluster."""
    return env.get(RECONCILE_CRON_VAR) or (SLURM_RECONCILE_CRON if env.get("RADCLOUD_SLURM_URL")
                                           else DEFAULT_RECONCILE_CRON)
LOCAL_RUNTIME_IMAGE = "radcloud/runtime:local"
LOCAL_PLUGIN_PREFIX = "radcloud/"
# wskdeploy resolves `function:` against the manifest's folder.
SHARD_FUNCTION = "../functions/shard"  # the shard records its outcome after the plugin's own timeout


def plugin_image(name: str, version: str) -> str:
    """The manifest's ``docker:`` of a plugin: ``${prefix}pl-<name>:<version>`` (pinned tag)."""
    return "${" + PLUGIN_PREFIX_VAR + "}" + f"pl-{name}:{version}"


def plugin_dirs(root: Path = ROOT / "plugins") -> list[Path]:
    """Plugin directories that are deployable (a descriptor.json), sorted by name."""
    return sorted(p for p in root.iterdir() if (p / "descriptor.json").is_file()) if root.is_dir() else []


def plugin_action(directory: Path) -> tuple[str, dict[str, Any]]:
    """``(action name, manifest entry)`` of one plugin directory."""
    try:
        desc = json.loads((directory / "descriptor.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{directory}/descriptor.json cannot be read ({exc})") from None
    name, version = directory.name, str(desc.get("version") or "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", version):
        raise ConfigError(f"{directory}/descriptor.json: version {version!r} cannot be an image tag")
    from radcloud.run.resources import action_limits  # the one policy: docs/plugins.md

    return f"plugin-{name}", {
        "function": SHARD_FUNCTION,
        "runtime": "python:3.11",
        "docker": plugin_image(name, version),
        "web": False,
        "limits": action_limits(desc).manifest(),
        # The shard runner (not the plugin: its sandbox gets no environment, no network) invokes
        # the next stage of a shard and a pipeline's next step (radcloud.work.pipelines).
        "annotations": {"provide-api-key": True},
    }


def plugin_actions(root: Path = ROOT / "plugins") -> dict[str, dict[str, Any]]:
    return dict(plugin_action(d) for d in plugin_dirs(root))


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def manifest_actions(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["project"]["packages"][PACKAGE]["actions"]


def write_plugin_actions(path: Path = MANIFEST, root: Path = ROOT / "plugins") -> list[str]:
    """Rewrite the manifest's generated plugin block; returns the plugin action names.

    The block sits between two marker comments so the rest of the file
    (comments included) stays exactly as written by hand.
    """
    text = path.read_text(encoding="utf-8")
    begin, end = "        # --- plugins (generated", "        # --- end plugins"
    if begin not in text or end not in text:
        raise ConfigError(f"{path} has no generated plugins block ('{begin.strip()}' ... '{end.strip()}')")
    actions = plugin_actions(root)
    lines = [begin + " by `radcloud deploy --write-plugins` from plugins/*/descriptor.json)"]
    for name, spec in actions.items():
        lim = spec["limits"]
        lines += [f"        {name}:", f"          function: {spec['function']}",
                  f"          runtime: {spec['runtime']}", f"          docker: {spec['docker']}",
                  "          web: false",
                  f"          limits: {{timeout: {lim['timeout']}, memorySize: {lim['memorySize']}}}",
                  "          annotations: {provide-api-key: true}  # the next stage, a pipeline's next step"]
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + "\n".join(lines) + "\n" + end + tail, encoding="utf-8")
    return list(actions)


def images(doc: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Every distinct ``docker:`` image the manifest names, with ``${VAR}`` filled in."""
    def fill(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: environ.get(m.group(1) or m.group(2), ""), value)

    found = [fill(str(a["docker"])) for a in manifest_actions(doc).values() if a.get("docker")]
    return list(dict.fromkeys(found))


def local_image_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The image names a local deploy uses (``RADCLOUD_*`` defaults unless set)."""
    return {RUNTIME_IMAGE_VAR: environ.get(RUNTIME_IMAGE_VAR) or LOCAL_RUNTIME_IMAGE,
            PLUGIN_PREFIX_VAR: environ.get(PLUGIN_PREFIX_VAR) or LOCAL_PLUGIN_PREFIX}


# Imported once by localwhisk's prewarmed launchers of these images, so a
# cold start costs ~20-30 ms instead of 0.5-1.4 s of imports. None of them
# reads configuration at import time (preloading runs before init env).
# Not numpy nor pydicom: no action imports them to load, few calls ever do (a job's
# derived series pushed to the PACS, the viewer reading a SEG or SR), and every
# stem cell paid them, used or not: 1.10 -> 0.83 CPU s a stem cell (median of 6).
PRELOAD = ("requests", "redis", "minio",
           "radcloud.api.action", "radcloud.api.models", "radcloud.pacs.orthanc", "radcloud.store.storage")


def local_images(env: Mapping[str, str], *, python: str = sys.executable, root: Path = ROOT,
                 doc: Mapping[str, Any] | None = None, plugins_dir: Path | None = None,
                 prewarm_plugins: bool = False) -> dict[str, dict[str, Any]]:
    """localwhisk's ``--images-file`` map: every manifest image, laid out as its Dockerfile builds it.

    Each image holds what its Dockerfile copies (:mod:`radcloud.ops.imageviews`:
    radcloud without ``ops/``, the runtime's plugins and web UI, or a plugin
    image's one plugin), run by this venv's interpreter with nothing else of
    the checkout importable. The plugins are ``plugins_dir``'s, else the
    checkout's plugins/. ``env`` is added to every action's environment
    (Settings fall back to it when a parameter is absent); what a Dockerfile's
    ``ENV`` sets is the image's. With ``plugins_dir``, the images of its
    plugins' actions (:func:`with_plugin_actions`) are mapped too.

    Only the runtime image keeps stem cells from localwhisk's start (``prewarm``);
    a plugin image gets its stem pool after its first cold start, unless
    ``prewarm_plugins`` (benches timing first runs). As in OpenWhisk, which
    prewarms runtime kinds, never a blackbox image: a stem cell costs ~1 s of
    CPU and ~60 MB held, and a stack runs a few of its nine plugins, if any.
    """
    from radcloud.ops import imageviews

    if doc is None:
        doc = load_manifest()
        if plugins_dir is not None:
            doc = with_plugin_actions(doc, plugins_dir)
    plugins = plugins_dir or root / "plugins"
    environ = {**os.environ, **dict(env), **local_image_env(env)}
    runtime = environ[RUNTIME_IMAGE_VAR]
    out: dict[str, dict[str, Any]] = {}
    for name, action in manifest_actions(doc).items():
        if not action.get("docker"):
            continue
        image = images({"project": {"packages": {PACKAGE: {"actions": {name: action}}}}}, environ)[0]
        if image in out:
            continue
        layout = imageviews.view(imageviews.dockerfile_for(name, root=root, plugins_dir=plugins),
                                 root=root, plugins_dir=plugins)
        out[image] = {"python": python, **layout, "env": {**dict(env), **layout["env"]},
                      "preload": list(PRELOAD), "prewarm": prewarm_plugins or image == runtime}
    return out


def with_plugin_actions(doc: Mapping[str, Any], plugins_dir: Path) -> dict[str, Any]:
    """``doc`` plus one ``plugin-<name>`` action per plugin in ``plugins_dir``.

    For a plugins dir other than the checkout's (a site's own plugins, test
    fixtures): the entries are derived from the descriptors exactly as the
    manifest's generated block is, and replace same-named ones.
    """
    doc = json.loads(json.dumps(doc))  # a deep copy: the caller's manifest stays as loaded
    manifest_actions(doc).update(plugin_actions(plugins_dir))
    return doc


def resolved_manifest(path: Path = MANIFEST, root: Path = ROOT, *,
                      plugins_dir: Path | None = None) -> dict[str, Any]:
    """The manifest with absolute ``function:`` paths, so a copy deploys from anywhere.

    wskdeploy resolves ``function:`` against the manifest's folder; the paths
    in deploy/manifest.yaml are accepted relative to it or to the repository.
    ``plugins_dir`` adds its plugins' actions (:func:`with_plugin_actions`).
    """
    doc = load_manifest(path)
    if plugins_dir is not None:
        doc = with_plugin_actions(doc, plugins_dir)
    for pkg in doc["project"]["packages"].values():
        for name, spec in (pkg.get("actions") or {}).items():
            function = spec.get("function")
            if not function:
                continue
            for base in (path.parent, root):
                if (base / function).exists():
                    spec["function"] = str((base / function).resolve())
                    break
            else:
                raise ConfigError(f"action {name}: function {function!r} not found next to {path} or in {root}")
    return doc


def deploy(apihost: str, auth: str, env: Mapping[str, str], *, manifest: Path = MANIFEST,
           python: str = sys.executable, timeout_s: float = 300.0,
           plugins_dir: Path | None = None) -> str:
    """Deploy the manifest onto the OpenWhisk at ``apihost``; returns the deployer's output.

    ``env`` fills the manifest's ``$RADCLOUD_*`` package inputs. Secrets go
    through the child's environment, never its command line. ``plugins_dir``
    also deploys its plugins' actions (:func:`with_plugin_actions`).

    Raises:
        Unavailable: the deployer is missing, or the deployment failed (its last line).
    """
    doc = resolved_manifest(manifest, plugins_dir=plugins_dir)
    with tempfile.TemporaryDirectory(prefix="radcloud-deploy-") as tmp:
        copy = Path(tmp) / "manifest.yaml"
        copy.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        # The key travels in a wskprops file (0600), not in argv where `ps` shows it.
        props = Path(tmp) / "wskprops"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"APIHOST={apihost}\nAUTH={auth}\n")
        argv = [python, "-m", "localwhisk.cli", "deploy", "-m", str(copy), "--wskprops", str(props)]
        child_env = {**os.environ, **dict(env)}
        child_env[RECONCILE_CRON_VAR] = reconcile_cron(child_env)  # wskdeploy has no default for an unset one
        try:
            done = subprocess.run(argv, env=child_env, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise Unavailable(f"{python} not found; deploy with wskdeploy -m {manifest} instead") from None
        except subprocess.TimeoutExpired:
            raise Unavailable(f"deploying to {apihost} took over {timeout_s:.0f} s; is the API host up?") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        if "No module named localwhisk" in output:
            raise Unavailable("the deployer (localwhisk) is not installed here; "
                              f"use wskdeploy -m {manifest} instead")
        errors = [l for l in output.splitlines() if l.startswith("Error")] or output.splitlines()[-1:]
        raise Unavailable(f"deploying to {apihost} failed: {errors[0] if errors else 'no output'}")
    log.info("deployed %s to %s", manifest, apihost)
    return output
