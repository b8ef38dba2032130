"""The Automations page in real headless Chromium: admins see the routing rules, switch one off
and on from the page (the router reads it at once), and the recent runs with each pipeline
step's state; a clinician gets neither the link nor the data. Seeds a rule and one run (a
pipeline whose step 1 succeeded and step 2 failed) straight into Redis: no plugin runs here
(tests/integration/test_retrieve_whisk.py runs the walk itself)."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture(scope="module")
def seeded(stack):
    from radcloud.arrivals.rules import RuleStore
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore
    from radcloud.work.pipelines import Pipelines, finalise, validate_steps

    registry, jobs = Registry(), JobStore(stack.redis)
    rules = RuleStore(stack.redis, registry)
    name = f"ui-ct-chest-{secrets.token_hex(3)}"
    rule = rules.save({"name": name, "match": {"modality": "CT", "body_part": "CHEST*"},
                       "pipeline": [{"plugin": "lung-seg", "options": {"push_to_pacs": True}}, {"plugin": "dicom-tags"}]})
    pid = Pipelines(jobs, None).start(validate_steps(rule["pipeline"], registry), {"retrieve": "r0"}, "router", name=name)
    jobs.update_shard(pid, "s00", {"executor": "job", "activation_id": "j0000000000000000000000a"},
                      allowed=("pending",), event="seeded")
    jobs.shard_finished(pid, "s00", state="succeeded")
    assert jobs.shard_finished(pid, "s01", state="failed", reason="step 2 (dicom-tags): exit 1: no DICOM")
    finalise(jobs, jobs.get(pid))  # the last step's outcome made this caller the finaliser
    rules.record_run({"at": 1796500000.0, "arrival_id": "a" * 32, "rule": name, "study_uid": "1.2.3.4",
                      "series": ["1.2.3.4.1"], "steps": ["lung-seg", "dicom-tags"], "state": "started",
                      "retrieve_id": "r0", "pipeline": pid})
    yield {"rule": name, "pipeline": pid, "rules": rules}
    rules.delete(name)


@pytest.fixture(scope="module")
def page(site, seeded, run_browser):
    return run_browser("automations.e2e.mjs", {
        "RC_UI": site.ui, "RC_USER": site.user, "RC_PASSWORD": site.password, "RC_ADMIN": site.admin,
        "RC_ADMIN_PASSWORD": site.admin_password, "RC_RULE": seeded["rule"], "RC_PIPELINE": seeded["pipeline"]},
        record="automations.json", timeout=120)


def test_a_clinician_gets_no_link_and_a_refusal(page):
    record = page.ok("clinician-refused")
    assert record["link_visible"] is False and "admin" in record["refused"].lower(), record


def test_admins_see_the_rules_and_each_runs_steps(page, seeded):
    record = page.ok("admin-lists-rules-and-runs")
    assert record["link_visible"] is True
    name, match, pipeline, state, switch = record["rule"]
    assert name == seeded["rule"] and "modality CT" in match and "body part CHEST*" in match
    assert pipeline == "1. lung-seg → PACS  2. dicom-tags" and state == "on" and switch == "Disable"
    assert record["run"][1] == seeded["rule"] and record["run"][3].startswith("Failed")  # plain words (words.js)
    assert "stopped at step 2 (dicom-tags)" in record["run"][3]
    [first, second] = record["steps"]
    assert first["state"] == "succeeded" and first["job_link"].endswith("jobs?job=j0000000000000000000000a")
    assert second["state"] == "failed" and "exit 1: no DICOM" in second["text"] and second["job_link"] is None


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
    assert record["retry_buttons"] == 0   # a pipeline is retried step by step (status answers 409)
