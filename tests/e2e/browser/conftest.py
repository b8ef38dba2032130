"""The whole radcloud on one machine for the browser tests.

The e2e tier's ``job_world`` (tests/conftest.py: Orthanc, Redis, S3, a one-node Slurm cluster,
localwhisk with deploy/manifest.yaml deployed as ``radcloud deploy --local`` does), seen as the
integration tier's ``stack`` (tests/integration/conftest.py's LiveStack) and ``slurm``, with the
sample studies seeded into its Orthanc and a clinician and an admin account (``site``). The
browser tier runs first in that world, before the e2e modules that share it: one stack,
localwhisk and deploy fewer per run, and the actions both tiers call start cold once. The
browser then only ever talks HTTP to localwhisk's web actions, as a user's would; what a
browser test puts in the shared PACS or Redis it takes out again (other tests share them).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
SHOTS = ROOT / "artifacts" / "screenshots"

# tests/ is not a package: load the integration fixtures by path and re-export them.
_spec = importlib.util.spec_from_file_location("_integration_conftest", ROOT / "tests" / "integration" / "conftest.py")
_integration = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _integration  # dataclasses look their module up there
_spec.loader.exec_module(_integration)
slurm = _integration.slurm
_services_back_up = _integration._services_back_up

USER, PASSWORD = "dr.jones", "correct horse battery staple"
ADMIN, ADMIN_PASSWORD = "it.admin", "another long admin secret"


@dataclasses.dataclass
class Site:
    base: str          # http://127.0.0.1:PORT
    ui: str            # base + /api/v1/web/guest/radcloud/ui
    user: str
    password: str
    admin: str
    admin_password: str
    whisk: object


@pytest.fixture(scope="session")
def browser_ready(require):
    require(shutil.which("chromium") is not None, "chromium missing: apt-get install -y chromium")
    require(shutil.which("node") is not None, "node missing")
    require((HERE / "node_modules" / "playwright-core").is_dir(),
            "playwright-core missing: cd tests/e2e/browser && npm ci")


@pytest.fixture(scope="session")
def stack(job_world):
    """``job_world``'s stack as the integration tier's LiveStack (what the browser tests read back)."""
    from minio import Minio

    e = job_world.endpoints
    s3 = Minio(e.s3_endpoint, access_key=e.s3_access_key, secret_key=e.s3_secret_key.reveal(), secure=False,
               region="us-east-1")
    return _integration.LiveStack(job_world.stack, e, s3, job_world.redis)


@pytest.fixture(scope="session")
def site(job_world, stack, slurm, browser_ready, sample_encoder):
    from radcloud.ops.samples.seed import seed_orthanc
    from fast_hasher import FAST_HASHER
    from radcloud.access.users import UserStore

    seed_orthanc(stack.settings, include_pydicom_files=False, encode=sample_encoder)
    # job_world is deployed with its Slurm cluster: a job can be routed there (test_ui_slurm.py).
    # The journeys log in a few dozen times; each verify costs what the hash
    # names (~0.25 CPU s at argon2's defaults), so these accounts use the cheapest.
    store = UserStore(stack.redis, FAST_HASHER)
    if store.get(USER) is None:
        store.add(USER, "clinician", PASSWORD)
    if store.get(ADMIN) is None:
        store.add(ADMIN, "admin", ADMIN_PASSWORD)
    base = job_world.whisk.api_host.rstrip("/")
    return Site(base=base, ui=f"{base}/api/v1/web/guest/radcloud/ui", user=USER, password=PASSWORD,
                admin=ADMIN, admin_password=ADMIN_PASSWORD, whisk=job_world.whisk)


class ViewerNotice(UserWarning):
    """The viewer contained something it should not have met (harness.mjs ``viewerNotices``)."""


class ScreenshotMissing(UserWarning):
    """A step passed but its screenshot did not come (harness.mjs ``capture``)."""


class BrowserRun(dict):
    """The steps one browser script printed (harness.mjs: one JSON line each), by name."""

    def __init__(self, steps: dict, stderr: str) -> None:
        super().__init__(steps)
        self.stderr = stderr

    def ok(self, name: str) -> dict:
        """Step ``name``'s record; fails the test naming the step when it failed or was never reached."""
        record = self.get(name)
        assert record is not None, f"step {name} not reached (an earlier step failed)"
        assert record["ok"], f"{name}: {record.get('error')} (console: {record.get('console')})"
        return record


def _private_home(xdg: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(xdg / "config"), "XDG_CACHE_HOME": str(xdg / "cache"), "HOME": str(xdg)}


@pytest.fixture(scope="session")
def shared_browser(browser_ready, tmp_path_factory):
    """One headless Chromium (browser-server.mjs) for every browser script of the session: its
    websocket endpoint. Launching Chromium costs seconds of CPU on a loaded box and each script
    launched its own; every script still works in browser contexts of its own (harness.mjs)."""
    home = tmp_path_factory.mktemp("xdg-shared")
    log = home / "browser-server.log"
    with log.open("w") as err:
        proc = subprocess.Popen(["node", "browser-server.mjs"], cwd=HERE, env={**os.environ, **_private_home(home)},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""  # the endpoint, or "" if node died or hung
        if not line.startswith("{"):
            proc.kill()
            raise RuntimeError(f"the shared Chromium did not start within 60 s: {line}{log.read_text()[-3000:]}")
        yield json.loads(line)["ws"]
    finally:
        proc.stdin.close()  # browser-server.mjs closes Chromium and exits
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def run_browser(tmp_path_factory, shared_browser):
    """``run_browser(script, env, record=None)``: run tests/e2e/browser/<script> in node with the
    harness' environment (screenshots in artifacts/screenshots, a private HOME, the session's shared
    Chromium) and return its steps; ``record`` names a JSON copy of them beside the screenshots."""
    def run(script: str, env: dict, *, record: str | None = None, timeout: int = 600,
            require_summary: bool = True) -> BrowserRun:
        xdg = tmp_path_factory.mktemp("xdg")
        full = {**os.environ, "RC_SHOTS": str(SHOTS), "RC_BROWSER_WS": shared_browser, **_private_home(xdg), **env}
        proc = subprocess.run(["node", script], cwd=HERE, env=full, capture_output=True, text=True, timeout=timeout)
        steps = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                steps[item["step"]] = item
        if record:
            SHOTS.mkdir(parents=True, exist_ok=True)
            (SHOTS / record).write_text(json.dumps(steps, indent=1))
        if require_summary:
            assert "summary" in steps, f"the browser script {script} died:\n{proc.stderr[-3000:]}"
        notices = steps.get("summary", {}).get("viewer_notices")
        if notices:  # contained by the viewer, so not a failure; shown in the run's warnings with its stack
            warnings.warn(f"{script}: {'; '.join(notices)[:2000]}", ViewerNotice, stacklevel=2)
        missing = [f"{name}: {item['screenshot_error']}" for name, item in steps.items() if item.get("screenshot_error")]
        if missing:  # a step's record, not its check (harness.mjs capture)
            warnings.warn(f"{script}: no screenshot of {'; '.join(missing)[:1000]}", ScreenshotMissing, stacklevel=2)
        return BrowserRun(steps, proc.stderr)

    return run
