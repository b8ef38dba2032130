"""Which activation records are kept: OpenWhisk's store-(non-)blocking-result-level (ActivationStore.scala).

Finding 2 of issue 16: activation records of web actions held patient data,
tokens and presigned URLs. OpenWhisk can be told not to store successful
blocking activations; localwhisk does the same, in the API and in its database.
"""

from __future__ import annotations

import json
import time

import pytest
from lw_fakes import ECHO, call, make_controller, put_action

from localwhisk.activations import StorePolicy
from localwhisk.store import Store

A = "/api/v1/namespaces/_/actions"
ACTS = "/api/v1/namespaces/_/activations"
WEB = [{"key": "web-export", "value": True}, {"key": "final", "value": True}]
SECRET = {"token": "eyJ-a-bearer-token", "PatientName": "Doe^Jane"}
FAILS = "def main(a):\n    return {'error': 'refused'}\n"
NOT_JSON = "def main(a):\n    return 42\n"  # an action developer error


@pytest.fixture
def ctrl(tmp_path):
    c = make_controller(store=Store(tmp_path / "lw.db"),
                        store_policy=StorePolicy(blocking="STORE_FAILURES", non_blocking="STORE_ALWAYS"))
    yield c
    c.close()


def on_disk(ctrl) -> str:
    """Every activation document in the database file, as text."""
    return "\n".join(row[0] for row in ctrl.store._run("SELECT doc FROM activations"))


def test_a_successful_blocking_result_reaches_the_caller_and_is_stored_nowhere(ctrl):
    put_action(ctrl, "login", ECHO)
    resp = call(ctrl, "POST", f"{A}/login", SECRET, query="blocking=true&result=true")
    assert resp.status == 200 and resp.json() == SECRET  # the caller gets the whole answer
    aid = resp.header("x-openwhisk-activation-id")
    assert call(ctrl, "GET", f"{ACTS}/{aid}").status == 404  # as OpenWhisk: never stored
    listed = call(ctrl, "GET", ACTS, query="docs=true").json()
    assert listed == [] and "Doe^Jane" not in on_disk(ctrl) and "bearer" not in on_disk(ctrl)


def test_web_actions_are_blocking_so_their_results_are_not_stored(ctrl):
    put_action(ctrl, "query", ECHO, annotations=WEB)
    resp = ctrl.handle("POST", "/api/v1/web/guest/default/query.json", "", {"content-type": "application/json"},
                       json.dumps(SECRET).encode())
    assert resp.status == 200 and json.loads(resp.body)["PatientName"] == "Doe^Jane"
    assert call(ctrl, "GET", ACTS, query="docs=true").json() == [] and "Doe^Jane" not in on_disk(ctrl)


def test_sequences_and_their_components_follow_the_blocking_level(ctrl):
    put_action(ctrl, "a", ECHO)
    put_action(ctrl, "b", ECHO)
    assert call(ctrl, "PUT", f"{A}/ab", {"exec": {"kind": "sequence", "components": ["/_/a", "/_/b"]}}).status == 200
    resp = call(ctrl, "POST", f"{A}/ab", SECRET, query="blocking=true&result=true")
    assert resp.json() == SECRET
    assert call(ctrl, "GET", ACTS, query="docs=true").json() == [] and "Doe^Jane" not in on_disk(ctrl)


def test_failures_and_non_blocking_activations_are_still_stored(ctrl):
    put_action(ctrl, "fails", FAILS)
    put_action(ctrl, "shard", ECHO)
    failed = call(ctrl, "POST", f"{A}/fails", {}, query="blocking=true")
    assert failed.status == 502
    assert call(ctrl, "GET", f"{ACTS}/{failed.json()['activationId']}").json()["response"]["status"] == \
        "application error"  # failures stay diagnosable
    aid = call(ctrl, "POST", f"{A}/shard", {"n": 1}).json()["activationId"]
    for _ in range(500):  # bounded: the pool runs it at once
        got = call(ctrl, "GET", f"{ACTS}/{aid}")
        if got.status == 200:
            break
        time.sleep(0.01)
    assert got.status == 200 and got.json()["response"]["result"] == {"n": 1}


def test_failures_not_application_errors_keeps_only_developer_and_platform_errors(tmp_path):
    c = make_controller(store=Store(tmp_path / "lw.db"),
                        store_policy=StorePolicy(blocking="STORE_FAILURES_NOT_APPLICATION_ERRORS"))
    put_action(c, "fails", FAILS)
    put_action(c, "crashes", NOT_JSON)
    app = call(c, "POST", f"{A}/fails", {}, query="blocking=true").json()["activationId"]
    dev = call(c, "POST", f"{A}/crashes", {}, query="blocking=true").json()["activationId"]
    assert call(c, "GET", f"{ACTS}/{app}").status == 404
    assert call(c, "GET", f"{ACTS}/{dev}").json()["response"]["status"] == "action developer error"
    c.close()


def test_the_default_is_openwhisks_store_always():
    c = make_controller()
    put_action(c, "echo", ECHO)
    aid = call(c, "POST", f"{A}/echo", SECRET, query="blocking=true").json()["activationId"]
    assert call(c, "GET", f"{ACTS}/{aid}").json()["response"]["result"] == SECRET
    c.close()


def test_levels_come_from_openwhisks_environment_names():
    env = {"CONFIG_whisk_activation_storeBlockingResultLevel": "STORE_FAILURES"}
    assert StorePolicy.from_env(env) == StorePolicy(blocking="STORE_FAILURES", non_blocking="STORE_ALWAYS")
    assert StorePolicy.from_env(env, blocking="STORE_ALWAYS").blocking == "STORE_ALWAYS"  # the flag wins
    with pytest.raises(ValueError, match="storeBlockingResultLevel='NEVER'"):
        StorePolicy.from_env({"CONFIG_whisk_activation_storeBlockingResultLevel": "NEVER"})
