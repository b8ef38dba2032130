"""The web sequence pull-and-run works over the web and runs on behalf of its caller, not as ``system``.

Only its first component (query) sees the web request and its token; the
later ones (retrieve, dispatch) are direct invocations, which act as the
``_principal`` argument when present, else as ``system``. A caller's own
``_principal`` must never get through (that would be impersonation).
"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pulled(world):
    study, _series = world.seed_patient("Sequence^Sam", "SEQ000001", "19800101", [2])
    status, _h, body = world.web("pull-and-run", method="POST", token=world.tokens["clinician"],
                                 body={"StudyInstanceUID": study, "_principal": {"name": "admin", "role": "admin"},
                                       "run": {"plugin": "noop", "options": {"force": True}}})
    assert status == 200 and body.get("job_id"), (status, body)
    deadline = time.monotonic() + 60
    job = world.call("status", {"job_id": body["job_id"]})
    while job["state"] not in ("succeeded", "failed", "partial", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = world.call("status", {"job_id": body["job_id"]})
    return job


def test_the_caller_cannot_impersonate_through_the_sequence(pulled):
    assert pulled["owner"] != "admin", pulled


def test_the_job_belongs_to_the_caller_who_can_watch_it(world, pulled):
    assert pulled["state"] == "succeeded", pulled
    assert pulled["owner"] == "clinician", pulled["owner"]
    status, _h, body = world.web("status", path=f"/{pulled['id']}", token=world.tokens["clinician"])
    assert status == 200, body
    status, _h, body = world.web("status", path=f"/{pulled['id']}", token=world.tokens["researcher"])
    assert status == 404, body


def test_the_whole_sequence_is_audited_for_the_caller(world, pulled):
    import json

    entries = world.web("audit", query="limit=500", token=world.tokens["admin"])[2]["entries"]
    mine = [e for e in entries if e.get("who") == "clinician" and pulled["id"] in json.dumps(e)]
    assert any(str(e.get("action", "")).startswith("dispatch") for e in mine), mine
    (dispatched,) = [e for e in mine if e["action"] == "dispatch"]
    staged = [e for e in entries if e.get("who") == "clinician" and e["action"] == "retrieve"
              and e["what"].get("retrieve_id") == dispatched["what"].get("retrieve_id")]
    assert staged and staged[0]["what"]["via"] == "sequence" and staged[0]["what"].get("study_uids"), staged
    assert dispatched["client"] == staged[0]["client"]  # where the web caller came from (unit: test_audit.py)


def test_errors_of_later_components_reach_the_caller_as_json(world):
    status, _h, body = world.web("pull-and-run", method="POST", token=world.tokens["clinician"],
                                 body={"StudyInstanceUID": "1.2.3.999999", "run": {"plugin": "noop"}})
    assert 400 <= status < 500 and body["error"]["message"], (status, body)


def _echo(request, settings, principal):
    return {"params": request.params, "who": principal.name, "role": principal.role}


def test_unwrap_rules_without_sockets():
    from radcloud.api.action import run

    shaped = {"statusCode": 200, "headers": {}, "body": {"items": [], "_principal": {"name": "admin", "role": "admin"}},
              "_principal": {"name": "carol", "role": "clinician", "kind": "user"}, "orthanc_url": "http://o"}
    answer = run(shaped, _echo)
    assert answer["statusCode"] == 200 and answer["body"]["who"] == "carol"  # the caller, not the body's claim
    params = {k: v for k, v in answer["body"]["params"].items() if k != "_principal"}
    assert params == {"items": []} and answer["_principal"]["name"] == "carol"
    refused = run({**shaped, "_principal": {"name": "carol", "role": "clinician"}}, _echo, roles=("admin",))
    assert refused["error"]["statusCode"] == 403 and refused["error"]["body"]["error"]["code"] == "forbidden"
    plain = run({"items": []}, _echo)  # a plain direct invocation: unchanged, as system
    assert plain["who"] == "system" and "statusCode" not in plain
