"""One world (stack + localwhisk + radcloud deployed) per fault-test module.

Fault tests kill services; before each test every stack service and the
localwhisk server are brought back up, so one fault cannot cascade.
"""

from __future__ import annotations

import pytest

from rcworld import RcWorld


@pytest.fixture(scope="module")
def world(tmp_path_factory, require):
    try:
        w = RcWorld.up(tmp_path_factory.mktemp("faults"), shard_timeout_s=20)
    except RuntimeError as exc:
        require(False, str(exc))
    try:
        yield w
    finally:
        w.down()


@pytest.fixture(autouse=True)
def _all_back_up(request):
    if "world" in request.fixturenames:
        w = request.getfixturevalue("world")
        w.stack.up(("orthanc", "redis", "s3"), install_missing=False)
        if w.whisk.proc is None or w.whisk.proc.poll() is not None:
            w.whisk.start()
