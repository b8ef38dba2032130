"""One world (stack + localwhisk + radcloud deployed) for the load tier."""

from __future__ import annotations

import pytest

from rcworld import running_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, require):
    with running_world(tmp_path_factory.mktemp("load"), require) as w:
        yield w
