"""Triggers and rules (CTRL/Triggers.scala, Rules.scala) through Controller.handle, with a FakeRuntime."""

from __future__ import annotations

import json
import time

import pytest
from lw_fakes import ECHO, call, make_controller, put_action

NS = "/api/v1/namespaces/_"


@pytest.fixture
def ctrl():
    c = make_controller()
    yield c
    c.close()


def completed(ctrl, aid, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s  # bounded poll for the pool's record, not a timed assert
    while time.monotonic() < deadline:
        found = ctrl.store.get_activation(aid)
        if found and found[1]:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"activation {aid} did not complete")


def make_rule(ctrl, name="r1", trigger="t1", action="echo"):
    resp = call(ctrl, "PUT", f"{NS}/rules/{name}", {"trigger": f"/_/{trigger}", "action": f"/_/{action}"})
    assert resp.status == 200, resp.body
    return resp.json()


def test_trigger_create_get_list_update_delete(ctrl):
    created = call(ctrl, "PUT", f"{NS}/triggers/t1", {"parameters": [{"key": "a", "value": 1}]})
    assert created.status == 200
    doc = created.json()
    assert (doc["namespace"], doc["name"], doc["version"], doc["rules"]) == ("guest", "t1", "0.0.1", {})
    assert call(ctrl, "PUT", f"{NS}/triggers/t1", {}).status == 409
    updated = call(ctrl, "PUT", f"{NS}/triggers/t1", {"annotations": [{"key": "x", "value": "y"}]},
                   query="overwrite=true").json()
    assert updated["version"] == "0.0.2" and updated["parameters"] == [{"key": "a", "value": 1}]
    assert [t["name"] for t in call(ctrl, "GET", f"{NS}/triggers").json()] == ["t1"]
    assert call(ctrl, "GET", f"{NS}/triggers", query="count=true").json() == {"triggers": 1}
    assert call(ctrl, "GET", f"{NS}/triggers/t1").json()["annotations"] == [{"key": "x", "value": "y"}]
    assert call(ctrl, "DELETE", f"{NS}/triggers/t1").status == 200
    assert call(ctrl, "GET", f"{NS}/triggers/t1").status == 404
    assert call(ctrl, "POST", f"{NS}/triggers/t1", {}).status == 404


def test_fire_merges_parameters_records_trigger_and_rule_activations(ctrl):
    put_action(ctrl, "echo", ECHO)
    call(ctrl, "PUT", f"{NS}/triggers/t1", {"parameters": [{"key": "a", "value": 1}, {"key": "b", "value": 1}]})
    rule = make_rule(ctrl)
    assert rule["status"] == "active"
    assert rule["trigger"] == {"path": "guest", "name": "t1"} and rule["action"] == {"path": "guest", "name": "echo"}
    assert call(ctrl, "GET", f"{NS}/triggers/t1").json()["rules"] == {
        "guest/r1": {"action": {"path": "guest", "name": "echo"}, "status": "active"}}

    fired = call(ctrl, "POST", f"{NS}/triggers/t1", {"b": 2, "c": 3})
    assert fired.status == 202
    aid = fired.json()["activationId"]
    trigger_record = ctrl.store.get_activation(aid)[0]
    assert trigger_record["name"] == "t1" and trigger_record["response"]["result"] == {"a": 1, "b": 2, "c": 3}
    [log_line] = trigger_record["logs"]
    entry = json.loads(log_line)
    assert entry["statusCode"] == 0 and entry["success"] and entry["rule"] == "guest/r1"
    assert entry["action"] == "guest/echo"
    action_record = completed(ctrl, entry["activationId"])
    assert action_record["cause"] == aid
    assert action_record["response"]["result"] == {"a": 1, "b": 2, "c": 3}
    assert not any(a["key"] == "causedBy" for a in action_record["annotations"])
    listed = call(ctrl, "GET", f"{NS}/activations", query="name=t1").json()
    assert [a["activationId"] for a in listed] == [aid]


def test_inactive_rule_is_not_run_and_fire_answers_204(ctrl):
    put_action(ctrl, "echo", ECHO)
    call(ctrl, "PUT", f"{NS}/triggers/t1", {})
    make_rule(ctrl)
    assert call(ctrl, "POST", f"{NS}/rules/r1", {"status": "inactive"}).status == 200
    assert call(ctrl, "GET", f"{NS}/rules/r1").json()["status"] == "inactive"
    before = len(ctrl.runtime.calls)
    assert call(ctrl, "POST", f"{NS}/triggers/t1", {}).status == 204
    assert len(ctrl.runtime.calls) == before
    assert call(ctrl, "POST", f"{NS}/rules/r1", {"status": "sleeping"}).status == 400
    assert call(ctrl, "POST", f"{NS}/rules/r1", {"status": "active"}).status == 200
    aid = call(ctrl, "POST", f"{NS}/triggers/t1", {}).json()["activationId"]
    completed(ctrl, json.loads(ctrl.store.get_activation(aid)[0]["logs"][0])["activationId"])
    assert len(ctrl.runtime.calls) == before + 1


def test_every_active_rule_runs_and_a_missing_action_is_logged(ctrl):
    put_action(ctrl, "echo", ECHO)
    put_action(ctrl, "gone", ECHO)
    call(ctrl, "PUT", f"{NS}/triggers/t1", {})
    make_rule(ctrl, "r1")
    make_rule(ctrl, "r2", action="gone")
    call(ctrl, "DELETE", f"{NS}/actions/gone")
    aid = call(ctrl, "POST", f"{NS}/triggers/t1", {"x": 1}).json()["activationId"]
    entries = {e["rule"]: e for e in map(json.loads, ctrl.store.get_activation(aid)[0]["logs"])}
    assert entries["guest/r1"]["success"] and not entries["guest/r2"]["success"]
    assert entries["guest/r2"]["error"] == "The requested resource does not exist."


def test_rule_needs_existing_trigger_and_action_and_delete_unlinks(ctrl):
    put_action(ctrl, "echo", ECHO)
    assert call(ctrl, "PUT", f"{NS}/rules/r1", {"trigger": "/_/nope", "action": "/_/echo"}).status == 404
    call(ctrl, "PUT", f"{NS}/triggers/t1", {})
    assert call(ctrl, "PUT", f"{NS}/rules/r1", {"trigger": "/_/t1", "action": "/_/nope"}).status == 404
    assert call(ctrl, "PUT", f"{NS}/rules/r1", {"trigger": "/_/t1"}).status == 400
    make_rule(ctrl)
    assert call(ctrl, "PUT", f"{NS}/rules/r1", {"trigger": "/_/t1", "action": "/_/echo"}).status == 409
    assert [r["name"] for r in call(ctrl, "GET", f"{NS}/rules").json()] == ["r1"]
    assert call(ctrl, "DELETE", f"{NS}/rules/r1").status == 200
    assert call(ctrl, "GET", f"{NS}/triggers/t1").json()["rules"] == {}
    assert call(ctrl, "POST", f"{NS}/triggers/t1", {}).status == 204


def test_rule_to_a_packaged_sequence(ctrl):
    call(ctrl, "PUT", f"{NS}/packages/p", {})
    assert call(ctrl, "PUT", f"{NS}/actions/p/echo", {"exec": {"kind": "python:3.11", "code": ECHO}}).status == 200
    assert call(ctrl, "PUT", f"{NS}/actions/p/seq",
                {"exec": {"kind": "sequence", "components": ["/_/p/echo", "/_/p/echo"]}}).status == 200
    call(ctrl, "PUT", f"{NS}/triggers/t1", {})
    rule = make_rule(ctrl, action="p/seq")
    assert rule["action"] == {"path": "guest/p", "name": "seq"}
    aid = call(ctrl, "POST", f"{NS}/triggers/t1", {"n": 1}).json()["activationId"]
    seq_id = json.loads(ctrl.store.get_activation(aid)[0]["logs"][0])["activationId"]
    record = completed(ctrl, seq_id)
    assert record["cause"] == aid and record["response"]["result"] == {"n": 1}
    assert not any(a["key"] == "causedBy" for a in record["annotations"])


def test_fires_past_the_namespaces_limit_per_minute_are_429_as_openwhisk():
    """OpenWhisk's RateThrottler: a fixed one-minute window per namespace, every fire charged."""
    now = [600.0]
    c = make_controller(fires_per_minute=3)
    c.triggers.clock = lambda: now[0]
    try:
        call(c, "PUT", "/api/v1/namespaces/_/triggers/t1", {})   # no rule: each fire answers 204, charged all the same
        assert [call(c, "POST", "/api/v1/namespaces/_/triggers/t1", {}).status for _ in range(3)] == [204] * 3
        refused = call(c, "POST", "/api/v1/namespaces/_/triggers/t1", {})
        assert refused.status == 429
        assert refused.json()["error"] == "Too many requests in the last minute (count: 4, allowed: 3)."
        # The alarms feeds fire through the same gate: refused too (logged, the schedule stays).
        with pytest.raises(Exception, match="last minute"):
            c.triggers.fire("guest", "t1", {})
        now[0] = 660.0  # the next minute starts from zero
        assert call(c, "POST", "/api/v1/namespaces/_/triggers/t1", {}).status == 204
        assert call(c, "GET", "/").json()["limits"]["triggers_per_minute"] == 3
    finally:
        c.close()
