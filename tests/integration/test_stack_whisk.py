"""localwhisk as a stack service, for real: up, healthy, its key works, down leaves nothing."""

from __future__ import annotations

import os
import time

import pytest
import requests

from radcloud.ops.stack import Ports, Stack
from radcloud.ops.stack.install import find
from radcloud.ops.stack.process import ProcessRecord

pytestmark = pytest.mark.integration


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_whisk_up_status_key_and_down(tmp_path):
    stack = Stack(tmp_path, Ports.ephemeral(), binaries=find(), timeout_s=60)
    started = time.perf_counter()
    stack.up(("whisk",), install_missing=False)
    seconds = time.perf_counter() - started
    try:
        status = stack.status()["whisk"]
        assert status["running"] and status["healthy"], status
        props = dict(line.split("=", 1) for line in (tmp_path / "whisk" / ".wskprops").read_text().split())
        assert props["APIHOST"] == f"http://127.0.0.1:{stack.ports.whisk}"
        user, key = props["AUTH"].split(":")
        listed = requests.get(props["APIHOST"] + "/api/v1/namespaces/_/actions", auth=(user, key), timeout=10)
        assert listed.status_code == 200 and listed.json() == []
        assert stack.up(("whisk",), install_missing=False) and stack.last_up == {"whisk": "already running"}
        assert seconds < 30
    finally:
        pgid = ProcessRecord.load(stack.state.pid_file("whisk")).pid
        assert stack.down() == ["whisk"]
    assert not _group_alive(pgid)
    assert not stack.status()["whisk"]["running"]
