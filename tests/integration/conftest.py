"""Session fixtures running the real local stack for integration tests.

``stack``: Orthanc + Redis + SeaweedFS S3 in a temp state dir on ephemeral
ports, started once per session through :class:`radcloud.ops.stack.Stack` (the
same code as ``radcloud stack up``) and stopped at the end. Before each test
that uses it, services a previous test killed are started again, so one
fault-injection test cannot cascade into others.

``remote_pacs``: a second Orthanc (AET ``HOSPITAL_PACS``) playing the
hospital's PACS; it and radcloud's Orthanc (AET ``RADCLOUD``) know each
other as DICOM modalities, so C-FIND/C-MOVE between them work.

``slurm``: the same stack's one-node Slurm cluster (``stack up --with-slurm``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from radcloud.core.settings import Settings
from radcloud.ops.stack import DEFAULT_SERVICES, Endpoints, OrthancEndpoint, Ports, Stack
from radcloud.ops.stack.state import SLURM_SERVICES
from radcloud.ops.stack.install import find, install_hint


@dataclasses.dataclass
class LiveStack:
    """What a test needs from the running stack, plus fault-injection helpers."""

    stack: Stack
    endpoints: Endpoints
    s3: Any  # minio.Minio with the stack's keys
    redis: Any  # redis.Redis with the stack's password

    @property
    def settings(self) -> Settings:
        return self.endpoints.settings()

    @property
    def state_dir(self) -> Path:
        return self.stack.state.root

    @property
    def orthanc(self) -> OrthancEndpoint:
        return self.endpoints.orthanc

    @property
    def orthanc_url(self) -> str:
        return self.endpoints.orthanc.url

    @property
    def orthanc_auth(self) -> tuple[str, str]:
        return self.endpoints.orthanc.auth

    @property
    def bucket(self) -> str:
        return self.endpoints.s3_bucket

    def env(self) -> dict[str, str]:
        """``RADCLOUD_*`` variables for a child process (secrets included)."""
        return self.endpoints.env()

    def start(self, name: str) -> None:
        self.stack.start(name)

    def stop(self, name: str) -> None:
        self.stack.stop(name)

    def kill(self, name: str) -> None:
        """SIGKILL a service (``orthanc``, ``pacs``, ``redis``, ``s3``) without a clean shutdown."""
        self.stack.kill(name)

    def restart(self, name: str) -> None:
        self.stack.restart(name)

    def ensure_up(self, services: tuple[str, ...] = DEFAULT_SERVICES) -> None:
        self.stack.up(services, install_missing=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, require):
    binaries = find()
    require(not binaries.missing, install_hint(binaries.missing) if binaries.missing else "")
    import redis
    from minio import Minio

    # Orthanc calls a study stable after 2 s without instances (the stack's default is 5 s):
    # tests/integration/test_arrivals.py waits for Orthanc's own StableStudy events.
    os.environ.setdefault("RADCLOUD_ORTHANC_STABLE_AGE", "2")
    stk = Stack(tmp_path_factory.mktemp("stack"), Ports.ephemeral(), binaries=binaries, timeout_s=60)
    try:
        endpoints = stk.up(DEFAULT_SERVICES, install_missing=False)
        s3 = Minio(endpoints.s3_endpoint, access_key=endpoints.s3_access_key,
                   secret_key=endpoints.s3_secret_key.reveal(), secure=False, region="us-east-1")
        client = redis.Redis.from_url(endpoints.redis_url.reveal(), decode_responses=True)
        yield LiveStack(stk, endpoints, s3, client)
        client.close()
    finally:
        from background import stop_later

        stop_later(stk.down, f"the stack in {stk.state.root}")


@pytest.fixture(scope="session")
def remote_pacs(stack: LiveStack) -> OrthancEndpoint:
    """The hospital PACS Orthanc, started on first use; stopped with the stack."""
    stack.ensure_up(("pacs",))
    return stack.endpoints.orthancs["pacs"]


@pytest.fixture(scope="session")
def slurm(stack: LiveStack, require) -> Endpoints:
    """The stack's one-node Slurm cluster (munge, slurmctld, slurmd, slurmrestd), started on first use.

    Returns the endpoints with the cluster's URL and token (``settings()`` routes to it).
    """
    from radcloud.ops.stack.install import SLURM_REQUIREMENTS

    missing = find(SLURM_REQUIREMENTS).missing
    require(not missing, install_hint(missing) if missing else "")
    stack.ensure_up(SLURM_SERVICES)
    return stack.stack.endpoints()


@pytest.fixture(autouse=True)
def _services_back_up(request: pytest.FixtureRequest) -> None:
    # Cheap (a health probe per service) and only for tests using the stack.
    if "stack" in request.fixturenames:
        live: LiveStack = request.getfixturevalue("stack")
        live.ensure_up()
        if "remote_pacs" in request.fixturenames:
            live.ensure_up(("pacs",))
        if "slurm" in request.fixturenames:
            live.ensure_up(SLURM_SERVICES)
