"""One world (stack + localwhisk + radcloud deployed) for the load tier."""

from __future__ import annotations

import pytest

from rcworld import running_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, require):
    # localwhisk's default pool of 8 containers: this tier is about saturation (test_load.py)
    with running_world(tmp_path_factory.mktemp("load"), require, max_containers=8) as w:
        yield w
