"""What each action image holds, read from its Dockerfile, for localwhisk to lay out locally.

There is no Docker here: localwhisk runs an image's actions with this venv's
interpreter. Were the image the whole checkout on ``PYTHONPATH``, an action
could import what its image does not hold (``radcloud.ops``, another plugin's
folder) and pass locally, then fail on a real OpenWhisk. So each image is
described as its Dockerfile builds it — the ``COPY`` lines, less what
``.dockerignore`` keeps out, and the ``ENV`` lines — and localwhisk builds that
as a folder of links (``localwhisk.runtime.sandbox.ImageView``), runs the
interpreter with ``-S`` (no ``.pth`` files: this checkout's editable install
cannot reach past the view) and puts on ``PYTHONPATH`` only the folder every
Dockerfile pip-installs (:data:`INSTALL_ROOT`) and the venv's site-packages,
which stand for the libraries ``pip install`` put in the image.

A plugin outside this checkout (a site's plugins dir, test fixtures) without
a Dockerfile of its own gets the one every plugin here has
(:func:`plugin_dockerfile`).
"""

from __future__ import annotations

import shlex
import sysconfig
from pathlib import Path
from typing import Any

from radcloud.core.errors import ConfigError

INSTALL_ROOT = "/opt/radcloud"  # every Dockerfile runs `pip install /opt/radcloud`: its radcloud/ is the package
ROOT_TOKEN = "{root}"           # localwhisk's name for the folder it builds the view in
RUNTIME_DOCKERFILE = Path("deploy") / "runtime" / "Dockerfile"


def plugin_dockerfile(name: str) -> str:
    """The Dockerfile of a plugin image, as every plugins/<name>/Dockerfile here writes it."""
    return (f"COPY radcloud {INSTALL_ROOT}/radcloud\n"
            f"COPY plugins/{name} {INSTALL_ROOT}/plugins/{name}\n"
            f"ENV RADCLOUD_PLUGINS_DIR={INSTALL_ROOT}/plugins\n")


def read_dockerfile(text: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A Dockerfile's ``COPY`` lines as (path in the build context, path in the image), and its ``ENV``.

    Only what lays out files is read: ``COPY`` without ``--from`` (a copy from
    another stage is not the build context) and ``ENV``; other instructions
    (``FROM``, ``RUN``) are what the venv stands for.
    """
    copies: list[tuple[str, str]] = []
    env: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words:
            continue
        op, args = words[0].upper(), [w for w in words[1:] if not w.startswith("--")]
        if op == "COPY" and not any(w.startswith("--from") for w in words[1:]):
            *sources, dest = args
            into = dest.endswith("/") or len(sources) > 1
            copies += [(src.rstrip("/"), f"{dest.rstrip('/')}/{Path(src).name}" if into else dest)
                       for src in sources]
        elif op == "ENV":
            pairs = [a.split("=", 1) for a in args] if "=" in args[0] else [[args[0], " ".join(args[1:])]]
            env.update({k: v for k, v in pairs})
    return copies, env


def left_out(root: Path) -> list[str]:
    """The ``.dockerignore`` entries that name a path (globs such as ``**/__pycache__`` are caches, not code)."""
    path = root / ".dockerignore"
    if not path.exists():
        return []
    lines = [ln.strip().strip("/") for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith(("#", "!")) and not any(c in ln for c in "*?[")]


def view(dockerfile: str, *, root: Path, plugins_dir: Path, site: list[str] | None = None) -> dict[str, Any]:
    """localwhisk's image entry keys ``files``, ``leave_out``, ``pythonpath``, ``env`` and ``isolated``.

    ``plugins/...`` in the build context is ``plugins_dir`` (the checkout's
    plugins/ unless a site's own); everything else is ``root``. ``site``: the
    folders standing for the image's installed libraries (default: this venv's
    site-packages).
    """
    ignored = left_out(root)
    copies, env = read_dockerfile(dockerfile)
    files: list[list[str]] = []
    leave: list[str] = []
    for src, dest in copies:
        if any(src == p or src.startswith(p + "/") for p in ignored):
            continue
        host = _source(src, root, plugins_dir)
        if not host.exists():
            raise ConfigError(f"COPY {src} {dest}: {host} does not exist; build the image's inputs first "
                              "(make install) or fix the Dockerfile")
        files.append([str(host), dest])
        leave += [dest + p[len(src):] for p in ignored if p.startswith(src + "/")]
    paths = site if site is not None else list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    return {"files": files, "leave_out": leave, "isolated": True,
            "pythonpath": [ROOT_TOKEN + INSTALL_ROOT, *paths],
            "env": {k: ROOT_TOKEN + v if v.startswith("/") else v for k, v in env.items()}}


def _source(src: str, root: Path, plugins_dir: Path) -> Path:
    """A build-context path on this machine: ``plugins/<name>`` from ``plugins_dir`` when it has
    that plugin (a manifest plugin it lacks is the checkout's, as its image is built here)."""
    if src == "plugins":
        return plugins_dir
    if src.startswith("plugins/") and (plugins_dir / src.split("/", 1)[1]).exists():
        return plugins_dir / src.split("/", 1)[1]
    return root / src


def dockerfile_for(name: str, *, root: Path, plugins_dir: Path) -> str:
    """The Dockerfile an action's image is built from: its plugin's, else the runtime's."""
    if name.startswith("plugin-"):
        plugin = name.removeprefix("plugin-")
        for own in (plugins_dir / plugin / "Dockerfile", root / "plugins" / plugin / "Dockerfile"):
            if own.exists():
                return own.read_text()
        return plugin_dockerfile(plugin)
    return (root / RUNTIME_DOCKERFILE).read_text()
