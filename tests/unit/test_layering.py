"""The folders of radcloud/ and the one direction imports go between them (docs/architecture.md).

Every module lives in a sub-package; the sub-packages are layered, lowest
first, and a module imports only its own layer or lower ones. Imports are
read from the source (``ast``), including lazy ones inside functions.

No import goes upward: code that needs a higher layer belongs in it, or
takes what it needs as a value or a callable passed in.
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


def _upward(module: str, path: Path) -> set[tuple[str, str]]:
    """(module, layer) for each layer above the module's own that it imports."""
    own = LAYERS.index(module.split(".")[1])
    layers = {t.split(".")[1] for t in _imported(path) if t.count(".")}
    return {(module, layer) for layer in layers if layer in LAYERS and LAYERS.index(layer) > own}


def test_imports_go_down_the_layers_only():
    upward = set().union(*(_upward(m, p) for m, p in _modules().items() if m != "radcloud"))
    assert upward == set(), (f"imports going up the layers (module, layer): {sorted(upward)}; move the code to "
                             "the layer it needs, or pass the higher layer's piece in as a value or callable")


def test_the_walk_sees_imports(tmp_path):
    """The check above can fail: dispatch's imports are seen, and a lazy upward import is caught."""
    seen = _imported(PACKAGE / "work" / "dispatch.py")
    assert "radcloud.run.resources" in seen and "radcloud.store.staged" in seen
    lazy = tmp_path / "staged.py"
    lazy.write_text("def f():\n    from radcloud.work.retrieves import Progress\n    from radcloud import core\n")
    assert _upward("radcloud.store.staged", lazy) == {("radcloud.store.staged", "work")}
