"""One world (stack + localwhisk + radcloud deployed, users of every role) for the fuzz tier."""

from __future__ import annotations

import pytest

from rcworld import RcWorld


@pytest.fixture(scope="session")
def world(tmp_path_factory, require):
    try:
        w = RcWorld.up(tmp_path_factory.mktemp("fuzz"))
    except RuntimeError as exc:
        require(False, str(exc))
    try:
        yield w
    finally:
        w.down()
