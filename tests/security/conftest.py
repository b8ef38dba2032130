"""One world (stack + localwhisk + radcloud deployed, users of every role) for the security tier."""

from __future__ import annotations

import pytest

from rcworld import running_world


@pytest.fixture(scope="session")
def world(tmp_path_factory, require):
    with running_world(tmp_path_factory.mktemp("security"), require) as w:
        yield w
