"""A real localwhisk server (subprocess, 127.0.0.1, free port) with the real runtime, per module."""

from __future__ import annotations

import pytest

from localwhisk.testing import Server


@pytest.fixture(scope="module")
def whisk(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("localwhisk"), max_concurrent=120)
    server.start()
    yield server
    server.stop()
