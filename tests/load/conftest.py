"""One world (stack + localwhisk + radcloud deployed) for the load tier."""

from __future__ import annotations

import pytest

from rcworld import RcWorld


@pytest.fixture(scope="module")
def world(tmp_path_factory, require):
    try:
        w = RcWorld.up(tmp_path_factory.mktemp("load"))
    except RuntimeError as exc:
        require(False, str(exc))
    try:
        yield w
    finally:
        w.down()
