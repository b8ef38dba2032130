"""100 parallel invocations (none lost) and a restart with an activation in flight."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from localwhisk.testing import Server

pytestmark = pytest.mark.integration


def test_100_parallel_invocations_none_lost(whisk):
    code = "import time\ndef main(a):\n    time.sleep(0.01)\n    return {'i': a['i']}\n"
    body = {"exec": {"kind": "python:3.11", "code": code}}
    assert whisk.client.request("PUT", "/api/v1/namespaces/_/actions/par", body, "overwrite=true")[0] == 200
    since = int(time.time() * 1000) - 1
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda i: whisk.invoke("par", {"i": i}), range(100)))
    assert [s for s, _ in results] == [200] * 100
    assert sorted(r["i"] for _, r in results) == list(range(100))
    _, count = whisk.client.request("GET", "/api/v1/namespaces/_/activations", query=f"name=par&count=true&since={since}")
    assert count == {"activations": 100}


def test_in_flight_activation_ends_as_error_after_restart(tmp_path):
    server = Server(tmp_path)
    server.start()
    try:
        body = {"exec": {"kind": "python:3.11", "code": "import time\ndef main(a):\n    time.sleep(30)\n    return {}\n"}}
        assert server.client.request("PUT", "/api/v1/namespaces/_/actions/stuck", body)[0] == 200
        status, resp = server.invoke("stuck", blocking=False)
        assert status == 202
        aid = resp["activationId"]
        time.sleep(0.5)  # the record is written before the run starts
        server.kill()  # crash: SIGKILL, nothing gets finished
        server.start()
        status, rec = server.activation(aid)
        assert status == 200, rec
        assert rec["response"]["status"] == "whisk internal error"
        assert "did not complete" in rec["response"]["result"]["error"]
        # entities survived too
        assert server.client.request("GET", "/api/v1/namespaces/_/actions/stuck")[0] == 200
    finally:
        server.stop()
