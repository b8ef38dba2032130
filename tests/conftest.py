"""Shared pytest configuration for every tier.

Kept light: the one fixture here that starts anything, ``job_world``, imports
what it needs when first used. Integration tests need the
real binaries; the ``require`` fixture turns a missing one into a *failure* with the
install hint when ``CI=true`` (a CI run that silently skips its integration
tests proves nothing) and into a skip with the same reason on a laptop.
A tier's session worlds are finished after the last test that uses them
(``_TierWorlds`` below), not when pytest exits.
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


@pytest.fixture(scope="session")
def sample_encoder(tmp_path_factory):
    """``seed_orthanc(..., encode=sample_encoder)``: each sample instance generated once a session.

    The integration tier seeds the same samples into more than one Orthanc (the
    stack's and the remote PACS, ~3 CPU s of generation each time for DEFAULT_SPEC's
    356 instances). The encoded bytes are kept on disk (~150 MB, removed at the end),
    keyed by the series' whole plan (its spec decides UIDs and pixels), and given
    back unchanged: the archives receive the same files either way.
    """
    import hashlib
    import shutil

    from radcloud.ops.samples.seed import encode_instances

    root = tmp_path_factory.mktemp("sample-instances")

    def encode(series_plan, numbers):
        folder = root / hashlib.sha256(repr(series_plan).encode()).hexdigest()[:24]
        folder.mkdir(exist_ok=True)
        paths = {n: folder / f"{n}.dcm" for n in numbers}
        fresh = encode_instances(series_plan, [n for n in numbers if not paths[n].exists()])
        for n in numbers:
            if paths[n].exists():
                yield paths[n].read_bytes()
                continue
            data = next(fresh)
            part = paths[n].with_suffix(".part")  # never a truncated file under the final name
            part.write_bytes(data)
            part.replace(paths[n])
            yield data

    yield encode
    shutil.rmtree(root, ignore_errors=True)


# A world shared by tiers is defined here, the one conftest they all see: the e2e tier's
# job_world is also the browser tests' (tests/e2e/browser, collected first) and the fuzz tier's
# (tests/fuzz/conftest.py, right after tests/e2e), so one stack + Slurm + localwhisk + deploy
# starts where three did (a world's start and stop: ~7-12 CPU s, and each world started cold
# every action it called, ~0.85 CPU s a container).
SHARED_WORLDS = ("job_world",)


@pytest.fixture(scope="session")
def job_world(tmp_path_factory, require):
    """A :class:`jobflow.JobWorld` (tests/e2e/jobflow.py) for tests/e2e (the browser tests too) and tests/fuzz.

    A world that fails to start is an error (skipped only for missing binaries, never in CI).
    With Slurm (1.3 s): ct-resample, bigger than an action, is routed there as deployed.
    Deployed once with every module's settings (jobflow.E2E_WORLD_ENV).
    """
    from jobflow import E2E_WORLD_ENV, JobWorld

    # Orthanc calls a study stable after 2 s without instances (the stack's default is 5 s), as
    # in the integration tier's stack: the browser tests' arrivals watcher waits for it.
    os.environ.setdefault("RADCLOUD_ORTHANC_STABLE_AGE", "2")
    with JobWorld.running(tmp_path_factory.mktemp("jobflow"), require, shard_timeout_s=25, slurm=True,
                          extra_env=E2E_WORLD_ENV) as world:
        yield world


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("radcloud-tier-worlds"):
        config.pluginmanager.register(_TierWorlds(), "radcloud-tier-worlds")
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


# -- a tier's worlds stop when its last test is done ------------------------------------
# A session fixture of a tier's conftest (a stack, a localwhisk world, the browser) used to live
# until pytest exited: the browser tier's world idled through every later tier, its SeaweedFS,
# Orthanc and localwhisk using CPU all the while (an idle JobWorld with Slurm: 1.4 % of a core,
# cpuacct over 180 s; five such worlds at once on a 2-core machine). Once the last collected test using it is torn down, it is
# finished as pytest finishes it at the end (its finalizers, dependent fixtures first), and
# its stop runs in the background (tests/e2e/background.py). A later request sets it up
# again, as for any finished fixture. Serial runs only: under pytest-xdist a worker does not
# know which tests it will get.
class _TierWorlds:
    """Registered as a plugin (pytest_configure), not hooks of this conftest: pytest asks a
    conftest's hooks only about nodes under its folder, and a session fixture is set up on
    the session node, above tests/."""

    def __init__(self) -> None:
        self.finish_after: dict[str, list] = {}  # nodeid -> fixturedefs whose last user it is
        self.requests: dict[int, object] = {}  # id(fixturedef) -> the request it was set up with

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.finish_after.clear()
        if session.config.getoption("dist", "no") != "no":
            return
        last: dict[int, tuple[object, pytest.Item]] = {}
        for item in session.items:
            for fixturedef in _tier_session_fixtures(item):
                last[id(fixturedef)] = (fixturedef, item)
        for fixturedef, item in last.values():
            self.finish_after.setdefault(item.nodeid, []).append(fixturedef)

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request) -> None:
        if fixturedef.scope == "session":
            self.requests[id(fixturedef)] = request

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None):
        result = yield
        for fixturedef in self.finish_after.pop(item.nodeid, ()):
            request = self.requests.pop(id(fixturedef), None)
            if request is not None and fixturedef.cached_result is not None:
                fixturedef.finish(request)
        return result


def _tier_session_fixtures(item: pytest.Item):
    """The session-scoped fixturedefs of a tier's conftest that ``item`` uses (its closure), a
    world shared by tiers (``SHARED_WORLDS``, defined here) first."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return
    names = sorted(info.names_closure, key=lambda name: name not in SHARED_WORLDS)
    for name in names:
        defs = info.name2fixturedefs.get(name) or ()
        if defs and defs[-1].scope == "session" and (defs[-1].baseid not in ("", "tests") or name in SHARED_WORLDS):
            yield defs[-1]


def _world_group(item: pytest.Item) -> str | None:
    """Under pytest-xdist (``--dist loadgroup``) the tests sharing a world run on one worker:
    each worker would start its own copy of a session fixture. The group is the conftest
    directory defining the session fixtures the test uses (a stack, a world, the browser);
    a test using none is grouped by its module (module fixtures start once), unit tests
    not at all. Opt-in (README): one full fresh-clone run green so far."""
    if getattr(item, "_fixtureinfo", None) is None or item.path.resolve().relative_to(ROOT).parts[0] == "unit":
        return None
    for fixturedef in _tier_session_fixtures(item):
        return fixturedef.baseid
    return item.nodeid.split("::")[0]
