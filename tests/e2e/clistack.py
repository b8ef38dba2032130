"""Helpers of the CLI/API e2e tests: the world ``cli_stack`` (tests/e2e/conftest.py) builds.

``cli_stack`` (session): Orthanc, Redis, S3 and localwhisk on ephemeral ports
in a temporary state dir, a small two-series CT study (patient JOBS1) in
Orthanc, radcloud deployed with ``radcloud deploy --local``, one
researcher account and one admin account. Stopped (only what it started) at the end.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import requests

USER, PASSWORD = "cli-tester", "cli-password-0123"
ADMIN, ADMIN_PASSWORD = "cli-admin", "cli-admin-password-0123"
RADCLOUD = [sys.executable, "-m", "radcloud.ops.cli.main"]


@dataclasses.dataclass
class CliStack:
    state: Path
    web: str          # the web actions' URL prefix
    study: str        # StudyInstanceUID of the seeded study
    user: str = USER
    password: str = PASSWORD
    deploy_seconds: float = 0.0
    redis_url: str = ""   # the stack's Redis (tests that seed routing or job state)

    def token(self) -> str:
        r = requests.post(self.web + "login", json={"username": self.user, "password": self.password}, timeout=60)
        r.raise_for_status()
        return r.json()["token"]


def clean_env() -> dict[str, str]:
    """The caller's environment without RADCLOUD_* (make exports RADCLOUD_STATE_DIR)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RADCLOUD_")}
