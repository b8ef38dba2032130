"""The controller's REST API (ref §1) through Controller.handle, with a FakeRuntime."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from lw_fakes import ECHO, FakeRuntime, call, make_controller, put_action

from localwhisk.runtime.model import RunOutcome
from localwhisk.store import Store

A = "/api/v1/namespaces/_/actions"


@pytest.fixture
def ctrl():
    c = make_controller()
    yield c
    c.close()


def test_root_lists_python_runtimes_and_blackbox(ctrl):
    resp = call(ctrl, "GET", "/", auth=False)
    assert resp.status == 200
    runtimes = resp.json()["runtimes"]
    kinds = {r["kind"]: r["default"] for r in runtimes["python"]}
    assert kinds == {"python:3.10": True, "python:3.11": False, "python:3.12": False}
    assert runtimes["blackbox"][0]["kind"] == "blackbox"


def test_namespaces_requires_auth_and_lists_guest(ctrl):
    assert call(ctrl, "GET", "/api/v1/namespaces").json() == ["guest"]
    missing = call(ctrl, "GET", "/api/v1/namespaces", auth=False)
    assert missing.status == 401
    body = missing.json()
    assert set(body) == {"error", "code"} and re.fullmatch("[0-9a-f]{32}", body["code"])
    wrong = call(ctrl, "GET", "/api/v1/namespaces", auth=False,
                 headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()})
    assert wrong.status == 401 and wrong.json()["error"] == "The supplied authentication is invalid"


def test_other_namespace_is_forbidden(ctrl):
    assert call(ctrl, "GET", "/api/v1/namespaces/someone/actions").status == 403


def test_put_action_create_then_409_then_overwrite_bumps_version(ctrl):
    body = {"exec": {"kind": "python:3.11", "code": ECHO}}
    first = call(ctrl, "PUT", f"{A}/hello", body)
    assert first.status == 200
    doc = first.json()
    assert doc["namespace"] == "guest" and doc["version"] == "0.0.1"
    assert doc["exec"] == {"kind": "python:3.11", "code": ECHO, "binary": False}
    assert doc["annotations"] == [{"key": "provide-api-key", "value": False}, {"key": "exec", "value": "python:3.11"}]
    assert doc["limits"] == {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
    again = call(ctrl, "PUT", f"{A}/hello", body)
    assert again.status == 409 and again.json()["error"] == "resource already exists"
    upd = call(ctrl, "PUT", f"{A}/hello", {"parameters": [{"key": "a", "value": 1}]}, query="overwrite=true")
    assert upd.status == 200
    assert upd.json()["version"] == "0.0.2" and upd.json()["exec"]["code"] == ECHO
    assert upd.json()["parameters"] == [{"key": "a", "value": 1}]
    assert ctrl.runtime.forgotten[-1] == "/guest/hello"


def test_put_action_user_annotation_wins_but_exec_is_system(ctrl):
    doc = put_action(ctrl, "k", ECHO, annotations=[{"key": "provide-api-key", "value": True},
                                                    {"key": "exec", "value": "bogus"}])
    assert {"key": "provide-api-key", "value": True} in doc["annotations"]
    assert {"key": "exec", "value": "python:3.11"} in doc["annotations"]


def test_binary_code_is_detected_by_the_server(ctrl):
    code = base64.b64encode(b"PK\x03\x04 zip bytes").decode()
    resp = call(ctrl, "PUT", f"{A}/zipped", {"exec": {"kind": "python:3.11", "code": code, "binary": False}})
    assert resp.json()["exec"]["binary"] is True


@pytest.mark.parametrize("body, message", [
    ({"exec": {"kind": "python:2", "code": ECHO}}, "kind 'python:2'"),
    ({}, "exec undefined"),
    ({"exec": {"kind": "python:3.11", "code": ECHO}, "limits": {"timeout": 50}},
     "Timeout 50 milliseconds below allowed threshold of 100 milliseconds."),
    ({"exec": {"kind": "python:3.11", "code": ECHO}, "limits": {"memory": 1024}},
     "Memory 1024 MB exceeds allowed threshold of 512 MB."),
    ({"exec": {"kind": "blackbox", "code": ECHO}}, "blackbox 'image' is required"),
    ({"exec": {"kind": "python:3.11", "code": ECHO}, "limits": {"instances": 31}},
     "Max action instance concurrency must not exceed your namespace concurrency of 30."),
    ({"exec": {"kind": "python:3.11", "code": ECHO}, "limits": {"instances": -1}},
     "Action container concurrency must be greater than or equal to 0."),
])
def test_put_action_rejects_bad_bodies(ctrl, body, message):
    resp = call(ctrl, "PUT", f"{A}/bad", body)
    assert resp.status == 400 and message in resp.json()["error"]


def test_malformed_json_is_400(ctrl):
    resp = call(ctrl, "PUT", f"{A}/bad", raw=b"{nope")
    assert resp.status == 400 and resp.json()["error"].startswith("The request content was malformed")


def test_python_default_kind_resolves(ctrl):
    doc = put_action(ctrl, "d", ECHO, kind="python:default")
    assert doc["exec"]["kind"] == "python:3.10"


def test_get_action_with_and_without_code_and_delete(ctrl):
    put_action(ctrl, "g", ECHO)
    assert call(ctrl, "GET", f"{A}/g").json()["exec"]["code"] == ECHO
    assert "code" not in call(ctrl, "GET", f"{A}/g", query="code=false").json()["exec"]
    assert call(ctrl, "DELETE", f"{A}/g").json()["name"] == "g"
    assert call(ctrl, "GET", f"{A}/g").status == 404
    missing = call(ctrl, "DELETE", f"{A}/g")
    assert missing.status == 404 and missing.json()["error"] == "The requested resource does not exist."


def test_list_actions_paging_count_and_packaged_namespace(ctrl):
    call(ctrl, "PUT", "/api/v1/namespaces/_/packages/pkg", {})
    for i in range(35):
        put_action(ctrl, f"a{i:02d}", ECHO)
    put_action(ctrl, "pkg/inner", ECHO)
    default = call(ctrl, "GET", A).json()
    assert len(default) == 30 and "code" not in default[0]["exec"] and set(default[0]["exec"]) == {"binary"}
    assert call(ctrl, "GET", A, query="count=true").json() == {"actions": 36}
    everything = call(ctrl, "GET", A, query="limit=200").json()
    assert len(everything) == 36
    assert {"guest/pkg"} == {a["namespace"] for a in everything if a["name"] == "inner"}
    assert len(call(ctrl, "GET", A, query="limit=10&skip=30").json()) == 6
    assert call(ctrl, "GET", A, query="limit=201").status == 400


def test_packages_crud_parameters_and_force_delete(ctrl):
    P = "/api/v1/namespaces/_/packages/tools"
    created = call(ctrl, "PUT", P, {"parameters": [{"key": "region", "value": "eu"}]})
    assert created.status == 200 and created.json()["parameters"] == [{"key": "region", "value": "eu"}]
    assert call(ctrl, "PUT", P, {}).status == 409
    assert call(ctrl, "PUT", P, {"parameters": [{"key": "region", "value": "us"}]}, query="overwrite=true").status == 200
    put_action(ctrl, "tools/echo", ECHO)
    got = call(ctrl, "GET", P).json()
    assert got["parameters"] == [{"key": "region", "value": "us"}] and [a["name"] for a in got["actions"]] == ["echo"]
    assert [p["name"] for p in call(ctrl, "GET", "/api/v1/namespaces/_/packages").json()] == ["tools"]
    # package parameters reach the action, then action params, then the invoke payload wins
    put_action(ctrl, "tools/echo", ECHO, parameters=[{"key": "who", "value": "action"}])
    res = call(ctrl, "POST", f"{A}/tools/echo", {"who": "caller"}, query="blocking=true&result=true").json()
    assert res == {"region": "us", "who": "caller"}
    not_empty = call(ctrl, "DELETE", P)
    assert not_empty.status == 409 and "Package not empty" in not_empty.json()["error"]
    assert call(ctrl, "DELETE", P, query="force=true").status == 200
    assert call(ctrl, "GET", f"{A}/tools/echo").status == 404


def test_action_into_missing_package_is_404(ctrl):
    resp = call(ctrl, "PUT", f"{A}/nopkg/x", {"exec": {"kind": "python:3.11", "code": ECHO}})
    assert resp.status == 404


def test_blocking_invoke_returns_activation_with_header_and_no_logs(ctrl):
    put_action(ctrl, "echo", ECHO)
    resp = call(ctrl, "POST", f"{A}/echo", {"x": 1}, query="blocking=true")
    assert resp.status == 200
    rec = resp.json()
    assert resp.header("x-openwhisk-activation-id") == rec["activationId"]
    assert re.fullmatch("[0-9a-f]{32}", rec["activationId"])
    assert rec["response"] == {"status": "success", "success": True, "result": {"x": 1}, "size": 7}
    assert rec["logs"] == []
    ann = {a["key"]: a["value"] for a in rec["annotations"]}
    assert ann["path"] == "guest/echo" and ann["kind"] == "python:3.11"
    assert ann["limits"] == {"concurrency": 1, "logs": 10, "memory": 256, "timeout": 60000}
    assert ann["initTime"] == 1 and "waitTime" in ann and ann["timeout"] is False
    second = call(ctrl, "POST", f"{A}/echo", {}, query="blocking=true").json()
    assert "initTime" not in {a["key"] for a in second["annotations"]}
    fetched = call(ctrl, "GET", f"/api/v1/namespaces/_/activations/{rec['activationId']}").json()
    assert fetched["logs"] == ["2024-01-01T00:00:00.000000000Z stdout: ran"]


@pytest.mark.parametrize("code, status, result", [
    ("def main(a):\n    return {'error': 'boom'}\n", 502, {"error": "boom"}),
    ("def main(a):\n    raise ValueError('bad')\n", 502, {"error": "bad"}),
    ("def main(a):\n    return 3\n", 502, None),
    ("def main(a):\n    return [1, 2]\n", 200, [1, 2]),
])
def test_invoke_status_by_outcome(ctrl, code, status, result):
    put_action(ctrl, "o", code)
    resp = call(ctrl, "POST", f"{A}/o", {}, query="blocking=true&result=true")
    assert resp.status == status
    assert resp.header("x-openwhisk-activation-id")
    if result is not None:
        assert resp.json() == result


def test_whisk_error_is_500():
    class Broken(FakeRuntime):
        def run(self, *a, **kw):
            raise RuntimeError("runtime exploded")
    c = make_controller(Broken())
    put_action(c, "w", ECHO)
    resp = call(c, "POST", f"{A}/w", {}, query="blocking=true")
    assert resp.status == 500 and resp.json()["response"]["status"] == "whisk internal error"


def test_non_blocking_returns_202_at_once_then_record_appears(ctrl):
    ctrl.runtime.gate.clear()
    put_action(ctrl, "slow", "def main(a):\n    GATE.wait(5)\n    return {'done': True}\n")
    resp = call(ctrl, "POST", f"{A}/slow", {})
    assert resp.status == 202
    aid = resp.json()["activationId"]
    assert resp.json() == {"activationId": aid} and resp.header("x-openwhisk-activation-id") == aid
    assert call(ctrl, "GET", f"/api/v1/namespaces/_/activations/{aid}").status == 404  # until complete
    ctrl.runtime.gate.set()
    for _ in range(200):
        got = call(ctrl, "GET", f"/api/v1/namespaces/_/activations/{aid}/result")
        if got.status == 200:
            break
        time.sleep(0.01)
    assert got.json() == {"status": "success", "success": True, "result": {"done": True}, "size": 13}


def test_blocking_wait_runs_out_gives_202(ctrl):
    ctrl.runtime.gate.clear()
    put_action(ctrl, "slow", "def main(a):\n    GATE.wait(5)\n    return {}\n")
    resp = call(ctrl, "POST", f"{A}/slow", {}, query="blocking=true&timeout=50")
    ctrl.runtime.gate.set()
    assert resp.status == 202 and set(resp.json()) == {"activationId"}


@pytest.mark.parametrize("timeout", ["0", "60001", "abc"])
def test_invoke_timeout_out_of_range_is_400(ctrl, timeout):
    put_action(ctrl, "echo", ECHO)
    assert call(ctrl, "POST", f"{A}/echo", {}, query=f"blocking=true&timeout={timeout}").status == 400


def test_payload_over_1mb_is_413(ctrl):
    put_action(ctrl, "echo", ECHO)
    big = json.dumps({"x": "a" * (1024 * 1024)}).encode()
    resp = call(ctrl, "POST", f"{A}/echo", raw=big, query="blocking=true")
    assert resp.status == 413 and "larger than allowed" in resp.json()["error"]


def test_invoke_missing_action_is_404(ctrl):
    assert call(ctrl, "POST", f"{A}/nothing", {}, query="blocking=true").status == 404


def test_final_parameters_cannot_be_overridden(ctrl):
    put_action(ctrl, "f", ECHO, parameters=[{"key": "secret", "value": "s"}],
               annotations=[{"key": "final", "value": True}])
    resp = call(ctrl, "POST", f"{A}/f", {"secret": "mine"}, query="blocking=true")
    assert resp.status == 400
    assert resp.json()["error"] == "Request defines parameters that are not allowed (e.g., reserved properties)."
    assert call(ctrl, "POST", f"{A}/f", {"other": 1}, query="blocking=true").status == 200


def test_array_payload_replaces_arguments_and_array_result_comes_back_bare(ctrl):
    put_action(ctrl, "arr", ECHO, parameters=[{"key": "p", "value": 1}])
    assert call(ctrl, "POST", f"{A}/arr", [1, 2], query="blocking=true&result=true").json() == [1, 2]
    assert call(ctrl, "POST", f"{A}/arr", [3], query="blocking=true").json() == [3]


def test_init_parameters_go_to_env_not_args(ctrl):
    put_action(ctrl, "i", ECHO, parameters=[{"key": "TOKEN", "value": "t", "init": True}, {"key": "n", "value": 2}])
    assert call(ctrl, "POST", f"{A}/i", {}, query="blocking=true&result=true").json() == {"n": 2}
    assert ctrl.runtime.calls[-1]["action"].init_env == {"TOKEN": "t"}


def test_runtime_receives_action_code_and_limits(ctrl):
    put_action(ctrl, "r", ECHO, limits={"timeout": 1000, "memory": 128},
               annotations=[{"key": "provide-api-key", "value": True}])
    call(ctrl, "POST", f"{A}/r", {}, query="blocking=true")
    c = ctrl.runtime.calls[-1]
    assert c["action"].fqn == "/guest/r" and c["action"].provide_api_key is True
    assert c["limits"].timeout_ms == 1000 and c["limits"].memory_mb == 128
    assert c["namespace"] == "guest" and c["api_key"].startswith("23bc46b1")


def test_instances_limit_is_stored_kept_on_update_and_given_to_the_runtime(ctrl):
    put_action(ctrl, "n", ECHO, limits={"instances": 2})
    assert call(ctrl, "GET", f"{A}/n").json()["limits"]["instances"] == 2
    # OpenWhisk's update keeps an instances limit the body leaves out (Actions.scala)
    call(ctrl, "PUT", f"{A}/n", {"limits": {"timeout": 1000}}, query="overwrite=true")
    assert call(ctrl, "GET", f"{A}/n").json()["limits"] == {"timeout": 1000, "memory": 256, "logs": 10,
                                                            "concurrency": 1, "instances": 2}
    call(ctrl, "POST", f"{A}/n", {}, query="blocking=true")
    assert ctrl.runtime.calls[-1]["limits"].instances == 2
    put_action(ctrl, "free", ECHO)  # absent by default: only the namespace's limit bounds it
    assert "instances" not in call(ctrl, "GET", f"{A}/free").json()["limits"]


@pytest.mark.parametrize("annotations, network", [
    ([], True),  # OpenWhisk actions have network
    ([{"key": "sandbox-network", "value": True}], True),
    ([{"key": "sandbox-network", "value": False}], False),
    ([{"key": "sandbox-network", "value": "false"}], False),
    ([{"key": "sandbox-network", "value": 0}], False),
])
def test_sandbox_network_annotation_decides_the_actions_network(ctrl, annotations, network):
    put_action(ctrl, "net", ECHO, annotations=annotations)
    call(ctrl, "POST", f"{A}/net", {}, query="blocking=true")
    assert ctrl.runtime.calls[-1]["action"].network is network


class FixedOutcomes(FakeRuntime):
    """Returns the outcomes given, in order, to check how the record is built from them."""

    def __init__(self, *outcomes: RunOutcome) -> None:
        super().__init__()
        self.outcomes = list(outcomes)

    def run(self, action, limits, value, **kw):
        return self.outcomes.pop(0)


def test_cold_start_duration_includes_init_time_as_openwhisk():
    cold = RunOutcome(status="success", result={}, logs=[], start_ms=10_000, end_ms=10_030, duration_ms=30,
                      init_time_ms=200, wait_time_ms=0, timeout=False)
    warm = RunOutcome(status="success", result={}, logs=[], start_ms=20_000, end_ms=20_030, duration_ms=30,
                      init_time_ms=None, wait_time_ms=0, timeout=False)
    failed_init = RunOutcome(status="action developer error", result={"error": "x"}, logs=[], start_ms=30_000,
                             end_ms=30_000, duration_ms=0, init_time_ms=150, wait_time_ms=0, timeout=False)
    c = make_controller(runtime=FixedOutcomes(cold, warm, failed_init))
    put_action(c, "t", ECHO)
    records = [call(c, "POST", f"{A}/t", {}, query="blocking=true").json() for _ in range(3)]
    # ContainerProxy: the interval starts when init started; initTime is its share
    assert [(r["start"], r["end"], r["duration"]) for r in records] == [
        (9_800, 10_030, 230), (20_000, 20_030, 30), (29_850, 30_000, 150)]
    assert [{a["key"]: a["value"] for a in r["annotations"]}.get("initTime") for r in records] == [200, None, 150]
    c.close()


def test_namespace_concurrency_cap_gives_429():
    c = make_controller(max_concurrent=2)
    c.runtime.gate.clear()
    put_action(c, "slow", "def main(a):\n    GATE.wait(5)\n    return {}\n")
    assert call(c, "POST", f"{A}/slow", {}).status == 202
    assert call(c, "POST", f"{A}/slow", {}).status == 202
    third = call(c, "POST", f"{A}/slow", {})
    c.runtime.gate.set()
    assert third.status == 429
    # OpenWhisk's body and headers exactly: the count in flight, a transaction id, no Retry-After
    assert third.json()["error"] == "Too many concurrent requests in flight (count: 2, allowed: 2)."
    assert set(third.json()) == {"error", "code"} and third.header("retry-after") is None
    assert third.header("x-openwhisk-activation-id") is None  # refused before an activation existed
    c.close()


def test_activations_list_filters_and_shapes(ctrl):
    put_action(ctrl, "one", ECHO)
    call(ctrl, "PUT", "/api/v1/namespaces/_/packages/p", {})
    put_action(ctrl, "p/two", ECHO)
    ids = [call(ctrl, "POST", f"{A}/one", {}, query="blocking=true").json()["activationId"] for _ in range(3)]
    call(ctrl, "POST", f"{A}/p/two", {}, query="blocking=true")
    L = "/api/v1/namespaces/_/activations"
    listed = call(ctrl, "GET", L).json()
    assert len(listed) == 4 and "response" not in listed[0] and listed[0]["statusCode"] == 0
    assert {a["activationId"] for a in call(ctrl, "GET", L, query="name=one").json()} == set(ids)
    assert len(call(ctrl, "GET", L, query="name=p/two").json()) == 1
    assert call(ctrl, "GET", L, query="count=true").json() == {"activations": 4}
    assert len(call(ctrl, "GET", L, query="limit=2&skip=3").json()) == 1
    docs = call(ctrl, "GET", L, query="docs=true&limit=1").json()
    assert "response" in docs[0]
    assert call(ctrl, "GET", L, query="since=99999999999999").json() == []
    assert call(ctrl, "GET", L, query="upto=1").json() == []
    logs = call(ctrl, "GET", f"{L}/{ids[0]}/logs").json()
    assert logs == {"logs": ["2024-01-01T00:00:00.000000000Z stdout: ran"]}
    assert call(ctrl, "GET", f"{L}/{'0' * 32}").status == 404


def test_activations_list_since_upto_count_docs_as_openwhisk_store_tests():
    """The cases of OpenWhisk's ActivationStoreBehaviorBase: 10 activations started at 1000..1090 ms."""
    outcomes = [RunOutcome(status="success", result={}, logs=[], start_ms=t, end_ms=t + 5, duration_ms=5,
                           init_time_ms=None, wait_time_ms=0, timeout=False) for t in range(1000, 1100, 10)]
    c = make_controller(runtime=FixedOutcomes(*outcomes))
    put_action(c, "a", ECHO)
    for _ in outcomes:
        call(c, "POST", f"{A}/a", {}, query="blocking=true")
    L = "/api/v1/namespaces/_/activations"

    def starts(query):
        return [r["start"] for r in call(c, "GET", L, query=query).json()]

    assert starts("since=1060") == [1090, 1080, 1070, 1060]  # inclusive, newest first
    assert starts("upto=1060") == list(range(1060, 999, -10))  # inclusive
    assert starts("since=1030&upto=1060") == [1060, 1050, 1040, 1030]
    assert starts("name=a&since=1030&upto=1060") == [1060, 1050, 1040, 1030]
    assert starts("skip=5") == [1040, 1030, 1020, 1010, 1000]
    assert starts("limit=5") == [1090, 1080, 1070, 1060, 1050]
    assert call(c, "GET", L, query="count=true&since=1060").json() == {"activations": 4}
    assert call(c, "GET", L, query="count=true&skip=4").json() == {"activations": 6}
    assert call(c, "GET", L, query="count=true&skip=1000").json() == {"activations": 0}
    docs = call(c, "GET", L, query="docs=true&limit=1").json()[0]
    assert docs["response"]["status"] == "success" and "logs" in docs and "statusCode" not in docs
    bad = call(c, "GET", L, query="docs=true&count=true")
    assert bad.status == 400 and bad.json()["error"] == "The parameter 'docs' is not permitted with 'count'."
    bad = call(c, "GET", L, query="since=yesterday")
    assert bad.status == 400 and bad.json()["error"] == "Parameter is not a valid value for epoch seconds: yesterday"
    bad = call(c, "GET", L, query="name=a/b/c")
    assert bad.status == 400 and "'package-name/simple' name: a/b/c" in bad.json()["error"]
    c.close()


def test_unknown_route_is_404_and_bad_method_405(ctrl):
    assert call(ctrl, "GET", "/api/v1/namespaces/_/bogus").status == 404
    assert call(ctrl, "PATCH", f"{A}/x").status == 405


def test_entities_and_activations_survive_restart(tmp_path):
    c1 = make_controller(store=Store(tmp_path / "lw.db"))
    put_action(c1, "echo", ECHO)
    aid = call(c1, "POST", f"{A}/echo", {"a": 1}, query="blocking=true").json()["activationId"]
    c1.close()
    c1.store.close()
    c2 = make_controller(store=Store(tmp_path / "lw.db"))
    assert call(c2, "GET", f"{A}/echo").status == 200
    assert call(c2, "GET", f"/api/v1/namespaces/_/activations/{aid}/result").json()["result"] == {"a": 1}
    c2.close()


def test_in_flight_activation_ends_as_whisk_error_after_restart(tmp_path):
    c1 = make_controller(store=Store(tmp_path / "lw.db"))
    c1.runtime.gate.clear()
    put_action(c1, "slow", "def main(a):\n    GATE.wait(5)\n    return {}\n")
    aid = call(c1, "POST", f"{A}/slow", {}).json()["activationId"]
    for _ in range(200):  # wait until the placeholder record is written
        if c1.store.in_flight():
            break
        time.sleep(0.005)
    # the "crash": a second controller opens the same store while the first is still stuck
    c2 = make_controller(store=Store(tmp_path / "lw.db"))
    assert c2.recovered == 1
    rec = call(c2, "GET", f"/api/v1/namespaces/_/activations/{aid}").json()
    assert rec["response"]["status"] == "whisk internal error" and rec["end"] >= rec["start"]
    c1.runtime.gate.set()
    c1.close()
    c2.close()
