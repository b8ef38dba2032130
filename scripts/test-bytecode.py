"""Write the bytecode pytest caches for the test modules (run by `make bytecode`).

pytest compiles each test module and conftest.py with its asserts rewritten and
keeps the result in __pycache__/<name>.cpython-311-pytest-<version>.pyc. A fresh
clone has none, and pytest writes none when PYTHONDONTWRITEBYTECODE is set: then
every pytest process (each xdist worker) rewrites all ~200 test files again,
~13 CPU s per collection of the whole suite. This writes the same files with
pytest's own functions, so pytest reads them instead. Each records its source's
mtime and size and pytest checks both, so an edited test is rewritten again.
Files whose cache is current are skipped.

These are pytest internals (pinned in constraints.txt): if they change, this says
so and writes nothing; the tests then only compile as before.
"""

import fnmatch
import sys
import types
from pathlib import Path

PATTERNS = ("test_*.py", "*_test.py", "conftest.py")  # pytest's python_files, + conftest


def main(roots: list[str]) -> int:
    try:
        from _pytest.assertion.rewrite import (PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc,
                                               get_cache_dir)
    except ImportError as exc:
        print(f"scripts/test-bytecode.py: pytest's assertion rewriting moved ({exc}); "
              "test bytecode not written", file=sys.stderr)
        return 0
    # _write_pyc wants pytest's AssertionState only for its trace(), which reports a failed write.
    state = types.SimpleNamespace(trace=lambda message: print(message, file=sys.stderr))
    for root in roots:
        for fn in sorted(Path(root).resolve().rglob("*.py")):  # absolute, as pytest names them
            if "__pycache__" in fn.parts or not any(fnmatch.fnmatch(fn.name, p) for p in PATTERNS):
                continue
            cache_dir = get_cache_dir(fn)
            pyc = cache_dir / (fn.name[:-3] + PYC_TAIL)
            if _read_pyc(fn, pyc) is not None:
                continue
            try:
                _stat, co = _rewrite_test(fn, None)
            except SyntaxError:  # data that only looks like a test module; pytest reports it if collected
                continue
            cache_dir.mkdir(exist_ok=True)
            _write_pyc(state, co, _stat, pyc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["tests"]))
