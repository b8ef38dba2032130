"""The Automations page in real headless Chromium: admins see the routing rules, switch one off
and on from the page (the router reads it at once), the recent runs with each pipeline step's
state and the arrivals waiting to be routed; they create a rule in the editor (the server's
validation refuses a bad parameter first, naming the step), edit it, run it now on a pull and
watch its steps end, and delete it; a clinician gets neither the link nor the data. Seeds a
rule, one run (a pipeline whose step 1 succeeded and step 2 failed) and one pending arrival
straight into Redis; the rule created on the page really runs (dcm2png on a staged study)."""

from __future__ import annotations

import json
import re
import secrets
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def _staged_pull(site, stack) -> str:
    """A study of the seeded PACS pulled (staged) as the UI's user does: the retrieve id."""
    import requests

    def invoke(action, params):
        status, body = site.whisk.invoke(f"radcloud/{action}", {**params, "_principal": {"name": site.user,
                                                                                         "role": "clinician"}})
        assert status == 200, (action, status, body)
        return body

    orthanc_id = requests.post(stack.orthanc_url + "/tools/find", auth=stack.orthanc_auth, timeout=30,
                               json={"Level": "Study", "Query": {"PatientID": "RC100002"}}).json()[0]
    study = requests.get(f"{stack.orthanc_url}/studies/{orthanc_id}", auth=stack.orthanc_auth,
                         timeout=30).json()["MainDicomTags"]["StudyInstanceUID"]
    rid = invoke("retrieve", {"StudyInstanceUID": study})["retrieve_id"]
    deadline = time.monotonic() + 90
    while (state := invoke("retrieve", {"retrieve_id": rid})["state"]) not in ("succeeded", "failed", "partial"):
        assert time.monotonic() < deadline, "the study was never staged"
        time.sleep(0.5)
    assert state == "succeeded", state
    return rid


@pytest.fixture(scope="module")
def seeded(stack, site):
    from radcloud.arrivals.rules import PENDING, RuleStore, expect
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore
    from radcloud.work.pipelines import Pipelines, finalise, validate_steps
    from radcloud.work.reconcile import GATE

    registry, jobs = Registry(), JobStore(stack.redis)
    rules = RuleStore(stack.redis, registry)
    name = f"ui-ct-chest-{secrets.token_hex(3)}"
    rule = rules.save({"name": name, "match": {"modality": "CT", "body_part": "CHEST*"},
                       "pipeline": [{"plugin": "lung-seg", "options": {"push_to_pacs": True}}, {"plugin": "dicom-tags"}]})
    # The deployed reconcile (run by status calls, at most once per gate period) advances open
    # pipelines: one that ran between start() and the seeding below invoked step 1 for real
    # ("shard s00 ... is already invoked", once on a loaded machine). It is held off meanwhile.
    stack.redis.set(GATE, 1, px=30_000)
    try:
        pid = Pipelines(jobs, None).start(validate_steps(rule["pipeline"], registry), {"retrieve": "r0"}, "router",
                                          name=name)
        jobs.update_shard(pid, "s00", {"executor": "job", "activation_id": "j0000000000000000000000a"},
                          allowed=("pending",), event="seeded")
        jobs.shard_finished(pid, "s00", state="succeeded")
        assert jobs.shard_finished(pid, "s01", state="failed", reason="step 2 (dicom-tags): exit 1: no DICOM")
        finalise(jobs, jobs.get(pid))  # the last step's outcome made this caller the finaliser
    finally:
        stack.redis.delete(GATE)
    rules.record_run({"at": 1796500000.0, "arrival_id": "a" * 32, "rule": name, "study_uid": "1.2.3.4",
                      "series": ["1.2.3.4.1"], "steps": ["lung-seg", "dicom-tags"], "state": "started",
                      "retrieve_id": "r0", "pipeline": pid})
    waiting = {"arrival_id": secrets.token_hex(16), "study_uid": f"1.2.826.0.1.{secrets.randbelow(10**9)}",
               "series": []}
    expect(stack.redis, waiting, time.time())   # fired, not taken by a route run yet
    busy = {"arrival_id": secrets.token_hex(16), "study_uid": f"1.2.826.0.2.{secrets.randbelow(10**9)}", "series": []}
    stack.redis.hset(PENDING, busy["arrival_id"], json.dumps({   # as RuleStore.release leaves a refused attempt
        "arrival": busy, "attempts": 1, "first_at": time.time(), "next_at": time.time() + 600,
        "reason": f"rule {name}: OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)"}))
    new = f"ui-made-{secrets.token_hex(3)}"
    retrieve = _staged_pull(site, stack)
    # A pipeline whose step 1 failed (as a plugin crash leaves it): retried from the Jobs page, the
    # deployed status action reruns that step on the same staged study (dcm2png really runs).
    broken = Pipelines(jobs, None).start(validate_steps([{"plugin": "deidentify"},
                                                         {"plugin": "dcm2png", "params": {"thumbnailSize": 0}}],
                                                        registry), {"retrieve": retrieve}, site.admin, name=name)
    jobs.shard_finished(broken, "s00", state="failed", reason="step 1 (deidentify): exit 137: killed")
    Pipelines(jobs, None).advance(broken)   # step 2 not run; the pipeline ends failed
    assert jobs.get(broken)["state"] == "failed"
    yield {"rule": name, "pipeline": pid, "rules": rules, "admin": site.admin, "pending": waiting["study_uid"], "new": new,
           "busy": busy["study_uid"],
           "retrieve": retrieve, "broken": broken, "jobs": jobs}
    stack.redis.hdel(PENDING, waiting["arrival_id"], busy["arrival_id"])
    rules.delete(name)
    if new in {r["name"] for r in rules.list()}:
        rules.delete(new)


@pytest.fixture(scope="module")
def page(site, seeded, run_browser):
    return run_browser("automations.e2e.mjs", {
        "RC_UI": site.ui, "RC_USER": site.user, "RC_PASSWORD": site.password, "RC_ADMIN": site.admin,
        "RC_ADMIN_PASSWORD": site.admin_password, "RC_RULE": seeded["rule"], "RC_PIPELINE": seeded["pipeline"],
        "RC_PENDING": seeded["pending"], "RC_BUSY": seeded["busy"], "RC_NEW_RULE": seeded["new"], "RC_RETRIEVE": seeded["retrieve"], "RC_BROKEN": seeded["broken"]},
        record="automations.json", timeout=300)


def test_a_clinician_gets_no_link_and_a_refusal(page):
    record = page.ok("clinician-refused")
    assert record["link_visible"] is False and "admin" in record["refused"].lower(), record


def test_admins_see_the_rules_and_each_runs_steps(page, seeded):
    record = page.ok("admin-lists-rules-and-runs")
    assert record["link_visible"] is True
    name, match, pipeline, state, switch = record["rule"]
    assert name == seeded["rule"] and "modality CT" in match and "body part CHEST*" in match
    assert pipeline == "1. lung-seg → PACS  2. dicom-tags" and state == "on"
    assert switch.split() == ["Disable", "Edit", "Run", "now", "Delete"]
    assert record["run"][1] == seeded["rule"] and record["run"][3].startswith("Failed")  # plain words (words.js)
    # Reasons in clinical words (radcloud.work.reasons.plain); no exit code, shard or exception class shown.
    shown = record["run_shown"]
    assert "Stopped at step 2 (dicom-tags)." in shown and "The tool stopped with an error" in shown, shown
    [first, second] = record["steps"]
    assert first["state"] == "succeeded" and first["job_link"].endswith("jobs?job=j0000000000000000000000a")
    assert second["state"] == "failed" and "The tool stopped with an error" in second["text"] and second["job_link"] is None
    assert second["details"] == "step 2 (dicom-tags): exit 1: no DICOM"  # the raw reason, behind "Technical details"
    for text in (shown, second["text"]):
        assert not re.search(r"\bexit\b|exit code|\bshards?\b|Error\b|Exception\b", text.replace("Technical details", "")), text


def test_switching_a_rule_off_and_on_from_the_page(page, seeded):
    record = page.ok("disable-and-enable")
    assert record["disabled"] is False and record["off"][3] == "off" and "disabled" in record["toast"]
    assert record["enabled_again"] is True and seeded["rules"].get(seeded["rule"])["enabled"] is True


def test_no_external_requests_and_no_page_errors(page):
    assert page["summary"]["external_requests"] == [] and page["summary"]["page_errors"] == []


def test_the_runs_pipeline_opens_on_the_jobs_page_with_its_steps(page):
    record = page.ok("pipeline-job-page")
    assert record["parts"] == ["Step 1: lung-seg", "Step 2: dicom-tags"], record
    assert [h.endswith("jobs?job=j0000000000000000000000a") for h in record["step_links"]] == [True]
    assert record["retry_buttons"] == 1   # a failed pipeline is retried from its failed step


def test_pending_arrivals_show_attempts_next_try_and_why_in_plain_words(page, seeded):
    study, attempts, next_try, why = page.ok("pending-arrivals")["pending"]
    assert study == seeded["pending"] and attempts == "0"
    assert "(in " in next_try and next_try.endswith(" s)")   # due after the route lease (180 s)
    assert why.startswith("not routed yet: fired, no route run has taken it") and "Last reason:" in why
    # a refused attempt's last reason in plain words (reasons.plain); the raw one behind "Technical details"
    busy = page.ok("pending-arrivals")["busy"]
    assert "Last reason: radcloud was busy" in busy["shown"] and "OpenWhisk" not in busy["shown"], busy
    assert busy["details"].endswith("OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)"), busy


def test_creating_a_rule_is_validated_by_the_server_and_saves_match_and_ordered_steps(page, seeded):
    record = page.ok("create-rule")
    assert record["refused_status"] == 400
    assert record["error"].startswith("pipeline step 1 (dcm2png)") and "thumbnailSize" in record["error"], record
    saved = record["saved"]
    assert saved["name"] == seeded["new"] and saved["match"] == {"modality": "CT"} and saved["enabled"] is True
    assert [s["plugin"] for s in saved["pipeline"]] == ["dicom-tags", "dcm2png"]
    assert saved["pipeline"][1]["params"]["thumbnailSize"] == 0 and record["form_hidden"] is True
    assert record["row"][2] == "1. dicom-tags  2. dcm2png"


def test_editing_a_rule_loads_it_and_saves_the_change(page, seeded):
    record = page.ok("edit-rule")
    assert record["name_readonly"] is True and record["loaded"] == ["dicom-tags", "dcm2png"]
    assert record["saved"]["match"] == {"modality": "CT", "body_part": "CHEST*"}
    assert [s["plugin"] for s in record["saved"]["pipeline"]] == ["dcm2png"]
    assert "body part CHEST*" in record["row"][1] and record["row"][2] == "1. dcm2png"


def test_run_now_starts_the_pipeline_and_the_page_shows_its_steps_end(page, seeded):
    record = page.ok("run-now")
    assert record["started"]["rule"] == seeded["new"] and record["started"]["by"] == seeded["admin"]
    [step] = record["steps"]
    assert step["state"] == "succeeded" and step["text"].startswith("dcm2png"), record
    assert step["job_link"] and "jobs?job=" in step["job_link"]
    assert record["pipeline"].startswith("Finished"), record   # plain words (words.js)
    assert record["seen"][-1] == ["succeeded"]   # seen without a click on Refresh: the page refreshes itself


def test_deleting_a_rule_from_the_page(page, seeded):
    record = page.ok("delete-rule")
    assert record["deleted"] == seeded["new"] and "deleted" in record["toast"]
    assert seeded["new"] not in {r["name"] for r in seeded["rules"].list()}


def test_retry_on_the_jobs_page_reruns_a_failed_pipeline_from_its_failed_step(page, seeded):
    """Deployed: status retry reopens the failed step and the one it stopped; dispatch, the plugin and
    the finaliser carry the pipeline to the end on the same job."""
    record = page.ok("retry-pipeline")
    assert record["button"] == "Retry from the failed step" and "step that failed" in record["toast"]
    assert record["before"] == ["failed", "cancelled"] and record["state"] == "succeeded", record
    assert record["after"] == ["succeeded", "succeeded"] and len(record["step_links"]) == 2
    job = seeded["jobs"].get(seeded["broken"])
    assert job["state"] == "succeeded" and [s.get("attempt", 1) for s in job["shards"]] == [2, 2], job
