"""One world (stack + localwhisk + radcloud deployed) per fault-test module.

Fault tests kill services; before each test every stack service and the
localwhisk server are brought back up, so one fault cannot cascade.
"""

from __future__ import annotations

import pytest

from rcworld import running_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, require):
    with running_world(tmp_path_factory.mktemp("faults"), require, shard_timeout_s=20) as w:
        yield w


@pytest.fixture(autouse=True)
def _all_back_up(request):
    if "world" in request.fixturenames:
        w = request.getfixturevalue("world")
        w.stack.up(("orthanc", "redis", "s3"), install_missing=False)
        if w.whisk.proc is None or w.whisk.proc.poll() is not None:
            w.whisk.start()
