"""The e2e tier's shared world for the CLI and API tests: a real stack + localwhisk, radcloud deployed.

``cli_stack`` (session): Orthanc, Redis, S3, Slurm and localwhisk on ephemeral ports
in a temporary state dir, a small two-series CT study (patient JOBS1) in
Orthanc, radcloud deployed with ``radcloud deploy --local`` and one
researcher account. Stopped (only what it started) at the end.

``job_world`` (session, tests/conftest.py): a :class:`jobflow.JobWorld` (the stack, localwhisk,
radcloud deployed plus one action per plugin in tests/e2e/plugins), shared by
test_job_flow.py, test_pfcon_flow.py, test_plugins_deployed.py, test_slurm_flow.py and
the fuzz tier, which runs next.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests

from clistack import ADMIN, ADMIN_PASSWORD, PASSWORD, RADCLOUD, USER, CliStack, clean_env
from fast_hasher import FAST_HASHER  # each login verifies at the hash's own cost: ~0.25 CPU s by default


@pytest.fixture(scope="session")
def cli_stack(tmp_path_factory, require):
    import redis
    from pydicom.uid import generate_uid

    from jobflow import ct_instance
    from radcloud.ops.stack import DEFAULT_SERVICES, Ports, Stack
    from radcloud.ops.stack.install import find
    from radcloud.access.users import UserStore

    from radcloud.ops.stack.install import SLURM_REQUIREMENTS
    from radcloud.ops.stack.state import SLURM_SERVICES

    binaries = find()
    require(not binaries.missing, f"missing binaries: {binaries.missing}")
    missing = find(SLURM_REQUIREMENTS).missing
    require(not missing, f"missing Slurm binaries: {missing}")
    root = tmp_path_factory.mktemp("cli") / "state"
    stack = Stack(root, Ports.ephemeral(), binaries=binaries, timeout_s=60)
    # With a one-node Slurm cluster: the deployed actions route plugins bigger than an action to it.
    endpoints = stack.up((*DEFAULT_SERVICES, *SLURM_SERVICES, "whisk"), install_missing=False)
    try:
        study, orthanc = generate_uid(), endpoints.orthanc
        for n, size in ((1, 3), (2, 2)):
            series = generate_uid()
            for i in range(1, size + 1):
                requests.post(orthanc.url + "/instances", data=ct_instance(study, series, i, n),
                              auth=orthanc.auth, timeout=30).raise_for_status()
        users = UserStore(redis.Redis.from_url(endpoints.redis_url.reveal()), FAST_HASHER)
        users.add(USER, "researcher", PASSWORD)
        users.add(ADMIN, "admin", ADMIN_PASSWORD)
        started = time.perf_counter()
        done = subprocess.run([*RADCLOUD, "deploy", "--local", "--json", "--state-dir", str(root)],
                              capture_output=True, text=True, env=clean_env(), timeout=120)
        assert done.returncode == 0, done.stderr
        assert "plugin-dcm2png" in json.loads(done.stdout)["actions"]
        yield CliStack(root, endpoints.whisk_url + "/api/v1/web/guest/radcloud/", study,
                       deploy_seconds=round(time.perf_counter() - started, 2),
                       redis_url=endpoints.redis_url.reveal())
    finally:
        from background import stop_later

        stop_later(stack.down, f"the CLI stack in {root}")
