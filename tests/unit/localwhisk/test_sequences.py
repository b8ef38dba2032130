"""Sequences (ref §5): create-time checks, input merging, short-circuit, the record."""

from __future__ import annotations

import pytest
from lw_fakes import call, make_controller, put_action

from localwhisk.sequences import parse_name

A = "/api/v1/namespaces/_/actions"
ADD = "def main(a):\n    return {'n': a.get('n', 0) + a.get('step', 1), 'seen': sorted(a)}\n"


@pytest.fixture
def ctrl():
    c = make_controller()
    yield c
    c.close()


def seq(ctrl, name, components, query="overwrite=true"):
    return call(ctrl, "PUT", f"{A}/{name}", {"exec": {"kind": "sequence", "components": components}}, query=query)


@pytest.mark.parametrize("name, expected", [
    ("/guest/pkg/a", ("guest", "pkg", "a")), ("/_/a", ("guest", None, "a")),
    ("pkg/a", ("guest", "pkg", "a")), ("a", ("guest", None, "a")), ("ns/pkg/a", ("ns", "pkg", "a")),
])
def test_parse_name(name, expected):
    assert parse_name(name, "guest") == expected


def test_output_flows_into_next_merged_with_its_defaults(ctrl):
    call(ctrl, "PUT", "/api/v1/namespaces/_/packages/p", {})
    put_action(ctrl, "p/add", ADD)
    put_action(ctrl, "p/add10", ADD, parameters=[{"key": "step", "value": 10}, {"key": "n", "value": -99}])
    created = seq(ctrl, "p/chain", ["/_/p/add", "/_/p/add10"])
    assert created.status == 200
    assert created.json()["exec"]["components"] == ["/guest/p/add", "/guest/p/add10"]
    resp = call(ctrl, "POST", f"{A}/p/chain", {"n": 1}, query="blocking=true")
    rec = resp.json()
    # 1 + 1 = 2, then the previous result (n=2) wins over add10's default n, step=10 comes from defaults
    assert resp.status == 200 and rec["response"]["result"]["n"] == 12
    ann = {a["key"]: a["value"] for a in rec["annotations"]}
    assert ann["topmost"] is True and ann["kind"] == "sequence" and ann["path"] == "guest/p/chain"
    assert "waitTime" in ann
    full = call(ctrl, "GET", f"/api/v1/namespaces/_/activations/{rec['activationId']}").json()
    assert len(full["logs"]) == 2
    durations = 0
    for cid in full["logs"]:
        comp = call(ctrl, "GET", f"/api/v1/namespaces/_/activations/{cid}").json()
        assert comp["cause"] == rec["activationId"]
        assert {"key": "causedBy", "value": "sequence"} in comp["annotations"]
        durations += comp["duration"]
    assert full["duration"] == durations


def test_error_short_circuits(ctrl):
    put_action(ctrl, "fail", "def main(a):\n    return {'error': 'stop here'}\n")
    put_action(ctrl, "never", "def main(a):\n    raise SystemExit('must not run')\n")
    seq(ctrl, "s", ["/_/fail", "/_/never"])
    before = len(ctrl.runtime.calls)
    resp = call(ctrl, "POST", f"{A}/s", {}, query="blocking=true")
    assert resp.status == 502 and resp.json()["response"]["result"] == {"error": "stop here"}
    assert len(ctrl.runtime.calls) == before + 1


def test_missing_component_is_400(ctrl):
    resp = seq(ctrl, "s", ["/_/ghost"])
    assert resp.status == 400 and resp.json()["error"] == "Sequence component does not exist."


def test_self_reference_and_indirect_cycle_are_400(ctrl):
    put_action(ctrl, "a", ADD)
    seq(ctrl, "s1", ["/_/a"])
    seq(ctrl, "s2", ["/_/s1"])
    assert seq(ctrl, "s1", ["/_/s2"]).json()["error"] == "Sequence may not refer to itself."
    assert seq(ctrl, "s3", ["/_/a", "/_/s3"]).status == 400  # self reference, although s3 does not exist yet


def test_length_limit_counts_nested_sequences_inlined(ctrl):
    put_action(ctrl, "a", ADD)
    assert seq(ctrl, "s25", ["/_/a"] * 25).status == 200
    assert seq(ctrl, "s50", ["/_/s25", "/_/s25"]).status == 200
    too_long = seq(ctrl, "s51", ["/_/s50", "/_/a"])
    assert too_long.status == 400 and too_long.json()["error"] == "Too many actions in the sequence."


def test_nested_sequence_runs(ctrl):
    put_action(ctrl, "a", ADD)
    seq(ctrl, "inner", ["/_/a", "/_/a"])
    seq(ctrl, "outer", ["/_/inner", "/_/a"])
    res = call(ctrl, "POST", f"{A}/outer", {"n": 0}, query="blocking=true&result=true")
    assert res.json()["n"] == 3


def test_component_deleted_after_create_gives_application_error(ctrl):
    put_action(ctrl, "a", ADD)
    seq(ctrl, "s", ["/_/a"])
    call(ctrl, "DELETE", f"{A}/a")
    resp = call(ctrl, "POST", f"{A}/s", {}, query="blocking=true&result=true")
    assert resp.status == 502 and resp.json() == {"error": "Sequence component does not exist."}
