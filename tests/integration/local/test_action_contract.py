"""Each action file, run by the actionloop launcher (the contract of OpenWhisk's
Python runtime) in a subprocess, answers a JSON object for invalid input
without any I/O. The static manifest checks are tests/unit/test_manifest_consistency.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from radcloud.ops import deploy

ROOT = Path(__file__).resolve().parents[3]
ACTIONS = deploy.manifest_actions(deploy.load_manifest())
LAUNCHER = ROOT / "localwhisk" / "runtime" / "launcher.py"


def _function_dir(spec: dict) -> Path:
    return (deploy.MANIFEST.parent / spec["function"]).resolve()  # as wskdeploy resolves it


# -- the actionloop contract ---------------------------------------------------------------
# Inputs each action must refuse before touching a service (a 4xx answer, or the ui's 405).
# The admin-only actions that take no input are refused for a caller of another role (403):
# with nothing to refuse, reconcile would wait out its job-store retry budget (30 s) on
# the unroutable Redis below before answering 503.
NOT_ADMIN = {"_principal": {"name": "someone", "role": "clinician", "kind": "user"}}
INVALID_INPUT = {
    "query": {"level": "bogus"}, "retrieve": {}, "retrieve-series": {}, "login": {},
    "audit": {"limit": "x"}, "ui": {}, "dispatch": {"plugin": "no-such-plugin", "inputs": {"series": ["1.2"]}},
    "status": {"op": "bogus"}, "results": {}, "plugin-*": {}, "reconcile": NOT_ADMIN, "routing": NOT_ADMIN,
}
# Unroutable settings: an action that tried a service anyway would fail, not hang.
ENV = {"RADCLOUD_REDIS_URL": "redis://127.0.0.1:1/0", "RADCLOUD_ORTHANC_URL": "http://127.0.0.1:1",
       "RADCLOUD_S3_ENDPOINT": "127.0.0.1:1", "RADCLOUD_S3_ACCESS_KEY": "k", "RADCLOUD_S3_SECRET_KEY": "s",
       "RADCLOUD_OW_API_HOST": "http://127.0.0.1:1", "RADCLOUD_OW_API_KEY": "u:k"}


def run_under_launcher(function_dir: Path, value: dict, workdir: Path) -> tuple[dict, object, str]:
    """Init + one run through the actionloop launcher; returns (ack, result, stderr tail)."""
    for p in function_dir.iterdir():  # as the zip is unpacked: __main__.py becomes main__.py
        if p.is_file():
            shutil.copy(p, workdir / ("main__.py" if p.name == "__main__.py" else p.name))
    r, w = os.pipe()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "__OW_WAIT_FOR_ACK": "1", **ENV}
    proc = subprocess.Popen([sys.executable, "-u", str(LAUNCHER), str(w)], cwd=workdir, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(w,), env=env)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as results:
            proc.stdin.write(json.dumps({"init": {"main": "main", "env": {}}}).encode() + b"\n")
            proc.stdin.flush()
            ack = json.loads(results.readline() or b"null")
            proc.stdin.write(json.dumps({"value": value, "activation_id": "a0", "deadline": "0"}).encode() + b"\n")
            proc.stdin.flush()
            line = results.readline()
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return ack, json.loads(line) if line else None, proc.stderr.read().decode(errors="replace")[-500:]


@pytest.fixture(scope="module")
def contract_runs(tmp_path_factory):
    jobs = {}
    for name, spec in ACTIONS.items():
        key = "plugin-*" if name.startswith("plugin-") else name
        if key in jobs.values() and key == "plugin-*":
            continue  # every plugin action has the same body
        jobs[name] = key
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_under_launcher, _function_dir(ACTIONS[name]), INVALID_INPUT.get(key, {}),
                                     tmp_path_factory.mktemp(name))
                   for name, key in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.timeout(180)
def test_each_action_file_runs_under_the_actionloop_contract(contract_runs):
    for name, (ack, result, stderr) in contract_runs.items():
        assert ack == {"ok": True}, f"{name}: init failed: {stderr}"
        assert isinstance(result, dict), f"{name}: answered {result!r}: {stderr}"
        status = result.get("statusCode") or (result.get("error") or {}).get("statusCode")
        # An action added without a case here still has to answer a dict; listed ones a refusal.
        if name in INVALID_INPUT or name.startswith("plugin-"):
            assert status in (400, 403, 404, 405), f"{name}: {result}"
