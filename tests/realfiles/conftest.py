"""The real-file tier's world: the e2e harness (tests/e2e/jobflow.py) with the shipped plugins.

``realworld`` (module): Orthanc, Redis, S3 and localwhisk on ephemeral ports,
radcloud deployed the way ``radcloud deploy --local`` deploys it, with the
shipped plugins of ``plugins/`` and a de-identification secret (deidentify
refuses to run without one). Stopped, only what it started, at the end.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # corpus.py beside this file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def realworld(tmp_path_factory, require):
    from jobflow import JobWorld
    from radcloud.ops.stack.install import find

    missing = find().missing
    require(not missing, f"missing binaries: {missing}")
    world = JobWorld.up(tmp_path_factory.mktemp("realfiles"), shard_timeout_s=120, plugins_dir=REPO / "plugins",
                        extra_env={"RADCLOUD_DEID_SECRET": secrets.token_urlsafe(32)})

    def store():
        from radcloud.store.storage import ObjectStore

        return ObjectStore.from_settings(world.endpoints.settings())

    world.store = store
    try:
        yield world
    finally:
        from background import stop_later  # tests/e2e/background.py: the next tier need not wait

        stop_later(world.down, "the real-file world")
