"""The ``radcloud`` CLI end to end: real stack + localwhisk, radcloud deployed, every call over HTTP.

query → pull → run → status --watch → results --download (every MD5
checked against the result manifest), plus the exit codes scripts rely on.
The commands run as subprocesses exactly as a user types them, against a
stack in a temporary state dir on ephemeral ports.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from clistack import PASSWORD, RADCLOUD, USER, clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def state(cli_stack):
    yield cli_stack.state
    print("\nCLI latencies (s):", json.dumps(TIMINGS))  # for the report: pytest -s shows them


def radcloud(state: Path, *args: str, stdin: str | None = None, label: str | None = None) -> subprocess.CompletedProcess:
    env = clean_env()
    started = time.perf_counter()
    done = subprocess.run([*RADCLOUD, *args, "--state-dir", str(state)], input=stdin, capture_output=True,
                          text=True, env=env, timeout=240)
    if label:
        TIMINGS[label] = round(time.perf_counter() - started, 2)
    return done


def ok_json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_deploy_login_query_pull_run_watch_download(state, tmp_path):
    # (the fixture deployed with `radcloud deploy --local`; a second deploy is idempotent)
    deployed = ok_json(radcloud(state, "deploy", "--local", "--json", label="deploy --local"))
    assert "plugin-dcm2png" in deployed["actions"] and "query" in deployed["actions"]

    # Before login: exit 4 and what to do.
    denied = radcloud(state, "query", "--patient-id", "JOBS1")
    assert denied.returncode == 4 and "radcloud login" in denied.stderr

    login = radcloud(state, "login", "--user", USER, "--password-stdin", stdin=PASSWORD + "\n", label="login")
    assert login.returncode == 0, login.stderr
    token = state / "token.json"
    assert token.stat().st_mode & 0o777 == 0o600

    found = ok_json(radcloud(state, "query", "--patient-id", "JOBS1", "--json", label="query"))
    assert found["total"] == 1 and found["items"][0]["PatientID"] == "JOBS1"
    study = found["items"][0]["StudyInstanceUID"]

    pulled = ok_json(radcloud(state, "pull", study, "--json", "--timeout", "120", label="pull"))
    assert pulled["state"] == "succeeded" and pulled["instances_done"] == 5

    started = ok_json(radcloud(state, "run", "dcm2png", "--retrieve", pulled["retrieve_id"],
                               "--param", "thumbnailSize=0", "--json", label="run"))
    job = started["job_id"]
    final = ok_json(radcloud(state, "status", job, "--watch", "--json", "--timeout", "150", label="status --watch"))
    assert final["state"] == "succeeded" and final["progress"]["shards_total"] == 2

    manifest = ok_json(radcloud(state, "results", job, "--json", label="results"))
    pngs = [o for o in manifest["outputs"] if o["content_type"] == "image/png"]
    assert len(pngs) == 5
    dest = tmp_path / "out"
    report = ok_json(radcloud(state, "results", job, "--download", str(dest), "--json", label="results --download"))
    assert report["files"] == len(manifest["outputs"]) and report["md5_verified"] is True
    for out in manifest["outputs"]:
        data = (dest / out["name"]).read_bytes()
        assert len(data) == out["size"] and hashlib.md5(data).hexdigest() == out["md5"], out["name"]
    assert (dest / pngs[0]["name"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    listed = radcloud(state, "status", label="status (list)")
    assert listed.returncode == 0 and job in listed.stdout  # the table shows full job ids
    # Identical re-run: a cache hit that answers at once.
    again = ok_json(radcloud(state, "run", "dcm2png", "--retrieve", pulled["retrieve_id"],
                             "--param", "thumbnailSize=0", "--json", label="run (cached)"))
    assert again["cached"] is True and again["results_of"] == job


def test_a_heavy_plugin_runs_on_slurm_from_the_cli(state):
    """ct-resample asks more than an action has: the deployed dispatch routes it to the stack's Slurm."""
    login = radcloud(state, "login", "--user", USER, "--password-stdin", stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    study = ok_json(radcloud(state, "query", "--patient-id", "JOBS1", "--json"))["items"][0]["StudyInstanceUID"]
    pulled = ok_json(radcloud(state, "pull", study, "--json", "--timeout", "120"))
    started = ok_json(radcloud(state, "run", "ct-resample", "--retrieve", pulled["retrieve_id"], "--param",
                               "spacing=2", "--force", "--json", label="run (slurm)"))
    watched = radcloud(state, "status", started["job_id"], "--watch", "--json", "--timeout", "150",
                       label="status --watch (slurm)")
    final = json.loads(watched.stdout)
    shards = [(s["state"], s.get("executor"), s.get("reason"), s.get("stderr_tail")) for s in final["shards"]]
    assert watched.returncode == 0, (final["state"], final.get("reason"), shards)
    assert final["state"] == "succeeded", final
    assert final["options"]["executor"] == "slurm"
    assert all(s["executor"] == "slurm" and s["activation_id"].isdigit() for s in final["shards"])
    shown = radcloud(state, "status", started["job_id"])
    assert shown.returncode == 0 and f"slurm job {final['shards'][0]['activation_id']}" in shown.stdout
    assert "executor: slurm (its declared needs exceed an action" in shown.stdout
    outputs = ok_json(radcloud(state, "results", started["job_id"], "--json"))["outputs"]
    assert any(o["name"].endswith("series-001.nii.gz") for o in outputs)
    # Asked to run it as an action anyway: refused before any job exists, naming both numbers.
    refused = radcloud(state, "run", "ct-resample", "--retrieve", pulled["retrieve_id"], "--executor", "action")
    assert refused.returncode != 0 and "memorySize 512 MB" in refused.stderr


def test_exit_codes_for_scripts(state):
    from concurrent.futures import ThreadPoolExecutor

    login = radcloud(state, "login", "--user", USER, "--password-stdin", stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    calls = {"missing": (("status", "jnosuchjob000"), None), "unknown": (("run", "no-such-plugin", "--series", "1.2.3"), None),
             "usage": (("run", "dcm2png"), None), "plugins": (("plugins", "list", "--json"), None),
             "bad login": (("login", "--user", USER, "--password-stdin"), "wrong-password-xx\n")}
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:  # independent: run together
        futures = {k: pool.submit(radcloud, state, *args, stdin=stdin) for k, (args, stdin) in calls.items()}
        done = {k: f.result() for k, f in futures.items()}
    missing = done["missing"]
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1
    assert done["unknown"].returncode == 2 and "no-such-plugin" in done["unknown"].stderr
    assert done["usage"].returncode == 2 and "--retrieve" in done["usage"].stderr
    assert "dcm2png" in {p["name"] for p in ok_json(done["plugins"])}
    assert done["bad login"].returncode == 4


def test_doctor_reports_every_dependency(state):
    report = radcloud(state, "doctor", "--json", label="doctor")
    checks = {c["name"]: c for c in json.loads(report.stdout)["checks"]}
    assert {"openwhisk api", "radcloud actions", "orthanc", "s3 bucket", "s3 not public", "redis",
            "token secret", "deid secret"} <= set(checks)
    assert report.returncode == 0, [c for c in checks.values() if not c["ok"]]
    broken = subprocess.run([*RADCLOUD, "doctor", "--json", "--state-dir", str(state)], capture_output=True,
                            text=True, timeout=60, env={**clean_env(), "RADCLOUD_ORTHANC_PASSWORD": "wrong"})
    assert broken.returncode == 1
    assert not {c["name"]: c for c in json.loads(broken.stdout)["checks"]}["orthanc"]["ok"]


def test_deploy_to_any_openwhisk_with_host_and_key(state):
    # What an admin does against a remote OpenWhisk: site values from $RADCLOUD_*, key from the environment.
    from radcloud.ops.cli.client import read_wskprops
    from radcloud.ops.stack import Stack

    props = read_wskprops(state / "whisk" / ".wskprops")
    env = {**clean_env(), **Stack(state).endpoints().env(), "RADCLOUD_OW_AUTH": props["AUTH"],
           "RADCLOUD_RUNTIME_IMAGE": "radcloud/runtime:local", "RADCLOUD_PLUGIN_IMAGE_PREFIX": "radcloud/"}
    done = subprocess.run([*RADCLOUD, "deploy", "--apihost", props["APIHOST"], "--json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert props["AUTH"] not in done.stdout + done.stderr
    assert "plugin-dcm2png" in json.loads(done.stdout)["actions"]
    wrong = subprocess.run([*RADCLOUD, "deploy", "--apihost", props["APIHOST"]], capture_output=True, text=True,
                           env={**env, "RADCLOUD_OW_AUTH": "00000000-0000-0000-0000-000000000000:nope"}, timeout=120)
    assert wrong.returncode == 1 and wrong.stderr.startswith("error:")
    assert ok_json(radcloud(state, "plugins", "list", "--json"))  # the redeployed actions still answer


def test_an_admin_sees_the_arrivals_waiting_and_retries_a_failed_pipeline_from_its_failed_step(cli_stack, tmp_path):
    """`radcloud routes runs` lists the arrivals not routed yet (attempts, next try, why, in plain
    words); `radcloud retry` on a failed pipeline reruns it from its failed step through the deployed
    status action, and refuses (409, naming the state) once it has succeeded."""
    import secrets

    import redis
    import requests

    from clistack import ADMIN, ADMIN_PASSWORD
    from radcloud.arrivals.rules import PENDING
    from radcloud.run.registry import Registry
    from radcloud.work.jobs import JobStore
    from radcloud.work.pipelines import Pipelines, validate_steps

    token = requests.post(cli_stack.web + "login", json={"username": ADMIN, "password": ADMIN_PASSWORD},
                          timeout=60).json()["token"]
    env = {**clean_env(), "RADCLOUD_TOKEN": token, "COLUMNS": "300"}

    def admin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RADCLOUD, *args, "--state-dir", str(cli_stack.state)], capture_output=True,
                              text=True, env=env, timeout=240)

    r = redis.Redis.from_url(cli_stack.redis_url, decode_responses=True)
    arrival_id, study_uid = secrets.token_hex(16), f"1.2.826.0.1.{secrets.randbelow(10**9)}"
    written = time.time()
    r.hset(PENDING, arrival_id, json.dumps({
        "arrival": {"arrival_id": arrival_id, "study_uid": study_uid, "series": []}, "attempts": 2,
        "first_at": written - 10, "next_at": written + 600,
        "reason": "rule ct-chest: OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)"}))
    # The next try is 600 s away when written; the page says how far it is when the action reads it,
    # which is later by however long the CLI took (a loaded CI lane took over 10 s): the bounds are
    # measured from the write, not guessed.
    try:
        shown = admin("routes", "runs")
        took = time.time() - written
        assert shown.returncode == 0, shown.stderr
        assert "1 arrival(s) not routed yet" in shown.stdout and study_uid in shown.stdout, shown.stdout
        said = re.search(r"waiting: 2 attempt\(s\) of 30 refused \(busy or a service down\); "
                         r"tried again in (\d+) min (\d\d) s", shown.stdout)
        assert said, shown.stdout
        assert 600 - took - 1 <= int(said[1]) * 60 + int(said[2]) <= 600, (said[0], took)
        assert "last reason: rule ct-chest: OpenWhisk refused to invoke radcloud/retrieve (HTTP 429)" in shown.stdout
        listed = ok_json(admin("routes", "runs", "--json"))["pending"]
        took = time.time() - written
        [pending] = [p for p in listed if p["study_uid"] == study_uid]
        assert pending["attempts"] == 2 and 600 - took - 1 <= pending["due_in_s"] <= 600, (pending, took)
    finally:
        r.hdel(PENDING, arrival_id)

    pulled = ok_json(admin("pull", cli_stack.study, "--json", "--timeout", "120"))
    assert pulled["state"] == "succeeded", pulled
    jobs, registry = JobStore(r), Registry()
    pid = Pipelines(jobs, None).start(validate_steps([{"plugin": "dcm2png", "params": {"thumbnailSize": 0}}], registry),
                                      {"retrieve": pulled["retrieve_id"]}, ADMIN, name="cli-retry")
    jobs.shard_finished(pid, "s00", state="failed", reason="step 1 (dcm2png): exit 137: killed")
    Pipelines(jobs, None).finaliser(pid)   # the last step's outcome: the pipeline ends failed
    assert jobs.get(pid)["state"] == "failed"
    retried = ok_json(admin("retry", pid, "--json"))
    assert retried["retried"] == ["s00"] and retried["state"] not in ("failed", "succeeded"), retried
    final = ok_json(admin("status", pid, "--watch", "--json", "--timeout", "150"))
    assert final["state"] == "succeeded" and [s["state"] for s in final["steps"]] == ["succeeded"], final
    again = admin("retry", pid)
    assert again.returncode == 1 and "is succeeded; only a failed pipeline can be retried" in again.stderr, again.stderr
