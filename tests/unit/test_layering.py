"""The folders of radcloud/ and the one direction imports go between them (docs/architecture.md).

Every module lives in a sub-package; the sub-packages are layered, lowest
first, and a module imports only its own layer or lower ones. Imports are
read from the source (``ast``), including lazy ones inside functions.

The few imports that go upward today are listed in ``UPWARD`` (module ->
layer it reaches up into). The list may only shrink: a new upward import
fails, and so does an entry that no longer exists (remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "radcloud"

LAYERS = [
    "core",      # errors, settings, Redis/OpenWhisk clients, retries
    "access",    # auth, users, audit
    "pacs",      # Orthanc, query, search
    "api",       # the action wrapper, request models, validation, answers
    "store",     # object store, key layout, staged series
    "results",   # SEG/SR, derived series, viewer data
    "run",       # plugin registry, shard runner, sandbox, limits
    "work",      # lifecycle, jobs, dispatch, retrieve, results manifest, pipelines, executors, reconcile, wiring
    "arrivals",  # the arrivals watcher and the routing rules (pipelines of plugin steps)
    "pfcon",     # the pfcon-compatible service
    "ui",        # the web UI
    "ops",       # operator tooling (never imported by the runtime: test_runtime_boundary.py)
]

# Today's upward imports, to be removed, never added to.
UPWARD = {
    # staged series implement dispatch's StagedSeries and read retrieve progress
    ("radcloud.store.staged", "work"),
}


def _modules() -> dict[str, Path]:
    return {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
            for f in sorted(PACKAGE.rglob("*.py"))}


def _imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            if node.module == "radcloud":
                found |= {f"radcloud.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "radcloud"}


def test_every_module_lives_in_a_layer():
    flat = [m for m in _modules() if m.count(".") == 1 and m.split(".")[1] not in LAYERS]
    assert flat == [], f"modules outside the layered folders (move them into one of {LAYERS}): {flat}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(LAYERS), "a folder of radcloud/ without a layer, or a layer without a folder"


def test_imports_go_down_the_layers_only():
    upward: set[tuple[str, str]] = set()
    for module, path in _modules().items():
        if module == "radcloud":
            continue
        own = LAYERS.index(module.split(".")[1])
        for target in _imported(path):
            layer = target.split(".")[1] if target.count(".") else None
            if layer in LAYERS and LAYERS.index(layer) > own:
                upward.add((module, layer))
    assert upward - UPWARD == set(), f"imports going up the layers (module, layer): {sorted(upward - UPWARD)}"
    assert UPWARD - upward == set(), f"no longer imported upward, remove from UPWARD: {sorted(UPWARD - upward)}"


def test_the_walk_sees_imports():
    """The check above can fail: dispatch's imports are seen, and they reach run and store."""
    seen = _imported(PACKAGE / "work" / "dispatch.py")
    assert "radcloud.run.resources" in seen and "radcloud.store.staged" in seen
