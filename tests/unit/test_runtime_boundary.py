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
from pathlib import Path

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
