"""The runtime apart from the operator tooling: what actions can import never reaches radcloud/ops/ (stack, cli, samples, deploy, doctor).

The runtime is every radcloud module an action can load: the closure of the
imports of ``functions/*/__main__.py`` plus every module under
``radcloud/work/`` (executors are loaded by name, :func:`executor_for`).
Imports are read from the source (``ast``), including those inside
functions, so a lazy import counts as much as one at the top: stricter than
looking at ``sys.modules`` after importing, and no interpreter to start.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
TOOLING = ("radcloud.ops",)  # radcloud/ops/: stack, cli, samples, deploy, doctor


def _file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path, package: str) -> set[str]:
    """radcloud modules (or names that may be modules) ``path`` imports anywhere."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from radcloud import stack`
    return {m for m in found if m.split(".")[0] == "radcloud"}


@functools.cache
def runtime_closure() -> dict[str, str]:
    """Every runtime module -> the module (or action) that brought it in."""
    todo = [(m, f"functions/{f.parent.name}") for f in sorted((ROOT / "functions").glob("*/__main__.py"))
            for m in _imports(f, "functions")]
    todo += [(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), "executor_for")
             for f in sorted((ROOT / "radcloud" / "work").rglob("*.py"))]
    seen: dict[str, str] = {}
    while todo:
        module, via = todo.pop()
        path = _file(module)
        if module in seen or path is None:
            continue
        seen[module] = via
        parts = module.split(".")
        todo += [(".".join(parts[:i]), module) for i in range(1, len(parts))]  # parents run their __init__
        package = module if path.name == "__init__.py" else ".".join(parts[:-1])
        todo += [(m, module) for m in _imports(path, package)]
    return seen


def test_actions_import_none_of_the_operator_tooling():
    closure = runtime_closure()
    leaks = {m: via for m, via in closure.items() if m == "radcloud" or any(
        m == t or m.startswith(t + ".") for t in TOOLING)}
    leaks.pop("radcloud", None)  # the package itself (its __init__ is checked below)
    assert leaks == {}, f"runtime modules importing operator tooling (module <- imported by): {leaks}"
    assert "radcloud.work.lifecycle" in closure and "radcloud.work.dispatch" in closure  # the walk works


def test_the_package_init_imports_no_tooling():
    assert not any(m.startswith(TOOLING) for m in _imports(ROOT / "radcloud" / "__init__.py", "radcloud"))


# What an image installs: pyproject's `dependencies` (the runtime), plus for a
# plugin's image the extra named like the plugin (plugins/<name>/Dockerfile).

def _third_party(paths) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("radcloud", "localwhisk", "__future__")}


@functools.cache
def _top_level(dist: str) -> frozenset[str]:
    """The importable top-level names a distribution installs."""
    d = md.distribution(dist)
    names = (d.read_text("top_level.txt") or "").split()
    names += [f.parts[0].removesuffix(".py") for f in d.files or ()
              if len(f.parts) > 1 and not f.parts[0].endswith((".dist-info", ".data")) or f.suffix == ".py"]
    return frozenset(n for n in names if n.isidentifier())


def _installed_by(extras: tuple[str, ...] = ()) -> set[str]:
    """Top-level modules the distributions of radcloud[extras] provide (their whole requirement tree)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    dists: set[str] = set()
    while todo:
        req = todo.pop()
        if canonicalize_name(req.name) == "radcloud":
            todo += [Requirement(r) for e in req.extras for r in project["optional-dependencies"][e]]
            continue
        if canonicalize_name(req.name) in dists:
            continue
        dists.add(canonicalize_name(req.name))
        for sub in md.distribution(req.name).requires or []:
            dep = Requirement(sub)
            if not dep.marker or any(dep.marker.evaluate({"extra": e}) for e in (*req.extras, "")):
                todo.append(dep)
    return {module for dist in dists for module in _top_level(dist)}


def test_the_runtime_image_installs_what_actions_import_and_no_tooling():
    runtime = [p for p in map(_file, runtime_closure()) if p is not None]
    installed = _installed_by()
    missing = _third_party(runtime) - installed
    assert missing == set(), f"runtime imports not in pyproject's dependencies (the runtime image): {missing}"
    tooling = {"typer", "rich", "yaml", "uvicorn", "scipy", "SimpleITK"} & installed
    assert tooling == set(), f"operator/plugin libraries in the runtime image (move them to an extra): {tooling}"


def test_each_plugin_image_installs_what_its_plugin_imports():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for folder in sorted(p for p in (ROOT / "plugins").iterdir() if (p / "Dockerfile").is_file()):
        own = {p.stem for p in folder.glob("*.py")}  # the plugin's own modules
        extra = (folder.name,) if folder.name in extras else ()
        missing = _third_party(folder.glob("*.py")) - own - _installed_by(extra)
        assert missing == set(), f"plugins/{folder.name} imports {missing}: not in its image (pyproject extra {folder.name!r})"
        if extra:
            assert f"/opt/radcloud[{folder.name}]" in (folder / "Dockerfile").read_text(), \
                f"plugins/{folder.name}/Dockerfile must install radcloud[{folder.name}]"
