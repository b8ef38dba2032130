"""Shared pytest configuration for every tier.

Kept light: no fixture here starts anything. Integration tests need the
real binaries; the ``require`` fixture turns a missing one into a *failure* with the
install hint when ``CI=true`` (a CI run that silently skips its integration
tests proves nothing) and into a skip with the same reason on a laptop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def in_ci(environ: dict[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in {"1", "true", "yes"}


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: integration tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require():
    """``require(condition, reason)``: fail in CI, skip locally, unless ``condition``.

    A fixture rather than an import: tests/ is not a package.
    """
    return _require


@pytest.fixture(scope="session")
def needs_bwrap(require) -> None:
    """Bubblewrap able to create the sandbox's namespaces (``make system-deps``):
    a test using this fails under CI and skips elsewhere when it cannot."""
    from localwhisk.runtime.sandbox import bwrap_available

    require(bwrap_available(), "bubblewrap cannot create namespaces here: apt-get install bubblewrap, "
            "and run as root or allow unprivileged user namespaces")


def pytest_configure(config: pytest.Config) -> None:
    # Under CI=true hypothesis runs derandomized (a seed fixed per test) without its
    # example database: every CI run generates the same cases, so a red CI run is a
    # regression, never a new random draw. Locally each run draws new cases (how the
    # fuzzers find new bugs). The fast tier does not load hypothesis at all.
    if in_ci() and config.pluginmanager.has_plugin("hypothesispytest"):
        from hypothesis import settings

        settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
        settings.load_profile("ci")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Worlds and stacks are stopped in the background as their tier ends
    # (tests/e2e/background.py); every one must be down before pytest exits.
    import sys

    background = sys.modules.get("background")
    problems = background.join() if background is not None else []
    problems += _WORKER_PROBLEMS  # under pytest-xdist: what each worker's join found
    if not problems:
        return
    if hasattr(session.config, "workeroutput"):
        # A pytest-xdist worker: its exit status stays on the worker; the controller
        # fails the run (pytest_testnodedown below).
        session.config.workeroutput["background_problems"] = problems
    session.config.get_terminal_writer().line("\n".join(problems), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_WORKER_PROBLEMS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist's controller, as a worker ends: keep the stops that worker saw fail."""
    _WORKER_PROBLEMS.extend(getattr(node, "workeroutput", {}).get("background_problems", []))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test's tier is its directory: `-m integration` / `-m "not integration"` just work.
    parallel = config.getoption("dist", "no") != "no"  # pytest-xdist's -n / --dist
    for item in items:
        try:
            parts = item.path.resolve().relative_to(ROOT).parts
        except ValueError:
            continue
        if parts[0] in ("integration", "e2e", "realfiles"):
            item.add_marker(getattr(pytest.mark, parts[0]))
        group = _world_group(item) if parallel else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def _world_group(item: pytest.Item) -> str | None:
    """Under pytest-xdist (``--dist loadgroup``) the tests sharing a world run on one worker:
    each worker would start its own copy of a session fixture. The group is the conftest
    directory defining the session fixtures the test uses (a stack, a world, the browser);
    a test using none is grouped by its module (module fixtures start once), unit tests
    not at all. Opt-in (README): one full fresh-clone run green so far."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None or item.path.resolve().relative_to(ROOT).parts[0] == "unit":
        return None
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name) or ()
        if defs and defs[-1].scope == "session" and defs[-1].baseid not in ("", "tests"):
            return defs[-1].baseid
    return item.nodeid.split("::")[0]
